"""The greeter's settings (the shared ones come from service_common.settings)."""

import socket

from pydantic import Field
from service_common import settings


class Settings(settings.ServiceSettings):
    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    grpc_workers: int = Field(10, ge=1, le=256)
    grace_period_seconds: float = Field(10.0, ge=0, le=300)
    consul_service_name: str = Field("example-service", min_length=1)  # the seed's name
    service_id: str = Field(
        default_factory=lambda data: f"{data['consul_service_name']}-{socket.gethostname()}"
    )


def load() -> Settings:
    return settings.load(Settings)
