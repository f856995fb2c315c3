"""Container smoke test: both images and a Consul agent on one podman network, run as in Kubernetes.

books-api gets no GREETER_ADDR, so a greeting can only succeed through Consul discovery of the
greeter's registered address. Ports reach the test through loopback only.
"""

from __future__ import annotations

import subprocess

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from local_stack import published_port, wait_until

pytestmark = pytest.mark.e2e

CONSUL_HOST, BOOKS_HOST, GREETER_HOST = 10, 20, 21
SEED_BOOKS = {
    "books": [
        {"id": 1, "title": "微服务架构设计", "author": "John Doe"},
        {"id": 2, "title": "Docker实战", "author": "Jane Doe"},
    ]
}


@pytest.fixture(scope="module")
def running(images, network, consul) -> dict[str, str]:
    """greeter and books-api registered in the Consul agent; returns {service: container}."""
    consul_http = f"http://{network.address(CONSUL_HOST)}:8500"

    def start(service: str, host: int, port: int, *env: str) -> str:
        return network.run(
            f"e2e-{service}", host, images[service],
            env=[f"CONSUL_HTTP_ADDR={consul_http}", "CONSUL_CHECK_INTERVAL=1s",
                 f"SERVICE_ID={service}-e2e", f"SERVICE_ADDRESS={network.address(host)}", *env],
            publish=[port],
        )  # fmt: skip

    greeter = start("greeter", GREETER_HOST, 50051, "GRACE_PERIOD_SECONDS=2")
    books = start("books-api", BOOKS_HOST, 8080, "GUNICORN_WORKERS=1")
    return {"books-api": books, "greeter": greeter}


@pytest.fixture(scope="module")
def books_url(running) -> str:
    url = f"http://127.0.0.1:{published_port(running['books-api'], 8080)}"
    wait_until(lambda: _get(f"{url}/readyz") is not None, timeout=60, what="books-api /readyz")
    return url


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


def _greeting(url: str, status: int, timeout: float, what: str) -> requests.Response:
    """The first greeting answered with `status` (a Response is falsy for 4xx/5xx: boxed)."""

    def answered():
        response = _get(f"{url}/api/v1/greeting?name=e2e")
        return response is not None and response.status_code == status and [response]

    return wait_until(answered, timeout=timeout, what=what)[0]


def _passing(consul: str, name: str) -> list[dict]:
    return requests.get(f"http://{consul}/v1/health/service/{name}?passing", timeout=5).json()


def test_containers_run_as_uid_10001_on_a_read_only_root(running):
    for container in running.values():
        uid = subprocess.run(
            ["podman", "exec", container, "python", "-c", "import os; print(os.getuid())"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        write = subprocess.run(
            ["podman", "exec", container, "sh", "-c", "touch /app/x"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert uid == "10001"
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr


def test_books_listing_is_the_seed(books_url):
    response = requests.get(f"{books_url}/api/v1/resources/books", timeout=5)
    assert response.status_code == 200
    assert response.json() == SEED_BOOKS


def test_both_services_are_registered_and_passing_in_consul(books_url, consul, network):
    greeters = wait_until(lambda: _passing(consul, "example-service"), 60, "greeter passing")
    books = wait_until(lambda: _passing(consul, "books-api"), 60, "books-api passing")
    assert [g["Service"]["Address"] for g in greeters] == [network.address(GREETER_HOST)]
    assert [b["Service"]["Address"] for b in books] == [network.address(BOOKS_HOST)]


def test_greeting_goes_through_consul_discovery(books_url, network):
    ok = _greeting(books_url, 200, timeout=60, what="a greeting through Consul")
    assert ok.json() == {
        "message": "Hello, e2e!",
        "instance": f"{network.address(GREETER_HOST)}:50051",
    }


def test_greeter_grpc_health_is_serving(running):
    port = published_port(running["greeter"], 50051)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ExampleService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_stopping_greeter_gives_json_503_and_restarting_heals(books_url, running, consul):
    wait_until(lambda: _passing(consul, "example-service"), 60, "greeter passing")
    subprocess.run(["podman", "stop", "--time", "10", running["greeter"]], check=True)
    down = _greeting(books_url, 503, timeout=30, what="a 503 with greeter stopped")
    assert down.headers["Content-Type"].startswith("application/json")
    assert down.json()["error"]["status"] == 503

    subprocess.run(["podman", "start", running["greeter"]], check=True)
    healed = _greeting(books_url, 200, timeout=90, what="the greeting after greeter restarts")
    assert healed.json()["message"] == "Hello, e2e!"
