"""Consul's namespace: default deny, and exactly the flows Consul needs.

- the app namespace's pods -> the servers' HTTP API (8500);
- server <-> server: RPC (8300) and Serf LAN/WAN gossip (8301, 8302, TCP and UDP), by label, so
  it holds for any count of servers;
- the servers -> the Kubernetes API, for the auth method's token reviews;
- the servers -> the app pods on their ports (Consul's HTTP and gRPC health checks);
- DNS for every pod;
- the chart's ACL bootstrap Job (server-acl-init) -> the servers (HTTP, and gRPC, where
  consul-k8s finds them) and the Kubernetes API (it stores the bootstrap token in a Secret);
  its cleanup Job -> the Kubernetes API; the login setup Job (consul_acl.py) -> the servers' HTTP.

Why the Kubernetes API by address: NetworkPolicies see traffic after the Service's address is
translated, so the peer is the API server's own endpoints, read from the `kubernetes`
EndpointSlice that the API server keeps in `default`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s
from consul_acl import SETUP_LABELS
from consul_server import (
    ACL_INIT_LABELS,
    HTTP_PORT,
    RELEASE_NAME,
    SERF_LAN_PORT,
    SERF_WAN_PORT,
    SERVER_GRPC_PORT,
    SERVER_LABELS,
    SERVER_RPC_PORT,
)
from network_policy import Flow, Peer, baseline, egress_rule, host_peer, pod_policy

ACL_CLEANUP_LABELS = {**ACL_INIT_LABELS, "component": "server-acl-init-cleanup"}
KUBERNETES_API_SLICE = "default/kubernetes"
SERVERS = Peer(SERVER_LABELS)
GOSSIP = (
    Flow(SERVERS, ports=(SERVER_RPC_PORT,)),
    Flow(SERVERS, ports=(SERF_LAN_PORT, SERF_WAN_PORT), protocols=("TCP", "UDP")),
)


def policies(
    namespace: str,
    app_namespace: str,
    app_ports: Mapping[str, int],
    opts: pulumi.ResourceOptions,
) -> None:
    """`app_ports`: the app pods' selector name -> the port Consul checks them on."""
    baseline(namespace, opts, prefix="consul-netpol")
    api = kubernetes_api(opts)
    checks = [
        egress_rule(Flow(Peer({"app.kubernetes.io/name": name}, app_namespace), ports=(port,)))
        for name, port in sorted(app_ports.items())
    ]
    pod_policy(
        "consul-servers",
        namespace,
        SERVER_LABELS,
        ingress=[
            Flow(Peer({}, app_namespace), ports=(HTTP_PORT,)),
            Flow(Peer(SETUP_LABELS), ports=(HTTP_PORT,)),
            Flow(Peer(ACL_INIT_LABELS), ports=(HTTP_PORT, SERVER_GRPC_PORT)),
            *GOSSIP,
        ],
        egress=api.apply(lambda rules: [*map(egress_rule, GOSSIP), *checks, *rules]),
        opts=opts,
    )
    to_servers = egress_rule(Flow(SERVERS, ports=(HTTP_PORT, SERVER_GRPC_PORT)))
    pod_policy(
        f"{RELEASE_NAME}-acl-init",
        namespace,
        ACL_INIT_LABELS,
        egress=api.apply(lambda rules: [to_servers, *rules]),
        opts=opts,
    )
    pod_policy(
        f"{RELEASE_NAME}-acl-init-cleanup", namespace, ACL_CLEANUP_LABELS, egress=api, opts=opts
    )
    pod_policy(
        "consul-service-logins",
        namespace,
        SETUP_LABELS,
        egress=[egress_rule(Flow(SERVERS, ports=(HTTP_PORT,)))],
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
