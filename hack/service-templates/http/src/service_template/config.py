"""service-template's settings, from the environment (the shared ones: service_common.settings)."""

import socket

from pydantic import Field
from service_common import settings


class Settings(settings.ServiceSettings):
    """The GUNICORN_* ones are read by gunicorn_conf.py, the rest by the app."""

    port: int = Field(8080, ge=1, le=65535)
    gunicorn_workers: int = Field(2, ge=1, le=64)
    gunicorn_threads: int = Field(4, ge=1, le=64)
    gunicorn_graceful_timeout: int = Field(20, ge=1, le=300)
    consul_service_name: str = Field("service-template", min_length=1)
    service_id: str = Field(
        default_factory=lambda data: f"{data['consul_service_name']}-{socket.gethostname()}"
    )


def load() -> Settings:
    return settings.load(Settings)
