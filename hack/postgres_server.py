"""A throwaway PostgreSQL server of Debian's binaries (`make postgres`): `initdb` into a private
directory, `postgres` on a loopback port, password authentication (SCRAM) for the one role `books`,
owner of the database `books`. As root it runs as Debian's `postgres` user (postgres refuses root).

The services' tests and benchmarks (tests/testkit.py) and `make run` (hack/run-service.py) use it.
Standard library only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def postgres_bin_dir() -> Path | None:
    """Debian's PostgreSQL server binaries (`make postgres`), the newest major version found."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    PASSWORD = "books-test-password"  # noqa: S105 - a throwaway server's

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.data = Path(tempfile.mkdtemp(prefix="books-postgres-"))
        self.process: subprocess.Popen | None = None
        self._as = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        if self._as:
            shutil.chown(self.data, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return self.dsn_of("books")

    def dsn_of(self, database: str) -> str:
        return f"postgresql://books:{self.PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            **self._as,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "PGPASSWORD": self.PASSWORD},
        )
        if check and done.returncode:
            raise RuntimeError(f"{tool}: {done.stdout}{done.stderr}")
        return done

    def init(self) -> PostgresServer:
        password_file = self.data / "password"
        password_file.write_text(self.PASSWORD)
        if self._as:
            shutil.chown(password_file, "postgres", "postgres")
        pgdata = str(self.data / "pgdata")
        self._run("initdb", "-D", pgdata, "-U", "books", "-A", "scram-sha-256",
                  f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C.UTF-8")  # fmt: skip
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "books", "books")
        return self

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data / "pgdata"),
             "-p", str(self.port), "-k", str(self.data), "-c", "listen_addresses=127.0.0.1"],
            **self._as,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        ready = ("pg_isready", "-h", "127.0.0.1", "-p", str(self.port))
        while self._run(*ready, check=False).returncode:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not accept connections on {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, committed data stays."""
        if self.process:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
