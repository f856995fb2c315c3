"""Consul: the official hashicorp/consul chart through helm.v3.Release, or an external server.

Why helm.v3.Release: Consul stays a real Helm release, which `helm status`, `helm rollback` and
HashiCorp's upgrade guidance for consul-k8s work on, and Helm itself runs the chart's hooks in
order. With our values the chart renders no hook besides a test pod; TLS (`global.tls.enabled`)
would add one, the `tls-init` pre-install Job.
Why the server's HTTP API: since consul-k8s 1.0 the chart is agentless (`client.enabled: false`),
so there is no node-local agent; the services register through
`http://<global.name>-server.<namespace>.svc:8500`. `global.name` is pinned to "consul" so the
chart's names do not depend on the release name: Services `consul-server` and `consul-ui`, and
server pods labelled `app: consul, component: server, release: consul`.
Why `global.acls.manageSystemACLs`: ACLs on with default policy deny, bootstrapped by the chart's
server-acl-init Job the way consul-k8s manages them; it stores the bootstrap token in the Secret
`consul-bootstrap-acl-token` and the token-review credentials in `consul-auth-method`, which
consul_acl.py uses to let the services log in.
"""

from __future__ import annotations

from dataclasses import dataclass

import prometheus
import pulumi
import pulumi_kubernetes as k8s
from config import StackConfig
from network_policy import Peer

CHART = "consul"
RELEASE_NAME = "consul"
GLOBAL_NAME = "consul"  # the chart's `consul.fullname`; prefixes every object it creates
HTTP_PORT = 8500
UI_SERVICE = f"{GLOBAL_NAME}-ui"
UI_SERVICE_PORT = 80
SERVER_LABELS = {"app": CHART, "component": "server", "release": RELEASE_NAME}
# The chart's server-acl-init Job (bootstraps ACLs; talks to the servers and the Kubernetes API).
ACL_INIT_LABELS = {"app": CHART, "component": "server-acl-init", "release": RELEASE_NAME}
SERVER_GRPC_PORT = 8502  # consul-k8s control-plane commands find the servers over it
SERVER_RPC_PORT, SERF_LAN_PORT, SERF_WAN_PORT = 8300, 8301, 8302
BOOTSTRAP_TOKEN_SECRET = f"{GLOBAL_NAME}-bootstrap-acl-token"  # key `token`: the management token
AUTH_METHOD_SECRET = f"{GLOBAL_NAME}-auth-method"  # `token`, `ca.crt` of a token reviewer
# consul-k8s 1.9.3's global.image: the Consul CLI of the login setup Job when consulImage is unset.
CHART_CONSUL_IMAGE = "hashicorp/consul:1.22.3"


@dataclass(frozen=True)
class ConsulEndpoint:
    """How the services reach Consul, how Consul's health checks reach them, and where its UI is."""

    http_addr: pulumi.Output[str]
    port: int
    server: Peer
    namespace: pulumi.Output[str] | None  # None: outside the cluster
    ui_service: str | None  # the in-cluster UI Service, None when there is none
    release: k8s.helm.v3.Release | None
    tokens: dict[str, pulumi.Output[str]] | None = None  # external: each service's fixed token
    auth_method: str | None = None  # in-cluster: the auth method the services log in to


def ui_metrics(config: StackConfig) -> dict:
    """The UI's metrics from the program's Prometheus (prometheusInstall), queried through the
    servers' metrics proxy (/v1/internal/ui/metrics-proxy/). The UI overlays them on a service's
    topology view, which Consul draws for services in its mesh only (connectInject, off here)."""
    if not config.consul_ui_metrics:
        return {}
    base_url = f"http://{prometheus.NAME}.{config.namespace}.svc:{prometheus.PORT}"
    return {"metrics": {"enabled": True, "provider": "prometheus", "baseURL": base_url}}


def values(config: StackConfig) -> dict:
    """Chart values: agentless servers, ACLs managed by the chart, UI on request, no mesh or DNS.

    A single server gets `affinity: ""` (the chart renders affinity only when it is non-empty), so
    it schedules on a one-node kind or minikube cluster; more servers keep the chart's required
    anti-affinity. consulImage/consulK8sImage replace the chart's images (mirrors, air gaps).
    """
    server: dict = {"replicas": config.consul_server_replicas, "storage": config.consul_storage}
    if config.consul_server_replicas == 1:
        server["affinity"] = ""
    images = {"image": config.consul_image, "imageK8S": config.consul_k8s_image}
    return {
        "global": {"name": GLOBAL_NAME, "datacenter": "dc1", "acls": {"manageSystemACLs": True}}
        | {k: v for k, v in images.items() if v},
        "server": server,
        "client": {"enabled": False},
        "ui": {"enabled": config.consul_ui, "service": {"type": "ClusterIP"}} | ui_metrics(config),
        "connectInject": {"enabled": False},
        "syncCatalog": {"enabled": False},
        # Consul DNS is unused; with it the chart's ACL bootstrap gives the anonymous token read
        # on every service and node (`-allow-dns`), so off, anonymous requests can do nothing.
        "dns": {"enabled": False},
    }


def deploy(config: StackConfig, opts: pulumi.ResourceOptions) -> ConsulEndpoint:
    url, cidr = config.consul_url, config.consul_cidr
    if url is not None and cidr is not None:  # external: validated together in config
        return ConsulEndpoint(
            http_addr=pulumi.Output.from_input(f"{url.scheme}://{url.host}:{url.port}"),
            port=url.port or HTTP_PORT,
            server=Peer(cidr=cidr),
            namespace=None,
            ui_service=None,
            release=None,
            tokens=config.consul_tokens,
        )
    chart, repository = CHART, k8s.helm.v3.RepositoryOptsArgs(repo=config.consul_chart_repo)
    if config.consul_chart_path:
        chart, repository = config.consul_chart_path, None
    release = k8s.helm.v3.Release(
        "consul",
        name=RELEASE_NAME,
        chart=chart,
        version=config.consul_chart_version,
        repository_opts=repository,
        namespace=config.consul_namespace,
        values=values(config),
        opts=opts,
    )
    namespace = release.status.namespace
    return ConsulEndpoint(
        http_addr=pulumi.Output.concat(
            "http://", GLOBAL_NAME, "-server.", namespace, f".svc:{HTTP_PORT}"
        ),
        port=HTTP_PORT,
        server=Peer(SERVER_LABELS, config.consul_namespace),
        namespace=namespace,
        ui_service=UI_SERVICE if config.consul_ui else None,
        release=release,
    )
