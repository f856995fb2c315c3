"""Metrics and traces of both services, as their images run them (`python -m greeter`, gunicorn
with books-api's config), against a real OTLP/gRPC receiver on loopback, or a collector port that
nothing listens on."""

import json
import signal
import subprocess
import time
from collections import Counter

import example_pb2
import example_pb2_grpc
import grpc
import pytest
import requests
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from services_support import (
    OtlpReceiver,
    SteadyLoad,
    answers,
    free_ports,
    run_greeter_process,
    start_gunicorn,
    wait_until,
)

GREETING = "ExampleService/GetServerResponse"
# Every trace recorded: by default one in ten that start at a service is (service_common.tracing).
EVERY_TRACE = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}


def series(text: str, name: str, **labels: str) -> float:
    """The value of one series of the Prometheus text `text` (0 when it is absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def stop(process: subprocess.Popen, within: float = 15) -> tuple[str, float]:
    """SIGTERM; it must exit 0 within `within` seconds. Its output, and how long it took."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=within)
    took = time.monotonic() - began
    assert process.returncode == 0, output
    return output, took


@pytest.fixture
def processes():
    """Processes started by a test; killed at teardown if it did not stop them."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def greeter(processes, port: int, **env) -> grpc.Channel:
    processes.append(run_greeter_process(GRPC_PORT=port, GRACE_PERIOD_SECONDS=1, **env))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel


def books_api(processes, tmp_path, port: int, **env) -> str:
    """books-api (one worker unless `env` says, books in memory) serving on `port`: its URL."""
    log = (tmp_path / f"books-api-{port}.log").open("w")
    processes.append(start_gunicorn(port, log=log, **{"GUNICORN_WORKERS": 1, **env}))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{base}/healthz"), what="books-api to answer")
    return base


def test_the_greeter_serves_red_metrics_on_its_metrics_port(processes):
    """Calls counted by method and status code (an error code too) and timed, on METRICS_PORT."""
    port, metrics_port = free_ports(2)
    channel = greeter(processes, port, METRICS_PORT=metrics_port)
    stub = example_pb2_grpc.ExampleServiceStub(channel)
    for name in ("a", "b", "c"):
        stub.GetServerResponse(example_pb2.ClientMessage(client_message=name), timeout=5)
    with pytest.raises(grpc.RpcError):
        stub.GetServerResponse(example_pb2.ClientMessage(client_message=" "), timeout=5)
    undecodable = channel.unary_unary(f"/{GREETING}")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError):
        undecodable(b"\xff\xff", timeout=5)
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    method = {"grpc_service": "ExampleService", "grpc_method": "GetServerResponse"}
    count = "grpc_server_handling_seconds_count"
    assert series(text, count, grpc_code="OK", **method) == 3
    assert series(text, count, grpc_code="INVALID_ARGUMENT", **method) == 2
    assert series(text, "grpc_server_handling_seconds_bucket", grpc_code="OK", le="+Inf") == 3
    channel.close()
    stop(processes[0])


def test_books_api_serves_its_metrics_on_its_metrics_port_too(processes, tmp_path):
    """The gunicorn master serves the workers' figures, added up, on METRICS_PORT."""
    port, metrics_port = free_ports(2)
    base = books_api(processes, tmp_path, port, GUNICORN_WORKERS=2, METRICS_PORT=metrics_port)
    for _ in range(5):
        assert requests.get(f"{base}/api/v1/resources/books", timeout=5).status_code == 200
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    labels = {"method": "GET", "route": "/api/v1/resources/books", "status": "200"}
    assert series(text, "http_request_duration_seconds_count", **labels) == 5


