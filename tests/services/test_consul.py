"""Registration and discovery against a real `consul agent -dev` on loopback."""

import signal
import socket
import subprocess
import sys

import consul
import pytest
from books_api.app import create_app
from books_api.config import Settings as BooksSettings
from greeter.config import Settings as GreeterSettings
from greeter.server import Greeter
from services_support import (
    SERVICES,
    ConsulAgent,
    free_port,
    python_path,
    seconds_to_recover,
    service_env,
    wait_until,
)


def passing_checks(agent: ConsulAgent, service: str, service_id: str) -> list[dict]:
    checks = agent.get(f"/v1/health/checks/{service}")
    return [c for c in checks if c["ServiceID"] == service_id and c["Status"] == "passing"]


def registered(agent: ConsulAgent, service_id: str) -> dict | None:
    return agent.get("/v1/agent/services").get(service_id)


def books_client(agent_addr: str, **settings):
    app = create_app(
        BooksSettings(consul_http_addr=agent_addr, greeter_timeout_seconds=2, **settings)
    )
    return app.test_client()


@pytest.fixture
def consul_client(consul_agent):
    return consul.Consul(host="127.0.0.1", port=consul_agent.http_port)


@pytest.fixture
def manual_instances(consul_client):
    """Register example-service instances by hand, with TTL checks the test drives; then remove."""
    ids = []

    def register(service_id: str, port: int, passing: bool) -> None:
        consul_client.agent.service.register(
            "example-service",
            service_id=service_id,
            address="127.0.0.1",
            port=port,
            check=consul.Check.ttl("1h"),
        )
        ids.append(service_id)
        if passing:
            consul_client.agent.check.ttl_pass(f"service:{service_id}")

    yield register
    for service_id in ids:
        consul_client.agent.service.deregister(service_id)


def test_greeter_registers_with_a_grpc_check_and_deregisters(consul_agent, greeter_factory):
    greeter = greeter_factory(
        consul_http_addr=consul_agent.addr,
        service_id="example-service-t1",
        service_address="127.0.0.1",
        consul_check_interval="1s",
    )
    service = wait_until(
        lambda: registered(consul_agent, "example-service-t1"), what="registration"
    )
    assert (service["Service"], service["Address"], service["Port"]) == (
        "example-service",
        "127.0.0.1",
        greeter.port,
    )
    check = wait_until(
        lambda: passing_checks(consul_agent, "example-service", "example-service-t1"),
        what="passing check",
    )[0]
    assert check["Type"] == "grpc"
    greeter.stop()
    assert registered(consul_agent, "example-service-t1") is None


def test_an_instance_is_passing_from_its_registration_on(consul_agent, greeter_factory):
    """It registers once it serves; its first check may come a whole interval later. Right after
    a deploy every instance is new: starting critical, none was found healthy (503s)."""
    greeter_factory(
        consul_http_addr=consul_agent.addr,
        service_id="example-service-new",
        service_address="127.0.0.1",
        consul_check_interval="10m",
    )
    wait_until(lambda: registered(consul_agent, "example-service-new"), what="registration")
    assert passing_checks(consul_agent, "example-service", "example-service-new")


def test_the_consul_name_comes_from_the_environment(consul_agent, monkeypatch):
    """CONSUL_SERVICE_NAME (the manifest's consulName, set by the program): a copy of the greeter
    registers under its own name, with IDs to match."""
    monkeypatch.setenv("CONSUL_SERVICE_NAME", "greeter-copy")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_agent.addr)
    monkeypatch.setenv("SERVICE_ADDRESS", "127.0.0.1")
    settings = GreeterSettings(grpc_port=0, grace_period_seconds=2)
    assert settings.service_id == f"greeter-copy-{socket.gethostname()}"
    greeter = Greeter(settings)
    greeter.start()
    try:
        service = wait_until(lambda: registered(consul_agent, settings.service_id), what="it")
        assert service["Service"] == "greeter-copy"
        assert consul_agent.get("/v1/catalog/service/example-service") == []
    finally:
        greeter.stop()


