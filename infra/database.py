"""A service's own PostgreSQL: a StatefulSet of one with its volume, a Service, the Secret both
sides read the password from, and a NetworkPolicy that admits only the owning service's pods.

Why a StatefulSet: a stable pod name and a volume claim that follows it, so a rescheduled or
replaced database pod finds its data again (the claim outlives the StatefulSet; deleting the
namespace, as `pulumi destroy` does, removes it). Why the password is generated here: nobody has
to choose, store or rotate one by hand; it exists only as a Pulumi secret (encrypted in the state)
and in a Kubernetes Secret, never in a manifest. The pod passes Pod Security "restricted" as the
services do: uid 999 (the official image's postgres user), a read-only root filesystem with
emptyDirs for the socket directory and /tmp, the data on the volume.

Why a DaemonSet beside it: when the database's pod moves (its node drained or lost), the outage is
the time from the old pod's stop to the new one's readiness, and on a node that had never run it
most of that was pulling the image (7.5 s of 10.5 s for a 300 MB image on kind). The DaemonSet
keeps the image on every node, in a pod that only sleeps, with no token, no traffic (the
namespace's default deny) and a millicore.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grammar
import pulumi
import pulumi_kubernetes as k8s
from catalog import Manifest
from config import StackConfig
from microservice import (
    SERVICE_ANNOTATIONS,
    locked_down_container,
    locked_down_pod,
    selector_labels,
)
from network_policy import Flow, Peer, pod_policy
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

COMPONENT_TYPE = "consul-microservices:index:Postgres"
PORT = 5432
RUN_AS = 999  # the official image's postgres user
# docker.io/library/postgres:17.6-bookworm, pinned by the digest of its multi-architecture index.
# No registry is reachable where this was written; the digest is the one several independent public
# repositories pin (one names its linux/amd64 child, sha256:45cd22f8…).
DEFAULT_IMAGE = (
    "docker.io/library/postgres:17.6-bookworm"
    "@sha256:f3bd19c606e442c3d7bdfa8002e03fe260a1023351e0ea4598032022b68dd6e3"
)
DATA_DIR = "/var/lib/postgresql/data"
RESOURCES = k8s.core.v1.ResourceRequirementsArgs(
    requests={"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "32Mi"},
    limits={"cpu": "1", "memory": "512Mi", "ephemeral-storage": "128Mi"},
)


class _PasswordProvider(ResourceProvider):
    """Generates once; a second `up` keeps the password (nothing to diff)."""

    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=secrets.token_hex(8), outs={"value": secrets.token_urlsafe(24)})

    def diff(self, _id: str, _olds: dict, _news: dict) -> DiffResult:
        return DiffResult(changes=False)


class GeneratedPassword(Resource):
    """A random password, a secret output of the state."""

    value: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["value"])
        )
        super().__init__(_PasswordProvider(), name, {"value": None}, opts)


@dataclass(frozen=True)
class PostgresArgs:
    """`owner`: the service whose pods alone may connect (and whose database it is)."""

    namespace: pulumi.Input[str]
    owner: str
    image: str
    storage: str
    storage_class: str = ""  # empty: the cluster's default
    image_pull_secrets: Sequence[pulumi.Input[str]] = ()


class Postgres(pulumi.ComponentResource):
    """The database `<owner>` of the role `<owner>`, at `<name>.<namespace>.svc:5432`."""

    password: pulumi.Output[str]
    url: pulumi.Output[str]  # postgresql://<user>@<host>:5432/<db>: no password in it
    server: Peer

    def __init__(
        self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = selector_labels(name)
        database = user = args.owner.replace("-", "_")

        def meta(suffix: str = "") -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=f"{name}{suffix}", namespace=args.namespace, labels=labels
            )

        self.password = GeneratedPassword(f"{name}-password", opts=child).value
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=meta("-credentials"),
            string_data={"POSTGRES_PASSWORD": pulumi.Output.secret(self.password)},
            opts=child,
        )
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, labels=labels, annotations=SERVICE_ANNOTATIONS
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=labels,
                ports=[k8s.core.v1.ServicePortArgs(name="postgres", port=PORT, target_port=PORT)],
                # The pod's address is routed from the moment it has one, not after its first
                # readiness probe: a database that moved answers as soon as it listens, and
                # until then a connection is refused at once, which the service's client retries.
                publish_not_ready_addresses=True,
            ),
            opts=child,
        )
        env = {"POSTGRES_USER": user, "POSTGRES_DB": database, "PGDATA": f"{DATA_DIR}/pgdata"}
        k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=meta(),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                # The names, not the Service's outputs: those resolve only once the Service has
                # waited for an endpoint, i.e. for this StatefulSet's pod (about 10 s serialized).
                service_name=name,
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=_pod_spec(args, env, credentials.metadata.name, user, database),
                ),
                volume_claim_templates=[
                    k8s.core.v1.PersistentVolumeClaimArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(name="data"),
                        spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=args.storage_class or None,
                            resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                                requests={"storage": args.storage}
                            ),
                        ),
                    )
                ],
            ),
            opts=child,
        )
        k8s.apps.v1.DaemonSet(
            f"{name}-image",
            metadata=meta("-image"),
            spec=_image_keeper(args, selector_labels(f"{name}-image")),
            opts=child,
        )
        pod_policy(
            f"{name}-netpol",
            args.namespace,
            labels,
            ingress=[Flow(Peer(selector_labels(args.owner)), ports=(PORT,))],
            opts=child,
        )
        self.server = Peer(labels)
        self.url = pulumi.Output.concat(
            f"postgresql://{user}@{name}.", args.namespace, f".svc:{PORT}/{database}"
        )
        self.register_outputs({"url": self.url})


def _pod_spec(
    args: PostgresArgs,
    env: Mapping[str, str],
    credentials: pulumi.Input[str],
    user: str,
    database: str,
) -> k8s.core.v1.PodSpecArgs:
    ready = ["pg_isready", "-h", "127.0.0.1", "-p", str(PORT), "-U", user, "-d", database]
    container = k8s.core.v1.ContainerArgs(
        name="postgres",
        image=args.image,
        image_pull_policy="IfNotPresent",
        ports=[k8s.core.v1.ContainerPortArgs(name="postgres", container_port=PORT)],
        env=[
            *(k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in env.items()),
            k8s.core.v1.EnvVarArgs(
                name="POSTGRES_PASSWORD",
                value_from=k8s.core.v1.EnvVarSourceArgs(
                    secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                        name=credentials, key="POSTGRES_PASSWORD"
                    )
                ),
            ),
        ],
        resources=RESOURCES,
        security_context=locked_down_container(RUN_AS),
        readiness_probe=k8s.core.v1.ProbeArgs(
            exec_=k8s.core.v1.ExecActionArgs(command=ready), period_seconds=2, timeout_seconds=3
        ),
        liveness_probe=k8s.core.v1.ProbeArgs(
            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=PORT),
            initial_delay_seconds=30,
            period_seconds=10,
        ),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR),
            k8s.core.v1.VolumeMountArgs(name="run", mount_path="/var/run/postgresql"),
            k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),  # noqa: S108
        ],
    )
    empty = k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="64Mi")
    return _postgres_pod(
        args,
        container,
        grace_seconds=30,
        volumes=[
            k8s.core.v1.VolumeArgs(name="run", empty_dir=empty),
            k8s.core.v1.VolumeArgs(name="tmp", empty_dir=empty),
        ],
    )


def _postgres_pod(
    args: PostgresArgs,
    container: k8s.core.v1.ContainerArgs,
    grace_seconds: int,
    volumes: Sequence[k8s.core.v1.VolumeArgs] = (),
) -> k8s.core.v1.PodSpecArgs:
    """A pod of the database's image as uid 999, with no token and no Service links."""
    return k8s.core.v1.PodSpecArgs(
        automount_service_account_token=False,
        enable_service_links=False,
        security_context=locked_down_pod(RUN_AS),
        termination_grace_period_seconds=grace_seconds,
        containers=[container],
        volumes=list(volumes) or None,
        image_pull_secrets=[
            k8s.core.v1.LocalObjectReferenceArgs(name=s) for s in args.image_pull_secrets
        ]
        or None,
    )


