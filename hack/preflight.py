#!/usr/bin/env python3
"""Checks, before any state or cluster is touched, that a deploy target can run; picks the cluster.

    hack/preflight.py up|preview|down [--cluster CLUSTER] [--stack STACK]

Run by `make up`, `make preview` and `make down` first, with the PATH they use (the toolchain's bin
dir, ./bin, the venv, then the user's PATH). It only reads: no file, stack or cluster is created.
On success it prints `CLUSTER=<c> STACK=<s>` on stdout (the make variables of the run) and what
it chose and why on stderr; otherwise every problem at once, each with the command that fixes it on
a normal machine and on one that reaches only package registries (no Docker, no release downloads),
and exits 2.

Standard library only, and Python 3.8 syntax: it runs with the system python3, before the venv
exists, and must be able to say that this python3 is too old.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "consul-microservices"
CLUSTERS = ("kind", "minikube", "existing", "local")
# The stack each cluster deploys by default, and the clusterProfile a stack must have to go there.
DEFAULT_STACK = {"kind": "dev", "minikube": "minikube", "existing": "prod", "local": "local"}
PROFILE_OF_CLUSTER = {
    "kind": "kind",
    "minikube": "minikube",
    "existing": "existing",
    "local": "existing",
}
# What `make up CLUSTER=local` runs from the toolchain (hack/cluster.sh takes every binary there).
LOCAL_TOOLS = (
    "pulumi", "pulumi-language-python", "pulumi-resource-kubernetes", "kubectl",
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
)  # fmt: skip
# kindnet enforces NetworkPolicy from kind v0.24.0 on; without it the stack's default-deny policies
# would be void (kind's certs.d local-registry recipe, infra/kind.sh, needs v0.20).
KIND_MINIMUM = (0, 24, 0)
TIMEOUT = 1.5  # seconds per probe of a local binary; the whole preflight stays well under 2 s
# The docker CLI waits for its daemon: Docker Desktop waking from Resource Saver takes seconds.
DOCKER_TIMEOUT = 20
# The (os, arch) of the download URLs the fixes name: kubectl's and minikube's spelling.
PLATFORM = (
    platform.system().lower(),
    {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine()),
)


def pins() -> dict[str, str]:
    """hack/versions.env (Go-built tools) and the pulumi SDK pin of infra/requirements.txt."""
    found = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    sdk = re.search(r"^pulumi==(\S+)", (ROOT / "infra" / "requirements.txt").read_text(), re.M)
    found["PULUMI_SDK"] = sdk.group(1) if sdk else "?"
    return found


PINS = pins()
KUBE_MINOR = int(PINS["KUBERNETES_VERSION"].split(".")[1])


@dataclass
class Problem:
    what: str
    fix: str  # on a normal machine
    here: str  # on a machine that reaches only package registries (no Docker, no release downloads)

    def render(self) -> str:
        lines = [f"  x {self.what}", f"      fix:                {self.fix}"]
        if self.here != self.fix:
            lines.append(f"      registries only:    {self.here}")
        return "\n".join(lines)


def version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None


def probe(*args: str, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """Runs a quick command: (succeeded, its stdout or its error)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as error:
        return False, str(error)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout} s"
    if done.returncode:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return False, lines[-1] if lines else f"exit {done.returncode}"
    return True, done.stdout.strip()


def toolchain_bin() -> Path:
    env = os.environ.get("TOOLCHAIN_BIN")
    if env:
        return Path(env)
    ok, out = probe(str(ROOT / "hack" / "toolchain.sh"), "bin-dir")
    return Path(out if ok else "/nonexistent")


def toolchain_missing() -> list[str]:
    bindir = toolchain_bin()
    return [name for name in LOCAL_TOOLS if not os.access(bindir / name, os.X_OK)]


# ---- one check per tool: the problems found (none when usable); a note on success ----


