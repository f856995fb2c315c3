"""Fixtures for the services' tests: real gRPC servers and a real Consul dev agent on loopback."""

import pytest
from services_support import STUBS_PRESENT, ConsulAgent, find_tool

if not STUBS_PRESENT:
    pytest.exit("gRPC stubs missing: run `make stubs`", returncode=4)

from greeter.config import Settings as GreeterSettings
from greeter.server import Greeter


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
