"""Stack configuration: one pydantic schema holds every key's type, default, range and rule.

Why validate all of it before anything else: a bad value must fail the update before a single
resource is registered, and the user should see every mistake at once, each naming the key, the
value and what was expected. Pulumi.yaml declares the same keys, types and defaults for the CLI
(there, a key without a default is required); a test keeps the two equal.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, get_args
from urllib.parse import SplitResult, urlsplit

import grammar
import pulumi
from catalog import Catalog, Manifest
from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret
from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_pascal
from pydantic_core import InitErrorDetails, PydanticCustomError

# The variables that name the cluster `make up` made (mk/infra.mk passes them, infra/kind.sh and
# infra/minikube.sh read them): per profile, the key each one sets when the stack file does not.
CLUSTER_VARIABLES = {
    "kind": {"kindClusterName": "KIND_CLUSTER", "kindRegistryPort": "KIND_REGISTRY_PORT"},
    "minikube": {"kubeContext": "MINIKUBE_PROFILE"},
}
RESOURCES = {"cpu": "cpu", "memory": "memory", "ephemeralStorage": "ephemeral-storage"}


class ConfigError(pulumi.RunError):
    """Raised with every invalid key at once; RunError keeps Pulumi from printing a traceback."""


def _expected(text: str, kind: str = "expected") -> PydanticCustomError:
    return PydanticCustomError(kind, "{expected}", {"expected": text})


def _grammar(parse: Callable[[str], Any], empty_means_unset: bool = False) -> AfterValidator:
    """A grammar.py parser as a validator: keeps the string, or the parser's normal form of it."""

    def validate(value: str) -> str:
        if empty_means_unset and value == "":
            return value
        try:
            parsed = parse(value)
        except ValueError as err:
            raise _expected(str(err) + (" (or empty)" if empty_means_unset else "")) from None
        return parsed if isinstance(parsed, str) else value

    return AfterValidator(validate)


def _integer(low: int, high: int) -> Any:
    """Pulumi hands integers over as strings; `1.5`, `true` or `2e3` are not one."""

    def parse(value: Any) -> int:
        text = "" if isinstance(value, bool) else str(value)
        if not text.lstrip("+-").isdigit() or not low <= int(text) <= high:
            raise _expected(f"an integer between {low} and {high}")
        return int(text)

    return Annotated[int, BeforeValidator(parse)]


def _flag(value: Any) -> bool:
    if isinstance(value, bool) or value in ("true", "false"):
        return value in (True, "true")
    raise _expected("true or false")


def _build_args(value: Any) -> list[str]:
    expected = 'a JSON list of "NAME=value" strings (BASE_IMAGE goes in baseImage)'
    try:
        items = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise _expected(expected) from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _expected(expected)
    for item in items:
        name, sep, _ = item.partition("=")
        if not sep or not (name.isidentifier() and name.isascii()) or name == "BASE_IMAGE":
            raise _expected(f"{expected}; not {item!r}")
    return items


Flag = Annotated[bool, BeforeValidator(_flag)]
Namespace = Annotated[str, _grammar(grammar.namespace)]
Cpu = Annotated[str, _grammar(grammar.cpu)]
Memory = Annotated[str, _grammar(lambda v: grammar.byte_size(v, "memory"))]
Storage = Annotated[str, _grammar(lambda v: grammar.byte_size(v, "storage"))]
PinnedImage = Annotated[str, _grammar(lambda v: grammar.image_reference(v, pinned=True), True)]
Replicas, MaxReplicas = _integer(1, 50), _integer(0, 100)
AppPort = _integer(1024, 65535)  # non-root pods without NET_BIND_SERVICE cannot bind below 1024
RegistryPort = _integer(1, 65535)
Utilization, ConsulServers = _integer(10, 100), _integer(1, 7)


def _json_object(value: Any) -> dict:
    """Pulumi hands a structured value over as JSON text."""
    expected = "a map of service name to its settings, e.g. {<name>: {replicas: 3}}"
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise _expected(expected) from None
    if not isinstance(parsed, dict):
        raise _expected(expected)
    return parsed