def python_minimum() -> tuple[int, ...]:
    """pyproject.toml's requires-python: what the program and its pins (make up's install) need."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, re.M)
    return tuple(int(part) for part in match.groups()) if match else (3,)


def check_python(
    notes: list[str], version: tuple[int, ...] = sys.version_info[:3]
) -> list[Problem]:
    """The python3 make runs (PYTHON), and the one of a .venv made before, against requires-python:
    otherwise pip fails half-way through the install, after this check had passed."""
    minimum = python_minimum()
    have, wanted = ".".join(map(str, version)), ".".join(map(str, minimum))
    if tuple(version[: len(minimum)]) < minimum:
        then = f"then again with PYTHON=python{wanted}, e.g. make up PYTHON=python{wanted}"
        fix = (
            f"brew install python@{wanted}; {then}"
            if PLATFORM[0] == "darwin"
            else f"apt-get install python{wanted} python{wanted}-venv (Ubuntu 22.04: from the "
            f"deadsnakes PPA), or any python {wanted}+; {then}"
        )
        what = f"{sys.executable} is Python {have}; the deploy's pins need {wanted} or newer"
        return [Problem(f"{what} (pyproject.toml requires-python)", fix, fix)]
    made = venv_python()
    if made and made[: len(minimum)] < minimum:
        made_text = ".".join(map(str, made))
        fix = f"rm -rf .venv   (make recreates it with {sys.executable})"
        return [
            Problem(f".venv was made with Python {made_text}; needs {wanted} or newer", fix, fix)
        ]
    notes.append(f"python {have} ({sys.executable})")
    return []


def venv_python() -> tuple[int, ...] | None:
    """The version of the python an existing .venv was made with (its pyvenv.cfg)."""
    config = ROOT / ".venv" / "pyvenv.cfg"
    text = config.read_text() if config.is_file() else ""
    match = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)\.(\d+)", text, re.M)
    return tuple(int(part) for part in match.groups()) if match else None


PULUMI_FIX = Problem(
    "",
    f"curl -fsSL https://get.pulumi.com | sh -s -- --version {PINS['PULUMI_SDK']}",
    f"make toolchain   (builds pulumi {PINS['PULUMI_VERSION']} from the Go module proxy into "
    "~/.cache; the make targets use it first)",
)


def check_pulumi(notes: list[str], path: str | None = None) -> list[Problem]:
    path = path or shutil.which("pulumi")
    wanted = f"pulumi 3.x at or above {PINS['PULUMI_SDK']}, the SDK pin of infra/requirements.txt"
    if not path:
        return [Problem(f"pulumi not found (needs {wanted})", PULUMI_FIX.fix, PULUMI_FIX.here)]
    ok, out = probe(path, "version")
    have = version_tuple(out) if ok else None
    pin = version_tuple(PINS["PULUMI_SDK"])
    if not have or have[0] != 3 or have < pin:
        got = out if ok else f"`pulumi version` failed: {out}"
        return [Problem(f"{path} is {got}; needs {wanted}", PULUMI_FIX.fix, PULUMI_FIX.here)]
    notes.append(f"pulumi {out} ({path})")
    return []


def kubectl_fix() -> tuple[str, str]:
    system, arch = PLATFORM
    release = f"https://dl.k8s.io/release/{PINS['KUBERNETES_VERSION']}/bin/{system}/{arch}/kubectl"
    return (
        f"curl -fsSLO {release} && sudo install kubectl /usr/local/bin/",
        f"make toolchain   (builds kubectl {PINS['KUBERNETES_VERSION']} from the Go module proxy)",
    )


def check_kubectl(notes: list[str]) -> list[Problem]:
    path = shutil.which("kubectl")
    wanted = f"kubectl 1.{KUBE_MINOR - 1} or newer (one minor of the clusters' 1.{KUBE_MINOR})"
    if not path:
        return [Problem(f"kubectl not found (needs {wanted})", *kubectl_fix())]
    ok, out = probe(path, "version", "--client", "-o", "yaml")
    match = re.search(r"gitVersion: (\S+)", out) if ok else None
    have = version_tuple(match.group(1)) if match else None
    if not have or have[:2] < (1, KUBE_MINOR - 1):
        got = match.group(1) if match else f"unreadable (`kubectl version --client`: {out})"
        return [Problem(f"{path} is {got}; needs {wanted}", *kubectl_fix())]
    notes.append(f"kubectl {match.group(1)} ({path})")
    return []


USE_LOCAL = "use the local cluster (make toolchain, then make up CLUSTER=local)"
NO_DOCKER_HERE = f"no Docker on such a machine: {USE_LOCAL}"


def docker_state() -> tuple[bool, str]:
    """(usable, why): the CLI is on PATH and its daemon answers."""
    if not shutil.which("docker"):
        return False, "docker not found"
    ok, out = probe("docker", "version", "--format", "{{.Server.Version}}", timeout=DOCKER_TIMEOUT)
    return (
        (True, f"docker {out} answers")
        if ok
        else (False, f"the docker daemon does not answer ({out})")
    )


def check_docker(notes: list[str]) -> list[Problem]:
    usable, why = docker_state()
    if usable:
        notes.append(why)
        return []
    fix = (
        "install Docker Desktop (https://docs.docker.com/desktop/setup/install/mac-install/) "
        "and start it: open -a Docker"
        if PLATFORM[0] == "darwin"
        else "install Docker Engine (https://docs.docker.com/engine/install/) and start it: "
        "sudo systemctl start docker"
    )
    return [Problem(f"{why} (images are built with Docker)", fix, NO_DOCKER_HERE)]


# What the node image and registry image of kind on podman (hack/kind-node.sh) take from the
# toolchain, on top of the local cluster's tools.
KIND_NODE_TOOLS = (
    "kubeadm", "kubelet", "kube-proxy", "coredns", "kube-router", "local-path-provisioner",
    "registry",
)  # fmt: skip


def kind_on_podman() -> bool:
    """kind's engine when Docker does not answer (infra/kind.sh: podman)."""
    return not docker_state()[0] and shutil.which("podman") is not None


