"""service-template's own tests, run by `make test` in its own environment (its requirements.txt):
its routes through the app, then the service as its image runs it, on a loopback port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from service_template.app import create_app
from service_template.config import Settings

FOLDER = Path(__file__).resolve().parents[1]


@pytest.fixture
def client():
    return create_app(Settings()).test_client()


def test_health_and_readiness_answer(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_it_serves_its_name(client):
    assert client.get("/").get_json() == {"service": "service-template"}


def test_an_error_is_json(client):
    answer = client.get("/nowhere")
    assert answer.status_code == 404
    assert set(answer.get_json()) == {"error"}


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


def get(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - http on loopback
            return answer.status, json.load(answer)
    except (urllib.error.URLError, OSError):
        return None


def test_as_its_image_runs_it_it_serves_logs_json_and_stops_on_sigterm():
    """`python -m service_template`, as the image's entrypoint, without Consul (CONSUL_HTTP_ADDR
    unset): it serves, counts its requests on the metrics port (services/common does), logs JSON
    lines, and SIGTERM stops it with status 0."""
    port, metrics_port = free_ports(2)
    path = os.pathsep.join([str(FOLDER / "src"), str(FOLDER.parent / "common" / "src")])
    env = {
        **os.environ,
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "PYTHONPATH": path,
        "GUNICORN_WORKERS": "1",
    }
    env.pop("CONSUL_HTTP_ADDR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "service_template"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while (answer := get(f"http://127.0.0.1:{port}/readyz")) is None:
            assert process.poll() is None and time.monotonic() < deadline, "it did not serve"
            time.sleep(0.2)
        assert answer == (200, {"status": "ready"})
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as metrics:
            text = metrics.read().decode()
        counted = 'http_request_duration_seconds_count{method="GET",route="/readyz",status="200"}'
        assert f"{counted} 1.0" in text.splitlines()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line.get("path") == "/readyz" and line.get("status") == "200" for line in lines)
