"""The grammars stack config values must follow, each taken from the tool that will read the value.

Why parse here rather than let Kubernetes, Docker or Helm refuse later: by then resources are half
registered. Each parser returns the value in the form the program uses (a normalised CIDR, a
quantity as a Decimal, a parsed reference) or raises ValueError saying what was expected.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AnyUrl, BeforeValidator, TypeAdapter, UrlConstraints, ValidationError

# github.com/distribution/reference, regexp.go: the grammar Docker, containerd and Kubernetes use.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"(?P<host>{_HOST})(?::(?P<port>[0-9]+))?"
_NAME = rf"(?:{_DOMAIN}/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
_REFERENCE = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<tag>[\w][\w.-]{{0,127}}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$",
    re.ASCII,  # Go's \w: letters, digits and _ of ASCII only
)
_REGISTRY = re.compile(rf"^{_DOMAIN}(?:/(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*))?$")
_NAME_MAX = 255
# github.com/opencontainers/go-digest: the algorithms it validates, and their hex lengths.
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_PINNED = "pinned by digest (repo@sha256:<64 hex>) or by a tag other than latest"

# k8s.io/apimachinery resource.Quantity: <sign><digits>[.<digits>][suffix | e<exponent>].
_QUANTITY = re.compile(
    r"^(?P<num>\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exp>[+-]?[0-9]+))?$"
)
_SCALE = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}  # fmt: skip
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# semver.org's grammar: Helm resolves anything else (ranges, "1.9") to whatever is newest.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def port(value: int | str | None, what: str = "a port") -> int:
    if value is None or not 1 <= int(value) <= 65535:
        raise ValueError(f"{what} between 1 and 65535")
    return int(value)


@dataclass(frozen=True)
class ImageReference:
    name: str
    tag: str | None
    digest: str | None

    @property
    def pinned(self) -> bool:
        """A digest, or a tag other than `latest`: a reference that cannot move under a pod."""
        return bool(self.digest) or self.tag not in (None, "latest")


def image_reference(value: str, pinned: bool = False) -> ImageReference:
    expected = "an OCI image reference [host[:port]/]path[:tag][@digest]"
    match = _REFERENCE.fullmatch(value)
    if not match or len(match["name"]) > _NAME_MAX:
        raise ValueError(expected + (f", {_PINNED}" if pinned else ""))
    if match["port"]:
        port(match["port"], "a registry port")
    if match["digest"]:
        algorithm, _, hex_digits = match["digest"].partition(":")
        if _DIGEST_HEX.get(algorithm) != len(hex_digits) or hex_digits != hex_digits.lower():
            raise ValueError(
                f"{expected}; a digest is sha256:<64 lower-case hex> (or sha384, sha512)"
            )
    reference = ImageReference(match["name"], match["tag"], match["digest"])
    if pinned and not reference.pinned:
        raise ValueError(f"an image reference {_PINNED}")
    return reference


def registry(value: str) -> str:
    """`host[:port][/path]`: a repository prefix that Docker will not read as a Docker Hub path."""
    match = _REGISTRY.fullmatch(value)
    host = match["host"] if match else ""
    if not match or not ("." in host or host == "localhost" or "[" in host or match["port"]):
        raise ValueError(
            "host[:port][/path] with a lower-case path, without a scheme (a host has a dot, a "
            "port or is localhost)"
        )
    if match["port"]:
        port(match["port"], "a registry port")
    return value


def quantity(value: str) -> Decimal:
    match = _QUANTITY.fullmatch(value)
    if not match:
        raise ValueError("a Kubernetes quantity")
    exponent = Decimal(10) ** int(match["exp"]) if match["exp"] else _SCALE[match["suffix"] or ""]
    return Decimal(match["num"]) * exponent


def cpu(value: str) -> Decimal:
    expected = "a Kubernetes CPU quantity of at least 1m, such as 250m or 0.5"
    try:
        cores = quantity(value)
    except ValueError:
        raise ValueError(expected) from None
    if cores < Decimal("0.001") or (cores * 1000) % 1:  # the API refuses finer than 1m
        raise ValueError(expected)
    return cores


def byte_size(value: str, unit: str) -> Decimal:
    """Memory or storage: Kubernetes takes `512m` as 0.512 bytes, never as Docker's 512 MiB."""
    expected = (
        f"a Kubernetes {unit} quantity in whole bytes, such as 256Mi or 1Gi (binary Ki, Mi, Gi; "
        "not Docker's m, g or MB)"
    )
    try:
        size = quantity(value)
    except ValueError:
        raise ValueError(expected) from None
    if size <= 0 or size % 1:
        raise ValueError(expected)
    return size


def dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError("a DNS label (a-z, 0-9, '-', at most 63)")
    return value


def dns_subdomain(value: str) -> str:
    """The name of most cluster-scoped objects (a StorageClass's): dot-separated DNS labels."""
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in value.split(".")):
        raise ValueError("a DNS subdomain (DNS labels joined by '.', at most 253)")
    return value


def namespace(value: str) -> str:
    dns_label(value)
    if value == "default" or value.startswith("kube-"):
        raise ValueError("a namespace of its own, not default or kube-* (reserved)")
    return value


def cidr(value: str) -> str:
    """The network in canonical form (`10.0.0.5/8` -> `10.0.0.0/8`); never everything."""
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("a CIDR such as 10.0.0.0/8") from None
    if network.prefixlen == 0:
        raise ValueError("a CIDR narrower than /0 (it would admit anyone to both services)")
    return str(network)


def host_network(host: str) -> str | None:
    """`host` as a one-address CIDR when it is a literal IP address, else None."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return str(ipaddress.ip_network(address))


def contains(cidr: str, host: str) -> bool:
    """Whether the literal IP address `host` is inside `cidr`."""
    return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(cidr)


# The services' own grammar for CONSUL_HTTP_ADDR (services/*/config.py), so all three agree.
_CONSUL_URL = TypeAdapter(
    Annotated[
        AnyUrl,
        UrlConstraints(allowed_schemes=["http", "https"], host_required=True, default_port=8500),
        BeforeValidator(lambda v: v if "://" in v else f"http://{v}"),
    ]
)
_CHART_REPO_URL = TypeAdapter(
    Annotated[AnyUrl, UrlConstraints(allowed_schemes=["https", "http", "oci"], host_required=True)]
)


def consul_address(value: str) -> AnyUrl:
    expected = "http(s)://host[:port] or host[:port] (port 1-65535, 8500 if omitted), no path"
    try:
        url = _CONSUL_URL.validate_python(value)
    except ValidationError:
        raise ValueError(expected) from None
    if not url.port or url.path not in ("", "/") or url.query or url.username or url.fragment:
        raise ValueError(expected)
    return url


def database_url(value: str) -> tuple[str, int]:
    """A libpq URI, postgresql://user[:password]@host[:port]/database: its host and port. Errors
    never repeat the value: it may hold a password."""
    expected = "a postgresql://user:password@host[:port]/database URI"
    try:
        url = urlsplit(value)
        port = url.port  # raises on a port that is not a number in range
    except ValueError:
        raise ValueError(expected) from None
    if url.scheme not in ("postgresql", "postgres") or not url.hostname or not url.username:
        raise ValueError(expected)
    if port == 0 or url.path in ("", "/") or url.fragment:
        raise ValueError(expected)
    return url.hostname, port or 5432


OTLP_PORT = 4317  # OTLP/gRPC's registered port


def otlp_endpoint(value: str) -> str:
    """An OTLP/gRPC collector, `http(s)://host[:port]`, returned with its port always written out:
    the exporter hands gRPC only `host[:port]`, and gRPC dials 443 when the port is missing, so
    the pods and their NetworkPolicy must agree on one explicit port."""
    expected = f"http(s)://host:port (port 1-65535, {OTLP_PORT} if omitted), no path"
    try:
        url = urlsplit(value)
        port = url.port  # raises on a port that is not a number in range
    except ValueError:
        raise ValueError(expected) from None
    host = url.netloc.removesuffix(f":{port}") if port else url.netloc
    if (
        url.scheme not in ("http", "https")
        or not re.fullmatch(_HOST, host)
        or port == 0
        or url.path not in ("", "/")
        or url.query
        or url.fragment
    ):
        raise ValueError(expected)
    return f"{url.scheme}://{host}:{port or OTLP_PORT}"


def chart_repo(value: str) -> AnyUrl:
    try:
        return _CHART_REPO_URL.validate_python(value)
    except ValidationError:
        raise ValueError("an https://, http:// or oci:// chart repository URL") from None


def chart_path(value: str) -> str:
    """A local chart: an absolute path (Helm and this program may run in different directories)."""
    path = Path(value).expanduser()
    is_chart = (path / "Chart.yaml").is_file() or (
        path.is_file() and value.endswith((".tgz", ".tar.gz"))
    )
    if not path.is_absolute() or not is_chart:
        raise ValueError(
            "an absolute path to a chart directory (with Chart.yaml) or a .tgz that exists"
        )
    return str(path)


def chart_version(value: str) -> str:
    if not _SEMVER.fullmatch(value):
        raise ValueError("an exact chart version such as 1.9.3 (semver, no ranges)")
    return value
