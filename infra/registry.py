"""What a registry serves for a pushed tag, asked of the registry itself (Registry HTTP API v2).

Why: the Docker provider takes an image's `repo_digest` from the engine's report of the push, or
failing that from the local image's RepoDigests. podman's Docker-compatible API reports no digest,
and its local manifest digest is not the one it pushed, so a Deployment pinned to `repo_digest`
named a manifest the registry did not have. Reading the tag's digest back from the registry makes
the reference right whichever Docker-compatible engine built and pushed the image.

Registries on a loopback host (kind's `localhost:5001`, the local cluster's) are spoken to over
plain HTTP, as Docker itself does for them; every other one over HTTPS, with the registry's token
or basic authentication when it asks for it.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request

DOCKER_HUB = "registry-1.docker.io"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
TIMEOUT_SECONDS = 30


class RegistryError(RuntimeError):
    """The registry could not say what it serves for a reference."""


class NotInRegistry(RegistryError):
    """The registry answered 404: it does not have the tag (or digest) at all."""


def split_reference(reference: str) -> tuple[str, str, str]:
    """`host[:port]/path:tag` or `…@sha256:…` -> (host, repository path, tag or digest), with
    Docker Hub's defaults."""
    name, _, tag = reference.partition("@")
    if not tag:
        name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        raise RegistryError(f"{reference!r} has no tag")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return DOCKER_HUB, name if "/" in name else f"library/{name}", tag


def _base_url(host: str) -> str:
    hostname = (
        host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]", maxsplit=1)[0] + "]"
    )
    scheme = "http" if hostname in LOOPBACK_HOSTS else "https"
    return f"{scheme}://{host}"


def _token(challenge: str, repository: str, basic: str | None) -> str:
    """A bearer token from the realm a `WWW-Authenticate: Bearer …` challenge names."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if not params.get("realm", "").startswith(("https://", "http://")):
        raise RegistryError(f"token realm {params.get('realm')!r} is not an http(s) URL")
    query = {"scope": f"repository:{repository}:pull"}
    if "service" in params:
        query["service"] = params["service"]
    # The realm comes from the registry's challenge; only http(s) URLs are built or followed here.
    request = urllib.request.Request(f"{params['realm']}?{urllib.parse.urlencode(query)}")  # noqa: S310
    if basic:
        request.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
        body = json.load(answer)
    return body.get("token") or body["access_token"]


def pushed_digest(reference: str, username: str | None = None, password: str | None = None) -> str:
    """The digest (`sha256:…`) the registry serves for `reference` (`repo:tag` or `repo@digest`)."""
    host, repository, tag = split_reference(reference)
    url = f"{_base_url(host)}/v2/{repository}/manifests/{tag}"
    basic = base64.b64encode(f"{username}:{password}".encode()).decode() if username else None
    authorization = None
    for _ in range(2):  # once anonymously, once more with what the challenge asked for
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})  # noqa: S310
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
                digest = answer.headers.get("Docker-Content-Digest", "")
                if not digest.startswith("sha256:"):
                    raise RegistryError(f"{url} answered without a Docker-Content-Digest")
                return digest
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "")
            if err.code == 404:
                raise NotInRegistry(f"{url}: HTTP 404") from None
            if err.code != 401 or authorization or not challenge:
                raise RegistryError(f"{url}: HTTP {err.code}") from None
            if challenge.lower().startswith("bearer"):
                authorization = f"Bearer {_token(challenge, repository, basic)}"
            elif basic:
                authorization = f"Basic {basic}"
            else:
                raise RegistryError(f"{url} needs credentials (registryUsername)") from None
        except (urllib.error.URLError, OSError) as err:
            raise RegistryError(f"{url}: {err}") from None
    raise RegistryError(f"{url}: refused the credentials")
