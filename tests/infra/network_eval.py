"""Evaluates registered NetworkPolicies the way Kubernetes does: is one connection allowed?

Shared by the policy tests (a plain module, like infra_harness). A pod is isolated in a direction
once any policy selects it for that direction; a connection then needs a rule on each end.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from infra_harness import NETPOL, Deployment

APP_NS = "consul-microservices"
NAMESPACE_LABELS = {
    ns: {"kubernetes.io/metadata.name": ns} for ns in (APP_NS, "consul", "kube-system", "default")
}


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict
    ip: str


def _selects(selector: dict | None, labels: dict) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in match.items())


def _peer_matches(peer: dict, pod: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        return ipaddress.ip_address(pod.ip) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    if not pod.namespace:  # outside the cluster: only ipBlocks match
        return False
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], NAMESPACE_LABELS[pod.namespace])
    else:
        ns_ok = pod.namespace == policy_ns
    return ns_ok and _selects(peer.get("podSelector"), pod.labels)


@dataclass(frozen=True)
class Conn:
    src: Pod
    dst: Pod
    port: int
    proto: str = "TCP"


def _rule_allows(rule: dict, peers_key: str, other: Pod, conn: Conn, ns: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(
        p["port"] == conn.port and p.get("protocol", "TCP") == conn.proto for p in ports
    ):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(p, other, ns) for p in peers)


def _direction_allows(run: Deployment, pod: Pod, other: Pod, conn: Conn, kind: str) -> bool:
    policies = [
        p.inputs
        for p in run.of_type(NETPOL)
        if p.inputs["metadata"]["namespace"] == pod.namespace
        and kind in p.inputs["spec"]["policyTypes"]
        and _selects(p.inputs["spec"]["podSelector"], pod.labels)
    ]
    if not policies:  # not isolated in this direction
        return True
    rules_key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    return any(
        _rule_allows(rule, peers_key, other, conn, pod.namespace)
        for policy in policies
        for rule in policy["spec"].get(rules_key) or []
    )


def allowed(run: Deployment, conn: Conn) -> bool:
    return _direction_allows(run, conn.src, conn.dst, conn, "Egress") and _direction_allows(
        run, conn.dst, conn.src, conn, "Ingress"
    )
