"""Settings from the environment, validated at start-up: a bad value stops the process, named."""

from typing import Annotated, Literal, TypeVar

from pydantic import AnyUrl, BeforeValidator, Field, UrlConstraints, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ConsulAddr = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["http", "https"], host_required=True, default_port=8500),
    BeforeValidator(lambda v: v if "://" in v else f"http://{v}"),
]


class ServiceSettings(BaseSettings):
    """The variables both services read; one field per variable, its upper-case alias the name.

    Each service adds its own fields and a `service_id` defaulting to `<consul name>-<hostname>`.
    """

    model_config = SettingsConfigDict(alias_generator=str.upper, validate_by_name=True)

    consul_http_addr: ConsulAddr | None = None
    consul_check_interval: str = Field("10s", pattern=r"^\d+(ms|s|m)$")
    service_address: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


Settings = TypeVar("Settings", bound=ServiceSettings)


def load(settings_class: type[Settings]) -> Settings:
    """The settings from the environment, or SystemExit naming every variable at fault."""
    try:
        return settings_class()
    except ValidationError as err:
        raise SystemExit(f"invalid configuration: {err}") from None
