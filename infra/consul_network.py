"""Consul's namespace: default deny, and exactly the flows Consul needs.

- the app namespace's pods -> the servers' HTTP API (8500);
- server <-> server: RPC (8300) and Serf LAN/WAN gossip (8301, 8302, TCP and UDP), by label, so
  it holds for any count of servers;
- the servers -> the Kubernetes API, for the auth method's token reviews;
- the servers -> the app pods on their ports (Consul's HTTP and gRPC health checks);
- the servers -> Prometheus, when the UI shows its metrics (the servers proxy the UI's queries);
- DNS for every pod;
- the chart's ACL bootstrap Job (server-acl-init) -> the servers (HTTP, and gRPC, where
  consul-k8s finds them) and the Kubernetes API (it stores the bootstrap token in a Secret);
  its cleanup Job -> the Kubernetes API; the login setup Job (consul_acl.py) -> the servers' HTTP.
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
from network_policy import Flow, Peer, baseline, egress_rule, pod_policy

ACL_CLEANUP_LABELS = {**ACL_INIT_LABELS, "component": "server-acl-init-cleanup"}
SERVERS = Peer(SERVER_LABELS)
GOSSIP = (
    Flow(SERVERS, ports=(SERVER_RPC_PORT,)),
    Flow(SERVERS, ports=(SERF_LAN_PORT, SERF_WAN_PORT), protocols=("TCP", "UDP")),
)


def policies(
    namespace: str,
    app_namespace: str,
    app_ports: Mapping[str, int],
    *,
    api: pulumi.Output[list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]],
    opts: pulumi.ResourceOptions,
    ui_metrics: Flow | None = None,
) -> None:
    """`app_ports`: the app pods' selector name -> the port Consul checks them on; `api`: the
    egress rules to the Kubernetes API (network_policy.kubernetes_api); `ui_metrics`: the flow
    to the Prometheus server the UI shows metrics from (its servers proxy the queries)."""
    baseline(namespace, opts, prefix="consul-netpol")
    checks = [
        egress_rule(Flow(Peer({"app.kubernetes.io/name": name}, app_namespace), ports=(port,)))
        for name, port in sorted(app_ports.items())
    ]
    if ui_metrics is not None:
        checks.append(egress_rule(ui_metrics))
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
