"""Fixtures for the services' tests: real gRPC servers, a real Consul dev agent and a real
PostgreSQL server on loopback."""

import os

import psycopg
import pytest
from services_support import (
    SERVICE_SETTINGS,
    STUBS_PRESENT,
    ConsulAgent,
    PostgresServer,
    find_tool,
    postgres_bin_dir,
)

if not STUBS_PRESENT:
    pytest.exit("gRPC stubs missing: run `make stubs`", returncode=4)

from greeter.config import Settings as GreeterSettings
from greeter.server import Greeter


@pytest.fixture(autouse=True)
def _no_service_settings_from_this_machine(monkeypatch):
    """The services read their settings from the environment, in this process too (create_app)."""
    for name in [n for n in os.environ if n.startswith(SERVICE_SETTINGS)]:
        monkeypatch.delenv(name)


@pytest.fixture
def greeter_factory():
    """Start in-process greeters on free loopback ports; all stopped at teardown."""
    started: list[Greeter] = []

    def start(**settings) -> Greeter:
        greeter = Greeter(GreeterSettings(**{"grpc_port": 0, "grace_period_seconds": 2} | settings))
        greeter.start()
        started.append(greeter)
        return greeter

    yield start
    for greeter in started:
        greeter.stop()


@pytest.fixture
def greeter(greeter_factory) -> Greeter:
    return greeter_factory()


@pytest.fixture(scope="session")
def consul_path() -> str:
    binary = find_tool("consul")
    if not binary:
        pytest.skip("consul not found: run `make toolchain`")
    return binary


@pytest.fixture(scope="session")
def consul_agent(consul_path):
    agent = ConsulAgent(consul_path).start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session; tests that stop it start it again."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL not found: run `make postgres`")
    server = PostgresServer(bin_dir).init()
    yield server
    server.remove()


@pytest.fixture
def postgres(postgres_server):
    """The session's server running, with an empty database: no books table yet."""
    if postgres_server.process is None:
        postgres_server.start()
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS books")
    return postgres_server
