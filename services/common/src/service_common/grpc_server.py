"""A gRPC service's server and lifecycle, the same for every gRPC service here: the standard health
service and reflection, a malformed request answered INVALID_ARGUMENT (grpc_decoding), RED metrics
on the metrics port and a trace span for every call (grpc_telemetry), Consul's native gRPC check on
the service's readiness, and a graceful stop on SIGTERM.

A service gives its settings and its servicers; `serve` runs it as the image's entrypoint does.
A gRPC service's requirements add grpcio-health-checking and grpcio-reflection to the shared pins.
"""

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import consul
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field

from service_common import logs, settings, tracing
from service_common.consul_registration import Registration, check_timing, own_address
from service_common.grpc_decoding import DecodeRequests
from service_common.grpc_telemetry import ObserveCalls
from service_common.metrics import MetricsServer

log = logging.getLogger(__name__)
# A servicer to add: its fully qualified service name (for health, reflection and Consul's check)
# and the generated add_<Service>Servicer_to_server call that adds it to a server.
Servicer = tuple[str, Callable[[grpc.Server], None]]


class GrpcSettings(settings.ServiceSettings):
    """The variables of every gRPC service; each adds consul_service_name and service_id."""

    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    grpc_workers: int = Field(10, ge=1, le=256)
    grace_period_seconds: float = Field(10.0, ge=0, le=300)


class GrpcServer:
    """A server with its servicers, health and reflection; stop() is the graceful path SIGTERM
    takes. The first servicer's readiness is what Consul checks. With METRICS_PORT, start() opens
    the metrics port too (`metrics_port` is the one bound: METRICS_PORT=0 picks a free one)."""

    def __init__(
        self,
        settings: GrpcSettings,
        servicers: Sequence[Servicer],
        server: grpc.Server | None = None,
    ) -> None:
        """`server` lets a caller add handlers of its own before start (tests add a slow one)."""
        self.settings = settings
        self.server = server or grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.grpc_workers),
            # The first sees each call as its client does, decoding failures included.
            interceptors=(ObserveCalls(), DecodeRequests()),
        )
        self.service_names = [name for name, _ in servicers]
        for _, add in servicers:
            add(self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"[::]:{settings.grpc_port}")
        self.registration = self._registration() if settings.consul_http_addr else None
        self.metrics: MetricsServer | None = None

    def _registration(self) -> Registration:
        """CONSUL_SERVICE_NAME, with Consul's native gRPC check of the first servicer."""
        address = own_address(self.settings.service_address)
        return Registration(
            self.settings,
            name=self.settings.consul_service_name,
            service_id=self.settings.service_id,
            address=address,
            port=self.port,
            check=consul.Check.grpc(
                f"{address}:{self.port}/{self.service_names[0]}",
                **check_timing(self.settings.consul_check_interval),
            ),
        )

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics else None

    def start(self) -> None:
        if self.settings.metrics_port is not None:
            self.metrics = MetricsServer(self.settings.metrics_port)
        self.server.start()
        for service in ("", *self.service_names):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.registration:
            self.registration.start()
        log.info(
            "serving",
            extra={
                "port": self.port,
                "metrics_port": self.metrics_port,
                "workers": self.settings.grpc_workers,
            },
        )

    def stop(self) -> None:
        """NOT_SERVING, no new calls; in-flight ones get the grace while we leave Consul."""
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(self.settings.grace_period_seconds)
        if self.registration:
            self.registration.stop()
        stopped.wait()
        if self.metrics:
            self.metrics.stop()
        log.info("stopped")


def serve(server: GrpcServer) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully: the image's entrypoint. Tracing is the
    process's, so it is configured here, and its last spans exported after the stop."""
    logs.configure(server.settings.log_level)
    tracing.configure(server.settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.set())
    server.start()
    stopping.wait()
    log.info("shutting down", extra={"grace_seconds": server.settings.grace_period_seconds})
    server.stop()
    tracing.shutdown()
