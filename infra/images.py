"""Container images: one `pulumi_docker.Image` per service, built from services/<svc>/.

Why a content-hash tag: the tag changes exactly when the build context (or a build arg) changes, so
an unchanged service keeps its tag and shows no diff, and a node never has to guess what `:latest`
means (kind/minikube would otherwise pull with `Always` and hit ImagePullBackOff).
Why `repo_digest`: after a push it is `repo@sha256:…`, the immutable reference the Deployment uses.
Without a push (minikube docker-env, kwok) there is no registry digest, only the local image ID, so
the Deployment uses the content-hash tag and the image ID goes into a pod annotation.
`booksApiImage`/`greeterImage` register no Image for that service: something else (CI, podman)
has built it, and the Deployment runs the pinned reference as given.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s
from config import ImageSettings

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
TAG_LENGTH = 12
_CACHES = ("__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
_ALWAYS_SENT = ("Dockerfile", ".dockerignore")


@dataclass(frozen=True)
class BuiltImage:
    """What a Deployment needs from a build: the reference to run and the image's identity."""

    image: docker.Image | None  # None when built outside Pulumi (booksApiImage, greeterImage)
    ref: pulumi.Output[str]
    image_id: pulumi.Output[str]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` spans directories, `*` and `?` do not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignore(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per rule, in file order; the last matching rule decides, as in Docker."""
    ignore_file = context / ".dockerignore"
    if not ignore_file.is_file():
        return []
    rules = []
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((negated, _glob_regex(pattern)))
    return rules


def _excluded(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = rel.split("/")
    if any(fnmatch.fnmatch(part, p) for part in parts for p in _CACHES):
        return True
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def context_hash(context: Path, build_args: dict[str, str]) -> str:
    """A digest of every file the build sees and of the build args.

    It follows .dockerignore like Docker does (last matching rule wins, `!` re-includes); the
    Dockerfile and .dockerignore always count, as Docker always sends them; caches never count.
    """
    rules = _dockerignore(context)
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        rel = path.relative_to(context).as_posix()
        if rel not in _ALWAYS_SENT and _excluded(rel, rules):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    for key in sorted(build_args):
        digest.update(f"{key}={build_args[key]}\0".encode())
    return digest.hexdigest()[:TAG_LENGTH]


def build(
    service: str,
    settings: ImageSettings,
    reference: str | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> BuiltImage:
    """The image a Deployment runs: `reference` when one was built elsewhere, else a build."""
    if reference:
        digest = reference.partition("@")[2]
        return BuiltImage(
            image=None,
            ref=pulumi.Output.from_input(reference),
            image_id=pulumi.Output.from_input(digest or reference),
        )
    context = SERVICES_DIR / service
    build_args = dict(settings.build_args)
    if settings.base_image:
        build_args["BASE_IMAGE"] = settings.base_image
    repository = f"{settings.registry}/{service}" if settings.registry else service
    tag = context_hash(context, build_args)
    registry = None
    if settings.push and settings.username:
        registry = docker.RegistryArgs(
            server=settings.registry_server,
            username=settings.username,
            password=settings.password,
        )
    image = docker.Image(
        f"image-{service}",
        image_name=f"{repository}:{tag}",
        build=docker.DockerBuildArgs(
            context=str(context),
            dockerfile=str(context / "Dockerfile"),
            args=build_args or None,
            builder_version=settings.builder,
        ),
        registry=registry,
        skip_push=not settings.push,
        opts=opts,
    )
    ref = image.repo_digest if settings.push else image.image_name
    return BuiltImage(image=image, ref=ref, image_id=image.repo_digest)


def pull_secret(
    settings: ImageSettings, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> pulumi.Output[str] | None:
    """A dockerconfigjson Secret for a private registry; its content stays a Pulumi secret."""
    if not (settings.username and settings.password):
        return None
    server, username = settings.registry_server, settings.username
    config = settings.password.apply(
        lambda password: json.dumps(
            {
                "auths": {
                    server: {
                        "username": username,
                        "password": password,
                        "auth": base64.b64encode(f"{username}:{password}".encode()).decode(),
                    }
                }
            }
        )
    )
    secret = k8s.core.v1.Secret(
        "registry-credentials",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="registry-credentials", namespace=namespace),
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": pulumi.Output.secret(config)},
        opts=opts,
    )
    return secret.metadata.name
