"""`make dev`: on every save, the smallest update that deploys it, and how long it took.

- A save in a service's folder (services/<name>/, a folder with a manifest) rebuilds that service's
  image and rolls out only its Deployment: `pulumi up --target` its Image (when the program builds
  it) and its Deployment. When the stack deploys images built outside Pulumi
  (services.<name>.image, the local cluster without the docker plugin), podman builds and pushes
  it first (hack/local-stack.sh image) and the stack's config gets the new digest.
- A save elsewhere in services/ (code or build files the services share) does that for every
  service; a save in infra/ or policy/, or of a stack file, runs the full update (--full-command).
- Saves that come together (an editor writing several files) make one update; saves during an
  update make the next one. Each update prints one line: what changed, what was rolled out, and
  the seconds from the first save to the update's end (the provider returns once the rollout is
  complete: every pod of it runs the new version and is ready).
- A failed build or update prints its error and waits for the next save; what runs keeps serving.
  Ctrl-C stops watching and leaves the stack as deployed.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import watchfiles

REPO = Path(__file__).resolve().parents[1]
HACK = REPO / "hack"
PROJECT = "consul-microservices"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
IMAGE = "docker:index/image:Image"
# Build and run state, written while the loop runs: never a change to deploy.
IGNORED_DIRS = {".offline", ".pulumi-state", ".bench", "build", "generated"}
DEBOUNCE_MS = 400


class UpdateFailed(Exception):
    """A build or update that failed: its command and output."""


def _run(args: list[str]) -> str:
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        output = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(output[-20:])
        raise UpdateFailed(f"{shlex.join(args)} exited {done.returncode}:\n{tail}")
    return done.stdout


@dataclass(frozen=True)
class Change:
    """What a burst of saves touched: services to roll out, or everything."""

    paths: tuple[str, ...]
    services: frozenset[str]
    full: bool

    def describe(self) -> str:
        more = f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else ""
        return ", ".join(self.paths[:3]) + more


def services_of(repo: Path) -> frozenset[str]:
    return frozenset(p.parent.name for p in (repo / "services").glob("*/service.yaml"))


def classify(paths: set[str], repo: Path, services: frozenset[str]) -> Change | None:
    """None when nothing deployable changed."""
    relative = sorted(str(Path(p).resolve().relative_to(repo)) for p in paths)
    full, touched = False, set()
    for path in relative:
        parts = Path(path).parts
        if IGNORED_DIRS.intersection(parts):
            continue
        if parts[0] in {"infra", "policy"} or (len(parts) == 1 and path.startswith("Pulumi.")):
            full = True
        elif parts[0] == "services":
            touched |= {parts[1]} if len(parts) > 2 and parts[1] in services else set(services)
    if not full and not touched:
        return None
    return Change(tuple(relative), frozenset(touched), full)


@dataclass
class Stack:
    """The stack the loop deploys to, through the project's Pulumi convention (hack/pulumi.sh).

    What it reads of the stack (URNs, which images are built outside Pulumi) is read once, and
    again after a full update: a rollout costs no extra pulumi run."""

    name: str
    config_file: str | None
    full_command: list[str]

    def pulumi(self, *args: str, config: bool = True) -> str:
        extra = ["--config-file", self.config_file] if config and self.config_file else []
        return _run([str(HACK / "pulumi.sh"), self.name, *args, *extra])

    def up(self, *args: str) -> str:
        extra = ["--config-file", self.config_file] if self.config_file else []
        command = [str(HACK / "pulumi-stack.sh"), self.name, "up", "--yes", "--skip-preview"]
        return _run([*command, *args, *extra])

    @functools.cached_property
    def built_outside(self) -> frozenset[str]:
        """The services whose image the stack's config gives (services.<name>.image)."""
        entry = json.loads(self.pulumi("config", "--json")).get(f"{PROJECT}:services", {})
        services = entry.get("objectValue") or json.loads(entry.get("value") or "{}")
        return frozenset(name for name, s in services.items() if s.get("image"))

    @functools.cached_property
    def urns(self) -> dict[tuple[str, str], str]:
        """(type, name) -> URN of every resource in the state."""
        state = json.loads(self.pulumi("stack", "export", config=False))
        found = {}
        for resource in state["deployment"].get("resources", []):
            urn = resource["urn"]
            found[(resource["type"], urn.rsplit("::", 1)[1])] = urn
        return found

    def forget(self) -> None:
        for cached in ("built_outside", "urns"):
            self.__dict__.pop(cached, None)


