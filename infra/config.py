"""Stack configuration, read into typed frozen objects and validated in one pass.

Why one pass before anything else: a bad value must fail the update before a single resource is
registered, and the user should see every mistake at once, each naming the key, the value and what
was expected.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pulumi
from pulumi.runtime.config import is_config_secret

PROFILES = ("kind", "minikube", "existing")
DELIVERIES = ("auto", "push", "local")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DOCKER_BUILDERS = ("BuilderBuildKit", "BuilderV1")

# Profile defaults: where images go and which kubeconfig context is the cluster's.
KIND_REGISTRY = "localhost:5001"
MINIKUBE_CONTEXT = "minikube"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# host[:port][/path] in lower case, as an OCI reference's repository prefix must be.
_REGISTRY = re.compile(
    r"^(?P<host>[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?)(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
# An OCI reference: repository (optional host[:port]), then an optional tag and optional digest.
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?P<digest>@sha256:[a-f0-9]{64})?$"
)
_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONSUL_ADDR = re.compile(r"^(https?://)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}$")
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


class ConfigError(pulumi.RunError):
    """Raised with every invalid key at once; RunError keeps Pulumi from printing a traceback."""


@dataclass(frozen=True)
class ClusterSettings:
    profile: str
    kubeconfig: str | None
    context: str | None


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
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    ephemeral_request: str
    ephemeral_limit: str


@dataclass(frozen=True)
class ServiceSettings:
    port: int
    replicas: int
    max_replicas: int
    image: str | None  # built outside Pulumi (CI, podman): the reference to deploy as is

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > 0


@dataclass(frozen=True)
class ConsulSettings:
    install: bool
    address: str | None
    namespace: str
    chart_version: str
    chart_repo: str
    chart_path: str | None
    server_replicas: int
    storage: str
    ui: bool
    external_cidr: str


@dataclass(frozen=True)
class Settings:
    cluster: ClusterSettings
    namespace: str
    images: ImageSettings
    resources: Resources
    books_api: ServiceSettings
    greeter: ServiceSettings
    books_api_service_type: str
    hpa_cpu_utilization: int
    log_level: str
    consul: ConsulSettings


class _Reader:
    """Reads raw strings from Pulumi config and records one message per invalid key."""

    def __init__(self, cfg: pulumi.Config) -> None:
        self.cfg = cfg
        self.errors: list[str] = []

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{self.cfg.full_key(key)}: got {value!r}, expected {expected}")

    def string(self, key: str, default: str = "") -> str:
        return (self.cfg.get(key) or default).strip()

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            self.fail(key, value, "one of " + ", ".join(choices))
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.cfg.get(key)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        self.fail(key, raw, "true or false")
        return default

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        raw = self.cfg.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.fail(key, raw, f"an integer between {low} and {high}")
            return default
        if not low <= value <= high:
            self.fail(key, value, f"an integer between {low} and {high}")
        return value

    def matching(self, key: str, default: str, check: Callable[[str], bool], expected: str) -> str:
        value = self.string(key, default)
        if not check(value):
            self.fail(key, value, expected)
        return value


def _quantity(value: str) -> Decimal | None:
    """Parses a Kubernetes resource quantity (the subset Kubernetes accepts for cpu/memory)."""
    match = _QUANTITY.match(value)
    if not match:
        return None
    try:
        return Decimal(match["num"]) * _SUFFIX[match["suffix"] or ""]
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        return None


def _is_dns_label(value: str) -> bool:
    return bool(_DNS_LABEL.match(value))


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return False
    return True


def _read_resources(r: _Reader) -> Resources:
    def pair(name: str, unit: str, request_default: str, limit_default: str) -> tuple[str, str]:
        expected = f"a Kubernetes {unit} quantity such as {request_default}"
        req_key, lim_key = f"{name}Request", f"{name}Limit"
        request = r.matching(req_key, request_default, lambda v: _quantity(v) is not None, expected)
        limit = r.matching(lim_key, limit_default, lambda v: _quantity(v) is not None, expected)
        req_q, lim_q = _quantity(request), _quantity(limit)
        if req_q is not None and lim_q is not None:
            if req_q <= 0:
                r.fail(req_key, request, "a quantity greater than zero")
            if lim_q < req_q:
                r.fail(lim_key, limit, f"a limit at least {req_key} ({request})")
        return request, limit

    cpu = pair("cpu", "CPU", "50m", "500m")
    memory = pair("memory", "memory", "96Mi", "256Mi")
    ephemeral = pair("ephemeralStorage", "ephemeral-storage", "32Mi", "128Mi")
    return Resources(*cpu, *memory, *ephemeral)


def _read_service(r: _Reader, prefix: str, default_port: int) -> ServiceSettings:
    port = r.integer(f"{prefix}Port", default_port, 1024, 65535)
    replicas = r.integer(f"{prefix}Replicas", 2, 1, 50)
    max_replicas = r.integer(f"{prefix}MaxReplicas", 0, 0, 100)
    if 0 < max_replicas < replicas:
        r.fail(
            f"{prefix}MaxReplicas",
            max_replicas,
            f"0 (no autoscaler) or at least {prefix}Replicas ({replicas})",
        )
    image = r.matching(
        f"{prefix}Image",
        "",
        lambda v: not v or _is_pinned_image(v),
        "an image reference pinned by digest (repo@sha256:<64 hex>) or by a tag other than latest",
    )
    return ServiceSettings(port, replicas, max_replicas, image or None)


def _is_pinned_image(value: str) -> bool:
    """A digest, or a tag other than `latest`: a reference that cannot move under a Deployment."""
    match = _IMAGE_REF.match(value)
    return bool(match) and bool(match["digest"] or match["tag"] not in (None, "latest"))


def _read_images(r: _Reader, profile: str, builds: bool) -> ImageSettings:
    """`builds` is false when every service's image is given (booksApiImage, greeterImage)."""
    delivery = r.choice("imageDelivery", DELIVERIES, "auto")
    push = delivery == "push" or (delivery == "auto" and profile != "minikube")
    default_registry = KIND_REGISTRY if profile == "kind" else ""
    registry = r.string("imageRegistry", default_registry)
    if registry and not _REGISTRY.match(registry):
        r.fail("imageRegistry", registry, "host[:port][/path] in lower case, without a scheme")
    if push and builds and not registry:
        r.fail("imageRegistry", registry, "a registry to push to (imageDelivery pushes)")

    username = r.string("registryUsername") or None
    raw_password = r.cfg.get("registryPassword") or ""
    if raw_password and not is_config_secret(r.cfg.full_key("registryPassword")):
        r.fail(
            "registryPassword",
            "<plaintext>",
            "a secret: `pulumi config set --secret registryPassword …`",
        )
    if bool(username) != bool(raw_password):
        r.fail("registryUsername", username or "", "set together with registryPassword, or neither")
    password = pulumi.Output.secret(raw_password) if raw_password else None

    base_image = r.string("baseImage") or None
    builder = r.choice("dockerBuilder", DOCKER_BUILDERS, "BuilderBuildKit")
    return ImageSettings(
        registry,
        push,
        username,
        password,
        base_image,
        _read_build_args(r),
        builder,
    )


