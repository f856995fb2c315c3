"""The pack as the engine runs it: its own process, serving Pulumi's Analyzer protocol over gRPC.

The program's resources come from a whole run of infra/__main__.py under Pulumi's mocks, so the
pack judges exactly what `pulumi up` would register (without a cluster or an engine).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import infra_harness as harness
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi.runtime.proto import analyzer_pb2_grpc

PACK = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK))
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("pack_main", PACK / "__main__.py")
pack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack)

MANDATORY = proto.MANDATORY
ADVISORY = proto.ADVISORY


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    process = subprocess.Popen([sys.executable, "-u", str(PACK)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=10)


def configure(stub, stack_file: Path | None = None, **levels: int) -> None:
    """What the engine does before it analyzes (ReconcilePolicyPackConfig in pulumi's
    pkg/resource/analyzer/config.go): each policy at the level its PolicyInfo reports; over that
    the pack's initial config, each entry's level taken as sent (a PolicyConfig that names none
    carries proto's zero value, advisory, and the engine applies it); over that a stack's pack
    config file (`--policy-pack-config`), a level only where the file gives one; then the levels a
    test asks for."""
    info = stub.GetAnalyzerInfo(empty_pb2.Empty())
    level = {policy.name: policy.enforcementLevel for policy in info.policies}
    config: dict[str, dict] = {}
    for name, value in info.initialConfig.items():
        level[name] = value.enforcementLevel
        config[name] = dict(value.properties)
    if stack_file is not None:
        for name, value in json.loads(stack_file.read_text()).items():
            given = {"enforcementLevel": value} if isinstance(value, str) else dict(value)
            if "enforcementLevel" in given:
                level[name] = proto.EnforcementLevel.Value(given.pop("enforcementLevel").upper())
            config[name] = config.get(name, {}) | given
    for name, value in levels.items():
        level[name.replace("_", "-")] = value
    policy_config = {
        policy.name: proto.PolicyConfig(
            enforcementLevel=level[policy.name],
            properties=_struct(config.get(policy.name, {})),
        )
        for policy in info.policies
    }
    stub.Configure(proto.ConfigureAnalyzerRequest(policyConfig=policy_config))


def violations(diagnostics: list[proto.AnalyzeDiagnostic]) -> list[str]:
    """Each diagnostic's own message (the engine shows it under the policy's description)."""
    return [d.message.splitlines()[-1] for d in diagnostics]


def _struct(props) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(props)
    return result


def _urn(resource: harness.Registered) -> str:
    return f"urn:pulumi:dev::consul-microservices::{resource.typ}::{resource.name}"


def _diagnostics(stub, resources: list[harness.Registered]) -> list[proto.AnalyzeDiagnostic]:
    found = []
    for r in resources:
        request = proto.AnalyzeRequest(
            type=r.typ, properties=_struct(r.inputs), urn=_urn(r), name=r.name
        )
        found += stub.Analyze(request).diagnostics
    stack = proto.AnalyzeStackRequest(
        resources=[
            proto.AnalyzerResource(
                type=r.typ, properties=_struct(r.inputs), urn=_urn(r), name=r.name
            )
            for r in resources
        ]
    )
    return found + list(stub.AnalyzeStack(stack).diagnostics)


def test_the_pack_serves_every_policy_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "consul-microservices"
    assert sorted(p.name for p in info.policies) == sorted(p.name for p in pack.POLICIES)
    assert {p.enforcementLevel for p in info.policies} == {MANDATORY}
    # The engine applies an initial config's level as sent: one that names none is advisory.
    assert {c.enforcementLevel for c in info.initialConfig.values()} == {MANDATORY}
    assert all(p.description for p in info.policies)


# Each committed stack with the pack config make passes it (policy/config/<stack>.json).
STACKS = {"kind": None, "minikube": None, "existing": None}
EXTERNAL_CONSUL = {"consulInstall": "false", "consulAddress": "http://10.0.0.5:8500"}


@pytest.mark.parametrize("profile", sorted(STACKS))
def test_the_program_passes_every_policy(analyzer, profile):
    configure(analyzer, STACKS[profile])
    deployed = harness.deploy(harness.PROFILES[profile], harness.SECRET_KEYS)
    assert violations(_diagnostics(analyzer, deployed.resources)) == []


def test_the_program_with_an_external_consul_passes_every_policy(analyzer):
    configure(analyzer)
    deployed = harness.deploy(harness.PROFILES["kind"] | EXTERNAL_CONSUL)
    assert violations(_diagnostics(analyzer, deployed.resources)) == []


def test_the_prod_stack_exposes_books_api_through_its_manifest_alone(analyzer):
    """Pulumi.prod.yaml makes books-api's Service a LoadBalancer; its manifest says exposed: true,
    so no pack config names it. The greeter's, not exposed in its manifest, is refused."""
    configure(analyzer)
    deployed = harness.deploy(harness.PROFILES["existing"], harness.SECRET_KEYS)
    assert violations(_diagnostics(analyzer, deployed.resources)) == []
    greeter = next(r for r in deployed.resources if r.name == "greeter-service")
    spec = {**greeter.inputs["spec"], "type": "NodePort"}
    exposed = dataclasses.replace(greeter, inputs={**greeter.inputs, "spec": spec})
    assert violations(_diagnostics(analyzer, [exposed])) == [
        "Service 'greeter-service': spec.type is 'NodePort'; expected ClusterIP (a service's "
        "Service is exposed on purpose when its manifest says exposed: true; any other, when this "
        "policy's allowedServices lists it)"
    ]


def test_a_program_that_breaks_every_promise_is_refused_by_each_policy(analyzer):
    """The fixture program: one resource or field per policy, each violating it."""
    configure(analyzer)
    deployed = harness.run(_violating_program)
    found = _diagnostics(analyzer, deployed.resources)
    assert sorted({d.policyName for d in found}) == sorted(p.name for p in pack.POLICIES)
    assert {d.enforcementLevel for d in found} == {MANDATORY}


def test_a_user_can_make_one_policy_advisory(analyzer):
    deployed = harness.run(_violating_program)
    configure(analyzer, images_pinned=ADVISORY)
    found = _diagnostics(analyzer, deployed.resources)
    levels = {d.policyName: d.enforcementLevel for d in found}
    assert levels.pop("images-pinned") == ADVISORY
    assert set(levels.values()) == {MANDATORY}


def test_the_packs_one_allowed_tag_is_the_programs_chart_image():
    consul_server = harness.infra_module("consul_server")
    assert pack.INITIAL_CONFIG["images-pinned"]["allowedTags"] == [consul_server.CHART_CONSUL_IMAGE]


def _violating_program() -> None:
    import pulumi_kubernetes as k8s  # noqa: PLC0415 - registers only under the harness's mocks

    container = k8s.core.v1.ContainerArgs(
        name="app", image="nginx:latest", security_context={"privileged": True}
    )
    k8s.core.v1.Namespace("bare", metadata={"name": "bare"})
    k8s.apps.v1.Deployment(
        "open",
        metadata={"name": "open", "namespace": "bare"},
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=3,
            selector={"match_labels": {"app": "open"}},
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata={"labels": {"app": "open"}},
                spec=k8s.core.v1.PodSpecArgs(containers=[container]),
            ),
        ),
    )
    k8s.core.v1.Service(
        "open",
        metadata={"namespace": "bare"},
        spec={"type": "LoadBalancer", "ports": [{"port": 80}]},
    )
    k8s.helm.v3.Release(
        "consul",
        name="consul",
        namespace="bare",
        chart="consul",
        values={"global": {"acls": {"manageSystemACLs": False}}},
    )