class Broken(NamedTuple):
    """A broken cross-key rule: the other keys it reads, the key it blames (a dotted path inside
    `services`), what was expected; kind "unknown" for a name that is not a service."""

    reads: tuple[str, ...]
    key: str
    expected: str
    kind: str = "rule"


ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
SECRET_KEYS = ("registryPassword",)  # stored with `pulumi config set --secret`; and consulToken
TOKEN = "consulToken"  # noqa: S105 (a key name)
PROMETHEUS = "prometheus"  # the name of the objects of the program's Prometheus (prometheus.py)


class ServiceOverrides(BaseModel):
    """One service's settings in this stack (`services.<name>` in the stack file); a service the
    key does not name takes these defaults, and its port from its manifest."""

    model_config = ConfigDict(alias_generator=to_camel, frozen=True, extra="forbid")

    replicas: Replicas = 2
    max_replicas: MaxReplicas = 0  # 0: no autoscaler
    port: AppPort | None = None  # None: the manifest's
    image: PinnedImage = ""  # built outside Pulumi (CI, podman): deployed as is, no build
    service_type: ServiceType = "ClusterIP"
    # With an external Consul (consulInstall false), the service's own ACL token.
    consul_token: str = Field("", repr=False, json_schema_extra={"secret": True})
    # For a service whose manifest declares a database: an external one instead of the program's
    # (a libpq URI with its password), and the network its pods may reach it at.
    database_url: str = Field("", repr=False, json_schema_extra={"secret": True})
    database_cidr: Annotated[str, _grammar(grammar.cidr, True)] = ""

    def secrets(self) -> list[str]:
        """The keys of this service's secret settings that are set."""
        return [
            to_camel(name)
            for name, field in type(self).model_fields.items()
            if (field.json_schema_extra or {}).get("secret") and getattr(self, name)
        ]


