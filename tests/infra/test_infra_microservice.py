"""The Microservice component on its own: built from its Args alone, outside this stack."""

from __future__ import annotations

import ast

import pulumi
import pulumi_kubernetes as k8s
from infra_harness import COMPONENT, DEPLOYMENT, HPA, INFRA, NETPOL, PDB, SERVICE, infra_module, run

microservice = infra_module("microservice")
IMAGE = "registry.example.com/echo@sha256:" + "e" * 64


def _echo_args(**overrides) -> microservice.MicroserviceArgs:
    args = {
        "namespace": "apps",
        "image": IMAGE,
        "port_name": "http",
        "port": 9000,
        "probes": microservice.HttpProbes(liveness_path="/live", readiness_path="/ready"),
        "resources": k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "10m", "memory": "16Mi"}, limits={"cpu": "100m", "memory": "32Mi"}
        ),
        "replicas": 2,
        "ingress": [
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=9000, protocol="TCP")]
            )
        ],
        "env": {"GREETING": "hi"},
    }
    return microservice.MicroserviceArgs(**(args | overrides))


def test_a_microservice_from_its_args_exposes_its_children_and_address():
    built: dict = {}

    def program():
        echo = microservice.Microservice("echo", _echo_args(max_replicas=4))
        built["echo"] = echo
        children = [
            echo.service_account, echo.deployment, echo.service, echo.disruption_budget,
            echo.network_policy, echo.autoscaler,
        ]  # fmt: skip
        return pulumi.Output.all(
            echo.address, echo.namespace, echo.service_name, *[c.urn for c in children]
        ).apply(lambda values: built.update(values=values))

    result = run(program)
    address, namespace, name, *urns = built["values"]
    assert (address, namespace, name) == ("echo.apps.svc:9000", "apps", "echo")
    assert built["echo"].port == 9000
    # Each attribute is the registered child of its kind, parented by the component.
    assert all(f"{COMPONENT}$" in urn for urn in urns)
    kinds = [urn.split("::")[2].rsplit("$", 1)[1] for urn in urns]
    assert kinds == [
        "kubernetes:core/v1:ServiceAccount", DEPLOYMENT, SERVICE, PDB, NETPOL, HPA
    ]  # fmt: skip
    container = result.container("echo")
    assert container["image"] == IMAGE
    assert container["resources"]["limits"] == {"cpu": "100m", "memory": "32Mi"}
    assert {"name": "GREETING", "value": "hi"} in container["env"]
    assert result.one(HPA, "echo-hpa").inputs["spec"]["maxReplicas"] == 4
    assert "replicas" not in result.deployment("echo")["spec"]  # the HPA owns it


def test_without_max_replicas_there_is_no_autoscaler():
    built: dict = {}

    def program():
        built["echo"] = microservice.Microservice("echo", _echo_args())

    result = run(program)
    assert built["echo"].autoscaler is None
    assert not result.of_type(HPA)
    assert result.deployment("echo")["spec"]["replicas"] == 2


def test_a_metrics_port_is_a_named_container_port_and_in_the_env_not_in_the_service():
    def program():
        microservice.Microservice("echo", _echo_args(metrics_port=9102))

    result = run(program)
    container = result.container("echo")
    assert container["ports"] == [
        {"name": "http", "containerPort": 9000},
        {"name": "metrics", "containerPort": 9102},
    ]
    assert {"name": "METRICS_PORT", "value": "9102"} in container["env"]
    assert [p["name"] for p in result.one(SERVICE, "echo-service").inputs["spec"]["ports"]] == [
        "http"
    ]


def test_without_a_metrics_port_the_container_has_its_port_alone():
    def program():
        microservice.Microservice("echo", _echo_args())

    container = run(program).container("echo")
    assert container["ports"] == [{"name": "http", "containerPort": 9000}]
    assert "METRICS_PORT" not in {variable["name"] for variable in container["env"]}


def test_the_component_imports_nothing_of_this_stack():
    tree = ast.parse((INFRA / "microservice.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= {"__future__", "collections", "dataclasses", "pulumi", "pulumi_kubernetes"}
