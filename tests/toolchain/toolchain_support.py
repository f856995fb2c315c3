"""Helpers of the toolchain checks: pins, the toolchain's binaries, a cluster on free ports."""

import os
import subprocess
from pathlib import Path

from testkit import HACK, ROOT, free_ports, tool, wait_until
from testkit import toolchain_bin_dir as bin_dir

__all__ = ["ROOT", "Cluster", "bin_dir", "tool", "versions", "wait_until"]


def versions() -> dict[str, str]:
    """The pins of hack/versions.env."""
    pins = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


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
