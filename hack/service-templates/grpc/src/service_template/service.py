"""service-template's RPCs: bad input is INVALID_ARGUMENT naming the field."""

import grpc
import service_template_pb2
import service_template_pb2_grpc

SERVICE_NAME = service_template_pb2.DESCRIPTOR.services_by_name["ServiceTemplate"].full_name
MAX_MESSAGE_CHARS = 256


class ServiceTemplate(service_template_pb2_grpc.ServiceTemplateServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    def Ping(self, request, context):
        if len(request.message) > MAX_MESSAGE_CHARS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"message: must be at most {MAX_MESSAGE_CHARS} characters, got "
                f"{len(request.message)}",
            )
        return service_template_pb2.PingReply(service=self.name, message=request.message)
