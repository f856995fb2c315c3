"""Settings from the environment, validated at start-up: a bad value stops the process, named."""

from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar

from pydantic import (
    AnyUrl,
    BeforeValidator,
    Field,
    SecretStr,
    UrlConstraints,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ConsulAddr = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["http", "https"], host_required=True, default_port=8500),
    BeforeValidator(lambda v: v if "://" in v else f"http://{v}"),
]

OtlpEndpoint = Annotated[
    AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], host_required=True)
]


class ServiceSettings(BaseSettings):
    """The variables both services read; one field per variable, its upper-case alias the name.

    Each service adds its own fields and a `service_id` defaulting to `<consul name>-<hostname>`.
    """

    model_config = SettingsConfigDict(alias_generator=str.upper, validate_by_name=True)

    consul_http_addr: ConsulAddr | None = None
    # The service's Consul ACL token: a fixed one, or a login (service_common.consul_session).
    consul_http_token: SecretStr | None = None
    consul_login_auth_method: str | None = Field(None, min_length=1)
    consul_login_bearer_token_file: Path = Path("/var/run/secrets/consul/token")
    consul_check_interval: str = Field("10s", pattern=r"^\d+(ms|s|m)$")
    service_address: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # The port serving Prometheus metrics (service_common.metrics): the program sets it from the
    # manifest's metricsPort; unset, none is opened (a laptop runs several services). 0 picks one.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    # Traces go to this OTLP/gRPC collector (service_common.tracing); unset, tracing is off.
    otel_exporter_otlp_endpoint: OtlpEndpoint | None = None
    # The traces' service.name; unset, the Consul name.
    otel_service_name: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def one_token_source(self) -> Self:
        if self.consul_http_token and self.consul_login_auth_method:
            raise ValueError(
                "CONSUL_HTTP_TOKEN and CONSUL_LOGIN_AUTH_METHOD are both set: expected one token"
                " source, not both"
            )
        return self


Settings = TypeVar("Settings", bound=ServiceSettings)


def load(settings_class: type[Settings]) -> Settings:
    """The settings from the environment, or SystemExit naming every variable at fault."""
    try:
        return settings_class()
    except ValidationError as err:
        raise SystemExit(f"invalid configuration: {err}") from None
