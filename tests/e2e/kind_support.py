"""kind on podman as a user runs it, for the e2e's kind suites (test_kind.py, test_nodes.py): a
copy of the repo whose `make` runs have their own kind cluster, kubeconfig, Pulumi backend and
state directory, so a developer's clusters and stacks are not touched; what of this host such a
run may change; and why it cannot run here, when it cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from local_stack import ChartConsul, copy_repo, user_path_parts
from testkit import ROOT, toolchain_bin_dir

# The stack's images name localhost:5001, which podman trusts (hack/container-engine.sh).
REGISTRY_PORT = 5001
# What the node image takes from the toolchain (hack/preflight.py KIND_NODE_TOOLS and the rest).
TOOLS = (
    "pulumi", "pulumi-language-python", "pulumi-resource-kubernetes", "kubectl", "kubeadm",
    "kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy",
    "etcd", "coredns", "kube-router", "local-path-provisioner", "registry", "consul",
)  # fmt: skip


def host_state() -> dict[str, object]:
    """What of this host kind on podman may change: containers, networks, volumes, routes,
    /lib/modules, Consul agents."""

    def lines(*args: str, check: bool = True) -> list[str]:
        out = subprocess.run(args, capture_output=True, text=True, check=check, timeout=60).stdout
        return sorted(out.split())

    return {
        "containers": lines("podman", "ps", "-a", "--format", "{{.Names}}"),
        "networks": lines("podman", "network", "ls", "--format", "{{.Name}}"),
        "volumes": lines("podman", "volume", "ls", "--format", "{{.Name}}"),
        "routes": subprocess.run(
            ["ip", "route"], capture_output=True, text=True, check=True
        ).stdout.splitlines(),
        "/lib/modules": os.path.exists("/lib/modules"),
        # pgrep exits 1 when it finds none.
        "consul agents": lines("pgrep", "-f", "consul agent -dev", check=False),
    }


@dataclass
class KindRun:
    """A copy of the repo and the environment of one user's `make` runs against kind."""

    path: str  # side or user (test_kind.py's docstring)
    cluster: str
    repo: Path
    env: dict[str, str]
    kubeconfig: Path
    before: dict[str, object] = field(default_factory=dict)  # host_state() before the first make

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"

    def make(self, *args: str, timeout: float = 1800) -> str:
        done = subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"make {' '.join(args)} exited {done.returncode}:\n{output}"
        return output

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout=120):
        return subprocess.run(
            [str(toolchain_bin_dir() / "kubectl"), "--kubeconfig", str(self.kubeconfig),
             "--context", self.context, *args],
            input=stdin, capture_output=True, text=True, check=check, timeout=timeout,
        )  # fmt: skip

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def consul_address(self) -> str:
        """Where the pods reach Consul, as the stack was given it."""
        if self.path == "user":
            return "consul-server.consul.svc:8500"
        gateway = subprocess.run(
            ["podman", "network", "inspect", "kind", "--format",
             "{{range .Subnets}}{{.Gateway}}{{end}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        return f"{gateway}:8500"

    def passing(self, consul_name: str) -> list[dict]:
        """The passing instances of a service ([] while Consul does not answer). The chart's
        server is asked from inside its pod: its namespace admits no traffic from this host."""
        path = f"/v1/health/service/{consul_name}?passing"
        try:
            if self.path == "side":
                return requests.get(f"http://{self.consul_address()}{path}", timeout=5).json()
            done = self.kubectl(
                "-n", "consul", "exec", "consul-server-0", "--", "curl", "-sf",
                "-H", f"X-Consul-Token: {ChartConsul(self).token()}", f"http://127.0.0.1:8500{path}",
                check=False,
            )  # fmt: skip
            return json.loads(done.stdout) if done.returncode == 0 else []
        except (requests.RequestException, ValueError, subprocess.CalledProcessError):
            return []


def why_not_here() -> str | None:  # noqa: PLR0911 - one reason per missing part
    if os.geteuid() != 0:
        return "needs root (rootful podman runs kind's nodes): run the e2e as root"
    if not shutil.which("podman"):
        return "podman not found: run `make container-engine`"
    for name in TOOLS:
        if not (toolchain_bin_dir() / name).is_file():
            return f"{name} not found: run `make toolchain`"
    if not (ROOT / "bin" / "kind").is_file():
        return "kind not found in ./bin: run `make tools`"
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, check=False
    ) if shutil.which("docker") else None  # fmt: skip
    if docker is not None and docker.returncode == 0:
        return "Docker answers here, so kind runs on Docker: this suite proves the podman path"
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", REGISTRY_PORT)) == 0:
            return (
                f"127.0.0.1:{REGISTRY_PORT} is taken (a kind or local cluster's registry): "
                "make down CLUSTER=kind (or CLUSTER=local) first"
            )
    return None


@contextmanager
def kind_run(base: Path, path: str, cluster: str, pod_subnet: str) -> Iterator[KindRun]:
    """A repo copy under `base`, and the environment of its make runs (the user path's parts on
    PATH for path "user"): `make down CLUSTER=kind` at the end in any case."""
    # This machine's deploy settings stay out, but for a language host that runs the policy pack.
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("CONSUL_", "KIND_", "PULUMI_", "DOCKER_"))
        or key == "PULUMI_LANGUAGE_PYTHON"
    }  # fmt: skip
    if path == "user":
        parts, _ = user_path_parts()
        env["CONSUL_CHART_PATH"] = parts["chart"]
        env["CONSUL_K8S_CONTROL_PLANE_IMAGE"] = parts["control-plane image"]
        env["PATH"] = f"{parts['docker plugin dir']}:{env['PATH']}"
    base.mkdir()
    repo = copy_repo(base / "repo")
    (repo / "bin").symlink_to(ROOT / "bin")
    run = KindRun(path, cluster, repo, env, base / "kubeconfig")
    env |= {
        "KIND_CLUSTER": cluster,
        "KIND_REGISTRY_NAME": f"{cluster}-registry",
        "KIND_POD_SUBNET": pod_subnet,
        "KIND_STATE_DIR": str(base / "kind-state"),
        "KUBECONFIG": str(run.kubeconfig),
        "PULUMI_BACKEND_URL": f"file://{base / 'backend'}",
        "PULUMI_HOME": str(base / "pulumi-home"),
        "CONTAINER_ENGINE_DIR": str(base / "podman"),
        "CONTAINER_ENGINE_SOCKET": str(base / "podman" / "podman.sock"),
    }
    run.before = host_state()
    try:
        yield run
    finally:
        if subprocess.run(
            ["kind", "get", "clusters"], env={**env, "PATH": f"{ROOT / 'bin'}:{env['PATH']}",
                                             "KIND_EXPERIMENTAL_PROVIDER": "podman"},
            capture_output=True, text=True, check=False,
        ).stdout.split().count(cluster):  # fmt: skip
            subprocess.run(["make", "down", "CLUSTER=kind"], cwd=repo, env=env,
                           capture_output=True, check=False, timeout=900)  # fmt: skip
