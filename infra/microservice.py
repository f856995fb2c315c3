"""The Microservice component: everything one stateless service needs, secure by default.

Children (attributes): `service_account` (no token), `deployment`, `service`,
`disruption_budget`, `network_policy`, `autoscaler` (None without one) and `env_secret` (None
unless some env values are secrets). The pod gets no default ServiceAccount token; it may get one
projected token, short-lived and rotated by the kubelet, to prove who it is to a third party.
The pod runs as uid/gid 10001 with a read-only root filesystem (an emptyDir on /tmp is the only
writable path), no privilege escalation, no capabilities and the RuntimeDefault seccomp profile,
so it passes Pod Security "restricted". Its arguments are Kubernetes types and plain Python,
nothing of this stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

COMPONENT_TYPE = "consul-microservices:index:Microservice"
PART_OF = "consul-microservices"
RUN_AS = 10001
# A pod that is going away keeps serving this long before it gets SIGTERM (a preStop sleep): the
# endpoint controller and every node's kube-proxy take a moment to stop sending it connections,
# and with an immediate SIGTERM a rollout under load refused or reset them.
DRAIN_SECONDS = 5
# A pod stays bound to a node that stopped answering (NotReady or unreachable) this long before it
# is evicted and replaced elsewhere; Kubernetes' default is 300 s. The node's other replicas serve
# meanwhile (spread over nodes), and a node that is back within it keeps its pods.
NODE_LOSS_TOLERATION_SECONDS = 30
# The Kubernetes provider's await of a Service waits 10 s after each change of its endpoints for
# them to settle (pulumi-kubernetes provider/pkg/await/service.go), so an up ended 10 s after the
# last pod was ready (make bench-deploy's breakdown). The workloads' own awaits wait for ready
# pods, and a Service routes to a pod as soon as it is ready: its await only added time.
SERVICE_ANNOTATIONS = {"pulumi.com/skipAwait": "true"}


def service_address(name: str, namespace: pulumi.Input[str], port: int) -> pulumi.Output[str]:
    """`<service>.<namespace>.svc:<port>`: how clients in the cluster reach a Service."""
    return pulumi.Output.concat(name, ".", namespace, f".svc:{port}")


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select a service's pods; peers use them in NetworkPolicies."""
    return {"app.kubernetes.io/name": name}


@dataclass(frozen=True)
class HttpProbes:
    liveness_path: str
    readiness_path: str


@dataclass(frozen=True)
class GrpcProbes:
    """Kubernetes' native gRPC probe (GA since 1.27) against grpc.health.v1."""

    liveness_service: str
    readiness_service: str


@dataclass(frozen=True)
class ProjectedToken:
    """A ServiceAccount token at `<directory>/token`; `audience` None: the API server's own."""

    directory: str
    expiration_seconds: int
    audience: str | None = None


@dataclass(frozen=True)
class MicroserviceArgs:
    """`max_replicas` > 0 adds an HPA between `replicas` and it; ingress/egress: who may talk to
    the pods and whom they may reach (the namespace is expected to deny everything else).
    `secret_env` values reach the container through a Secret of the component, never in clear.
    `metrics_port`: where the container serves Prometheus metrics, a container port named
    `metrics` and METRICS_PORT in its env (None: no metrics port)."""

    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    port_name: str
    port: int
    probes: HttpProbes | GrpcProbes
    resources: k8s.core.v1.ResourceRequirementsArgs
    replicas: int
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    secret_env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    projected_token: ProjectedToken | None = None
    pod_annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    max_replicas: int = 0
    cpu_utilization: int = 70
    service_type: str = "ClusterIP"
    ingress: Sequence[k8s.networking.v1.NetworkPolicyIngressRuleArgs] = ()
    egress: Sequence[k8s.networking.v1.NetworkPolicyEgressRuleArgs] = ()
    image_pull_secrets: Sequence[pulumi.Input[str]] = ()
    tmp_size_limit: pulumi.Input[str] | None = None
    termination_grace_seconds: int = 30  # after SIGTERM, i.e. after the drain
    metrics_port: int | None = None


def _probe(
    args: MicroserviceArgs, target: str, period: int, failures: int
) -> k8s.core.v1.ProbeArgs:
    if isinstance(args.probes, HttpProbes):
        action = {"http_get": k8s.core.v1.HTTPGetActionArgs(path=target, port=args.port_name)}
    else:
        action = {"grpc": k8s.core.v1.GRPCActionArgs(port=args.port, service=target)}
    return k8s.core.v1.ProbeArgs(
        period_seconds=period, failure_threshold=failures, timeout_seconds=2, **action
    )


