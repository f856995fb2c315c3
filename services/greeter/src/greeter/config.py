"""The greeter's settings (the shared gRPC ones come from service_common.grpc_server)."""

import socket

from pydantic import Field
from service_common import settings
from service_common.grpc_server import GrpcSettings


class Settings(GrpcSettings):
    consul_service_name: str = Field("example-service", min_length=1)  # the seed's name
    service_id: str = Field(
        default_factory=lambda data: f"{data['consul_service_name']}-{socket.gethostname()}"
    )


def load() -> Settings:
    return settings.load(Settings)
