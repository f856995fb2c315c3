"""The two services' MicroserviceArgs, as the shared service/infra contract describes them.

Why here and not in the component: ports, probe targets, env names, Consul names and the flows
each service needs are facts about books-api and greeter; Microservice stays generic. The allowed
flows of the app namespace are the `ingress`/`egress` lists below (plus DNS, network_policy.py).
"""

from __future__ import annotations

from dataclasses import replace

import pulumi
import pulumi_kubernetes as k8s
from config import ServiceSettings
from consul_acl import TOKEN_DIR, TOKEN_EXPIRATION_SECONDS
from consul_server import ConsulEndpoint
from images import BuiltImage
from microservice import (
    GrpcProbes,
    HttpProbes,
    Microservice,
    MicroserviceArgs,
    ProjectedToken,
    selector_labels,
)
from network_policy import ANYONE, Flow, Peer, egress_rule, ingress_rule

BOOKS_API = "books-api"
GREETER = "greeter"
GREETER_CONSUL_NAME = "example-service"  # the seed's registration name
# grpc.health.v1 service name: the proto's fully qualified service (example.proto has no package).
GREETER_HEALTH_SERVICE = "ExampleService"
GREETER_GRACE_SECONDS = 10
IMAGE_ID_ANNOTATION = "consul-microservices/image-id"
# Each ServiceAccount (named as its service) -> the one Consul service its token may write.
CONSUL_IDENTITIES = {BOOKS_API: BOOKS_API, GREETER: GREETER_CONSUL_NAME}


def _consul_credentials(consul: ConsulEndpoint, service: str) -> dict:
    """How a service gets its own Consul token: a login with its projected ServiceAccount token
    (in-cluster Consul), or the fixed token from the stack's secret config (external Consul)."""
    if consul.tokens:
        return {"secret_env": {"CONSUL_HTTP_TOKEN": consul.tokens[service]}}
    if consul.auth_method:
        return {
            "env": {
                "CONSUL_LOGIN_AUTH_METHOD": consul.auth_method,
                "CONSUL_LOGIN_BEARER_TOKEN_FILE": f"{TOKEN_DIR}/token",
            },
            "projected_token": ProjectedToken(TOKEN_DIR, TOKEN_EXPIRATION_SECONDS),
        }
    return {}


def _with_consul(args: MicroserviceArgs, consul: ConsulEndpoint, service: str) -> MicroserviceArgs:
    credentials = _consul_credentials(consul, service)
    env = {**args.env, **credentials.pop("env", {})}
    return replace(args, env=env, **credentials)


def _pod_args(
    settings: ServiceSettings,
    namespace: pulumi.Input[str],
    image: BuiltImage,
    pull_secret: pulumi.Input[str] | None,
    probes: HttpProbes | GrpcProbes,
) -> MicroserviceArgs:
    """What both services take alike from their settings; each adds its env and flows."""
    return MicroserviceArgs(
        namespace=namespace,
        image=image.ref,
        port_name="grpc" if isinstance(probes, GrpcProbes) else "http",
        port=settings.port,
        probes=probes,
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests=settings.requests, limits=settings.limits
        ),
        tmp_size_limit=settings.limits["ephemeral-storage"],
        pod_annotations={IMAGE_ID_ANNOTATION: image.image_id},
        replicas=settings.replicas,
        max_replicas=settings.max_replicas,
        cpu_utilization=settings.cpu_utilization,
        service_type=settings.service_type,
        image_pull_secrets=[pull_secret] if pull_secret else [],
    )


def greeter_args(
    settings: ServiceSettings,
    *,
    namespace: pulumi.Input[str],
    image: BuiltImage,
    consul: ConsulEndpoint,
    pull_secret: pulumi.Input[str] | None,
) -> MicroserviceArgs:
    port = settings.port
    probes = GrpcProbes(liveness_service="", readiness_service=GREETER_HEALTH_SERVICE)
    args = replace(
        _pod_args(settings, namespace, image, pull_secret, probes),
        env={
            "GRPC_PORT": str(port),
            "GRACE_PERIOD_SECONDS": str(GREETER_GRACE_SECONDS),
            "CONSUL_HTTP_ADDR": consul.http_addr,
            "LOG_LEVEL": settings.log_level,
        },
        ingress=[
            ingress_rule(Flow(Peer(selector_labels(BOOKS_API)), ports=(port,))),
            ingress_rule(Flow(consul.server, ports=(port,))),  # Consul's native gRPC check
        ],
        egress=[egress_rule(Flow(consul.server, ports=(consul.port,)))],
        termination_grace_seconds=GREETER_GRACE_SECONDS + 5,
    )
    return _with_consul(args, consul, GREETER)


def books_api_args(
    settings: ServiceSettings,
    *,
    namespace: pulumi.Input[str],
    image: BuiltImage,
    consul: ConsulEndpoint,
    pull_secret: pulumi.Input[str] | None,
    greeter: Microservice,
) -> MicroserviceArgs:
    """`greeter`: the component whose address and port books-api calls."""
    port = settings.port
    probes = HttpProbes(liveness_path="/healthz", readiness_path="/readyz")
    args = replace(
        _pod_args(settings, namespace, image, pull_secret, probes),
        env={
            "PORT": str(port),
            "CONSUL_HTTP_ADDR": consul.http_addr,
            "GREETER_SERVICE_NAME": GREETER_CONSUL_NAME,
            "GREETER_ADDR": greeter.address,
            "LOG_LEVEL": settings.log_level,
        },
        ingress=[
            ingress_rule(Flow(ANYONE, ports=(port,))),  # clients
            ingress_rule(Flow(consul.server, ports=(port,))),  # Consul's HTTP check on /healthz
        ],
        egress=[
            egress_rule(Flow(Peer(selector_labels(GREETER)), ports=(greeter.port,))),
            egress_rule(Flow(consul.server, ports=(consul.port,))),
        ],
    )
    return _with_consul(args, consul, BOOKS_API)
