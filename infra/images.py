"""Container images: one `pulumi_docker.Image` per service, from the one build context services/.

Every image builds from services/ (the shared protos/ and common/ code are in it), through the
Dockerfile in the service's folder: for a Python service a link to services/Dockerfile, which
takes the folder's name as the build arg SERVICE. The provider (like Docker) applies that file's
own `<Dockerfile>.dockerignore`: the shared context less the other services. It hashes that
context and rebuilds only when it changes, so a change in one service rebuilds and pushes that
image alone. After a push the Deployment runs `repo@sha256:…` with the digest the registry itself
serves for the pushed tag (registry.py says why the provider's `repo_digest` is not trusted), so
an image whose content did not change keeps its digest and rolls nothing out. The tag is then a
fixed name (PUSHED_TAG), never what a node runs.

Without a push (minikube docker-env, kwok) there is no registry digest, only the local image ID, so
the Deployment runs the tag, and that tag must change whenever the image's inputs do: only there
is it a content hash (`context_hash`, through docker-py's .dockerignore matcher, Docker's own
rules, over the same per-service context), and the image ID goes into a pod annotation.
A service whose `image` the stack sets registers no Image: something else (CI, podman) has built
it, and the Deployment runs the pinned reference as given.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s
import registry
from build_context import context_hash, dockerfile
from config import ImageSettings
from docker import DockerClient
from docker.errors import DockerException

PUSHED_TAG = "pulumi-build"


@dataclass(frozen=True)
class BuiltImage:
    """What a Deployment needs from a build: the reference to run and the image's identity."""

    image: docker.Image | None  # None when built outside Pulumi (services.<name>.image)
    ref: pulumi.Output[str]
    image_id: pulumi.Output[str]


def build(
    service: str,
    context: Path,
    settings: ImageSettings,
    reference: str | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> BuiltImage:
    """The image a Deployment runs: `reference` when one was built elsewhere, else a build of
    `context`/`service`/Dockerfile (catalog.py keeps that file and its ignore file there)."""
    if reference:
        digest = reference.partition("@")[2]
        return BuiltImage(
            image=None,
            ref=pulumi.Output.from_input(reference),
            image_id=pulumi.Output.from_input(digest or reference),
        )
    build_args = {**settings.build_args, "SERVICE": service}
    if settings.base_image:
        build_args["BASE_IMAGE"] = settings.base_image
    repository = f"{settings.registry}/{service}" if settings.registry else service
    tag = PUSHED_TAG if settings.push else context_hash(context, build_args, service)
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
            dockerfile=str(context / dockerfile(service)),
            args=build_args,
            builder_version=settings.builder,
        ),
        registry=registry,
        skip_push=not settings.push,
        opts=opts,
    )
    ref = _pushed_reference(image, settings) if settings.push else image.image_name
    return BuiltImage(image=image, ref=ref, image_id=image.repo_digest)


def _pushed_reference(image: docker.Image, settings: ImageSettings) -> pulumi.Output[str]:
    """`repo@sha256:…` as the registry serves the pushed tag. Unknown in a preview that rebuilds
    (`repo_digest` is unknown then), so the Deployment shows the coming change."""

    def read_back(values: list) -> str:
        name, provider_digest, password = values
        if not provider_digest:  # the provider logged a failed build or push and carried on
            raise RuntimeError(f"{name}: the build or push produced no image (see the log above)")
        return served_reference(
            name, settings.username, password or None, pulumi.runtime.is_dry_run()
        )

    password = settings.password or ""
    resolved = pulumi.Output.all(image.image_name, image.repo_digest, password).apply(read_back)
    return pulumi.Output.unsecret(resolved)


def served_reference(
    name: str,
    username: str | None,
    password: str | None,
    dry_run: bool,
    push: Callable[[str, str | None, str | None], None] | None = None,
) -> str:
    """`repo@sha256:…` of the pushed tag `name`, pushing the local image again when the registry
    has lost it (a registry recreated without its volume). The provider pushes only when the
    build's inputs change, so it never would, and pods that restart could not pull. A preview
    pushes nothing: it warns, and runs the tag."""
    try:
        digest = registry.pushed_digest(name, username, password)
    except registry.NotInRegistry:
        lost = f"{name}: the registry does not have it (recreated without its data?)"
        if dry_run:
            pulumi.log.warn(f"{lost}; `up` pushes the local image again")
            return name
        pulumi.log.warn(f"{lost}; pushing the local image again")
        (push or push_local_image)(name, username, password)
        digest = registry.pushed_digest(name, username, password)
    return f"{name.rpartition(':')[0]}@{digest}"


def push_local_image(name: str, username: str | None, password: str | None) -> None:
    """Pushes the image the Docker daemon (DOCKER_HOST, as the provider uses) holds as `name`."""
    repository, _, tag = name.rpartition(":")
    auth = {"username": username, "password": password} if username else None
    gone = (
        f"{name}: pushing it again failed; if the local image is gone too, rebuild it: pulumi up"
        " --replace <URN of its image-<service> resource> (pulumi stack --show-urns lists them)"
    )
    try:
        progress = DockerClient.from_env().images.push(
            repository, tag=tag, auth_config=auth, stream=True, decode=True
        )
        for step in progress:
            if "error" in step:
                raise RuntimeError(f"{gone}: {step['error']}")
    except DockerException as err:
        raise RuntimeError(f"{gone}: {err}") from None


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
