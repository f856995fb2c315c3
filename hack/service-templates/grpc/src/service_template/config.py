"""service-template's settings, from the environment (the shared gRPC ones: GRPC_PORT, GRPC_WORKERS,
GRACE_PERIOD_SECONDS, in service_common.grpc_server)."""

import socket

from pydantic import Field
from service_common import settings
from service_common.grpc_server import GrpcSettings


class Settings(GrpcSettings):
    consul_service_name: str = Field("service-template", min_length=1)
    service_id: str = Field(
        default_factory=lambda data: f"{data['consul_service_name']}-{socket.gethostname()}"
    )


def load() -> Settings:
    return settings.load(Settings)