def test_a_greeting_is_one_trace_from_books_api_to_the_greeter(processes, tmp_path):
    """books-api's request span, its call's span as the request's child, and the greeter's span
    as the call's child, all in one trace, reach the collector; each service names itself. The
    greeter, with its default sampler, records what books-api's call says is recorded."""
    grpc_port, port = free_ports(2)
    with OtlpReceiver() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": 100}
        greeter(processes, grpc_port, OTEL_SERVICE_NAME="greeter", **env)
        greeter_addr = f"127.0.0.1:{grpc_port}"
        base = books_api(processes, tmp_path, port, GREETER_ADDR=greeter_addr, **env, **EVERY_TRACE)
        answer = requests.get(f"{base}/api/v1/greeting", params={"name": "trace"}, timeout=5)
        assert answer.json()["message"] == "Hello, trace!"

        def exported(service: str, name: str):
            return collector.received(lambda s: (s.service, s.name) == (service, name))

        (request,) = wait_until(
            lambda: exported("books-api", "GET /api/v1/greeting"), what="books-api's request span"
        )
        (call,) = wait_until(lambda: exported("books-api", GREETING), what="its call's span")
        (served,) = wait_until(lambda: exported("greeter", GREETING), what="the greeter's span")
    assert (request.kind, call.kind, served.kind) == (
        Span.SPAN_KIND_SERVER,
        Span.SPAN_KIND_CLIENT,
        Span.SPAN_KIND_SERVER,
    )
    assert request.trace_id == call.trace_id == served.trace_id
    assert request.parent_span_id == ""  # the client sent no trace context: a new trace
    assert call.parent_span_id == request.span_id
    assert served.parent_span_id == call.span_id
    assert request.attributes == {
        "http.request.method": "GET",
        "http.route": "/api/v1/greeting",
        "http.response.status_code": 200,
    }
    assert call.attributes["rpc.grpc.status_code"] == served.attributes["rpc.grpc.status_code"] == 0
    assert call.attributes["server.port"] == grpc_port


def test_a_log_line_inside_a_request_carries_its_trace_and_span_ids(processes, tmp_path):
    """The WARNING books-api logs when no greeter answers carries the ids of the request's span,
    the one the collector gets, which continues the trace of the client's `traceparent` (whose
    flag says recorded: the default sampler follows it)."""
    closed, port = free_ports(2)
    log = tmp_path / f"books-api-{port}.log"
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with OtlpReceiver() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": 100}
        base = books_api(processes, tmp_path, port, GREETER_ADDR=f"127.0.0.1:{closed}", **env)
        answer = requests.get(
            f"{base}/api/v1/greeting",
            params={"name": "x"},
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
            timeout=5,
        )
        assert answer.status_code == 503
        (request,) = wait_until(
            lambda: collector.received(lambda s: s.name == "GET /api/v1/greeting"),
            what="the request's span",
        )
    stop(processes[0])
    assert (request.trace_id, request.parent_span_id) == (caller_trace, caller_span)
    assert request.attributes["http.response.status_code"] == 503
    records = [json.loads(line) for line in log.read_text().splitlines()]
    (warning,) = [r for r in records if r["message"] == "greeter instance failed"]
    assert (warning["trace_id"], warning["span_id"]) == (caller_trace, request.span_id)
    outside = [r for r in records if r["logger"] == "gunicorn.error"]
    assert outside and not any("trace_id" in r for r in outside)


def test_by_default_one_trace_in_ten_is_recorded(processes, tmp_path):
    """What keeps tracing's cost within a tenth of a request's (service_common.tracing)."""
    (port,) = free_ports(1)
    with OtlpReceiver() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}
        base = books_api(processes, tmp_path, port, **env)
        with requests.Session() as session:
            for _ in range(300):
                assert session.get(f"{base}/api/v1/resources/books", timeout=5).status_code == 200
        stop(processes[0])  # the worker exports what it holds as it exits
        recorded = len(collector.received(lambda s: s.name == "GET /api/v1/resources/books"))
    assert 5 <= recorded <= 75, recorded  # 30 expected; outside, less than one run in 10^6


def test_a_collector_that_is_down_costs_no_request(processes, tmp_path):
    """Both services export every trace to a port nothing listens on: under load every request
    succeeds, none waits on the exporter, and each process still stops promptly with status 0."""
    grpc_port, port, nobody = free_ports(3)
    down = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{nobody}", **EVERY_TRACE}
    greeter(processes, grpc_port, **down)
    base = books_api(
        processes, tmp_path, port, GREETER_ADDR=f"127.0.0.1:{grpc_port}", GUNICORN_WORKERS=2, **down
    )
    urls = [f"{base}/api/v1/greeting?name=load", f"{base}/api/v1/resources/books"]
    with SteadyLoad(urls, clients=8) as load:
        time.sleep(8)  # past the exporter's first retries (1, 2, 4 s) of its first batches
    statuses = Counter(status for *_, status in load.answers)
    assert statuses == {200: len(load.answers)}, statuses
    assert len(load.answers) > 500
    slowest = max(answered - sent for sent, answered, _ in load.answers)
    assert slowest < 2.0, f"a request took {slowest:.2f} s"
    gunicorn, greeter_process = processes[1], processes[0]
    _, took = stop(gunicorn, within=20)
    assert took < 10, f"books-api took {took:.1f} s to stop"
    _, took = stop(greeter_process, within=20)
    assert took < 6, f"the greeter took {took:.1f} s to stop"