def roll_out(stack: Stack, service: str) -> str:
    """Rebuilds `service` and updates only its Image and Deployment; returns what now runs."""
    targets = [stack.urns[(DEPLOYMENT, f"{service}-deployment")]]
    if service in stack.built_outside:
        reference = _run([str(HACK / "local-stack.sh"), "image", service]).strip().splitlines()[-1]
        stack.pulumi("config", "set", "--path", f"services.{service}.image", reference)
    else:
        targets.insert(0, stack.urns[(IMAGE, f"image-{service}")])
        reference = "the program's build"
    stack.up(*(flag for urn in targets for flag in ("--target", urn)))
    return reference


def deploy(stack: Stack, change: Change) -> str:
    if change.full:
        stack.forget()
        _run(stack.full_command)
        return "full update"
    rolled = [f"{service} ({roll_out(stack, service)})" for service in sorted(change.services)]
    return "rolled out " + ", ".join(rolled)


def log(message: str) -> None:
    print(f"dev {time.strftime('%H:%M:%S')} {message}", flush=True)


def watch(stack: Stack, repo: Path) -> None:
    services = services_of(repo)
    candidates = [repo / "services", repo / "infra", repo / "policy", *repo.glob("Pulumi*.yaml")]
    paths = [path for path in candidates if path.exists()]
    own_writes: dict[str, bytes | None] = {}
    watching = False
    # The watcher starts with the first iteration: the first empty yield says it is in place,
    # and only then does the loop say so (a save before that would go unseen).
    watcher = watchfiles.watch(
        *paths, debounce=DEBOUNCE_MS, yield_on_timeout=True, rust_timeout=1000
    )
    for changes in watcher:
        if not changes:
            if not watching:
                watching = True
                log(f"watching {', '.join(str(p.relative_to(repo)) for p in paths)}; Ctrl-C stops")
            continue
        saved = time.monotonic()
        # The loop's own `config set` of a digest rewrites the stack file: not a save to deploy.
        saves = {p for _, p in changes if p not in own_writes or own_writes[p] != _content(p)}
        change = classify(saves, repo, services)
        if change is None:
            continue
        try:
            outcome = deploy(stack, change)
        except UpdateFailed as failure:
            log(f"{change.describe()}: FAILED; what runs keeps serving, waiting for the next save")
            print(failure, flush=True)
            continue
        finally:
            own_writes = {str(path): _content(path) for path in repo.glob("Pulumi.*.yaml")}
        log(f"{change.describe()}: {outcome}, serving in {time.monotonic() - saved:.1f} s")


def _content(path: str | Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--config-file", help="the stack's config file (make up CLUSTER=local's)")
    parser.add_argument("--full-command", help="the full update (default: pulumi up of the stack)")
    args = parser.parse_args()
    full = shlex.split(args.full_command) if args.full_command else [
        str(HACK / "pulumi-stack.sh"), args.stack, "up", "--yes", "--skip-preview",
        *(["--config-file", args.config_file] if args.config_file else []),
    ]  # fmt: skip
    stack = Stack(args.stack, args.config_file, full)
    # Ctrl-C (or TERM) stops the loop even where it started with SIGINT ignored, as a shell's
    # background job does.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        watch(stack, REPO)
    except KeyboardInterrupt:
        log("stopped; the stack stays as deployed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
