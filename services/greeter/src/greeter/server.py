"""Server assembly and lifecycle: health, reflection, Consul registration, graceful SIGTERM."""

import logging
import signal
import threading
from concurrent import futures

import consul
import example_pb2_grpc
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from service_common import logs
from service_common.consul_registration import Registration, check_timing, own_address

from greeter import config
from greeter.decoding import DecodeRequests
from greeter.service import SERVICE_NAME, ExampleService

log = logging.getLogger(__name__)


class Greeter:
    """A started server with its health servicer; stop() is the graceful path SIGTERM takes."""

    def __init__(self, settings: config.Settings, server: grpc.Server | None = None) -> None:
        """`server` lets a caller add handlers of its own before start (tests add a slow one).

        A malformed request is INVALID_ARGUMENT through DecodeRequests, never an ERROR log line.
        """
        self.settings = settings
        self.server = server or grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.grpc_workers),
            interceptors=(DecodeRequests(),),
        )
        self.health = health.HealthServicer()
        example_pb2_grpc.add_ExampleServiceServicer_to_server(ExampleService(), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"[::]:{settings.grpc_port}")
        self.registration = self._registration() if settings.consul_http_addr else None

    def _registration(self) -> Registration:
        """CONSUL_SERVICE_NAME (the seed's `example-service`), with Consul's native gRPC check."""
        address = own_address(self.settings.service_address)
        return Registration(
            self.settings,
            name=self.settings.consul_service_name,
            service_id=self.settings.service_id,
            address=address,
            port=self.port,
            check=consul.Check.grpc(
                f"{address}:{self.port}/{SERVICE_NAME}",
                **check_timing(self.settings.consul_check_interval),
            ),
        )

    def start(self) -> None:
        self.server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.registration:
            self.registration.start()
        log.info("serving", extra={"port": self.port, "workers": self.settings.grpc_workers})

    def stop(self) -> None:
        """NOT_SERVING, no new calls; in-flight ones get the grace while we leave Consul."""
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(self.settings.grace_period_seconds)
        if self.registration:
            self.registration.stop()
        stopped.wait()
        log.info("stopped")


def main() -> None:
    settings = config.load()
    logs.configure(settings.log_level)
    greeter = Greeter(settings)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.set())
    greeter.start()
    stopping.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_period_seconds})
    greeter.stop()