class StackConfig(BaseModel):
    """Every key of the project's namespace, by its Python name (the key is its camelCase alias)."""

    model_config = ConfigDict(alias_generator=to_camel, frozen=True, extra="forbid")

    cluster_profile: Literal["kind", "minikube", "existing"] = "kind"
    kubeconfig: str = ""  # empty: $KUBECONFIG or ~/.kube/config
    kube_context: str = ""  # empty: kind-<kindClusterName>, minikube, or the current context
    kind_cluster_name: Annotated[str, _grammar(grammar.dns_label)] = "consul-microservices"
    kind_registry_port: RegistryPort = 5001  # kind's local-registry recipe (infra/kind.sh)
    namespace: Namespace = "consul-microservices"
    image_delivery: Literal["auto", "push", "local"] = "auto"
    image_registry: Annotated[str, _grammar(grammar.registry, True)] = ""
    registry_username: str = ""
    registry_password: str = Field("", repr=False, json_schema_extra={"secret": True})
    base_image: PinnedImage = ""
    image_build_args: Annotated[list[str], BeforeValidator(_build_args)] = []
    docker_builder: Literal["BuilderBuildKit", "BuilderV1"] = "BuilderBuildKit"
    services: Annotated[dict[str, ServiceOverrides], BeforeValidator(_json_object)] = {}
    hpa_cpu_utilization: Utilization = 70
    cpu_request: Cpu = "50m"
    cpu_limit: Cpu = "500m"
    memory_request: Memory = "96Mi"
    memory_limit: Memory = "256Mi"
    ephemeral_storage_request: Storage = "32Mi"
    ephemeral_storage_limit: Storage = "128Mi"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # empty: tracing off; else the collector's URL with its port written out (grammar.py says why)
    otlp_endpoint: Annotated[str, _grammar(grammar.otlp_endpoint, True)] = ""
    otlp_cidr: Annotated[str, _grammar(grammar.cidr, True)] = ""
    prometheus_install: Flag = False  # the local stacks turn it on; prod scrapes with its own
    prometheus_image: PinnedImage = ""  # empty: the official image prometheus.py pins
    consul_install: Flag = True
    consul_address: Annotated[str, _grammar(grammar.consul_address, True)] = ""
    consul_namespace: Namespace = "consul"
    consul_chart_version: Annotated[str, _grammar(grammar.chart_version)] = "1.9.3"
    consul_chart_repo: Annotated[str, _grammar(grammar.chart_repo)] = (
        "https://helm.releases.hashicorp.com"
    )
    consul_chart_path: Annotated[str, _grammar(grammar.chart_path, True)] = ""  # empty: the repo
    consul_server_replicas: ConsulServers = 1
    consul_storage: Storage = "1Gi"
    consul_ui: Flag = True
    consul_external_cidr: Annotated[str, _grammar(grammar.cidr, True)] = ""
    consul_image: PinnedImage = ""  # empty: the chart's global.image
    consul_k8s_image: PinnedImage = Field("", alias="consulK8sImage")  # empty: global.imageK8S
    postgres_image: PinnedImage = ""  # empty: the official image database.py pins
    postgres_storage: Storage = "1Gi"
    # empty: the cluster's default StorageClass
    postgres_storage_class: Annotated[str, _grammar(grammar.dns_subdomain, True)] = ""

    @model_validator(mode="after")
    def _cross_key_rules(self, info: ValidationInfo) -> StackConfig:
        context = info.context or {}
        skip = context.get("skip", set())
        problems = [
            InitErrorDetails(
                type=_expected(expected, kind), loc=tuple(key.split(".")), input=self.value(key)
            )
            for reads, key, expected, kind in self._problems(
                context.get("secret_keys", set()), context["catalog"]
            )
            if not skip & {key.split(".")[0], *reads}
        ]
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _problems(self, secrets: set[str], catalog: Catalog) -> Iterator[Broken]:
        for res in RESOURCES:
            request, limit = self.value(f"{res}Request"), self.value(f"{res}Limit")
            if grammar.quantity(limit) < grammar.quantity(request):
                expected = f"at least {res}Request ({request})"
                yield Broken((f"{res}Request",), f"{res}Limit", expected)
        if self.push and self.builds(catalog) and not self.registry:
            reads = ("clusterProfile", "imageDelivery", "services")
            expected = "a registry to push to (imageDelivery pushes)"
            yield Broken(reads, "imageRegistry", expected)
        for key in SECRET_KEYS:
            if self.value(key) and key not in secrets:
                yield Broken((), key, f"a secret: `pulumi config set --secret {key} …`")
        if bool(self.registry_username) != bool(self.registry_password):
            expected = "set together with registryPassword, or neither"
            yield Broken(("registryPassword",), "registryUsername", expected)
        yield from self._service_problems(secrets, catalog)
        yield from self._consul_problems()
        yield from self._otlp_problems()
        if self.prometheus_image and not self.prometheus_install:
            expected = "empty while prometheusInstall is false"
            yield Broken(("prometheusInstall",), "prometheusImage", expected)
        if self.prometheus_install and PROMETHEUS in catalog.services:
            expected = f"false: services/{PROMETHEUS} is a service, whose objects take that name"
            yield Broken(("services",), "prometheusInstall", expected)

    def _service_problems(self, secrets: set[str], catalog: Catalog) -> Iterator[Broken]:
        for name, overrides in self.services.items():
            key = f"services.{name}"
            if name not in catalog.services:
                close = difflib.get_close_matches(name, list(catalog.services), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]}?" if close else "services/*/service.yaml name them"
                yield Broken(("services",), key, f"unknown service, {hint}", "unknown")
                continue
            replicas, maximum = overrides.replicas, overrides.max_replicas
            if 0 < maximum < replicas:
                expected = f"0 (no autoscaler) or at least {key}.replicas ({replicas})"
                yield Broken(("services",), f"{key}.maxReplicas", expected)
            metrics_port = catalog.services[name].metrics_port
            if overrides.port == metrics_port:
                expected = f"a port other than metricsPort (services/{name}/service.yaml)"
                yield Broken(("services",), f"{key}.port", expected)
            if overrides.service_type != "ClusterIP" and not catalog.services[name].exposed:
                expected = f"ClusterIP: {name} is not exposed (services/{name}/service.yaml)"
                yield Broken(("services",), f"{key}.serviceType", expected)
            if overrides.consul_token and self.consul_install:
                expected = "empty while consulInstall is true (the pods log in)"
                yield Broken(("consulInstall",), f"{key}.{TOKEN}", expected)
            for field in overrides.secrets() if "services" not in secrets else ():
                expected = f"a secret: `pulumi config set --secret --path '{key}.{field}' …`"
                yield Broken(("services",), f"{key}.{field}", expected)
            yield from self._database_problems(key, overrides, catalog.services[name])
        with_token = {n for n, o in self.services.items() if o.consul_token}
        if with_token and not self.consul_install:
            for name in sorted(set(catalog.services) - with_token):
                expected = "a token of its own like the other services (or none: no Consul ACLs)"
                yield Broken(("services",), f"services.{name}.{TOKEN}", expected)

    @staticmethod
    def _database_problems(
        key: str, overrides: ServiceOverrides, service: Manifest
    ) -> Iterator[Broken]:
        url, cidr = overrides.database_url, overrides.database_cidr
        if (url or cidr) and service.database is None:
            field = "databaseUrl" if url else "databaseCidr"
            expected = f"empty: services/{service.name}/service.yaml declares no database"
            yield Broken(("services",), f"{key}.{field}", expected)
            return
        if cidr and not url:
            yield Broken(("services",), f"{key}.databaseCidr", "empty without databaseUrl")
        if not url:
            return
        try:
            host, _ = grammar.database_url(url)
        except ValueError as err:
            yield Broken(("services",), f"{key}.databaseUrl", str(err))
            return
        if not cidr and not grammar.host_network(host):
            expected = f"the CIDR of the database at {host} (required unless its host is an IP)"
            yield Broken(("services",), f"{key}.databaseCidr", expected)

    def _consul_problems(self) -> Iterator[Broken]:
        install = ("consulInstall",)
        chart_only, external_only = (
            ("consulImage", "consulK8sImage"),
            ("consulAddress", "consulExternalCidr"),
        )
        unused = external_only if self.consul_install else chart_only
        for key in filter(self.value, unused):
            expected = f"empty while consulInstall is {str(self.consul_install).lower()}"
            yield Broken(install, key, expected)
        if self.consul_install and self.consul_namespace == self.namespace:
            expected = "a namespace other than namespace"
            yield Broken((*install, "namespace"), "consulNamespace", expected)
        if self.consul_install:
            return
        if self.consul_url is None:
            expected = "http(s)://host[:port] when consulInstall is false"
            yield Broken(install, "consulAddress", expected)
            return
        host, cidr = self.consul_url.host or "", self.consul_external_cidr
        if not cidr and not grammar.host_network(host):
            expected = f"the CIDR of Consul at {host} (required unless consulAddress is an IP)"
            yield Broken((*install, "consulAddress"), "consulExternalCidr", expected)
        elif cidr and grammar.host_network(host) and not grammar.contains(cidr, host):
            expected = f"a CIDR that contains consulAddress's {host}"
            yield Broken((*install, "consulAddress"), "consulExternalCidr", expected)

    def _otlp_problems(self) -> Iterator[Broken]:
        """The collector's network, as consulExternalCidr is the external Consul's."""
        reads, cidr = ("otlpEndpoint",), self.otlp_cidr
        if self.otlp_url is None:
            if cidr:
                yield Broken(reads, "otlpCidr", "empty without otlpEndpoint")
            return
        host = self.otlp_url.hostname or ""
        if not cidr and not grammar.host_network(host):
            expected = f"the CIDR of the collector {host} (required unless otlpEndpoint is an IP)"
            yield Broken(reads, "otlpCidr", expected)
        elif cidr and grammar.host_network(host) and not grammar.contains(cidr, host):
            yield Broken(reads, "otlpCidr", f"a CIDR that contains otlpEndpoint's {host}")

    def value(self, key: str) -> Any:
        """The value of a key by its Pulumi name (camelCase), or of a dotted path into services."""
        top, _, rest = key.partition(".")
        if top != "services" or not rest:
            return getattr(self, _FIELDS[top])
        name, _, field = rest.partition(".")
        overrides = self.services.get(name)
        return getattr(overrides, _SERVICE_FIELDS[field]) if overrides and field else overrides

    @property
    def kube_context_or_default(self) -> str | None:
        defaults = {"kind": f"kind-{self.kind_cluster_name}", "minikube": "minikube"}
        return self.kube_context or defaults.get(self.cluster_profile)

    @property
    def kubeconfig_path(self) -> str | None:
        return os.path.expanduser(self.kubeconfig) or None

    @property
    def push(self) -> bool:
        return self.image_delivery == "push" or (
            self.image_delivery == "auto" and self.cluster_profile != "minikube"
        )

    def builds(self, catalog: Catalog) -> bool:
        """False when every service's image was built elsewhere (services.<name>.image)."""
        return not all(self.overrides(name).image for name in catalog.services)

    def overrides(self, name: str) -> ServiceOverrides:
        return self.services.get(name) or ServiceOverrides()

    @property
    def consul_url(self) -> AnyUrl | None:
        return grammar.consul_address(self.consul_address) if self.consul_address else None

    @property
    def consul_cidr(self) -> str | None:
        """The external Consul's network: as configured, or the literal IP of consulAddress."""
        if self.consul_install or self.consul_url is None:
            return None
        return self.consul_external_cidr or grammar.host_network(self.consul_url.host or "")

    @property
    def consul_ui_metrics(self) -> bool:
        """Whether the in-cluster Consul's UI shows metrics from the program's Prometheus."""
        return self.consul_install and self.consul_ui and self.prometheus_install

    @property
    def otlp_url(self) -> SplitResult | None:
        """The trace collector's URL, its port always explicit; None: tracing off."""
        return urlsplit(self.otlp_endpoint) if self.otlp_endpoint else None

    @property
    def otlp_network(self) -> str | None:
        """The collector's network: as configured, or the literal IP of otlpEndpoint."""
        if self.otlp_url is None:
            return None
        return self.otlp_cidr or grammar.host_network(self.otlp_url.hostname or "")

    @property
    def consul_tokens(self) -> dict[str, pulumi.Output[str]] | None:
        """External Consul: each service's own ACL token (by service), as secrets; None if unset."""
        tokens = {name: o.consul_token for name, o in self.services.items() if o.consul_token}
        if self.consul_install or not tokens:
            return None
        return {name: pulumi.Output.secret(token) for name, token in tokens.items()}

    @property
    def registry(self) -> str:
        """imageRegistry, or the profile's: kind's local registry, none for the others."""
        kind_registry = f"localhost:{self.kind_registry_port}"
        return self.image_registry or (kind_registry if self.cluster_profile == "kind" else "")

    @property
    def images(self) -> ImageSettings:
        password = self.registry_password
        return ImageSettings(
            registry=self.registry,
            push=self.push,
            username=self.registry_username or None,
            password=pulumi.Output.secret(password) if password else None,
            base_image=self.base_image or None,
            build_args=dict(arg.split("=", 1) for arg in self.image_build_args),
            builder=self.docker_builder,
        )

    def service(self, manifest: Manifest) -> ServiceSettings:
        """One service's typed settings: its overrides and manifest, plus the pod settings all
        share."""
        overrides = self.overrides(manifest.name)
        return ServiceSettings(
            port=overrides.port or manifest.port,
            replicas=overrides.replicas,
            max_replicas=overrides.max_replicas,
            image=overrides.image or None,
            service_type=overrides.service_type,
            cpu_utilization=self.hpa_cpu_utilization,
            log_level=self.log_level,
            requests={name: self.value(f"{key}Request") for key, name in RESOURCES.items()},
            limits={name: self.value(f"{key}Limit") for key, name in RESOURCES.items()},
        )


_FIELDS = {field.alias or name: name for name, field in StackConfig.model_fields.items()}
_SERVICE_FIELDS = {
    field.alias or name: name for name, field in ServiceOverrides.model_fields.items()
}


@dataclass(frozen=True)
class ImageSettings:
    registry: str
    push: bool
    username: str | None
    password: pulumi.Output[str] | None
    base_image: str | None
    build_args: dict[str, str]
    builder: str

    @property
    def registry_server(self) -> str:
        """The host[:port] part that `docker login` and image pull secrets address."""
        return self.registry.split("/", 1)[0]


@dataclass(frozen=True)
class ServiceSettings:
    port: int
    replicas: int
    max_replicas: int
    image: str | None  # built outside Pulumi (CI, podman): the reference to deploy as is
    service_type: str
    cpu_utilization: int
    log_level: str
    requests: dict[str, str]
    limits: dict[str, str]


def _moved(key: str, catalog: Catalog) -> str | None:
    """Where a per-service key of before the catalog lives now: booksApiReplicas was
    services.books-api.replicas, consulBooksApiToken services.books-api.consulToken."""
    for service in catalog:
        prefix = to_pascal(service.name.replace("-", "_"))
        for field in _SERVICE_FIELDS:
            head, tail = ("consul", "Token") if field == TOKEN else ("", field)
            if key.lower() == f"{head}{prefix}{tail}".lower():
                return f"services.{service.name}.{field}"
    return None


def _message(
    error: dict, raw: dict[str, Any], project: str, catalog: Catalog, secrets: set[str]
) -> str:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        known = _FIELDS if len(loc) == 1 else _SERVICE_FIELDS
        close = difflib.get_close_matches(loc[-1], list(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "Pulumi.yaml lists the keys"
        moved = _moved(key, catalog) if len(loc) == 1 else None
        hint = f"it is {moved} now (one structured key for all services)" if moved else hint
        return f"{project}:{key}: unknown key, {hint}"
    if error["type"] == "unknown":
        return f"{project}:{key}: {error['msg']}"
    model, fields = (StackConfig, _FIELDS) if len(loc) == 1 else (ServiceOverrides, _SERVICE_FIELDS)
    field = model.model_fields.get(fields.get(loc[-1], ""))
    value = raw.get(key, error["input"])
    if value and field and (field.json_schema_extra or {}).get("secret"):
        value = "<plaintext>" if loc[0] not in secrets else "<secret>"  # never echo it
    expected = (error.get("ctx") or {}).get("expected", error["msg"])
    if value is None:  # a key the stack does not set, which a rule wants
        return f"{project}:{key}: not set, expected {expected}"
    if error["type"] == "literal_error" and field:
        expected = "one of " + ", ".join(get_args(field.annotation))
    return f"{project}:{key}: got {value!r}, expected {expected}"


def _cluster_variables(
    raw: dict[str, Any], environ: Mapping[str, str], project: str
) -> tuple[dict[str, Any], list[str]]:
    """`raw` with the values of the cluster variables (CLUSTER_VARIABLES) that are set, and the
    conflicts: a stack value of its own (not Pulumi.yaml's default, which the CLI always hands
    over) that names another cluster or registry than the one `make up` made."""
    merged, conflicts = dict(raw), []
    for key, variable in CLUSTER_VARIABLES.get(raw.get("clusterProfile") or "kind", {}).items():
        given = environ.get(variable)
        if not given:
            continue
        merged[key] = given
        value, default = raw.get(key), StackConfig.model_fields[_FIELDS[key]].default
        if value is not None and str(value) not in (given, str(default)):
            conflicts.append(
                f"{project}:{key}: got {value!r}, expected {variable}'s {given!r} (the cluster"
                f" make up uses): set {variable}={value}, or unset {key}"
            )
    return merged, conflicts


def validate(
    raw: dict[str, Any],
    secret_keys: set[str],
    project: str,
    catalog: Catalog,
    environ: Mapping[str, str] | None = None,
) -> StackConfig:
    """Validates `raw` (keys without the project prefix), with the cluster variables of `environ`,
    against the services of `catalog`; raises ConfigError with every problem.

    Pydantic runs the cross-key rules only once every key is valid on its own, so after key
    errors a second pass runs them without the invalid keys, skipping the rules that read those.
    """
    raw, conflicts = _cluster_variables(raw, environ or {}, project)
    context = {"secret_keys": secret_keys, "catalog": catalog}
    try:
        config = StackConfig.model_validate(raw, context=context)
    except ValidationError as err:
        errors = err.errors()
    else:
        if not conflicts:
            return config
        errors = []
    invalid = {e["loc"][0] for e in errors}
    if not any(e["type"] in ("rule", "unknown") for e in errors):
        rest = {k: v for k, v in raw.items() if k not in invalid}
        try:
            StackConfig.model_validate(rest, context=context | {"skip": invalid})
        except ValidationError as err:
            errors += err.errors()
    lines = sorted({_message(e, raw, project, catalog, secret_keys) for e in errors} | {*conflicts})
    raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(lines))


def load(catalog: Catalog, cfg: pulumi.Config | None = None) -> StackConfig:
    """Reads every key of the project's namespace (unknown ones too) and validates the lot."""
    cfg = cfg or pulumi.Config()
    prefix = f"{cfg.name}:"
    keys = [k.removeprefix(prefix) for k in get_config_env() | CONFIG.get() if k.startswith(prefix)]
    raw = {key: cfg.get(key) for key in keys}
    secrets = {k for k in raw if is_config_secret(cfg.full_key(k))}
    return validate(raw, secrets, cfg.name, catalog, os.environ)