def _probes(args: MicroserviceArgs) -> dict[str, k8s.core.v1.ProbeArgs]:
    probes = args.probes
    live, ready = (
        (probes.liveness_path, probes.readiness_path)
        if isinstance(probes, HttpProbes)
        else (probes.liveness_service, probes.readiness_service)
    )
    # A new pod serves from the first readiness probe after its startup probe passes: short
    # periods make a rollout's pods ready seconds sooner (make bench-deploy); the budgets stay
    # 60 s to start and 6 s of failed checks before a pod leaves its Service.
    return {
        "startup_probe": _probe(args, live, period=1, failures=60),
        "liveness_probe": _probe(args, live, period=10, failures=3),
        "readiness_probe": _probe(args, ready, period=2, failures=3),
    }


METRICS_PORT_NAME = "metrics"


def _env(args: MicroserviceArgs, env_secret: str | None) -> list[k8s.core.v1.EnvVarArgs]:
    """Static env from args, secret env from `env_secret`, the metrics port, the pod's own name
    and IP."""

    def field_ref(path: str) -> k8s.core.v1.EnvVarSourceArgs:
        return k8s.core.v1.EnvVarSourceArgs(
            field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path=path)
        )

    env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in args.env.items()]
    secret_env = [
        k8s.core.v1.EnvVarArgs(
            name=k,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=env_secret, key=k)
            ),
        )
        for k in args.secret_env
    ]
    metrics = (
        []
        if args.metrics_port is None
        else [k8s.core.v1.EnvVarArgs(name="METRICS_PORT", value=str(args.metrics_port))]
    )
    return [
        *env,
        *secret_env,
        *metrics,
        k8s.core.v1.EnvVarArgs(name="SERVICE_ID", value_from=field_ref("metadata.name")),
        k8s.core.v1.EnvVarArgs(name="SERVICE_ADDRESS", value_from=field_ref("status.podIP")),
    ]


def _container_ports(args: MicroserviceArgs) -> list[k8s.core.v1.ContainerPortArgs]:
    """The service's port; the metrics port, named for whoever scrapes it (not in the Service)."""
    ports = [k8s.core.v1.ContainerPortArgs(name=args.port_name, container_port=args.port)]
    if args.metrics_port is not None:
        ports.append(
            k8s.core.v1.ContainerPortArgs(name=METRICS_PORT_NAME, container_port=args.metrics_port)
        )
    return ports


