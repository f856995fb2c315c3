"""Consul: the official hashicorp/consul chart through helm.v3.Release, or an external server.

Why helm.v3.Release: the chart's gossip-key and TLS init jobs are Helm hooks, which helm.v4.Chart
drops. Why the server's HTTP API: since consul-k8s 1.0 the chart is agentless (`client.enabled:
false`), so there is no node-local agent; the services register through
`http://<global.name>-server.<namespace>.svc:8500`. `global.name` is pinned to "consul" so the
chart's names do not depend on the release name: Services `consul-server` and `consul-ui`, and
server pods labelled `app: consul, component: server, release: consul`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from config import ConsulSettings
from network_policy import Peer

CHART = "consul"
RELEASE_NAME = "consul"
GLOBAL_NAME = "consul"  # the chart's `consul.fullname`; prefixes every object it creates
HTTP_PORT = 8500
UI_SERVICE_PORT = 80
SERVER_LABELS = {"app": CHART, "component": "server", "release": RELEASE_NAME}


@dataclass(frozen=True)
class ConsulEndpoint:
    """How the services reach Consul, and how Consul's health checks reach the services."""

    http_addr: pulumi.Output[str]
    port: int
    server: Peer
    ui_hint: pulumi.Output[str]
    release: k8s.helm.v3.Release | None


def values(settings: ConsulSettings) -> dict:
    """Chart values: agentless servers, UI on request, no mesh injection.

    A single server gets `affinity: ""` (the chart renders affinity only when it is non-empty), so
    it schedules on a one-node kind or minikube cluster; more servers keep the chart's required
    anti-affinity.
    """
    server: dict = {"replicas": settings.server_replicas, "storage": settings.storage}
    if settings.server_replicas == 1:
        server["affinity"] = ""
    return {
        "global": {"name": GLOBAL_NAME, "datacenter": "dc1"},
        "server": server,
        "client": {"enabled": False},
        "ui": {"enabled": settings.ui, "service": {"type": "ClusterIP"}},
        "connectInject": {"enabled": False},
        "syncCatalog": {"enabled": False},
    }


def _external(settings: ConsulSettings) -> ConsulEndpoint:
    address = settings.address or ""
    port = int(address.rsplit(":", 1)[1])
    return ConsulEndpoint(
        http_addr=pulumi.Output.from_input(address),
        port=port,
        server=Peer(cidr=settings.external_cidr),
        ui_hint=pulumi.Output.from_input(f"external Consul: open {address}/ui"),
        release=None,
    )


def deploy(settings: ConsulSettings, kubectl: str, opts: pulumi.ResourceOptions) -> ConsulEndpoint:
    if not settings.install:
        return _external(settings)
    chart, repository = CHART, k8s.helm.v3.RepositoryOptsArgs(repo=settings.chart_repo)
    if settings.chart_path:
        chart, repository = settings.chart_path, None
    release = k8s.helm.v3.Release(
        "consul",
        name=RELEASE_NAME,
        chart=chart,
        version=settings.chart_version,
        repository_opts=repository,
        namespace=settings.namespace,
        values=values(settings),
        opts=opts,
    )
    namespace = release.status.namespace
    ui_hint = pulumi.Output.concat(
        kubectl,
        " -n ",
        namespace,
        f" port-forward svc/{GLOBAL_NAME}-ui {HTTP_PORT}:{UI_SERVICE_PORT}",
        f"  # then open http://localhost:{HTTP_PORT}/ui",
    )
    if not settings.ui:
        ui_hint = pulumi.Output.from_input("Consul UI disabled (consulUi is false)")
    return ConsulEndpoint(
        http_addr=pulumi.Output.concat(
            "http://", GLOBAL_NAME, "-server.", namespace, f".svc:{HTTP_PORT}"
        ),
        port=HTTP_PORT,
        server=Peer(SERVER_LABELS, settings.namespace),
        ui_hint=ui_hint,
        release=release,
    )
