#!/usr/bin/env python3
"""`make run SERVICE=<name>`: one service from the checkout on loopback, as its image runs it
(`python -m <package>`, its code and services/common on PYTHONPATH), with what it needs:

- the services it calls (`calls` in its manifest), started first the same way on free ports, and
  handed to it as `<CALLEE>_ADDR` (and `<CALLEE>_SERVICE_NAME`);
- for `database: postgres`, a throwaway PostgreSQL server of Debian's (`make postgres`), handed to
  it as DATABASE_URL;
- with CONSUL=agent, a Consul dev agent of the toolchain's (`make toolchain`) that every service
  registers in and finds its callees through; without it, none: callers use `<CALLEE>_ADDR`.

A service with its own dependencies (services/<name>/tests/) runs in its environment
(hack/service-venv.sh), the tutorial's two in the dev venv. Ctrl-C (or SIGTERM) stops every process
gracefully, callers first, and removes the database.

    hack/run-service.py SERVICE [--port PORT] [--consul agent|none]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
sys.path[:0] = [str(ROOT / "infra"), str(ROOT / "hack")]

import catalog  # noqa: E402 - the program's manifests
from postgres_server import PostgresServer, postgres_bin_dir  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python_of(service: catalog.Manifest) -> str:
    """The service's own environment when it pins its own dependencies, else the dev venv."""
    if (SERVICES / service.name / "tests").is_dir():
        done = subprocess.run(
            [str(ROOT / "hack" / "service-venv.sh"), service.name],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()
    return str(ROOT / ".venv" / "bin" / "python")


def serving(service: catalog.Manifest, port: int) -> bool:
    """HTTP: its readiness path answers 200; gRPC: its port accepts connections."""
    if service.protocol == "http":
        url = f"http://127.0.0.1:{port}{service.health.readiness}"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Run:
    """The processes of one `make run`, started in dependency order and stopped in reverse."""

    def __init__(self, services: catalog.Catalog, consul: bool) -> None:
        self.services = services
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.addresses: dict[str, str] = {}
        self.database: PostgresServer | None = None
        self.consul_addr = self._start_consul() if consul else None

    def _start_consul(self) -> str:
        binary = Path(
            subprocess.run(
                [str(ROOT / "hack" / "toolchain.sh"), "bin-dir"], capture_output=True, text=True,
                check=True,
            ).stdout.strip()
        ) / "consul"  # fmt: skip
        if not binary.is_file():
            raise SystemExit("make run: CONSUL=agent needs the toolchain's consul: make toolchain")
        http, serf_lan, serf_wan, server = (free_port() for _ in range(4))
        data = tempfile.mkdtemp(prefix="make-run-consul-")
        args = [str(binary), "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-http-port", str(http), "-grpc-port", "-1", "-dns-port", "-1",
                "-serf-lan-port", str(serf_lan), "-serf-wan-port", str(serf_wan),
                "-server-port", str(server), "-data-dir", data, "-log-level", "warn"]  # fmt: skip
        process = subprocess.Popen(
            args, env={**os.environ, "CHECKPOINT_DISABLE": "1"}, start_new_session=True
        )
        self.processes.append(("consul", process))
        addr = f"127.0.0.1:{http}"
        self._wait(lambda: self._consul_leader(addr), "Consul", process)
        print(f"make run: Consul dev agent on http://{addr}", file=sys.stderr)
        return addr

    @staticmethod
    def _consul_leader(addr: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{addr}/v1/status/leader", timeout=1) as answer:
                return answer.read().strip() not in (b"", b'""')
        except OSError:
            return False

    @staticmethod
    def _wait(ready, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise SystemExit(f"make run: {what} exited ({process.returncode}) before serving")
            if time.monotonic() > deadline:
                raise SystemExit(f"make run: {what} did not serve within {timeout:.0f} s")
            time.sleep(0.2)

    def start(self, name: str, port: int | None = None) -> None:
        """`name` and, first, every service it calls (each once)."""
        if name in self.addresses:
            return
        service = self.services.services[name]
        for callee in service.calls:
            self.start(callee)
        port = port or free_port()
        env = {
            **os.environ,
            service.port_env: str(port),
            "PYTHONPATH": os.pathsep.join(str(SERVICES / f / "src") for f in (name, "common")),
            **service.env,
            "SERVICE_ADDRESS": "127.0.0.1",
            "CONSUL_SERVICE_NAME": service.consul_name,
        }
        for callee in service.calls:
            env |= self.services.services[callee].discovery_env(self.addresses[callee])
        if self.consul_addr:
            env["CONSUL_HTTP_ADDR"] = self.consul_addr
        else:
            env.pop("CONSUL_HTTP_ADDR", None)
        if service.database == "postgres":
            env["DATABASE_URL"] = self._database().dsn
        # A session of its own: a terminal's Ctrl-C reaches this script, which stops each service
        # with SIGTERM, its graceful signal (gunicorn takes SIGINT for a quick shutdown).
        process = subprocess.Popen(
            [python_of(service), "-m", service.module], env=env, cwd=SERVICES / name,
            start_new_session=True,
        )  # fmt: skip
        self.processes.append((name, process))
        self._wait(lambda: serving(service, port), name, process)
        self.addresses[name] = f"127.0.0.1:{port}"
        scheme = "http" if service.protocol == "http" else "grpc"
        print(f"make run: {name} serving on {scheme}://127.0.0.1:{port}", file=sys.stderr)

    def _database(self) -> PostgresServer:
        if self.database is None:
            bin_dir = postgres_bin_dir()
            if bin_dir is None:
                raise SystemExit(
                    "make run: a service with a database needs PostgreSQL: make postgres"
                )
            self.database = PostgresServer(bin_dir).init()
            print(f"make run: PostgreSQL on 127.0.0.1:{self.database.port}", file=sys.stderr)
        return self.database

    def stop(self) -> None:
        """SIGTERM to each service, callers first, and wait: each stops as in its pod (it
        deregisters from Consul); then Consul."""
        for name, process in reversed(self.processes):
            if process.poll() is None:
                # Consul leaves gracefully on SIGINT (on SIGTERM it exits 1).
                process.send_signal(signal.SIGINT if name == "consul" else signal.SIGTERM)
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            print(f"make run: {name} stopped ({process.returncode})", file=sys.stderr)
        if self.database:
            self.database.remove()
            print("make run: PostgreSQL stopped and removed", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service")
    parser.add_argument("--port", type=int, help="its port (default: its manifest's)")
    parser.add_argument("--consul", choices=("agent", "none"), default="none")
    args = parser.parse_args()
    services = catalog.load(SERVICES)
    if args.service not in services.services:
        known = ", ".join(sorted(services.services))
        raise SystemExit(f"make run: SERVICE={args.service!r}: expected one of {known}")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    run = Run(services, consul=args.consul == "agent")
    try:
        run.start(args.service, args.port or services.services[args.service].port)
        print("make run: Ctrl-C stops it all", file=sys.stderr)
        while not stopping.is_set() and all(p.poll() is None for _, p in run.processes):
            stopping.wait(0.5)
    finally:
        run.stop()
    failed = [name for name, p in run.processes if p.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
