"""The ExampleService implementation: the seed's greeting, with input validation."""

import example_pb2
import example_pb2_grpc
import grpc

SERVICE_NAME = example_pb2.DESCRIPTOR.services_by_name["ExampleService"].full_name
MAX_MESSAGE_CHARS = 256


class ExampleService(example_pb2_grpc.ExampleServiceServicer):
    """Answers "Hello, <client_message>!"; bad input is INVALID_ARGUMENT naming the field."""

    def GetServerResponse(self, request, context):
        text = request.client_message
        if not text.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "client_message: must not be empty")
        if len(text) > MAX_MESSAGE_CHARS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"client_message: must be at most {MAX_MESSAGE_CHARS} characters, got {len(text)}",
            )
        return example_pb2.ServerMessage(message=f"Hello, {text}!")
