"""Runs the whole Pulumi program (infra/__main__.py) under Pulumi mocks and records its resources.

A plain module (not conftest) so test files import it by a name no other test area uses.

Each run awaits every registration and every stack output before a test looks at them, so a test
sees plain, resolved values and cannot pass on an unawaited Output.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import get_root_resource

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROJECT = "consul-microservices"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

import registry  # noqa: E402 - the program's module, importable once INFRA is on the path


def infra_module(name: str) -> ModuleType:
    """One of the program's modules (they import each other as top-level names from infra/)."""
    return importlib.import_module(name)


# The services the program finds (services/*/service.yaml), as the program loads them.
CATALOG = infra_module("catalog").load()
SERVICES = tuple(CATALOG.services)


IMAGE = "docker:index/image:Image"
RELEASE = "kubernetes:helm.sh/v3:Release"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
NAMESPACE = "kubernetes:core/v1:Namespace"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
CREDENTIALS = "kubernetes:core/v1:Secret"
K8S_PROVIDER = "pulumi:providers:kubernetes"
COMPONENT = "consul-microservices:index:Microservice"
JOB = "kubernetes:batch/v1:Job"
ENDPOINT_SLICE = "kubernetes:discovery.k8s.io/v1:EndpointSlice"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
DYNAMIC = "pulumi-python:dynamic:Resource"
# What the mocks' cluster answers for the `kubernetes` EndpointSlice (the API server's address).
KUBERNETES_API = {"address": "172.18.0.2", "port": 6443}


def generated_password(name: str) -> str:
    """What the mocks' GeneratedPassword of `name` yields: a value to look for in clear."""
    return f"generated-{name}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def fake_digest(image_name: str) -> str:
    return "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()


@dataclass(frozen=True)
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None


class RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs as outputs, adding what the real providers compute (digest, release status)."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.provider))
        outputs = dict(args.inputs)
        if args.typ == IMAGE:
            name = args.inputs["imageName"]
            pushed = not args.inputs.get("skipPush")
            repository = name.rsplit(":", 1)[0]
            outputs["repoDigest"] = (
                f"{repository}@{fake_digest(name)}" if pushed else fake_digest(name)
            )
        if args.typ == ENDPOINT_SLICE:
            outputs["endpoints"] = [{"addresses": [KUBERNETES_API["address"]]}]
            outputs["ports"] = [{"name": "https", "port": KUBERNETES_API["port"]}]
        if args.typ == DYNAMIC:  # database.GeneratedPassword: its provider's one output
            outputs["value"] = generated_password(args.name)
        if args.typ == RELEASE:
            outputs["status"] = {
                "name": args.inputs["name"],
                "namespace": args.inputs["namespace"],
                "status": "deployed",
            }
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@dataclass
class Deployment:
    """What one program run registered, and its stack outputs."""

    resources: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)
    urns: list[str] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str) -> Registered:
        found = [r for r in self.of_type(typ) if r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, got {len(found)}"
        return found[0]

    def deployment(self, service: str) -> dict[str, Any]:
        return self.one(DEPLOYMENT, f"{service}-deployment").inputs

    def container(self, service: str) -> dict[str, Any]:
        return self.deployment(service)["spec"]["template"]["spec"]["containers"][0]

    def env(self, service: str) -> dict[str, Any]:
        return {
            e["name"]: e.get("value", e.get("valueFrom")) for e in self.container(service)["env"]
        }


def run(
    program: Callable[[], Any],
    config: dict[str, str] | None = None,
    secret_keys: tuple[str, ...] = (),
    mocks: RecordingMocks | None = None,
) -> Deployment:
    """Runs `program` under mocks with `config` (keys without the project prefix).

    `program` may return an Output, awaited before the run ends. Pass `mocks` to inspect what was
    registered when the run raises.
    """
    mocks = mocks or RecordingMocks()
    monitor = MockMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, PROJECT, "test", preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{k}": v for k, v in (config or {}).items()},
        [f"{PROJECT}:{k}" for k in secret_keys],
    )
    stack = get_root_resource()
    stack.outputs.clear()
    result = Deployment(mocks.resources)

    @pulumi.runtime.test
    def whole_run():
        returned = pulumi.Output.from_input(program())
        outputs = pulumi.Output.from_input(dict(stack.outputs)).apply(result.outputs.update)
        return pulumi.Output.all(returned, outputs)

    # No registry behind the mocks: the pushed tag's digest is the one the mock Image reports.
    real_read_back = registry.pushed_digest
    registry.pushed_digest = lambda reference, *_: fake_digest(reference)
    try:
        whole_run()
    finally:
        registry.pushed_digest = real_read_back
    result.urns = list(monitor.get_registered_resources())
    return result


def deploy(
    config: dict[str, str],
    secret_keys: tuple[str, ...] = (),
    mocks: RecordingMocks | None = None,
) -> Deployment:
    """Runs the whole program, infra/__main__.py, under mocks (see `run`)."""

    def program() -> None:
        runpy.run_path(str(INFRA), run_name="__main__")

    return run(program, config, secret_keys, mocks)


def project_defaults() -> dict[str, str]:
    """Pulumi.yaml's declared defaults, as the CLI applies them (values become strings)."""
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: _as_config(spec["default"]) for key, spec in declared.items()}


def stack_file_config(path: Path) -> dict[str, str]:
    """A stack file's config on top of the project defaults, as the program receives it."""
    values = yaml.safe_load(path.read_text())["config"]
    return project_defaults() | {k.split(":", 1)[1]: _as_config(v) for k, v in values.items()}


def stack_config(stack: str) -> dict[str, str]:
    """A committed stack file's config on top of the project defaults."""
    return stack_file_config(ROOT / f"Pulumi.{stack}.yaml")


def _as_config(value: Any) -> str:
    """How Pulumi hands a config value to the program: booleans lower case, lists as JSON."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def services_key(settings: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The structured `services` key (service name -> its settings), as Pulumi hands it over."""
    return {"services": json.dumps(settings)}


SECRET_KEYS = ("registryPassword",)
REGISTRY_TOKEN = "s3cret-token"  # noqa: S105 - a fake token the tests look for in outputs
# The three cluster profiles: the committed dev (kind) and prod (existing) stacks, and minikube.
PROFILES: dict[str, dict[str, str]] = {
    "kind": stack_config("dev"),
    "minikube": project_defaults() | {"clusterProfile": "minikube"},
    "existing": stack_config("prod") | {"registryPassword": REGISTRY_TOKEN},
}
