"""Helpers every test area shares: loopback ports, polling, and the toolchain's binaries."""

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
HACK = ROOT / "hack"
sys.path.insert(0, str(HACK))
from postgres_server import PostgresServer, postgres_bin_dir  # noqa: E402, F401 - the tests' server


def copy_worktree(dest: Path) -> Path:
    """The working tree's tracked and untracked-not-ignored files into `dest`, links as links (the
    services' Dockerfile links, infra/.venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = ROOT / name, dest / name
        if source.is_symlink() or source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


def copy_service(services: Path, source: str, name: str) -> Path:
    """`services/<source>/` copied to `services/<name>/`, changing only names inside the new folder,
    as a user starts a service from an existing one: the folder's and the package's name wherever
    they appear, and the Consul name in its manifest."""
    folder = services / name
    shutil.copytree(
        services / source, folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    module, new_module = source.replace("-", "_"), name.replace("-", "_")
    (folder / "src" / module).rename(folder / "src" / new_module)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            old, new = (module, new_module) if path.suffix == ".py" else (source, name)
            text = path.read_text().replace(old, new)
            path.write_text(re.sub(r"(?m)^consulName: .*$", f"consulName: {name}", text))
    return folder


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


def require_root(why: str) -> None:
    """Skips a test that needs root (a newcomer may run the suite as a normal user)."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root ({why}): run the tests as root, e.g. `sudo make test`")


