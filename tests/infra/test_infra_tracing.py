"""Traces: exported over OTLP when the stack names a collector (otlpEndpoint), off otherwise.

Named, every service's pods get OTEL_EXPORTER_OTLP_ENDPOINT, and their egress gains exactly one
more flow, to the collector's network on its port; unnamed, neither exists.
"""

from __future__ import annotations

import pytest
from infra_harness import DEPLOYMENT, NETPOL, PROFILES, SECRET_KEYS, SERVICES, Deployment, deploy
from network_eval import Conn, Pod, allowed

APP_NS = "consul-microservices"
BOOKS = Pod("books-api", APP_NS, {"app.kubernetes.io/name": "books-api"}, "10.244.0.10")
GREETER = Pod("greeter", APP_NS, {"app.kubernetes.io/name": "greeter"}, "10.244.0.11")
COLLECTOR = Pod("otel-collector", "", {}, "10.96.50.7")  # reached by its IP, like any address
ELSEWHERE = Pod("vm", "", {}, "203.0.113.9")
VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"


def _app_env(run: Deployment) -> dict[str, list[dict]]:
    """Every container of every service's pods (not only the first), by Deployment."""
    return {
        d.name: [
            {e["name"]: e.get("value") for e in c.get("env", [])}
            for c in d.inputs["spec"]["template"]["spec"]["containers"]
        ]
        for d in run.of_type(DEPLOYMENT)
        if d.name in {f"{service}-deployment" for service in SERVICES}
    }


def _egress_blocks(run: Deployment) -> list[tuple[str, list]]:
    """The app services' egress rules to an ipBlock: (CIDR, ports)."""
    return [
        (peer["ipBlock"]["cidr"], rule.get("ports"))
        for service in SERVICES
        for rule in run.one(NETPOL, f"{service}-netpol").inputs["spec"]["egress"]
        for peer in rule.get("to") or []
        if "ipBlock" in peer
    ]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_without_a_collector_tracing_is_off_and_nothing_more_is_open(profile):
    run = deploy(PROFILES[profile], SECRET_KEYS)
    assert all(VARIABLE not in env for pods in _app_env(run).values() for env in pods)
    assert _egress_blocks(run) == []
    assert not allowed(run, Conn(BOOKS, COLLECTOR, 4317))


@pytest.mark.parametrize(
    ("config", "endpoint", "cidr", "port"),
    [
        (
            {"otlpEndpoint": "http://otel.observability.svc:4317", "otlpCidr": "10.96.50.0/24"},
            "http://otel.observability.svc:4317",
            "10.96.50.0/24",
            4317,
        ),
        (
            {"otlpEndpoint": "http://10.96.50.7:4318"},
            "http://10.96.50.7:4318",
            "10.96.50.7/32",
            4318,
        ),
        # No port: 4317, written out for the pods (gRPC alone would dial 443).
        ({"otlpEndpoint": "https://10.96.50.7"}, "https://10.96.50.7:4317", "10.96.50.7/32", 4317),
    ],
    ids=["named host with otlpCidr", "IP literal", "default port"],
)
def test_a_collector_is_every_pods_endpoint_and_only_its_network_and_port_are_open(
    config, endpoint, cidr, port
):
    run = deploy(PROFILES["kind"] | config)
    pods = _app_env(run)
    assert sorted(pods) == sorted(f"{s}-deployment" for s in SERVICES)
    assert all(env[VARIABLE] == endpoint for containers in pods.values() for env in containers)
    protocols = [{"port": port, "protocol": "TCP"}]
    assert _egress_blocks(run) == [(cidr, protocols)] * len(SERVICES)
    for service in (BOOKS, GREETER):
        assert allowed(run, Conn(service, COLLECTOR, port))
        assert not allowed(run, Conn(service, COLLECTOR, port + 1))
        assert not allowed(run, Conn(service, ELSEWHERE, port))
