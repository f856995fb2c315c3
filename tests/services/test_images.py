"""Both images built by podman from the one context services/ (a target each), run as in Kubernetes.

Read-only root, only /tmp writable, uid 10001, no capabilities. The local base image stands in for
the registry; pip gets the system CA bundle, as builds behind a TLS-intercepting proxy need.
Layers are cached, so a rebuild without changes is quick.
"""

import json
import shutil
import subprocess
import time

import example_pb2
import example_pb2_grpc
import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from services_support import SERVICES, free_port, wait_until
from testkit import local_base_image

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def podman(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout.strip()


@pytest.fixture(scope="module")
def base_image() -> str:
    return local_base_image()


@pytest.fixture(scope="module")
def images(base_image, tmp_path_factory) -> dict[str, str]:
    """Build each target from a copy of services/ plus the CA bundle (kept out of the tree)."""
    context = tmp_path_factory.mktemp("context") / "services"
    shutil.copytree(SERVICES, context, ignore=shutil.ignore_patterns(".offline", "__pycache__"))
    (context / ".offline").mkdir()
    shutil.copy(CA_BUNDLE, context / ".offline" / "ca.pem")
    built = {}
    for service in ("books-api", "greeter"):
        tag = f"localhost/consul-microservices-test/{service}:latest-test"
        podman(
            "build", "--runtime", "runc", "--build-arg", f"BASE_IMAGE={base_image}",
            "--build-arg", "PIP_CA_BUNDLE=.offline/ca.pem", "--build-arg", f"SERVICE={service}",
            "-f", str(context / service / "Dockerfile"), "-t", tag, str(context), timeout=900,
        )  # fmt: skip
        built[service] = tag
    return built


@pytest.fixture
def run_container():
    names = []

    def run(image: str, container_port: int, *env: str) -> int:
        port = free_port()
        name = f"svc-test-{port}"
        names.append(name)
        env_flags = [flag for pair in env for flag in ("--env", pair)]
        podman(
            "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--publish", f"127.0.0.1:{port}:{container_port}", *env_flags, image,
        )  # fmt: skip
        return port

    yield run
    for name in names:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)


def stop_and_exit_code(port: int) -> int:
    podman("stop", "--time", "30", f"svc-test-{port}")
    return int(podman("inspect", f"svc-test-{port}", "--format", "{{.State.ExitCode}}"))


def test_images_run_as_uid_10001_with_the_service_as_the_process_itself(images):
    """The entrypoint (exec form) execs `python -m <package>`: the service is PID 1 and gets the
    signals, no shell stays in between."""
    for service, image in images.items():
        config = json.loads(podman("image", "inspect", image))[0]["Config"]
        assert config["User"] == "10001:10001"
        assert config["Entrypoint"] == ["/app/run"]
        launcher = podman("run", "--rm", "--entrypoint", "cat", image, "/app/run")
        assert launcher.splitlines()[-1] == f'exec python -m {service.replace("-", "_")} "$@"'


def test_runtime_stage_has_no_compiler_pip_cache_or_build_tools(images):
    for image in images.values():
        found = podman(
            "run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c",
            "command -v gcc cc; ls /root/.cache 2>/dev/null; ls /opt; "
            "python -c 'import grpc_tools' 2>/dev/null && echo grpc_tools; true",
        )  # fmt: skip
        assert found == "venv"


def test_books_api_serves_read_only_and_stops_cleanly(images, run_container):
    port = run_container(images["books-api"], 8080, "GUNICORN_WORKERS=2")
    url = f"http://127.0.0.1:{port}"

    def books():
        try:
            return requests.get(f"{url}/api/v1/resources/books", timeout=2).json()
        except requests.RequestException:
            return None

    assert wait_until(books, timeout=60, what="books-api in its container")["books"][1]["id"] == 2
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    assert "http_request_duration_seconds_count" in requests.get(f"{url}/metrics", timeout=5).text
    assert stop_and_exit_code(port) == 0


def test_greeter_serves_read_only_and_stops_cleanly(images, run_container):
    port = run_container(images["greeter"], 50051, "GRACE_PERIOD_SECONDS=5")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = example_pb2_grpc.ExampleServiceStub(channel).GetServerResponse(
                    example_pb2.ClientMessage(client_message="image"), timeout=2
                )
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert reply.message == "Hello, image!"
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="ExampleService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert stop_and_exit_code(port) == 0
