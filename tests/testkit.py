"""Helpers every test area shares: loopback ports, polling, and the toolchain's binaries."""

import os
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
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