def local_base_image() -> str:
    """The local Python base image of `make container-engine` (rootful podman); skips without."""
    require_root("rootful podman, as `make container-engine` sets it up")
    if not shutil.which("podman"):
        pytest.skip("podman not found: run `make container-engine`")
    name = subprocess.run(
        [str(HACK / "container-engine.sh"), "base-image-name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if subprocess.run(["podman", "image", "exists", name], check=False).returncode != 0:
        pytest.skip(f"local base image {name} not found: run `make container-engine`")
    return name


class Cluster:
    """hack/cluster.sh on free ports and its own state dir: a developer's fake-node cluster stays.

    A real node (the default of hack/cluster.sh) is one per host: its bridge, node address and
    registry port are the host's, so a real-node Cluster refuses to start while another runs.
    """

    CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    # What each kind of node needs from `make toolchain` besides the control plane and kubectl.
    NODE_TOOLS: ClassVar[dict[str, tuple[str, ...]]] = {
        "fake": ("kwok",),
        "real": ("kubelet", "kube-proxy", "kube-router", "coredns", "registry"),
    }
    PORT_VARIABLES = (
        "CLUSTER_ETCD_PORT",
        "CLUSTER_ETCD_PEER_PORT",
        "CLUSTER_API_PORT",
        "CLUSTER_CONTROLLER_MANAGER_PORT",
        "CLUSTER_SCHEDULER_PORT",
        "CLUSTER_KUBELET_PORT",
    )

    def __init__(self, state_dir: Path, node: str = "fake") -> None:
        self.state_dir = state_dir
        self.node = node
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

    @classmethod
    def tools(cls, node: str) -> tuple[str, ...]:
        return (*cls.CONTROL_PLANE, *cls.NODE_TOOLS[node], "kubectl")

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(HACK / "cluster.sh"), *args],
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> subprocess.CompletedProcess:
        return self.script("up", *(["--fake-node"] if self.node == "fake" else []))

    def node_leftovers(self) -> list[str]:
        """What of a real node is still on the host (hack/node.sh leftovers): empty after down."""
        out = subprocess.run(
            [str(HACK / "node.sh"), "leftovers"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.splitlines()

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


REAL_NODE_LOCK = Path("/run/consul-microservices/node.lock")


def real_node_holder() -> str | None:
    """The state dir of the cluster whose real node runs on this host, if any."""
    try:
        holder = REAL_NODE_LOCK.read_text().strip()
    except OSError:
        return None
    if (Path(holder) / "node").is_dir():  # hack/node.sh's rule: its state exists while it runs
        return holder
    env = {**os.environ, "CLUSTER_DIR": holder}
    left = subprocess.run(
        [str(HACK / "node.sh"), "leftovers"], env=env, capture_output=True, text=True, check=False
    )
    return holder if left.stdout.strip() else None


def skip_unless_cluster_can_start(node: str) -> None:
    """Skips, naming the command that fixes it, when a binary hack/cluster.sh needs is not in the
    toolchain (it takes them all from there, never from PATH), or a real node cannot start here."""
    for name in Cluster.tools(node):
        if not (toolchain_bin_dir() / name).is_file():
            pytest.skip(f"{name} not found: run `make toolchain`")
    if node == "real":
        require_root("a real node: containerd, network namespaces, iptables")
        holder = real_node_holder()
        if holder:
            pytest.skip(f"a real node already runs here: `CLUSTER_DIR={holder} make cluster-down`")


@contextmanager
def running_cluster(state_dir: Path, node: str = "fake") -> Iterator[Cluster]:
    """hack/cluster.sh up on free ports; down afterwards, checking nothing is left (skips as
    skip_unless_cluster_can_start says)."""
    skip_unless_cluster_can_start(node)
    kube = Cluster(state_dir, node)
    up = kube.up()
    try:
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield kube
    finally:
        down = kube.script("down")
        assert down.returncode == 0, f"cluster.sh down failed:\n{down.stdout}\n{down.stderr}"
        left = kube.leftover_processes() + (kube.node_leftovers() if node == "real" else [])
        assert left == [], f"left after cluster.sh down: {left}"


@dataclass(frozen=True)
class LoadReport:
    """What a fault did to a steady load: requests, failures by status (0: no HTTP answer, i.e.
    refused, reset or timed out), and the longest time without a success."""

    requests: int
    failures: dict[int, int]
    longest_gap: float

    def row(self, fault: str) -> str:
        failed = ", ".join(f"{n} x {s or 'no answer'}" for s, n in sorted(self.failures.items()))
        return f"{fault:<44} {self.requests:>7} {failed or '0':>20} {self.longest_gap:>7.2f} s"


class SteadyLoad:
    """`clients` threads GETting the `urls` in turn, back to back, until the block ends;
    `answers` holds each request's (sent, answered, status), times from time.monotonic(), with
    status 0 for a request that got no HTTP answer."""

    def __init__(self, urls: str | Sequence[str], clients: int, timeout: float = 10) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.timeout = timeout
        self.answers: list[tuple[float, float, int]] = []
        self.started = time.monotonic()
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def _client(self, first: int) -> None:
        urls = itertools.islice(itertools.cycle(self.urls), first % len(self.urls), None)
        with requests.Session() as session:
            for url in urls:
                if self._done.is_set():
                    return
                sent = time.monotonic()
                try:
                    status = session.get(url, timeout=self.timeout).status_code
                except requests.RequestException:
                    status = 0
                self.answers.append((sent, time.monotonic(), status))

    def __enter__(self) -> "SteadyLoad":
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 20)

    def between(self, start: float, end: float) -> list[int]:
        """The statuses of requests sent after `start` and answered before `end`."""
        return [
            status for sent, answered, status in self.answers if sent > start and answered < end
        ]

    def report(self, start: float | None = None, end: float | None = None) -> LoadReport:
        """The requests sent from `start` (the load's start) to `end` (the last answer)."""
        start = self.started if start is None else start
        window = [a for a in list(self.answers) if a[0] >= start and (end is None or a[0] <= end)]
        end = max((a[1] for a in window), default=start) if end is None else end
        successes = sorted(answered for _, answered, status in window if status == 200)
        edges = [start, *successes, end]
        return LoadReport(
            requests=len(window),
            failures=dict(Counter(status for *_, status in window if status != 200)),
            longest_gap=round(max(b - a for a, b in itertools.pairwise(edges)), 2),
        )
