"""books-api as the image runs it (`python -m books_api`: gunicorn, its gunicorn_conf), for real."""

import json
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from services_support import (
    SteadyLoad,
    answers,
    free_port,
    run_greeter_process,
    start_gunicorn,
    wait_until,
)


@dataclass
class Gunicorn:
    process: subprocess.Popen
    log: Path  # its stdout and stderr: a file, which never fills up as a pipe would

    def stop(self) -> str:
        """SIGTERM; it must exit 0. Returns its log."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        output = self.log.read_text()
        assert self.process.returncode == 0, output
        return output


@pytest.fixture
def gunicorn_factory(tmp_path):
    started: list[Gunicorn] = []

    def start(port: int, **env) -> Gunicorn:
        log = tmp_path / f"gunicorn-{port}.log"
        with log.open("w") as out:
            server = Gunicorn(start_gunicorn(port, log=out, **env), log)
        started.append(server)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), what="gunicorn to answer")
        return server

    yield start
    for server in started:
        server.process.kill()
        server.process.wait()


def test_serves_books_logs_json_and_sums_metrics_over_workers(gunicorn_factory):
    port = free_port()
    server = gunicorn_factory(port, GUNICORN_WORKERS=2)
    base = f"http://127.0.0.1:{port}"
    for _ in range(20):  # new connections, so both workers take some
        assert (
            requests.get(f"{base}/api/v1/resources/books", timeout=5).json()["books"][0]["id"] == 1
        )
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith(
            'http_request_duration_seconds_count{method="GET",route="/api/v1/resources/books",status="200"}'
        )
    )
    assert float(line.rsplit(" ", 1)[1]) == 20
    output = server.stop()
    records = [json.loads(line) for line in output.splitlines()]
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    books = [r for r in access if r["path"] == "/api/v1/resources/books"]
    assert len(books) == 20
    assert {"method": "GET", "status": "200", "remote": "127.0.0.1"}.items() <= books[0].items()
    assert any(r["message"].startswith("Booting worker") for r in records)


def test_bad_environment_stops_gunicorn_naming_the_variable():
    process = start_gunicorn(free_port(), GUNICORN_WORKERS="0")
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "invalid configuration:" in output
    assert "\nGUNICORN_WORKERS\n" in output


def serving_greeter(grpc_port: int) -> tuple[subprocess.Popen, float]:
    """A greeter process on `grpc_port`, and the moment its health check first said SERVING."""
    process = run_greeter_process(GRPC_PORT=grpc_port)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_until(serving, timeout=20, interval=0.01, what="the greeter serving")
    return process, time.monotonic()


def test_a_greeter_outage_under_concurrent_load_is_503s_then_heals(gunicorn_factory):
    """16 client threads through gunicorn's 2 workers x 4 threads; the greeter process stops, then
    a new one serves on the same port. A channel replaced under other threads' calls must not
    break them: no 500 and no ERROR line ever, only 503s while it is down, success within 1 s of
    it serving again."""
    grpc_port = free_port()
    greeter, _ = serving_greeter(grpc_port)
    port = free_port()
    server = gunicorn_factory(
        port, GUNICORN_WORKERS=2, GUNICORN_THREADS=4, GREETER_ADDR=f"127.0.0.1:{grpc_port}"
    )
    with SteadyLoad(f"http://127.0.0.1:{port}/api/v1/greeting?name=load", clients=16) as load:
        try:
            time.sleep(3)
            greeter.send_signal(signal.SIGTERM)
            greeter.communicate(timeout=30)
            stopped = time.monotonic()
            time.sleep(4)
            restarting = time.monotonic()
            greeter, serving = serving_greeter(grpc_port)
            time.sleep(3)
        finally:
            greeter.kill()
            greeter.communicate()
    output = server.stop()

    statuses = Counter(status for *_, status in load.answers)
    assert set(statuses) <= {200, 503}, statuses
    down = load.between(stopped, restarting)
    assert len(down) > 100 and set(down) == {503}, Counter(down)
    first_success = min(a for sent, a, s in load.answers if s == 200 and sent > restarting)
    assert first_success - serving < 1.0, f"first success {first_success - serving:.3f} s after"
    records = [json.loads(line) for line in output.splitlines()]
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    greetings = [r for r in records if r.get("path") == "/api/v1/greeting"]
    assert Counter(r["status"] for r in greetings) == {str(k): v for k, v in statuses.items()}
    warnings = [r for r in records if r["logger"] == "books_api.greeter_client"]
    assert len(warnings) == statuses[503]  # one WARNING line per 503
    assert {r["level"] for r in warnings} == {"WARNING"}
