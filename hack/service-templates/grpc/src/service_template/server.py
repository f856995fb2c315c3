"""service-template's server: its servicer on the shared gRPC server (health, reflection,
INVALID_ARGUMENT for malformed requests, Consul registration, graceful SIGTERM)."""

import grpc
import service_template_pb2_grpc
from service_common.grpc_server import GrpcServer

from service_template.config import Settings
from service_template.service import SERVICE_NAME, ServiceTemplate


def build(settings: Settings, server: grpc.Server | None = None) -> GrpcServer:
    def add(target: grpc.Server) -> None:
        servicer = ServiceTemplate(settings.consul_service_name)
        service_template_pb2_grpc.add_ServiceTemplateServicer_to_server(servicer, target)

    return GrpcServer(settings, [(SERVICE_NAME, add)], server)
