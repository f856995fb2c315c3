"""NetworkPolicy building blocks: typed peers, default deny, DNS and the Kubernetes API egress.

Why the Kubernetes API by address (kubernetes_api): NetworkPolicies see traffic after the
Service's address is translated, so the peer is the API server's own endpoints, read from the
`kubernetes` EndpointSlice that the API server keeps in `default`.

Why peers as data: each service states who may reach it and whom it may reach; this module turns
those statements into NetworkPolicy rules, so the allowed flows are readable in one place
(workloads.py, plus DNS here) and nothing else is open.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}  # CoreDNS's label on kind, minikube and most clusters
KUBERNETES_API_SLICE = "default/kubernetes"


@dataclass(frozen=True)
class Peer:
    """One side of a flow: pods by labels (optionally in another namespace), or a CIDR.

    A Peer with nothing set means "any source", which only exposed services' ports use.
    """

    pod_labels: Mapping[str, str] | None = None
    namespace: str | None = None
    cidr: str | None = None

    def to_args(self) -> k8s.networking.v1.NetworkPolicyPeerArgs | None:
        if self.cidr:
            return k8s.networking.v1.NetworkPolicyPeerArgs(
                ip_block=k8s.networking.v1.IPBlockArgs(cidr=self.cidr)
            )
        if self.pod_labels is None and self.namespace is None:
            return None
        ns_selector = None
        if self.namespace:
            ns_selector = k8s.meta.v1.LabelSelectorArgs(
                match_labels={NAMESPACE_NAME_LABEL: self.namespace}
            )
        return k8s.networking.v1.NetworkPolicyPeerArgs(
            namespace_selector=ns_selector,
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(self.pod_labels or {})),
        )


ANYONE = Peer()


@dataclass(frozen=True)
class Flow:
    """Traffic to or from `peer` on `ports` (all ports when empty) over `protocols`."""

    peer: Peer
    ports: Sequence[int] = ()
    protocols: Sequence[str] = ("TCP",)

    def port_args(self) -> list[k8s.networking.v1.NetworkPolicyPortArgs]:
        return [
            k8s.networking.v1.NetworkPolicyPortArgs(port=port, protocol=protocol)
            for port in self.ports
            for protocol in self.protocols
        ]

    def peers(self) -> list[k8s.networking.v1.NetworkPolicyPeerArgs] | None:
        peer = self.peer.to_args()
        return [peer] if peer else None


def ingress_rule(flow: Flow) -> k8s.networking.v1.NetworkPolicyIngressRuleArgs:
    return k8s.networking.v1.NetworkPolicyIngressRuleArgs(
        from_=flow.peers(), ports=flow.port_args()
    )


def egress_rule(flow: Flow) -> k8s.networking.v1.NetworkPolicyEgressRuleArgs:
    return k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=flow.peers(), ports=flow.port_args())


def host_peer(address: str) -> Peer:
    """One IP address as a peer (/32, or /128 for IPv6)."""
    return Peer(cidr=str(ipaddress.ip_network(address)))


def pod_policy(
    name: str,
    namespace: pulumi.Input[str],
    pods: Mapping[str, str],
    *,
    ingress: Sequence[Flow] | None = None,
    egress: pulumi.Input[Sequence[k8s.networking.v1.NetworkPolicyEgressRuleArgs]] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> k8s.networking.v1.NetworkPolicy:
    """The flows that pods selected by `pods` labels may take (ingress, egress or both)."""
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(pods)),
            policy_types=[*(["Ingress"] if ingress else []), *(["Egress"] if egress else [])],
            ingress=[ingress_rule(flow) for flow in ingress] if ingress else None,
            egress=egress,
        ),
        opts=opts,
    )


DNS = Flow(Peer(DNS_POD_LABELS, DNS_NAMESPACE), ports=(53,), protocols=("UDP", "TCP"))


def baseline(
    namespace: pulumi.Input[str], opts: pulumi.ResourceOptions, prefix: str = "netpol"
) -> None:
    """Default deny for every pod in the namespace, plus DNS egress for all of them."""
    everything = k8s.meta.v1.LabelSelectorArgs()
    k8s.networking.v1.NetworkPolicy(
        f"{prefix}-default-deny",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="default-deny", namespace=namespace),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=everything, policy_types=["Ingress", "Egress"]
        ),
        opts=opts,
    )
    k8s.networking.v1.NetworkPolicy(
        f"{prefix}-allow-dns",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="allow-dns", namespace=namespace),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=everything, policy_types=["Egress"], egress=[egress_rule(DNS)]
        ),
        opts=opts,
    )


def kubernetes_api(
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]]:
    """Egress to each address and port of the API server, as its EndpointSlice lists them."""
    endpoints = k8s.discovery.v1.EndpointSlice.get(
        "kubernetes-api", KUBERNETES_API_SLICE, opts=opts
    )

    def rules(slice_endpoints, slice_ports) -> list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]:
        ports = tuple(sorted(p["port"] for p in slice_ports or []))
        addresses = sorted({a for e in slice_endpoints or [] for a in e["addresses"]})
        return [egress_rule(Flow(host_peer(a), ports=ports)) for a in addresses]

    return pulumi.Output.all(endpoints.endpoints, endpoints.ports).apply(lambda v: rules(*v))
