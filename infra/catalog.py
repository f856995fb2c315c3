"""The service catalog: a service is its folder, `services/<name>/`, declared by its `service.yaml`.

Why one manifest per folder: everything the program derives for a service (its image, workload,
flows, Consul identity, the discovery env of its callers, outputs and hints) comes from that file,
so adding a service touches nothing outside its folder. The manifests are validated with the
stack config's schema library before any resource is registered, all problems at once, each
naming the file and the field; so are the couplings a folder must keep (its Dockerfile, its
ignore file, its Python package).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import grammar
import pulumi
import yaml
from build_context import DOCKERFILE, IGNORE_FILE
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
MANIFEST = "service.yaml"
# A service builds through <folder>/Dockerfile (DOCKERFILE): for a Python service a link to the
# shared one, services/Dockerfile. Its own ignore file (IGNORE_FILE) keeps the other services out of
# its build context.
# Variables the program sets in every pod; a manifest's `env` cannot set them.
PROGRAM_ENV = (
    "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_LOGIN_AUTH_METHOD",
    "CONSUL_LOGIN_BEARER_TOKEN_FILE", "CONSUL_SERVICE_NAME", "SERVICE_ID", "SERVICE_ADDRESS",
    "LOG_LEVEL", "DATABASE_URL", "PGPASSWORD", "METRICS_PORT", "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)  # fmt: skip
# The port every service serves its Prometheus metrics on unless its manifest says otherwise
# (services/common serves them there, so a new service has them with no code of its own).
METRICS_PORT = 9102


class CatalogError(pulumi.RunError):
    """Raised with every manifest problem at once; RunError keeps Pulumi from printing a trace."""


def _env_name(value: str) -> str:
    if not (value.isidentifier() and value.isascii() and value.isupper()):
        raise ValueError("an environment variable name (A-Z, 0-9, _)")
    return value


Name = Annotated[str, AfterValidator(grammar.dns_label)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class Health(BaseModel):
    """HTTP: the paths of the liveness and readiness probes. gRPC: grpc.health.v1 service names
    (Kubernetes' native gRPC probe), where "" means the server as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    liveness: str
    readiness: str


class Manifest(BaseModel):
    """One service, as `services/<name>/service.yaml` declares it (keys in camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)

    name: Name
    consul_name: Name  # the name it registers under in Consul and its callers discover
    protocol: Literal["http", "grpc"]
    port: int = Field(ge=1024, le=65535)  # non-root pods cannot bind below 1024
    port_env: EnvName  # the variable the service reads its port from
    # Its Prometheus metrics (RED: requests, errors, duration), from METRICS_PORT in its pod.
    metrics_port: int = Field(METRICS_PORT, ge=1024, le=65535)
    health: Health
    env: dict[EnvName, str] = {}
    calls: tuple[Name, ...] = ()  # the services it calls, by name
    exposed: bool = False  # any client may connect (else only its callers and Consul's checks)
    # A database of its own: the program provisions it (or a stack names an external one) and
    # hands the service DATABASE_URL, with the password as PGPASSWORD from a Secret.
    database: Literal["postgres"] | None = None
    example_path: str = "/"  # what the port-forward hint suggests to try (HTTP)
    termination_grace_seconds: int = Field(30, ge=1, le=600)

    @property
    def env_prefix(self) -> str:
        """books-api -> BOOKS_API: the prefix of the discovery env its callers get."""
        return self.name.upper().replace("-", "_")

    @property
    def module(self) -> str:
        """The Python package the shared Dockerfile runs (`python -m <module>`)."""
        return self.name.replace("-", "_")

    def discovery_env(self, address: pulumi.Input[str]) -> dict[str, pulumi.Input[str]]:
        """What a caller reads to find this service: its Consul name, and its Service address
        as the fallback when Consul has no healthy instance."""
        return {
            f"{self.env_prefix}_SERVICE_NAME": self.consul_name,
            f"{self.env_prefix}_ADDR": address,
        }


@dataclass(frozen=True)
class Catalog:
    """Every service found, by name, and the folder their folders are in (the build context)."""

    root: Path
    services: Mapping[str, Manifest]

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.services.values())

    def callers_of(self, name: str) -> list[Manifest]:
        return [service for service in self if name in service.calls]


def _where(path: Path, root: Path) -> str:
    return str(path.relative_to(root.parent)) if path.is_relative_to(root.parent) else str(path)


def _manifest_problems(error: ValidationError, raw: Any, where: str) -> Iterator[str]:
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(the file)"
        if problem["type"] == "extra_forbidden":
            known = list(Manifest.model_fields) + list(Health.model_fields)
            names = [to_camel(k) for k in known]
            close = difflib.get_close_matches(str(problem["loc"][-1]), names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see services/README.md"
            yield f"{where}: {field}: unknown key, {hint}"
        elif problem["type"] == "missing":
            yield f"{where}: {field}: missing"
        else:
            expected = problem["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            yield f"{where}: {field}: got {problem.get('input', raw)!r}, expected {expected}"


def _read(path: Path, where: str) -> tuple[Manifest | None, list[str]]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        return None, [f"{where}: not YAML ({err.__class__.__name__})"]
    try:
        return Manifest.model_validate(raw), []
    except ValidationError as err:
        return None, list(_manifest_problems(err, raw, where))


def _folder_problems(service: Manifest, folder: Path, where: str) -> Iterator[str]:
    """The couplings a folder keeps by itself: its name, its ports, its build files, its program
    env."""
    if service.name != folder.name:
        yield f"{where}: name: got {service.name!r}, expected the folder's name {folder.name!r}"
    if service.metrics_port == service.port:
        yield (
            f"{where}: metricsPort: got {service.metrics_port}, expected a port other than "
            f"port's (the metrics have a port of their own)"
        )
    if service.protocol == "http" and not all(
        path.startswith("/") for path in (service.health.liveness, service.health.readiness)
    ):
        yield f"{where}: health: expected HTTP paths starting with / (protocol http)"
    for name in sorted(set(service.env) & {*PROGRAM_ENV, service.port_env}):
        yield f"{where}: env.{name}: set by the program, expected it left out"
    dockerfile = folder / DOCKERFILE
    if not dockerfile.is_file():
        yield (
            f"{where}: expected {_where(dockerfile, folder.parent)}: a link to "
            f"../{DOCKERFILE} (a Python service) or a Dockerfile of its own"
        )
        return
    ignore = folder / IGNORE_FILE
    if not ignore.is_file() or f"!{service.name}/" not in ignore.read_text().split():
        yield (
            f"{where}: expected {_where(ignore, folder.parent)} to re-include !{service.name}/ "
            "(the build context of this service only; see services/README.md)"
        )
    if dockerfile.resolve() == (folder.parent / DOCKERFILE).resolve():
        main = folder / "src" / service.module / "__main__.py"
        if not main.is_file():
            yield (
                f"{where}: expected {_where(main, folder.parent)} "
                f"(the shared Dockerfile runs python -m {service.module})"
            )


def _catalog_problems(services: Mapping[str, Manifest], wheres: Mapping[str, str]) -> Iterator[str]:
    """Rules across manifests: callees exist, Consul names are unique."""
    for service in services.values():
        for callee in service.calls:
            if callee not in services:
                known = ", ".join(sorted(services))
                yield f"{wheres[service.name]}: calls: got {callee!r}, expected one of {known}"
            elif callee == service.name:
                yield f"{wheres[service.name]}: calls: {callee!r} is the service itself"
    owners: dict[str, str] = {}
    for service in services.values():
        other = owners.setdefault(service.consul_name, service.name)
        if other != service.name:
            yield (
                f"{wheres[service.name]}: consulName: got {service.consul_name!r}, expected a "
                f"name no other service registers ({wheres[other]} has it)"
            )


def load(root: Path | None = None) -> Catalog:
    """Every `<root>/*/service.yaml`, validated; raises CatalogError naming every problem."""
    root = root or SERVICES_DIR
    services: dict[str, Manifest] = {}
    wheres: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(root.glob(f"*/{MANIFEST}")):
        where = _where(path, root)
        service, found = _read(path, where)
        problems += found
        if service is None:
            continue
        problems += _folder_problems(service, path.parent, where)
        services[service.name] = service
        wheres[service.name] = where
    if not services and not problems:
        problems.append(f"{_where(root, root)}: no service (expected <name>/{MANIFEST} folders)")
    problems += _catalog_problems(services, wheres)
    if problems:
        raise CatalogError("invalid service catalog:\n  " + "\n  ".join(problems))
    return Catalog(root, services)
