"""A greeter shaped like the seed's: ThreadPoolExecutor(10), no health/reflection/interceptors."""

import os
from concurrent import futures

import example_pb2
import example_pb2_grpc
import grpc


class ExampleService(example_pb2_grpc.ExampleServiceServicer):
    def GetServerResponse(self, request, context):
        return example_pb2.ServerMessage(message=f"Hello, {request.client_message}!")


if __name__ == "__main__":
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    example_pb2_grpc.add_ExampleServiceServicer_to_server(ExampleService(), server)
    server.add_insecure_port(f"[::]:{os.environ['GRPC_PORT']}")
    server.start()
    server.wait_for_termination()