def check_kind_engine(notes: list[str]) -> list[Problem]:
    """Docker when its daemon answers; else podman with the project's node image, which the
    toolchain builds (hack/kind-node.sh) and rootful podman runs."""
    usable, why = docker_state()
    if usable:
        notes.append(why)
        return []
    docker_problem = check_docker([])[0]
    podman = shutil.which("podman")
    if not podman:
        install = "sudo hack/container-engine.sh install   (podman from Debian's packages)"
        return [
            Problem(
                f"{why}, and podman is not installed (kind runs its nodes on Docker, or on podman "
                "with the project's node image)",
                f"{docker_problem.fix}; or, without Docker: {install}, and make toolchain",
                f"{install} and make toolchain, then make up CLUSTER=kind; or the local cluster: "
                "make toolchain, then make up CLUSTER=local",
            )
        ]
    problems = []
    missing = [
        name for name in (*LOCAL_TOOLS, *KIND_NODE_TOOLS)
        if not os.access(toolchain_bin() / name, os.X_OK)
    ]  # fmt: skip
    if missing:
        problems.append(
            Problem(
                f"{why}: kind on podman needs the project's node image, built from the toolchain, "
                f"which is not built in {toolchain_bin()} (missing: {' '.join(missing)})",
                f"make toolchain   (~45 min on 2 cores, once); or {docker_problem.fix}",
                "make toolchain",
            )
        )
    if os.geteuid() != 0:
        fix = "sudo make up CLUSTER=kind (rootful podman), or start Docker"
        problems.append(Problem(f"{why}, and kind on podman needs root here", fix, fix))
    chart = os.environ.get("CONSUL_CHART_PATH")
    if chart:  # the chart's images are mirrored into kind's registry, as for the local cluster
        problems += check_chart_parts(notes, Path(chart))
    if not problems:
        notes.append(
            f"{why}: kind on podman ({podman}) with the project's node image "
            "(hack/kind-node.sh, built once from the toolchain)"
        )
    return problems