def _read_build_args(r: _Reader) -> dict[str, str]:
    """`imageBuildArgs`: a list of NAME=value strings (e.g. the services' PIP_WHEELHOUSE)."""
    expected = 'a list of "NAME=value" strings (BASE_IMAGE goes in baseImage)'
    raw = r.cfg.get("imageBuildArgs") or "[]"
    try:
        items = json.loads(raw)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        r.fail("imageBuildArgs", raw, expected)
        return {}
    args = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _BUILD_ARG.match(name) or name == "BASE_IMAGE":
            r.fail("imageBuildArgs", item, expected)
            continue
        args[name] = value
    return args


def _read_consul(r: _Reader, app_namespace: str) -> ConsulSettings:
    install = r.boolean("consulInstall", True)
    address = r.string("consulAddress") or None
    if install and address:
        r.fail("consulAddress", address, "empty while consulInstall is true (the release is used)")
    if not install and not address:
        r.fail("consulAddress", "", "host:port or http(s)://host:port when consulInstall is false")
    if address and not _CONSUL_ADDR.match(address):
        r.fail("consulAddress", address, "host:port or http(s)://host:port")
    namespace = r.matching(
        "consulNamespace", "consul", _is_dns_label, "a DNS label (lower case, at most 63)"
    )
    if install and namespace == app_namespace:
        r.fail("consulNamespace", namespace, "a namespace other than the app namespace")
    version = r.matching(
        "consulChartVersion",
        "1.9.3",
        lambda v: bool(re.match(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$", v)),
        "an exact chart version such as 1.9.3 (pinned, no ranges)",
    )
    repo = r.matching(
        "consulChartRepo",
        "https://helm.releases.hashicorp.com",
        lambda v: v.startswith(("https://", "http://", "oci://")),
        "an http(s):// or oci:// chart repository URL",
    )
    return ConsulSettings(
        install=install,
        address=address,
        namespace=namespace,
        chart_version=version,
        chart_repo=repo,
        chart_path=r.string("consulChartPath") or None,
        server_replicas=r.integer("consulServerReplicas", 1, 1, 7),
        storage=r.matching(
            "consulStorage",
            "1Gi",
            lambda v: (q := _quantity(v)) is not None and q > 0,
            "a storage quantity such as 1Gi",
        ),
        ui=r.boolean("consulUi", True),
        external_cidr=r.matching(
            "consulExternalCidr", "0.0.0.0/0", _is_cidr, "a CIDR such as 10.0.0.0/8"
        ),
    )


def load(cfg: pulumi.Config | None = None) -> Settings:
    """Reads and validates the whole stack config; raises ConfigError listing every problem."""
    r = _Reader(cfg or pulumi.Config())
    profile = r.choice("clusterProfile", PROFILES, "kind")
    kind_cluster = r.matching(
        "kindClusterName", "consul-microservices", _is_dns_label, "a DNS label"
    )
    default_context = {"kind": f"kind-{kind_cluster}", "minikube": MINIKUBE_CONTEXT}.get(profile)
    cluster = ClusterSettings(
        profile=profile,
        kubeconfig=os.path.expanduser(r.string("kubeconfig")) or None,
        context=r.string("kubeContext") or default_context,
    )
    namespace = r.matching(
        "namespace", "consul-microservices", _is_dns_label, "a DNS label (lower case, at most 63)"
    )
    books_api = _read_service(r, "booksApi", 8080)
    greeter = _read_service(r, "greeter", 50051)
    settings = Settings(
        cluster=cluster,
        namespace=namespace,
        images=_read_images(r, profile, builds=not (books_api.image and greeter.image)),
        resources=_read_resources(r),
        books_api=books_api,
        greeter=greeter,
        books_api_service_type=r.choice("booksApiServiceType", SERVICE_TYPES, "ClusterIP"),
        hpa_cpu_utilization=r.integer("hpaCpuUtilization", 70, 10, 100),
        log_level=r.choice("logLevel", LOG_LEVELS, "INFO"),
        consul=_read_consul(r, namespace),
    )
    if settings.books_api.port == settings.greeter.port:
        r.fail("greeterPort", settings.greeter.port, "a port different from booksApiPort")
    if r.errors:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(r.errors))
    return settings
