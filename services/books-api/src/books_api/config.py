"""books-api's settings (the shared ones come from service_common.settings)."""

import socket
from typing import Annotated

from pydantic import Field, SecretStr
from service_common import settings

HostPort = Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")]


class Settings(settings.ServiceSettings):
    """The GUNICORN_* ones are read by gunicorn_conf.py, the rest by the app."""

    port: int = Field(8080, ge=1, le=65535)
    gunicorn_workers: int = Field(2, ge=1, le=64)
    gunicorn_threads: int = Field(4, ge=1, le=64)
    gunicorn_graceful_timeout: int = Field(20, ge=1, le=300)
    greeter_service_name: str = Field("example-service", min_length=1)
    greeter_addr: HostPort | None = None
    greeter_timeout_seconds: float = Field(2.0, gt=0, le=60)
    # A libpq connection string or URI; libpq's own PG* variables (PGPASSWORD …) fill what it
    # leaves out. Unset: books in memory, per process (development only).
    database_url: SecretStr | None = None
    # Longer than the database's pod takes to move to another node (its node drained: 2.7 to
    # 4.4 s measured on a busy 2-core kind), so that a move costs requests time, not errors.
    database_timeout_seconds: float = Field(6.0, gt=0, le=60)
    consul_service_name: str = Field("books-api", min_length=1)
    service_id: str = Field(
        default_factory=lambda data: f"{data['consul_service_name']}-{socket.gethostname()}"
    )


def load() -> Settings:
    return settings.load(Settings)
