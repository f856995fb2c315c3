"""Helpers every test area shares: loopback ports, polling, and the toolchain's binaries."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HACK = ROOT / "hack"


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: every socket stays bound until all are chosen."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def wait_until(predicate, timeout: float = 15.0, what: str = "condition", interval: float = 0.1):
    """Poll predicate until it returns something truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def toolchain_bin_dir() -> Path:
    """The bin directory `make toolchain` fills (it may not exist yet)."""
    out = subprocess.run(
        [str(HACK / "toolchain.sh"), "bin-dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def find_tool(name: str) -> str | None:
    """A toolchain binary: the toolchain's bin dir first, then PATH."""
    candidate = toolchain_bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def tool(name: str) -> str:
    """Like find_tool, but skips the test, naming the command that installs the binary."""
    return find_tool(name) or pytest.skip(f"{name} not found: run `make toolchain`")


class Cluster:
    """hack/cluster.sh on free loopback ports and its own state dir: a developer cluster stays."""

    PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
    PORT_VARIABLES = (
        "CLUSTER_ETCD_PORT",
        "CLUSTER_ETCD_PEER_PORT",
        "CLUSTER_API_PORT",
        "CLUSTER_CONTROLLER_MANAGER_PORT",
        "CLUSTER_SCHEDULER_PORT",
    )

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {
            **os.environ,
            "CLUSTER_DIR": str(state_dir),
            **{
                variable: str(port)
                for variable, port in zip(
                    self.PORT_VARIABLES, free_ports(len(self.PORT_VARIABLES)), strict=True
                )
            },
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


@contextmanager
def running_cluster(state_dir: Path) -> Iterator[Cluster]:
    """hack/cluster.sh up on free ports; down afterwards, checking no process is left.

    Skips, naming `make toolchain`, when a binary the script needs is not in the toolchain (the
    script takes them all from there, never from PATH).
    """
    for name in (*Cluster.PROCESSES, "kubectl"):
        if not (toolchain_bin_dir() / name).is_file():
            pytest.skip(f"{name} not found: run `make toolchain`")
    kube = Cluster(state_dir)
    up = kube.script("up")
    try:
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield kube
    finally:
        down = kube.script("down")
        assert down.returncode == 0, f"cluster.sh down failed:\n{down.stdout}\n{down.stderr}"
        assert kube.leftover_processes() == []
