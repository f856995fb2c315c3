"""service-template's own tests, run by `make test` in its own environment (its requirements.txt):
its RPC on a real server on a loopback port, then the service as its image runs it."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
import service_template_pb2
import service_template_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_template.config import Settings
from service_template.server import build
from service_template.service import SERVICE_NAME

FOLDER = Path(__file__).resolve().parents[1]


@pytest.fixture
def channel():
    server = build(Settings(grpc_port=0, grace_period_seconds=1))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        server.stop()


def test_ping_answers_with_its_name_and_the_message(channel):
    stub = service_template_pb2_grpc.ServiceTemplateStub(channel)
    reply = stub.Ping(service_template_pb2.PingRequest(message="hi"), timeout=5)
    assert (reply.service, reply.message) == ("service-template", "hi")


def test_a_message_too_long_is_invalid_argument_naming_the_field(channel):
    stub = service_template_pb2_grpc.ServiceTemplateStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Ping(service_template_pb2.PingRequest(message="x" * 257), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("message:")


def test_health_serves_the_server_and_the_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: every socket stays bound until all are chosen."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_as_its_image_runs_it_it_serves_logs_json_and_stops_on_sigterm():
    """`python -m service_template`, as the image's entrypoint, without Consul (CONSUL_HTTP_ADDR
    unset): it serves, counts its calls on the metrics port (the shared server does), logs JSON
    lines, and SIGTERM stops it with status 0."""
    port, metrics_port = free_ports(2)
    path = os.pathsep.join([str(FOLDER / "src"), str(FOLDER.parent / "common" / "src")])
    env = {
        **os.environ,
        "GRPC_PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "PYTHONPATH": path,
        "GRACE_PERIOD_SECONDS": "1",
    }
    env.pop("CONSUL_HTTP_ADDR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "service_template"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = service_template_pb2_grpc.ServiceTemplateStub(channel)
            assert (
                stub.Ping(service_template_pb2.PingRequest(message="up"), timeout=5).message == "up"
            )
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as metrics:
            text = metrics.read().decode()
        counted = (
            'grpc_server_handling_seconds_count{grpc_code="OK",grpc_method="Ping",'
            f'grpc_service="{SERVICE_NAME}"}}'
        )
        assert f"{counted} 1.0" in text.splitlines()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert [line["message"] for line in lines][-1] == "stopped"
    assert {"time", "level", "logger", "message"} <= set(lines[0])
