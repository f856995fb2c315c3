"""Settings from the environment, validated at start-up: a bad value stops the process, named."""

import socket
from typing import Annotated, Literal

from pydantic import AnyUrl, BeforeValidator, Field, UrlConstraints, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ConsulAddr = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["http", "https"], host_required=True, default_port=8500),
    BeforeValidator(lambda v: v if "://" in v else f"http://{v}"),
]
HostPort = Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")]


class Settings(BaseSettings):
    """One field per environment variable; the upper-case alias is the variable's name.

    The GUNICORN_* ones are read by gunicorn.conf.py, the rest by the app.
    """

    model_config = SettingsConfigDict(alias_generator=str.upper, validate_by_name=True)

    port: int = Field(8080, ge=1, le=65535)
    gunicorn_workers: int = Field(2, ge=1, le=64)
    gunicorn_threads: int = Field(4, ge=1, le=64)
    gunicorn_graceful_timeout: int = Field(20, ge=1, le=300)
    greeter_service_name: str = Field("example-service", min_length=1)
    greeter_addr: HostPort | None = None
    greeter_timeout_seconds: float = Field(2.0, gt=0, le=60)
    consul_http_addr: ConsulAddr | None = None
    consul_check_interval: str = Field("10s", pattern=r"^\d+(ms|s|m)$")
    service_id: str = Field(default_factory=lambda: f"books-api-{socket.gethostname()}")
    service_address: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


def load() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        raise SystemExit(f"invalid configuration: {err}") from None
