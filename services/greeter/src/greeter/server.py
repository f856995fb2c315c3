"""The greeter's server: the seed's ExampleService on the shared gRPC server (health, reflection,
INVALID_ARGUMENT for malformed requests, Consul registration, graceful SIGTERM)."""

import example_pb2_grpc
import grpc
from service_common.grpc_server import GrpcServer, serve

from greeter import config
from greeter.service import SERVICE_NAME, ExampleService


class Greeter(GrpcServer):
    """ExampleService, registered in Consul as CONSUL_SERVICE_NAME (the seed's example-service)."""

    def __init__(self, settings: config.Settings, server: grpc.Server | None = None) -> None:
        def add(target: grpc.Server) -> None:
            example_pb2_grpc.add_ExampleServiceServicer_to_server(ExampleService(), target)

        super().__init__(settings, [(SERVICE_NAME, add)], server)


def main() -> None:
    serve(Greeter(config.load()))
