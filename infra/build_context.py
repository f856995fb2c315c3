"""What an image's build sends: a service's folder of the one context services/, less what its
ignore file excludes (Docker's own rules, through docker-py's matcher), and a digest of it.

Apart from images.py, and without Pulumi, so that the Docker-free clusters' scripts can ask for the
same digest from the shell: `hack/local-stack.sh` tags its podman builds with it and builds only
when the registry lacks that tag (a no-op `make up` rebuilt each image: 7.5 s of cache hits each).

    python infra/build_context.py SERVICE [ARG=VALUE ...]   print the digest (context: services/)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from docker.utils.build import exclude_paths

DOCKERFILE = "Dockerfile"
IGNORE_FILE = f"{DOCKERFILE}.dockerignore"
TAG_LENGTH = 12
SERVICES = Path(__file__).resolve().parents[1] / "services"


def dockerfile(service: str) -> str:
    """The service's Dockerfile, relative to the context: its folder's."""
    return f"{service}/{DOCKERFILE}"


def _ignore_patterns(context: Path, dockerfile: str) -> list[str]:
    """The ignore rules Docker applies: <Dockerfile>.dockerignore first, else the context's
    .dockerignore; no blank lines, no comments."""
    ignore_file = context / f"{dockerfile}.dockerignore"
    if not ignore_file.is_file():
        ignore_file = context / ".dockerignore"
    if not ignore_file.is_file():
        return []
    lines = (line.strip() for line in ignore_file.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_hash(context: Path, build_args: dict[str, str], service: str) -> str:
    """A digest of every file the build of `service` sends and of the build args: equal digests,
    equal builds (a base image named in the args is the caller's to pin, e.g. by its ID)."""
    path = dockerfile(service)
    sent = exclude_paths(str(context), _ignore_patterns(context, path), path)
    digest = hashlib.sha256()
    for rel in sorted(sent):
        file = context / rel
        if file.is_file():
            digest.update(rel.encode() + b"\0" + file.read_bytes() + b"\0")
    for key in sorted(build_args):
        digest.update(f"{key}={build_args[key]}\0".encode())
    return digest.hexdigest()[:TAG_LENGTH]


if __name__ == "__main__":
    if len(sys.argv) < 2 or not all("=" in arg for arg in sys.argv[2:]):
        sys.exit(f"usage: {sys.argv[0]} SERVICE [ARG=VALUE ...]")
    args = dict(arg.split("=", 1) for arg in sys.argv[2:])
    print(context_hash(SERVICES, args, sys.argv[1]))
