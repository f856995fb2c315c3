"""NetworkPolicy flows: evaluates the registered policies the way Kubernetes does, pair by pair.

App namespace, allowed: clients -> books-api; books-api -> greeter; both -> Consul (8500); Consul
-> both on their app ports (its health checks); DNS. Consul's namespace, allowed: the app
namespace -> the servers' HTTP API; server <-> server (RPC, gossip); the servers -> the Kubernetes
API; the ACL bootstrap and login setup Jobs -> the servers, and the chart's Jobs -> the Kubernetes
API; DNS. Everything else in or out of either namespace is denied.
"""

from __future__ import annotations

import pytest
from infra_harness import (
    KUBERNETES_API,
    NETPOL,
    PROFILES,
    RELEASE,
    SECRET_KEYS,
    Deployment,
    deploy,
)
from network_eval import Conn, Pod, allowed

APP_NS = "consul-microservices"


BOOKS = Pod("books-api", APP_NS, {"app.kubernetes.io/name": "books-api"}, "10.244.0.10")
GREETER = Pod("greeter", APP_NS, {"app.kubernetes.io/name": "greeter"}, "10.244.0.11")
CONSUL = Pod(
    "consul-server",
    "consul",
    {"app": "consul", "component": "server", "release": "consul", "chart": "consul-helm"},
    "10.244.0.20",
)
CONSUL_2 = Pod("consul-server-1", "consul", CONSUL.labels, "10.244.1.20")
ACL_INIT = Pod(
    "server-acl-init",
    "consul",
    {"app": "consul", "component": "server-acl-init", "release": "consul"},
    "10.244.0.21",
)
ACL_CLEANUP = Pod(
    "server-acl-init-cleanup",
    "consul",
    {"app": "consul", "component": "server-acl-init-cleanup", "release": "consul"},
    "10.244.0.22",
)
LOGIN_SETUP = Pod(
    "login-setup", "consul", {"app.kubernetes.io/name": "consul-service-logins"}, "10.244.0.23"
)
CONSUL_STRAY = Pod("rogue", "consul", {"run": "rogue"}, "10.244.0.24")
KUBE_API = Pod("kube-apiserver", "", {}, KUBERNETES_API["address"])
API_PORT = KUBERNETES_API["port"]
DNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, "10.244.0.2")
OUTSIDER = Pod("client", "default", {"run": "curl"}, "10.244.0.30")
STRAY = Pod("stray", APP_NS, {"app.kubernetes.io/name": "debug"}, "10.244.0.12")
EXTERNAL_CONSUL = Pod("consul-vm", "", {}, "192.168.50.7")


FLOWS = [
    # (source, destination, port, protocol, allowed?)
    (OUTSIDER, BOOKS, 8080, "TCP", True),
    (BOOKS, GREETER, 50051, "TCP", True),
    (BOOKS, CONSUL, 8500, "TCP", True),
    (GREETER, CONSUL, 8500, "TCP", True),
    (CONSUL, BOOKS, 8080, "TCP", True),
    (CONSUL, GREETER, 50051, "TCP", True),
    (BOOKS, DNS, 53, "UDP", True),
    (GREETER, DNS, 53, "TCP", True),
    (OUTSIDER, GREETER, 50051, "TCP", False),
    (STRAY, GREETER, 50051, "TCP", False),
    (GREETER, BOOKS, 8080, "TCP", False),
    (BOOKS, GREETER, 8080, "TCP", False),
    (OUTSIDER, BOOKS, 9999, "TCP", False),
    (BOOKS, OUTSIDER, 443, "TCP", False),
    (BOOKS, OUTSIDER, 50051, "TCP", False),
    (BOOKS, STRAY, 50051, "TCP", False),
    (GREETER, OUTSIDER, 8500, "TCP", False),
    (GREETER, OUTSIDER, 80, "TCP", False),
    (BOOKS, CONSUL, 8300, "TCP", False),
    (BOOKS, DNS, 8080, "TCP", False),
    (STRAY, OUTSIDER, 443, "TCP", False),
    (OUTSIDER, STRAY, 8080, "TCP", False),
    (BOOKS, EXTERNAL_CONSUL, 8500, "TCP", False),
    # Consul's namespace
    (CONSUL, CONSUL_2, 8300, "TCP", True),
    (CONSUL_2, CONSUL, 8301, "TCP", True),
    (CONSUL, CONSUL_2, 8301, "UDP", True),
    (CONSUL_2, CONSUL, 8302, "UDP", True),
    (CONSUL, CONSUL_2, 8302, "TCP", True),
    (CONSUL, KUBE_API, API_PORT, "TCP", True),
    (CONSUL, DNS, 53, "UDP", True),
    (ACL_INIT, CONSUL, 8500, "TCP", True),
    (ACL_INIT, CONSUL, 8502, "TCP", True),
    (ACL_INIT, KUBE_API, API_PORT, "TCP", True),
    (ACL_CLEANUP, KUBE_API, API_PORT, "TCP", True),
    (LOGIN_SETUP, CONSUL, 8500, "TCP", True),
    (LOGIN_SETUP, DNS, 53, "UDP", True),
    (OUTSIDER, CONSUL, 8500, "TCP", False),  # the threat: a pod elsewhere at Consul's API
    (OUTSIDER, CONSUL, 8301, "UDP", False),
    (OUTSIDER, CONSUL, 8300, "TCP", False),
    (CONSUL_STRAY, CONSUL, 8500, "TCP", False),
    (CONSUL_STRAY, KUBE_API, API_PORT, "TCP", False),
    (CONSUL_STRAY, OUTSIDER, 443, "TCP", False),
    (KUBE_API, CONSUL, 8500, "TCP", False),
    (BOOKS, CONSUL, 8502, "TCP", False),
    (BOOKS, CONSUL, 8301, "UDP", False),
    (CONSUL, CONSUL_2, 8500, "TCP", False),
    (CONSUL, KUBE_API, 443, "TCP", False),
    (CONSUL, OUTSIDER, 443, "TCP", False),
    (CONSUL, BOOKS, 9999, "TCP", False),
    (CONSUL, STRAY, 8080, "TCP", False),
    (CONSUL, GREETER, 8080, "TCP", False),
    (CONSUL, EXTERNAL_CONSUL, 8500, "TCP", False),
    (LOGIN_SETUP, KUBE_API, API_PORT, "TCP", False),
    (LOGIN_SETUP, CONSUL, 8300, "TCP", False),
    (ACL_CLEANUP, CONSUL, 8500, "TCP", False),
    (ACL_INIT, OUTSIDER, 443, "TCP", False),
]


