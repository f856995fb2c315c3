"""Helpers shared by the services' tests (a module of its own: conftest.py is not for importing).

Importing it puts the shared and both services' src/ on sys.path, as the images' PYTHONPATH does.
"""

import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from testkit import (
    PostgresServer,
    SteadyLoad,
    find_tool,
    free_port,
    free_ports,
    postgres_bin_dir,
    wait_until,
)

__all__ = [
    "SERVICES",
    "ConsulAgent",
    "OtlpReceiver",
    "PostgresServer",
    "SteadyLoad",
    "answers",
    "find_tool",
    "free_port",
    "postgres_bin_dir",
    "python_path",
    "run_greeter_process",
    "seconds_to_recover",
    "service_env",
    "start_gunicorn",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SRC_DIRS = (
    SERVICES / "common" / "src",
    SERVICES / "greeter" / "src",
    SERVICES / "books-api" / "src",
)
sys.path[:0] = [str(p) for p in SRC_DIRS if str(p) not in sys.path]
STUBS_PRESENT = (SRC_DIRS[0] / "example_pb2_grpc.py").exists()


# Variables the services read (and libpq's, OpenTelemetry's, prometheus_client's): a developer's
# own must not reach the tests' services.
SERVICE_SETTINGS = (
    "CONSUL_", "GREETER_", "GRPC_", "DATABASE_", "PG", "GUNICORN_", "SERVICE_", "METRICS_",
    "OTEL_", "PROMETHEUS_",
)  # fmt: skip


def python_path(service: str) -> str:
    """PYTHONPATH of a service's process: the shared code and stubs, then the service's own."""
    return os.pathsep.join(str(SERVICES / folder / "src") for folder in ("common", service))


def service_env(**overrides) -> dict[str, str]:
    """This process's environment minus service settings that would leak in, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_SETTINGS)}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def start_gunicorn(port: int, log: IO[str] | None = None, **env) -> subprocess.Popen:
    """books-api as its image runs it: `python -m books_api`, gunicorn with its gunicorn_conf.

    Its log goes to `log`, else to a pipe: read it (communicate), or a busy server blocks on a
    full pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "books_api"],
        cwd=SERVICES / "books-api",
        env=service_env(PYTHONPATH=python_path("books-api"), PORT=port, **env),
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_greeter_process(**env) -> subprocess.Popen:
    """The greeter as its image runs it: `python -m greeter`, its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "greeter"],
        cwd=SERVICES / "greeter" / "src",
        env=service_env(PYTHONPATH=python_path("greeter"), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:  # refused before the bind, or read timeout while workers boot
        return False


def seconds_to_recover(client, restart, stop, outage: float = 6.0) -> float:
    """Stop the greeter, greet through an outage (503s), restart it: seconds until greetings work.

    The outage is long enough for gRPC's reconnect backoff on a cached channel to grow past 1 s.
    """
    greeting = "/api/v1/greeting?name=x"
    assert client.get(greeting).status_code == 200
    stop()
    down_until = time.monotonic() + outage
    while time.monotonic() < down_until:
        assert client.get(greeting).status_code == 503
        time.sleep(0.2)
    restart()
    back = time.monotonic()
    wait_until(
        lambda: client.get(greeting).status_code == 200,
        timeout=15,
        interval=0.05,
        what="a greeting after the restart",
    )
    return time.monotonic() - back


class ConsulAgent:
    """`consul agent -dev` bound to loopback with every port chosen here (DNS and gRPC off).

    With `management_token`, ACLs are on with default policy deny, as in the cluster: that token
    is the initial management token and the agent's own; a request without a token is anonymous.
    """

    def __init__(
        self, binary: str, http_port: int | None = None, management_token: str | None = None
    ) -> None:
        self.binary = binary
        self.http_port = http_port or free_port()
        self.management_token = management_token
        self.addr = f"127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "ConsulAgent":
        serf_lan, serf_wan, server = free_ports(3)
        self.process = subprocess.Popen(
            [
                self.binary,
                "agent",
                "-dev",
                "-bind=127.0.0.1",
                "-client=127.0.0.1",
                f"-http-port={self.http_port}",
                "-dns-port=-1",
                "-grpc-port=-1",
                f"-serf-lan-port={serf_lan}",
                f"-serf-wan-port={serf_wan}",
                f"-server-port={server}",
                "-hcl=ports { grpc_tls = -1 }",
                "-log-level=warn",
                *self._acl_flags(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        )
        wait_until(self._has_leader, timeout=30, what=f"consul leader on {self.addr}")
        return self

    def _acl_flags(self) -> list[str]:
        if not self.management_token:
            return []
        token = self.management_token
        tokens = f'tokens {{ initial_management = "{token}" agent = "{token}" }}'
        return [f'-hcl=acl {{ enabled = true default_policy = "deny" {tokens} }}']

    def _has_leader(self) -> bool:
        try:
            return requests.get(f"http://{self.addr}/v1/status/leader", timeout=1).json() != ""
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def get(self, path: str):
        headers = {"X-Consul-Token": self.management_token} if self.management_token else {}
        return requests.get(f"http://{self.addr}{path}", headers=headers, timeout=5).json()


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as an OTLP receiver gets it, ids in hex as the services log them."""

    service: str  # its resource's service.name
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver (what a collector serves) on a free port of `host`
    (loopback, or where a cluster's pods reach this machine); `endpoint` is what
    OTEL_EXPORTER_OTLP_ENDPOINT names it by."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"{host}:0")
        self.endpoint = f"http://{host}:{self.port}"

    def Export(self, request, context):
        received = [
            ReceivedSpan(
                service=_attributes(resource.resource.attributes)["service.name"],
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes=_attributes(span.attributes),
            )
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    def received(self, predicate) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if predicate(span)]

    def __enter__(self) -> "OtlpReceiver":
        self.server.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.stop(0).wait()


def _attributes(pairs) -> dict:
    """OTLP KeyValues as a dict of plain values."""
    return {pair.key: getattr(pair.value, pair.value.WhichOneof("value")) for pair in pairs}
