"""The Prometheus component: one server that scrapes every service's metrics port.

Why derived from the catalog: each service of services/*/service.yaml is one scrape job, named as
the service, finding its pods through the Kubernetes API (pods in the app namespace labelled with
the service's name, container port `metrics`); a new service folder is scraped with no other
change, and the flows that scraping needs (Prometheus -> each service's metrics port) come from
the same list, so they are open exactly while the job exists.

Why a Role, not a ClusterRole: the server only lists the app namespace's pods. It gets the
namespace's CA and a short-lived projected token where client-go's in-cluster config looks
(the ServiceAccount token is never mounted by default), and the flows to the API server's own
endpoints, as consul_network.py gives Consul's servers.

Why an emptyDir and Recreate: the server is a local view of the last day (the local stacks turn
it on; production stacks scrape with their own monitoring), so a new pod starts empty and there
is never a second server on the same data. A change of the scrape config rolls the pod (its
hash is a pod annotation): Prometheus only reads its config at start unless told to reload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import config
import pulumi
import pulumi_kubernetes as k8s
from microservice import (
    PART_OF,
    SERVICE_ANNOTATIONS,
    locked_down_container,
    locked_down_pod,
    selector_labels,
)
from network_policy import Flow, Peer, egress_rule, ingress_rule

COMPONENT_TYPE = "consul-microservices:monitoring:Prometheus"
NAME = config.PROMETHEUS  # a service of that name is refused while this one is on
PORT = 9090
LABELS = selector_labels(NAME)
RUN_AS = 65534  # the official image's `nobody`
CONFIG_DIR = "/etc/prometheus"
DATA_DIR = "/prometheus"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 (a path)
TOKEN_EXPIRATION_SECONDS = 3600
# prom/prometheus v3.5.0, the long-term-support line, pinned by the digest of its multi-architecture
# index. No registry is reachable where this was written; several independent public repositories
# pin this digest for v3.5.0 (on docker.io and quay.io alike). hack/versions.env's
# PROMETHEUS_VERSION is the same release as a Go module, for machines that build it.
DEFAULT_IMAGE = (
    "docker.io/prom/prometheus:v3.5.0"
    "@sha256:63805ebb8d2b3920190daf1cb14a60871b16fd38bed42b857a3182bc621f4996"
)
SCRAPE_INTERVAL = "10s"
RETENTION = "1d"
DATA_SIZE = "1Gi"
RESOURCES = k8s.core.v1.ResourceRequirementsArgs(
    requests={"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
    limits={"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1536Mi"},
)
CONFIG_HASH_ANNOTATION = "consul-microservices/prometheus-config"


def ui_flow(namespace: str) -> Flow:
    """The flow to the server from another namespace (Consul's servers, for the UI's metrics)."""
    return Flow(Peer(LABELS, namespace), ports=(PORT,))


def scrape_config(namespace: str, targets: Mapping[str, int]) -> str:
    """prometheus.yml: one job per service (`job` = its name), its pods' `metrics` port only.

    JSON is YAML, and json.dumps with sorted keys renders the same text for the same targets.
    """
    jobs = [
        {
            "job_name": service,
            "kubernetes_sd_configs": [
                {
                    "role": "pod",
                    "namespaces": {"names": [namespace]},
                    "selectors": [{"role": "pod", "label": f"app.kubernetes.io/name={service}"}],
                }
            ],
            "relabel_configs": [
                {
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": "metrics",
                    "action": "keep",
                },
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            ],
        }
        for service in sorted(targets)
    ]
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": jobs,
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class PrometheusArgs:
    """`targets`: each service's name -> its metrics port; `kubernetes_api`: egress rules to the
    API server's endpoints; `clients`: who may query the server (Consul's UI, in chart mode)."""

    namespace: pulumi.Input[str]
    image: str
    targets: Mapping[str, int]
    kubernetes_api: pulumi.Input[Sequence[k8s.networking.v1.NetworkPolicyEgressRuleArgs]]
    clients: Sequence[Peer] = ()
    image_pull_secrets: Sequence[pulumi.Input[str]] = field(default_factory=tuple)


class Prometheus(pulumi.ComponentResource):
    """A Prometheus server that scrapes the catalog's services, reachable at `address`."""

    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    config_map: k8s.core.v1.ConfigMap
    network_policy: k8s.networking.v1.NetworkPolicy
    address: pulumi.Output[str]  # http://prometheus.<namespace>.svc:9090
    service_name: pulumi.Output[str]
    namespace: pulumi.Output[str]

    def __init__(
        self, name: str, args: PrometheusArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {**LABELS, "app.kubernetes.io/part-of": PART_OF}
        meta = k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels)

        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=meta, automount_service_account_token=False, opts=child
        )
        role = k8s.rbac.v1.Role(
            f"{name}-role",
            metadata=meta,
            rules=[
                k8s.rbac.v1.PolicyRuleArgs(
                    api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"]
                )
            ],
            opts=child,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-rolebinding",
            metadata=meta,
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="Role", name=role.metadata.name
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(
                    kind="ServiceAccount", name=account.metadata.name, namespace=args.namespace
                )
            ],
            opts=child,
        )
        rendered = pulumi.Output.from_input(args.namespace).apply(
            lambda namespace: scrape_config(namespace, args.targets)
        )
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=meta, data={"prometheus.yml": rendered}, opts=child
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta,
            spec=self._deployment_spec(args, labels, account, self.config_map, rendered),
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=NAME,
                namespace=args.namespace,
                labels=labels,
                annotations=SERVICE_ANNOTATIONS,
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=LABELS,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=PORT, target_port="http")],
            ),
            opts=child,
        )
        scrapes = [
            egress_rule(Flow(Peer(selector_labels(service)), ports=(port,)))
            for service, port in sorted(args.targets.items())
        ]
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta,
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=LABELS),
                policy_types=["Ingress", "Egress"],
                ingress=[ingress_rule(Flow(peer, ports=(PORT,))) for peer in args.clients],
                egress=pulumi.Output.from_input(args.kubernetes_api).apply(
                    lambda api: [*scrapes, *api]
                ),
            ),
            opts=child,
        )
        self.service_name = self.service.metadata.name
        self.namespace = self.service.metadata.namespace
        self.address = pulumi.Output.concat(
            "http://", self.service_name, ".", self.namespace, f".svc:{PORT}"
        )
        self.register_outputs(
            {
                "address": self.address,
                "service_name": self.service_name,
                "namespace": self.namespace,
            }
        )

    @staticmethod
    def _deployment_spec(
        args: PrometheusArgs,
        labels: dict[str, str],
        account: k8s.core.v1.ServiceAccount,
        config_map: k8s.core.v1.ConfigMap,
        rendered: pulumi.Output[str],
    ) -> k8s.apps.v1.DeploymentSpecArgs:
        def http_probe(path: str, period: int, failures: int) -> k8s.core.v1.ProbeArgs:
            return k8s.core.v1.ProbeArgs(
                http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="http"),
                period_seconds=period,
                failure_threshold=failures,
                timeout_seconds=2,
            )

        container = k8s.core.v1.ContainerArgs(
            name=NAME,
            image=args.image,
            image_pull_policy="IfNotPresent",
            args=[
                f"--config.file={CONFIG_DIR}/prometheus.yml",
                f"--storage.tsdb.path={DATA_DIR}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address=:{PORT}",
            ],
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT)],
            resources=RESOURCES,
            security_context=locked_down_container(RUN_AS),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name="config", mount_path=CONFIG_DIR, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
                k8s.core.v1.VolumeMountArgs(name="token", mount_path=TOKEN_DIR, read_only=True),
            ],
            startup_probe=http_probe("/-/ready", period=1, failures=60),
            readiness_probe=http_probe("/-/ready", period=5, failures=3),
            liveness_probe=http_probe("/-/healthy", period=10, failures=3),
        )
        token = k8s.core.v1.ProjectedVolumeSourceArgs(
            sources=[
                k8s.core.v1.VolumeProjectionArgs(
                    service_account_token=k8s.core.v1.ServiceAccountTokenProjectionArgs(
                        path="token", expiration_seconds=TOKEN_EXPIRATION_SECONDS
                    )
                ),
                k8s.core.v1.VolumeProjectionArgs(
                    config_map=k8s.core.v1.ConfigMapProjectionArgs(
                        name="kube-root-ca.crt",
                        items=[k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")],
                    )
                ),
                k8s.core.v1.VolumeProjectionArgs(
                    downward_api=k8s.core.v1.DownwardAPIProjectionArgs(
                        items=[
                            k8s.core.v1.DownwardAPIVolumeFileArgs(
                                path="namespace",
                                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(
                                    field_path="metadata.namespace"
                                ),
                            )
                        ]
                    )
                ),
            ]
        )
        pull_secrets = [
            k8s.core.v1.LocalObjectReferenceArgs(name=s) for s in args.image_pull_secrets
        ]
        config_hash = rendered.apply(lambda text: hashlib.sha256(text.encode()).hexdigest()[:16])
        return k8s.apps.v1.DeploymentSpecArgs(
            replicas=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=LABELS),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=labels, annotations={CONFIG_HASH_ANNOTATION: config_hash}
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    service_account_name=account.metadata.name,
                    automount_service_account_token=False,
                    enable_service_links=False,
                    security_context=locked_down_pod(RUN_AS),
                    containers=[container],
                    volumes=[
                        k8s.core.v1.VolumeArgs(
                            name="config",
                            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                name=config_map.metadata.name
                            ),
                        ),
                        k8s.core.v1.VolumeArgs(
                            name="data",
                            empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=DATA_SIZE),
                        ),
                        k8s.core.v1.VolumeArgs(name="token", projected=token),
                    ],
                    image_pull_secrets=pull_secrets or None,
                ),
            ),
        )
