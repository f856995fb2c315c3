#!/usr/bin/env python3
"""`make service NAME=<name> PROTOCOL=http|grpc`: a new service folder, services/<name>/, from the
project's template of that protocol (hack/service-templates/<protocol>/).

The template is a working service named service-template (package service_template): a manifest, its
code (health endpoints, Consul registration, JSON logs, metrics and traces through services/common,
graceful SIGTERM), its own pinned requirements and its own tests. Every occurrence of the template's
names, in file contents and paths, becomes the new one's. The result is checked as the program
checks the catalog (infra/catalog.py: the manifest, the folder's couplings, a Consul name no other
service registers) in a copy of services/ first: a name that is invalid, taken, or another service's
Consul name stops it with the reason, and nothing is written.

    hack/new-service.py NAME PROTOCOL [--services DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "hack" / "service-templates"
TEMPLATE_NAME = "service-template"
# A name is a DNS label (the catalog's rule) that also makes a Python package: a letter first.
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
sys.path.insert(0, str(ROOT / "infra"))


def protocols() -> list[str]:
    return sorted(path.name for path in TEMPLATES.iterdir() if path.is_dir())


def camel(name: str) -> str:
    """service-template -> ServiceTemplate: a gRPC service's name in its proto."""
    return "".join(part.capitalize() for part in name.split("-"))


def renamed(text: str, name: str) -> str:
    """The template's names, as the folder, the package, the environment and a proto spell them."""
    module = name.replace("-", "_")
    return (
        text.replace(camel(TEMPLATE_NAME), camel(name))
        .replace(TEMPLATE_NAME, name)
        .replace(TEMPLATE_NAME.replace("-", "_"), module)
        .replace(TEMPLATE_NAME.replace("-", "_").upper(), module.upper())
    )


def render(protocol: str, name: str, folder: Path) -> None:
    """The template of `protocol` as services/<name>/ in `folder`'s parent."""
    template = TEMPLATES / protocol
    for source in sorted(template.rglob("*")):
        if "__pycache__" in source.parts or source.is_dir():
            continue
        target = folder / renamed(str(source.relative_to(template)), name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(renamed(source.read_text(), name))
    # The shared Dockerfile, by a link as every Python service has it (services/README.md).
    (folder / "Dockerfile").symlink_to(os.path.join("..", "Dockerfile"))


def checked(services: Path, protocol: str, name: str) -> Path:
    """The new folder, rendered into a copy of `services` and checked with the whole catalog
    there; raises SystemExit with the reason."""
    if not NAME.fullmatch(name):
        raise SystemExit(
            f"make service: NAME={name!r}: expected a name of lower-case letters, digits and '-', "
            "a letter first, at most 40 characters (a DNS label and a Python package)"
        )
    if protocol not in protocols():
        raise SystemExit(f"make service: PROTOCOL={protocol!r}: expected one of {protocols()}")
    if (services / name).exists():
        raise SystemExit(f"make service: services/{name}/ exists: choose another NAME")
    import catalog  # noqa: PLC0415 - the program's own checks, with its dependencies (the venv)

    for other in catalog.load(services):
        if other.consul_name == name:  # the new one registers under its own name
            raise SystemExit(
                f"make service: NAME={name}: {other.name} registers the Consul name {name} "
                f"(services/{other.name}/service.yaml): choose another NAME"
            )
    work = Path(tempfile.mkdtemp(prefix="new-service-"))
    copy = work / "services"
    shutil.copytree(
        services, copy, symlinks=True, ignore=shutil.ignore_patterns(".offline", "__pycache__")
    )
    render(protocol, name, copy / name)
    try:
        catalog.load(copy)
    except catalog.CatalogError as error:
        shutil.rmtree(work)
        problems = [line.strip() for line in str(error).splitlines()[1:]]
        mine = [p for p in problems if p.startswith(f"services/{name}/")] or problems
        raise SystemExit("make service: " + "; ".join(mine)) from None
    return copy / name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("protocol")
    parser.add_argument("--services", type=Path, default=ROOT / "services")
    args = parser.parse_args()
    folder = checked(args.services, args.protocol, args.name)
    shutil.move(folder, args.services / args.name)
    shutil.rmtree(folder.parent.parent)
    # A longer name than the template's may lengthen a line past the project's style: formatted
    # with the dev venv's ruff when it is there (make service runs in it).
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.is_file():
        subprocess.run(
            [str(ruff), "format", "--quiet", str(args.services / args.name)], check=False
        )
    print(
        f"services/{args.name}/: a {args.protocol} service from hack/service-templates/"
        f"{args.protocol}/; `make test` runs its tests, `make run SERVICE={args.name}` runs it "
        "here, `make up` deploys it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
