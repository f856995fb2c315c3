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


class Settings(BaseSettings):
    """One field per environment variable; the upper-case alias is the variable's name."""

    model_config = SettingsConfigDict(alias_generator=str.upper, validate_by_name=True)

    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    grpc_workers: int = Field(10, ge=1, le=256)
    grace_period_seconds: float = Field(10.0, ge=0, le=300)
    consul_http_addr: ConsulAddr | None = None
    consul_check_interval: str = Field("10s", pattern=r"^\d+(ms|s|m)$")
    service_id: str = Field(default_factory=lambda: f"example-service-{socket.gethostname()}")
    service_address: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


def load() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        raise SystemExit(f"invalid configuration: {err}") from None
