"""Helpers of the toolchain checks: pins, the toolchain's binaries, a cluster on free ports."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def versions() -> dict[str, str]:
    """The pins of hack/versions.env."""
    pins = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


def bin_dir() -> Path:
    out = subprocess.run(
        [str(HACK / "toolchain.sh"), "bin-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def tool(name: str) -> str:
    """Path of a toolchain binary (the toolchain's bin dir first, then PATH), else skip."""
    candidate = bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.skip(f"{name} not found: run `make toolchain`")


class Cluster:
    """hack/cluster.sh on free loopback ports and its own state dir: a developer cluster stays."""

    PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {
            **os.environ,
            "CLUSTER_DIR": str(state_dir),
            "CLUSTER_ETCD_PORT": str(free_port()),
            "CLUSTER_ETCD_PEER_PORT": str(free_port()),
            "CLUSTER_API_PORT": str(free_port()),
            "CLUSTER_CONTROLLER_MANAGER_PORT": str(free_port()),
            "CLUSTER_SCHEDULER_PORT": str(free_port()),
            "CLUSTER_PV_COUNT": "3",
        }
        self.kubeconfig = state_dir / "kubeconfig"
        self.kubectl_path = tool("kubectl")

    def script(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(HACK / "cluster.sh"), command],
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True):
        return subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def leftover_processes(self) -> list[str]:
        """Command lines of live processes of this cluster (their arguments name the state dir)."""
        left = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(self.state_dir) in cmdline and proc.name.isdigit():
                left.append(cmdline)
        return left
