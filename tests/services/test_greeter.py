"""ExampleService on a real loopback server: contract, validation, health, reflection, shutdown."""

import logging
import signal
import threading
import time
from concurrent import futures

import example_pb2
import example_pb2_grpc
import grpc
import pytest
from google.protobuf import descriptor_pb2
from greeter.config import Settings
from greeter.server import Greeter
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from services_support import free_port, run_greeter_process, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def channel_to(greeter: Greeter) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{greeter.port}")


def greet(greeter: Greeter, text: str) -> str:
    with channel_to(greeter) as channel:
        stub = example_pb2_grpc.ExampleServiceStub(channel)
        return stub.GetServerResponse(
            example_pb2.ClientMessage(client_message=text), timeout=5
        ).message


def test_greets_with_the_seed_contract(greeter):
    assert greet(greeter, "Alice") == "Hello, Alice!"
    assert greet(greeter, "世界") == "Hello, 世界!"
    assert greet(greeter, "x" * 256) == f"Hello, {'x' * 256}!"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "client_message: must not be empty"),
        ("   ", "client_message: must not be empty"),
        ("x" * 257, "client_message: must be at most 256 characters, got 257"),
    ],
)
def test_rejects_bad_input_with_invalid_argument(greeter, text, detail):
    with pytest.raises(grpc.RpcError) as caught:
        greet(greeter, text)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == detail


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("/ExampleService/GetServerResponse", b"\x0a\xff"),  # length past the end: not protobuf
        ("/ExampleService/GetServerResponse", b"\x0a\x02\xff\xfe"),  # invalid UTF-8 string
        ("/grpc.health.v1.Health/Check", b"\x0a\x05abc"),  # truncated, in the health service too
    ],
    ids=["truncated", "invalid-utf8", "health-truncated"],
)
def test_malformed_request_is_invalid_argument_logged_once_without_error(
    greeter, caplog, method, raw
):
    caplog.set_level(logging.DEBUG)
    with channel_to(greeter) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(raw, timeout=5)  # no serializer: these bytes go as they are
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("request: not a valid ")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.name, r.getMessage(), r.exc_info) for r in warnings] == [
        ("service_common.grpc_decoding", "malformed request", None)
    ]
    assert greet(greeter, "still fine") == "Hello, still fine!"


def test_health_reports_overall_and_service_status(greeter):
    with channel_to(greeter) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ExampleService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="NoSuchService"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(greeter):
    with channel_to(greeter) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="ExampleService"),
        ]
        listing, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listing.list_services_response.service}
    assert names == {
        "ExampleService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    proto = descriptor_pb2.FileDescriptorProto.FromString(
        described.file_descriptor_response.file_descriptor_proto[0]
    )
    assert [m.name for m in proto.service[0].method] == ["GetServerResponse"]


class StopObserved:
    """A grpc.Server whose stop() also sets `stopped`: from then on new calls are refused.

    Health turns NOT_SERVING before Greeter.stop() stops the server, so a call made as soon as
    health says NOT_SERVING can still be served; the test waits for this event instead.
    """

    def __init__(self, server: grpc.Server) -> None:
        self._server = server
        self.stopped = threading.Event()

    def __getattr__(self, name):
        return getattr(self._server, name)

    def stop(self, grace):
        done = self._server.stop(grace)
        self.stopped.set()
        return done


def test_graceful_stop_finishes_in_flight_calls_and_refuses_new_ones():
    """A slow call runs when stop() begins: health turns NOT_SERVING at once, the call completes."""
    started, release = threading.Event(), threading.Event()

    def slow(request, context):
        started.set()
        release.wait(5)
        return request

    server = StopObserved(grpc.server(futures.ThreadPoolExecutor(4)))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow)}
            ),
        )
    )
    greeter = Greeter(Settings(grpc_port=0, grace_period_seconds=5), server=server)
    greeter.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{greeter.port}")
    in_flight = channel.unary_unary("/test.Slow/Call").future(b"payload", timeout=10)
    assert started.wait(5), "the slow call never reached the server"
    stopper = threading.Thread(target=greeter.stop)
    stopper.start()
    wait_until(
        lambda: (
            greeter.health.Check(
                health_pb2.HealthCheckRequest(service="ExampleService"), None
            ).status
            == NOT_SERVING
        ),
        what="NOT_SERVING",
    )
    assert (
        greeter.health.Check(health_pb2.HealthCheckRequest(service=""), None).status == NOT_SERVING
    )
    assert server.stopped.wait(10), "stop() never stopped the server"
    with pytest.raises(grpc.RpcError) as refused:
        example_pb2_grpc.ExampleServiceStub(channel).GetServerResponse(
            example_pb2.ClientMessage(client_message="late"), timeout=2
        )
    assert refused.value.code() in {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}
    release.set()
    assert in_flight.result() == b"payload"
    stopper.join(10)
    assert not stopper.is_alive()
    channel.close()


def test_process_exits_zero_on_sigterm():
    port = free_port()
    process = run_greeter_process(GRPC_PORT=port, GRACE_PERIOD_SECONDS=30)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=15)
            stub = example_pb2_grpc.ExampleServiceStub(channel)
            reply = stub.GetServerResponse(
                example_pb2.ClientMessage(client_message="ops"), timeout=5
            )
        assert reply.message == "Hello, ops!"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert time.monotonic() - started < 10, "an idle server must not wait out the grace period"
    assert '"message": "stopped"' in output


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GRPC_PORT": "abc"}, "GRPC_PORT"),
        ({"GRPC_PORT": "70000"}, "GRPC_PORT"),
        ({"GRPC_WORKERS": "0"}, "GRPC_WORKERS"),
        ({"GRACE_PERIOD_SECONDS": "-1"}, "GRACE_PERIOD_SECONDS"),
        ({"CONSUL_HTTP_ADDR": "ftp://consul:8500"}, "CONSUL_HTTP_ADDR"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_environment_stops_start_up_naming_the_variable(env, named):
    process = run_greeter_process(**env)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert output.startswith("invalid configuration:")
    assert f"\n{named}\n" in output