def kind_state() -> tuple[tuple[int, ...] | None, str]:
    path = shutil.which("kind")
    if not path:
        return None, "kind not found"
    ok, out = probe(path, "version")
    have = version_tuple(out) if ok else None
    return have, (f"kind v{'.'.join(map(str, have))} ({path})" if have else f"{path}: {out}")


def check_kind(notes: list[str]) -> list[Problem]:
    have, why = kind_state()
    wanted = "kind v{}.{} or newer (its kindnet enforces NetworkPolicy)".format(*KIND_MINIMUM)
    if have and have >= KIND_MINIMUM:
        notes.append(why)
        return []
    fix = f"make tools   (go install sigs.k8s.io/kind@{PINS['KIND_VERSION']} into ./bin)"
    return [Problem(f"{why}; needs {wanted}" if have else f"{why} (needs {wanted})", fix, fix)]


def check_minikube(notes: list[str]) -> list[Problem]:
    path = shutil.which("minikube")
    ok, out = probe(path, "version", "--short") if path else (False, "not found")
    if ok:
        notes.append(f"minikube {out} ({path})")
        return []
    binary = "minikube-{}-{}".format(*PLATFORM)
    return [
        Problem(
            f"minikube {out}",
            "curl -fsSLO https://storage.googleapis.com/minikube/releases/latest/"
            f"{binary} && sudo install {binary} /usr/local/bin/minikube",
            f"minikube is a release download: {USE_LOCAL}",
        )
    ]


def check_local(notes: list[str]) -> list[Problem]:
    problems = []
    missing = toolchain_missing()
    if missing:
        problems.append(
            Problem(
                f"the toolchain is not built in {toolchain_bin()} (missing: {' '.join(missing)})",
                "make toolchain   (~45 min on 2 cores, from the Go module proxy; once)",
                "make toolchain",
            )
        )
    else:
        notes.append(f"toolchain built in {toolchain_bin()}")
        problems += check_pulumi(notes, str(toolchain_bin() / "pulumi"))
    if os.geteuid() != 0:
        problems.append(
            Problem(
                "not root: the local cluster's rootful podman (and /etc/containers) needs root",
                "sudo make up CLUSTER=local, or use kind (make up CLUSTER=kind)",
                "sudo make up CLUSTER=local",
            )
        )
    chart = os.environ.get("CONSUL_CHART_PATH")
    if chart:
        problems += check_chart_parts(notes, Path(chart))
    if shutil.which("podman"):
        notes.append(f"podman ({shutil.which('podman')})")
    elif shutil.which("apt-get"):
        notes.append("podman not installed: hack/container-engine.sh installs it with apt-get")
    else:
        fix = "install podman and runc with your package manager"
        problems.append(Problem("podman not found and no apt-get to install it", fix, fix))
    return problems


def check_chart_parts(notes: list[str], chart: Path) -> list[Problem]:
    """The local cluster's chart mode: the chart, and the control-plane image it names (mirrored
    into the node's registry by hack/local-stack.sh chart-images; the registry cannot pull it)."""
    without = "or unset CONSUL_CHART_PATH: Consul then runs as an agent on this host"
    values = chart / "values.yaml"
    if not (chart / "Chart.yaml").is_file() or not values.is_file():
        fix = "helm pull hashicorp/consul --untar --version <consulChartVersion>, then point to it"
        return [Problem(f"CONSUL_CHART_PATH={chart} holds no chart", fix, f"{fix}; {without}")]
    named = re.search(r"^  imageK8S: *\"?([^\"\s]+)", values.read_text(), re.M)
    wanted = named.group(1) if named else "hashicorp/consul-k8s-control-plane"
    image = os.environ.get("CONSUL_K8S_CONTROL_PLANE_IMAGE", "")
    podman = shutil.which("podman")
    if image and (not podman or probe(podman, "image", "exists", image)[0]):
        notes.append(f"chart {chart}; control-plane image {image}")
        return []
    what = (
        f"CONSUL_K8S_CONTROL_PLANE_IMAGE={image}: no such podman image"
        if image
        else ("CONSUL_CHART_PATH is set, but CONSUL_K8S_CONTROL_PLANE_IMAGE is not")
    )
    pull = f"podman pull docker.io/{wanted}"
    fix = f"{pull} && export CONSUL_K8S_CONTROL_PLANE_IMAGE=docker.io/{wanted}"
    carry = f"load {wanted} from a machine that can pull it (podman save, then podman load)"
    return [Problem(f"{what} (the chart runs {wanted})", fix, f"{carry}, {without}")]