@pytest.fixture(scope="module", params=sorted(PROFILES))
def run(request) -> Deployment:
    return deploy(PROFILES[request.param], SECRET_KEYS)


@pytest.mark.parametrize(
    "flow", FLOWS, ids=[f"{s.name}->{d.name}:{p}/{proto}" for s, d, p, proto, _ in FLOWS]
)
def test_only_the_intended_flows_are_open(run, flow):
    *conn, expected = flow
    assert allowed(run, Conn(*conn)) is expected


def test_external_consul_is_reached_by_cidr_only():
    config = PROFILES["kind"] | {
        "consulInstall": "false",
        "consulAddress": "http://192.168.50.7:8500",
        "consulExternalCidr": "192.168.50.0/24",
    }
    run = deploy(config)
    assert not run.of_type(RELEASE)
    for service in ("books-api", "greeter"):
        assert run.env(service)["CONSUL_HTTP_ADDR"] == "http://192.168.50.7:8500"
    assert allowed(run, Conn(BOOKS, EXTERNAL_CONSUL, 8500))
    assert allowed(run, Conn(EXTERNAL_CONSUL, GREETER, 50051))
    assert not allowed(run, Conn(BOOKS, EXTERNAL_CONSUL, 8080))
    assert not allowed(run, Conn(BOOKS, CONSUL, 8500))  # no in-cluster Consul to talk to
    assert not allowed(run, Conn(BOOKS, OUTSIDER, 8500))
    assert run.outputs["consul"]["httpAddr"] == "http://192.168.50.7:8500"


ELSEWHERE = Pod("vm", "", {}, "203.0.113.9")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_external_consul_by_default_admits_only_its_own_address(profile):
    """No consulExternalCidr: the address's IP is the only peer, never 0.0.0.0/0."""
    config = PROFILES[profile] | {"consulInstall": "false", "consulAddress": "192.168.50.7:8500"}
    run = deploy(config, SECRET_KEYS)
    assert allowed(run, Conn(EXTERNAL_CONSUL, GREETER, 50051))
    assert allowed(run, Conn(BOOKS, EXTERNAL_CONSUL, 8500))
    for outsider in (OUTSIDER, ELSEWHERE):
        assert not allowed(run, Conn(outsider, GREETER, 50051))
        assert not allowed(run, Conn(BOOKS, outsider, 8500))
    assert not allowed(run, Conn(ELSEWHERE, BOOKS, 9999))
    blocks = [  # of every policy but Prometheus's, whose only address is the API server's
        peer["ipBlock"]["cidr"]
        for policy in run.of_type(NETPOL)
        if policy.name != "prometheus-netpol"
        for rule in [
            *policy.inputs["spec"].get("ingress", []),
            *policy.inputs["spec"].get("egress", []),
        ]
        for peer in rule.get("from", rule.get("to")) or []
        if "ipBlock" in peer
    ]
    assert blocks and set(blocks) == {"192.168.50.7/32"}


def test_a_cidr_with_host_bits_is_normalised():
    config = PROFILES["kind"] | {
        "consulInstall": "false",
        "consulAddress": "http://192.168.50.7:8500",
        "consulExternalCidr": "192.168.50.7/24",
    }
    egress = deploy(config).one(NETPOL, "greeter-netpol").inputs["spec"]["egress"]
    assert {"ipBlock": {"cidr": "192.168.50.0/24"}} in egress[0]["to"]


@pytest.mark.parametrize(("prefix", "namespace"), [("netpol", APP_NS), ("consul-netpol", "consul")])
def test_each_namespace_starts_from_default_deny(run, prefix, namespace):
    (deny,) = [p.inputs for p in run.of_type(NETPOL) if p.name == f"{prefix}-default-deny"]
    assert deny["metadata"]["namespace"] == namespace
    assert deny["spec"]["podSelector"] == {}
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert not deny["spec"].get("ingress") and not deny["spec"].get("egress")


def test_consul_health_checks_are_named_flows_not_just_covered_by_clients(run):
    """books-api's client rule admits Consul too; the explicit rule survives narrower clients."""
    consul_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "consul"}},
        "podSelector": {
            "matchLabels": {"app": "consul", "component": "server", "release": "consul"}
        },
    }
    for service, port in (("books-api", 8080), ("greeter", 50051)):
        ingress = run.one(NETPOL, f"{service}-netpol").inputs["spec"]["ingress"]
        assert {"from": [consul_peer], "ports": [{"port": port, "protocol": "TCP"}]} in ingress
