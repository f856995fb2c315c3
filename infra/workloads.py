"""The two services as the shared service/infra contract describes them.

Why here and not in the component: ports, probe targets, env names and Consul names are facts about
books-api and greeter; Microservice stays generic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from config import ServiceSettings, Settings
from consul_server import ConsulEndpoint
from images import BuiltImage
from microservice import GrpcProbes, HttpProbes, MicroserviceArgs, selector_labels
from network_policy import ANYONE, Flow, Peer

BOOKS_API = "books-api"
GREETER = "greeter"
GREETER_CONSUL_NAME = "example-service"  # the seed's registration name
# grpc.health.v1 service name: the proto's fully qualified service (example.proto has no package).
GREETER_HEALTH_SERVICE = "ExampleService"
GREETER_GRACE_SECONDS = 10


@dataclass(frozen=True)
class Stack:
    """What both services take from the rest of the stack."""

    settings: Settings
    namespace: pulumi.Input[str]
    consul: ConsulEndpoint
    pull_secret: pulumi.Input[str] | None

    def common(self, service: ServiceSettings, image: BuiltImage) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "image": image.ref,
            "image_id": image.image_id,
            "port": service.port,
            "resources": self.settings.resources,
            "replicas": service.replicas,
            "max_replicas": service.max_replicas,
            "cpu_utilization": self.settings.hpa_cpu_utilization,
            "image_pull_secret": self.pull_secret,
        }


def greeter_args(stack: Stack, image: BuiltImage) -> MicroserviceArgs:
    settings, consul = stack.settings, stack.consul
    port = settings.greeter.port
    return MicroserviceArgs(
        **stack.common(settings.greeter, image),
        port_name="grpc",
        probes=GrpcProbes(liveness_service="", readiness_service=GREETER_HEALTH_SERVICE),
        env={
            "GRPC_PORT": str(port),
            "GRACE_PERIOD_SECONDS": str(GREETER_GRACE_SECONDS),
            "CONSUL_HTTP_ADDR": consul.http_addr,
            "LOG_LEVEL": settings.log_level,
        },
        ingress=[
            Flow(Peer(selector_labels(BOOKS_API)), ports=(port,)),
            Flow(consul.server, ports=(port,)),  # Consul's native gRPC health check
        ],
        egress=[Flow(consul.server, ports=(consul.port,))],
        termination_grace_seconds=GREETER_GRACE_SECONDS + 5,
    )


def books_api_args(stack: Stack, image: BuiltImage) -> MicroserviceArgs:
    settings, consul = stack.settings, stack.consul
    port, greeter_port = settings.books_api.port, settings.greeter.port
    return MicroserviceArgs(
        **stack.common(settings.books_api, image),
        port_name="http",
        probes=HttpProbes(liveness_path="/healthz", readiness_path="/readyz"),
        service_type=settings.books_api_service_type,
        env={
            "PORT": str(port),
            "CONSUL_HTTP_ADDR": consul.http_addr,
            "GREETER_SERVICE_NAME": GREETER_CONSUL_NAME,
            "GREETER_ADDR": pulumi.Output.concat(
                GREETER, ".", stack.namespace, f".svc:{greeter_port}"
            ),
            "LOG_LEVEL": settings.log_level,
        },
        ingress=[
            Flow(ANYONE, ports=(port,)),  # clients
            Flow(consul.server, ports=(port,)),  # Consul's HTTP health check on /healthz
        ],
        egress=[
            Flow(Peer(selector_labels(GREETER)), ports=(greeter_port,)),
            Flow(consul.server, ports=(consul.port,)),
        ],
    )