# ---- stacks, backend, passphrase ----


def stack_files() -> dict[str, str]:
    return {
        p.name[len("Pulumi.") : -len(".yaml")]: p.read_text() for p in ROOT.glob("Pulumi.*.yaml")
    }


def stack_setting(text: str, key: str) -> str | None:
    match = re.search(rf"^\s+{PROJECT}:{key}:\s*(.*?)\s*$", text, re.M)
    return match.group(1).strip("\"'") if match else None


def services() -> list[str]:
    """The services: the folders that hold a services/<name>/service.yaml (infra/catalog.py)."""
    return sorted(path.parent.name for path in (ROOT / "services").glob("*/service.yaml"))


def prebuilt(text: str) -> set[str]:
    """The services whose image a stack file gives (services.<name>.image): nothing to build.
    Stack files are YAML; this reads the two forms they take without a YAML library: the block
    `pulumi config set --path` writes, and a JSON flow mapping on one line."""
    match = re.search(rf"^  {PROJECT}:services:(.*)\n((?:    .*\n?)*)", text, re.M)
    if not match:
        return set()
    if match.group(1).strip():
        try:
            given = json.loads(match.group(1))
        except ValueError:
            return set()
        return {name for name, settings in given.items() if settings.get("image")}
    found, service = set(), None
    for line in match.group(2).splitlines():
        key = line.strip().split(":", 1)[0].strip("\"'")
        if re.match(r"^    \S", line):
            service = key
        elif re.match(r"^      image:\s*\S", line) and service:
            found.add(service)
    return found


def file_backend() -> Path | None:
    url = os.environ.get("PULUMI_BACKEND_URL", "")
    return Path(os.path.expanduser(url[len("file://") :])) if url.startswith("file://") else None


def stack_in_backend(stack: str) -> bool | None:
    """Whether a file backend holds the stack (None: not a file backend, pulumi will say)."""
    backend = file_backend()
    if backend is None:
        return None
    stacks = backend / ".pulumi" / "stacks"
    return any(
        (base / f"{stack}{ext}").is_file()
        for base in (stacks / PROJECT, stacks)
        for ext in (".json", ".json.gz")
    )