def _image_keeper(args: PostgresArgs, labels: dict[str, str]) -> k8s.apps.v1.DaemonSetSpecArgs:
    """Every node holds the database's image: a pod of it that sleeps (see the module's why)."""
    keeper = k8s.core.v1.ContainerArgs(
        name="image",
        image=args.image,
        image_pull_policy="IfNotPresent",
        command=["sleep", "infinity"],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "1m", "memory": "4Mi", "ephemeral-storage": "1Mi"},
            limits={"cpu": "10m", "memory": "16Mi", "ephemeral-storage": "1Mi"},
        ),
        security_context=locked_down_container(RUN_AS),
    )
    return k8s.apps.v1.DaemonSetSpecArgs(
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
            spec=_postgres_pod(args, keeper, grace_seconds=0),
        ),
    )


@dataclass(frozen=True)
class DatabaseEndpoint:
    """What the owning service's pods get: plain env, secret env, and the flow to the database."""

    env: Mapping[str, pulumi.Input[str]]
    secret_env: Mapping[str, pulumi.Input[str]]
    flow: Flow


def for_service(
    service: Manifest,
    stack: StackConfig,
    namespace: pulumi.Input[str],
    pull_secret: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions,
) -> DatabaseEndpoint:
    """The database `service` declares: the stack's external one (services.<name>.databaseUrl,
    validated in config), or a Postgres of its own, `<name>-db`."""
    overrides = stack.overrides(service.name)
    if overrides.database_url:
        host, port = grammar.database_url(overrides.database_url)
        cidr = overrides.database_cidr or grammar.host_network(host)
        return DatabaseEndpoint(
            env={},
            secret_env={"DATABASE_URL": pulumi.Output.secret(overrides.database_url)},
            flow=Flow(Peer(cidr=cidr), ports=(port,)),
        )
    database = Postgres(
        f"{service.name}-db",
        PostgresArgs(
            namespace=namespace,
            owner=service.name,
            image=stack.postgres_image or DEFAULT_IMAGE,
            storage=stack.postgres_storage,
            storage_class=stack.postgres_storage_class,
            image_pull_secrets=[pull_secret] if pull_secret else [],
        ),
        opts,
    )
    return DatabaseEndpoint(
        env={"DATABASE_URL": database.url},
        secret_env={"PGPASSWORD": database.password},
        flow=Flow(database.server, ports=(PORT,)),
    )