def test_books_api_registers_with_an_http_check_and_deregisters_on_sigterm(consul_agent):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "books_api"],
        cwd=SERVICES / "books-api",
        env=service_env(
            PYTHONPATH=python_path("books-api"),
            PORT=port,
            CONSUL_HTTP_ADDR=f"http://{consul_agent.addr}",
            SERVICE_ID="books-api-t1",
            SERVICE_ADDRESS="127.0.0.1",
            CONSUL_CHECK_INTERVAL="1s",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        service = wait_until(lambda: registered(consul_agent, "books-api-t1"), what="registration")
        assert (service["Service"], service["Port"]) == ("books-api", port)
        check = wait_until(
            lambda: passing_checks(consul_agent, "books-api", "books-api-t1"), what="passing check"
        )[0]
        assert check["Type"] == "http"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert registered(consul_agent, "books-api-t1") is None
    finally:
        process.kill()
        process.wait()


def test_discovery_uses_passing_instances_only(consul_agent, greeter_factory, manual_instances):
    healthy, unhealthy = greeter_factory(), greeter_factory()
    manual_instances("example-service-healthy", healthy.port, passing=True)
    manual_instances("example-service-unhealthy", unhealthy.port, passing=False)
    client = books_client(consul_agent.addr)
    seen = {client.get("/api/v1/greeting?name=x").get_json()["instance"] for _ in range(20)}
    assert seen == {f"127.0.0.1:{healthy.port}"}
    assert client.get("/readyz").get_json()["greeter_discovery"] == "consul"


def test_a_failing_instance_hands_over_to_the_next(consul_agent, greeter_factory, manual_instances):
    live = greeter_factory()
    manual_instances("example-service-live", live.port, passing=True)
    manual_instances(
        "example-service-dead", free_port(), passing=True
    )  # passing, but nothing listens
    client = books_client(consul_agent.addr)
    for _ in range(10):  # random order: the dead one comes first about half the time
        response = client.get("/api/v1/greeting?name=x")
        assert response.status_code == 200
        assert response.get_json() == {"message": "Hello, x!", "instance": f"127.0.0.1:{live.port}"}


def test_a_new_instance_is_reachable_without_restarting_books_api(
    consul_agent, greeter_factory, manual_instances
):
    first, second = greeter_factory(), greeter_factory()
    manual_instances("example-service-first", first.port, passing=True)
    client = books_client(consul_agent.addr)
    assert client.get("/api/v1/greeting?name=x").get_json()["instance"] == f"127.0.0.1:{first.port}"
    manual_instances("example-service-second", second.port, passing=True)

    def second_answers() -> bool:
        seen = {client.get("/api/v1/greeting?name=x").get_json()["instance"] for _ in range(10)}
        return f"127.0.0.1:{second.port}" in seen

    wait_until(second_answers, timeout=5, what="the new instance to take greetings")


def test_greetings_cost_no_consul_round_trip(consul_agent, greeter, manual_instances):
    """The passing set comes from a blocking query in the background, not from each request."""
    manual_instances("example-service-counted", greeter.port, passing=True)
    app = create_app(BooksSettings(consul_http_addr=consul_agent.addr, greeter_timeout_seconds=2))
    lookups = []
    client = app.test_client()
    assert client.get("/api/v1/greeting?name=x").status_code == 200
    health = app.extensions["consul"].client.health  # the client books-api discovers with
    original = health.service
    health.service = lambda *args, **kwargs: lookups.append(kwargs) or original(*args, **kwargs)
    for _ in range(30):
        assert client.get("/api/v1/greeting?name=x").status_code == 200
    # Only the watch may ask, when Consul's blocking query wakes up (a change, or its 30 s wait).
    assert len(lookups) <= 2, f"{len(lookups)} Consul lookups for 30 greetings"
    assert all(call.get("index") for call in lookups), "only blocking queries"


def test_greetings_succeed_within_1s_of_a_greeter_restart(
    consul_agent, greeter_factory, manual_instances
):
    port = free_port()
    first = greeter_factory(grpc_port=port)
    manual_instances("example-service-restarted", port, passing=True)
    restart = lambda: greeter_factory(grpc_port=port)  # noqa: E731
    assert seconds_to_recover(books_client(consul_agent.addr), restart, first.stop) <= 1.0


def test_no_passing_instance_is_503(consul_agent, manual_instances, greeter_factory):
    manual_instances("example-service-down", greeter_factory().port, passing=False)
    response = books_client(consul_agent.addr).get("/api/v1/greeting?name=x")
    assert response.status_code == 503
    assert "no healthy instance" in response.get_json()["error"]["message"]


def test_no_passing_instance_falls_back_to_the_static_address(
    consul_agent, manual_instances, greeter_factory
):
    """Consul lists none passing (it restarted without its data, the instances have not
    registered again yet): GREETER_ADDR, the greeter's Service, answers instead of a 503."""
    manual_instances("example-service-unlisted", greeter_factory().port, passing=False)
    static = greeter_factory()
    client = books_client(consul_agent.addr, greeter_addr=f"127.0.0.1:{static.port}")
    reply = client.get("/api/v1/greeting?name=x").get_json()
    assert (reply["message"], reply["instance"]) == ("Hello, x!", f"127.0.0.1:{static.port}")


def test_consul_down_falls_back_to_the_static_address(greeter):
    dead_consul = f"127.0.0.1:{free_port()}"
    client = books_client(dead_consul, greeter_addr=f"127.0.0.1:{greeter.port}")
    assert client.get("/api/v1/greeting?name=x").get_json()["message"] == "Hello, x!"
    assert books_client(dead_consul).get("/api/v1/greeting?name=x").status_code == 503


def test_consul_going_down_falls_back_to_the_static_address(consul_path, greeter_factory):
    """The watch loses its agent mid-run: greetings go to GREETER_ADDR instead of failing."""
    agent = ConsulAgent(consul_path).start()
    discovered, static = greeter_factory(), greeter_factory()
    try:
        consul.Consul(host="127.0.0.1", port=agent.http_port).agent.service.register(
            "example-service", service_id="example-service-watched", address="127.0.0.1",
            port=discovered.port, check=consul.Check.ttl("1h"),
        )  # fmt: skip
        consul.Consul(host="127.0.0.1", port=agent.http_port).agent.check.ttl_pass(
            "service:example-service-watched"
        )
        client = books_client(agent.addr, greeter_addr=f"127.0.0.1:{static.port}")
        instance = client.get("/api/v1/greeting?name=x").get_json()["instance"]
        assert instance == f"127.0.0.1:{discovered.port}"
    finally:
        agent.stop()
    wait_until(
        lambda: (
            client.get("/api/v1/greeting?name=x").get_json()["instance"]
            == f"127.0.0.1:{static.port}"
        ),
        what="the static fallback once Consul is gone",
    )


def test_registers_once_consul_comes_back(consul_path, greeter_factory):
    """Consul is down at start: the greeter serves anyway, then registers when an agent appears."""
    agent = ConsulAgent(consul_path)
    greeter = greeter_factory(
        consul_http_addr=agent.addr,
        service_id="example-service-late",
        service_address="127.0.0.1",
        consul_check_interval="1s",
    )
    client = books_client("127.0.0.1:1", greeter_addr=f"127.0.0.1:{greeter.port}")
    assert client.get("/api/v1/greeting?name=x").status_code == 200, "serving while Consul is down"
    agent.start()
    try:
        wait_until(
            lambda: registered(agent, "example-service-late"), timeout=30, what="late registration"
        )
        wait_until(
            lambda: passing_checks(agent, "example-service", "example-service-late"),
            what="passing check",
        )
    finally:
        greeter.stop()
        agent.stop()