def check_stack(cluster: str, stack: str, text: str, action: str) -> list[Problem]:
    problems = []
    profile = stack_setting(text, "clusterProfile") or "kind"
    if profile != PROFILE_OF_CLUSTER[cluster]:
        fix = f"make {action} CLUSTER={cluster} STACK={DEFAULT_STACK[cluster]}"
        problems.append(
            Problem(
                f"stack {stack} has clusterProfile {profile} (Pulumi.{stack}.yaml); "
                f"CLUSTER={cluster} needs {PROFILE_OF_CLUSTER[cluster]}",
                fix,
                fix,
            )
        )
    local_stacks = os.environ.get("LOCAL_STACKS", "").split()
    needs_passphrase = "encryptionsalt:" in text or file_backend() is not None
    if (
        needs_passphrase
        and stack not in local_stacks
        and "PULUMI_CONFIG_PASSPHRASE" not in os.environ
        and not os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    ):
        fix = (
            "export PULUMI_CONFIG_PASSPHRASE='<your passphrase>'   (only the local stacks "
            f"{', '.join(local_stacks)} default to the documented local one)"
        )
        problems.append(Problem(f"stack {stack} needs the passphrase of its secrets", fix, fix))
    kubeconfig = stack_setting(text, "kubeconfig")
    if cluster == "existing" and kubeconfig and not Path(os.path.expanduser(kubeconfig)).is_file():
        fix = f"hack/pulumi.sh {stack} config set kubeconfig <path>"
        problems.append(
            Problem(f"kubeconfig {kubeconfig} (Pulumi.{stack}.yaml) does not exist", fix, fix)
        )
    if action == "down" and stack_in_backend(stack) is False:
        problems.append(
            Problem(
                f"nothing to destroy: stack {stack} is not in {os.environ['PULUMI_BACKEND_URL']}",
                "check STACK and PULUMI_BACKEND_URL; deployed stacks there: "
                + (", ".join(deployed()) or "none"),
                "the same",
            )
        )
        problems += started_clusters((cluster,))
    return problems


def started_clusters(clusters: tuple[str, ...]) -> list[Problem]:
    """Clusters `make up` starts that still run though no stack is deployed (a first `make up`
    that failed before its stack existed): `make down` has no stack to go by, so it names them."""
    running = []
    if "local" in clusters and probe(str(ROOT / "hack" / "cluster.sh"), "status")[0]:
        running.append(("local", "the local cluster (and podman's API) that make up started"))
    kind, name = shutil.which("kind"), os.environ.get("KIND_CLUSTER", PROJECT)
    if kind_on_podman():
        os.environ["KIND_EXPERIMENTAL_PROVIDER"] = "podman"  # kind takes a docker CLI for Docker
    if "kind" in clusters and kind and name in probe(kind, "get", "clusters")[1].split():
        running.append(("kind", f"the kind cluster {name} (and its registry) that make up created"))
    stops = {c: f"make cluster-stop CLUSTER={c}" for c, _ in running}
    return [Problem(f"{what} still runs", stops[c], stops[c]) for c, what in running]


def deployed() -> list[str]:
    return sorted(s for s in stack_files() if stack_in_backend(s))


# ---- choosing the cluster ----


def choose_deployed() -> tuple[str | None, str, list[Problem]]:
    """`make down` without CLUSTER or STACK: the one local stack the backend holds."""
    candidates = [s for s in deployed() if s in DEFAULT_STACK.values()]
    if len(candidates) == 1:
        cluster = next(c for c, s in DEFAULT_STACK.items() if s == candidates[0])
        return cluster, f"stack {candidates[0]} is the one deployed stack in the backend", []
    if candidates:
        listed = ", ".join(candidates)
        fix = "make down CLUSTER=<kind|minikube|existing|local> (or STACK=<stack>)"
        return (
            None,
            "",
            [Problem(f"several stacks are deployed ({listed}): say which", fix, fix)],
        )
    backend = os.environ.get("PULUMI_BACKEND_URL", "?")
    fix = "make down CLUSTER=<cluster> STACK=<stack> if you deployed to another stack or backend"
    nothing = Problem(f"nothing to destroy: no stack in {backend}", fix, fix)
    return None, "", [nothing, *started_clusters(("local", "kind"))]