def locked_down_container(user: int = RUN_AS) -> k8s.core.v1.SecurityContextArgs:
    """Pod Security "restricted", numeric non-root user, nothing writable but mounted volumes."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=user,
        run_as_group=user,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def locked_down_pod(user: int = RUN_AS) -> k8s.core.v1.PodSecurityContextArgs:
    """The pod's side of locked_down_container; volumes are writable by the user's group."""
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=user,
        run_as_group=user,
        fs_group=user,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


TOKEN_VOLUME = "serviceaccount-token"  # noqa: S105 (a volume name)


def _token_mounts(token: ProjectedToken | None) -> list[k8s.core.v1.VolumeMountArgs]:
    if token is None:
        return []
    return [
        k8s.core.v1.VolumeMountArgs(name=TOKEN_VOLUME, mount_path=token.directory, read_only=True)
    ]


def _token_volumes(token: ProjectedToken | None) -> list[k8s.core.v1.VolumeArgs]:
    if token is None:
        return []
    projection = k8s.core.v1.ServiceAccountTokenProjectionArgs(
        path="token", audience=token.audience, expiration_seconds=token.expiration_seconds
    )
    return [
        k8s.core.v1.VolumeArgs(
            name=TOKEN_VOLUME,
            projected=k8s.core.v1.ProjectedVolumeSourceArgs(
                sources=[k8s.core.v1.VolumeProjectionArgs(service_account_token=projection)]
            ),
        )
    ]


class Microservice(pulumi.ComponentResource):
    """One service: pods, a stable name, disruption budget, flows and optional autoscaling."""

    service_account: k8s.core.v1.ServiceAccount
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    disruption_budget: k8s.policy.v1.PodDisruptionBudget
    network_policy: k8s.networking.v1.NetworkPolicy
    autoscaler: k8s.autoscaling.v2.HorizontalPodAutoscaler | None
    env_secret: k8s.core.v1.Secret | None
    service_name: pulumi.Output[str]
    namespace: pulumi.Output[str]
    port: int
    address: pulumi.Output[str]  # <service>.<namespace>.svc:<port>, for clients in the cluster

    def __init__(
        self, name: str, args: MicroserviceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        selector = selector_labels(name)
        labels = {**selector, "app.kubernetes.io/part-of": PART_OF}

        def meta(suffix: str = "") -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=f"{name}{suffix}", namespace=args.namespace, labels=labels
            )

        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=meta(), automount_service_account_token=False, opts=child
        )
        self.env_secret = None
        if args.secret_env:
            self.env_secret = k8s.core.v1.Secret(
                f"{name}-env",
                metadata=meta("-env"),
                string_data={k: pulumi.Output.secret(v) for k, v in args.secret_env.items()},
                opts=child,
            )
        env_secret = self.env_secret.metadata.name if self.env_secret else None
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(),
            spec=self._deployment_spec(name, args, labels, self.service_account, env_secret),
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, labels=labels, annotations=SERVICE_ANNOTATIONS
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type=args.service_type,
                selector=selector,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name=args.port_name, port=args.port, target_port=args.port_name
                    )
                ],
            ),
            opts=child,
        )
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector)
            ),
            opts=child,
        )
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=list(args.ingress),
                egress=list(args.egress),
            ),
            opts=child,
        )
        self.autoscaler = None
        if args.max_replicas:
            self.autoscaler = self._autoscaler(name, args, meta(), self.deployment, child)

        self.service_name = self.service.metadata.name
        self.namespace = self.service.metadata.namespace
        self.port = args.port
        self.address = service_address(name, self.namespace, args.port)
        self.register_outputs(
            {
                "service_name": self.service_name,
                "namespace": self.namespace,
                "port": self.port,
                "address": self.address,
            }
        )

    @staticmethod
    def _deployment_spec(
        name: str,
        args: MicroserviceArgs,
        labels: dict[str, str],
        account: k8s.core.v1.ServiceAccount,
        env_secret: pulumi.Output[str] | None,
    ) -> k8s.apps.v1.DeploymentSpecArgs:
        selector = selector_labels(name)
        container = k8s.core.v1.ContainerArgs(
            name=name,
            image=args.image,
            image_pull_policy="IfNotPresent",
            ports=_container_ports(args),
            env=_env(args, env_secret),
            resources=args.resources,
            security_context=locked_down_container(),
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),  # noqa: S108
                *_token_mounts(args.projected_token),
            ],
            lifecycle=k8s.core.v1.LifecycleArgs(
                pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                    sleep=k8s.core.v1.SleepActionArgs(seconds=DRAIN_SECONDS)
                )
            ),
            **_probes(args),
        )
        spread = None
        if args.replicas > 1:
            spread = [
                k8s.core.v1.TopologySpreadConstraintArgs(
                    max_skew=1,
                    topology_key="kubernetes.io/hostname",
                    when_unsatisfiable="ScheduleAnyway",
                    label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                )
            ]
        pull_secrets = [
            k8s.core.v1.LocalObjectReferenceArgs(name=s) for s in args.image_pull_secrets
        ]
        pod = k8s.core.v1.PodSpecArgs(
            service_account_name=account.metadata.name,
            automount_service_account_token=False,
            enable_service_links=False,
            termination_grace_period_seconds=DRAIN_SECONDS + args.termination_grace_seconds,
            security_context=locked_down_pod(),
            containers=[container],
            volumes=[
                k8s.core.v1.VolumeArgs(
                    name="tmp",
                    empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=args.tmp_size_limit),
                ),
                *_token_volumes(args.projected_token),
            ],
            topology_spread_constraints=spread,
            tolerations=[
                k8s.core.v1.TolerationArgs(
                    key=f"node.kubernetes.io/{condition}",
                    operator="Exists",
                    effect="NoExecute",
                    toleration_seconds=NODE_LOSS_TOLERATION_SECONDS,
                )
                for condition in ("not-ready", "unreachable")
            ],
            image_pull_secrets=pull_secrets or None,
        )
        return k8s.apps.v1.DeploymentSpecArgs(
            # With an autoscaler the HPA owns .spec.replicas; setting it here would fight it
            # under server-side apply.
            replicas=None if args.max_replicas else args.replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                    max_unavailable=0, max_surge=1
                ),
            ),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=labels, annotations=dict(args.pod_annotations) or None
                ),
                spec=pod,
            ),
        )

    @staticmethod
    def _autoscaler(
        name: str,
        args: MicroserviceArgs,
        metadata: k8s.meta.v1.ObjectMetaArgs,
        deployment: k8s.apps.v1.Deployment,
        child: pulumi.ResourceOptions,
    ) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
        return k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=metadata,
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=deployment.metadata.name
                ),
                min_replicas=args.replicas,
                max_replicas=args.max_replicas,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization", average_utilization=args.cpu_utilization
                            ),
                        ),
                    )
                ],
            ),
            opts=child,
        )