def choose_cluster(action: str, stack: str) -> tuple[str | None, str, list[Problem]]:
    """CLUSTER was not given: (cluster, why, problems)."""
    files = stack_files()
    if stack:
        cluster = next((c for c, s in DEFAULT_STACK.items() if s == stack), None)
        cluster = cluster or (stack_setting(files.get(stack, ""), "clusterProfile") or "kind")
        return cluster, f"STACK={stack} deploys to {cluster}", []
    if action == "down":
        return choose_deployed()
    docker_ok, docker_why = docker_state()
    kind_version, kind_why = kind_state()
    if docker_ok and kind_version:
        return "kind", f"{docker_why} and {kind_why.split(' (')[0]} is installed", []
    missing = toolchain_missing()
    if not missing:
        kind_blocker = kind_why if docker_ok else docker_why
        why = f"{kind_blocker}, and the toolchain is built ({toolchain_bin()})"
        return "local", why, []
    return (
        None,
        "",
        [
            Problem(
                "no cluster to deploy to (CLUSTER not set):"
                f"\n      - kind needs Docker and kind: {docker_why}; {kind_why}"
                f"\n      - the local cluster needs the toolchain: not built in {toolchain_bin()}",
                "kind: install Docker (https://docs.docker.com/engine/install/), then make tools "
                f"(kind {PINS['KIND_VERSION']} into ./bin), then make {action}",
                f"the Docker-free local cluster: make toolchain (~45 min once), then make {action}",
            )
        ],
    )


CHECKS = {
    "kind": (check_pulumi, check_kubectl, check_kind_engine, check_kind),
    "minikube": (check_pulumi, check_kubectl, check_minikube),
    "existing": (check_pulumi, check_kubectl),
    "local": (check_local,),
}


def preflight(action: str, cluster: str, stack: str) -> tuple[str, str, list[Problem], list[str]]:
    notes: list[str] = []
    files = stack_files()
    problems: list[Problem] = []
    if cluster and cluster not in CLUSTERS:
        fix = f"make {action} CLUSTER=<{'|'.join(CLUSTERS)}> (or no CLUSTER: make chooses)"
        problems.append(
            Problem(f"unknown CLUSTER={cluster}; valid: {', '.join(CLUSTERS)}", fix, fix)
        )
    if stack and stack not in files:
        fix = f"make {action} STACK=<{'|'.join(sorted(files))}>, or add Pulumi.{stack}.yaml"
        problems.append(
            Problem(f"unknown STACK={stack}; valid: {', '.join(sorted(files))}", fix, fix)
        )
    if problems:
        return cluster, stack, problems, notes
    if not cluster:
        chosen, why, problems = choose_cluster(action, stack)
        if chosen is None:
            # Both ways forward need these; report them now rather than after the next attempt.
            extra = (check_pulumi, check_kubectl) if action != "down" else (check_pulumi,)
            return cluster, stack, problems + [p for c in extra for p in c(notes)], notes
        cluster = chosen
        notes.append(f"CLUSTER not set: chose {cluster}: {why}")
    stack = stack or DEFAULT_STACK[cluster]
    for check in (check_python, *CHECKS[cluster]):
        problems += check(notes)
    if cluster == "existing" and set(services()) - prebuilt(files[stack]):
        problems += check_docker(notes)
    problems += check_stack(cluster, stack, files[stack], action)
    return cluster, stack, problems, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "preview", "down", "dev"))  # dev: as up
    parser.add_argument("--cluster", default="")
    parser.add_argument("--stack", default="")
    args = parser.parse_args()
    convention = subprocess.run(
        [str(ROOT / "hack" / "pulumi.sh"), "--convention"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in convention.stdout.splitlines():
        key, value = shlex.split(line)[0].split("=", 1)
        os.environ[key] = value  # PULUMI_BACKEND_URL already honours the caller's value
    cluster, stack, problems, notes = preflight(args.action, args.cluster, args.stack)
    if problems:
        count = f"{len(problems)} problem{'s' * (len(problems) > 1)}"
        print(
            f"make {args.action}: stopped before touching any state or cluster; {count}:",
            file=sys.stderr,
        )
        print("\n".join(p.render() for p in problems), file=sys.stderr)
        return 2
    print(f"make {args.action}: cluster {cluster}, stack {stack}", file=sys.stderr)
    for note in notes:
        print(f"  ok {note}", file=sys.stderr)
    print(f"CLUSTER={cluster} STACK={stack}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
