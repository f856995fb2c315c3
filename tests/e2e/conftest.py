"""Fixtures of the end-to-end run (`make e2e`): every part started here and stopped afterwards.

CI starts no process, so this starts them all, private to the run: a cluster (hack/cluster.sh on
free ports), podman's Docker API on its own socket, a podman network with a Consul dev agent, both
images built from a temporary copy of the repo. Selected only with `-m e2e` (it takes minutes);
a missing part is a skip naming the command that provides it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest
from local_stack import (
    ENGINE_TOOLS,
    SERVICES,
    ContainerEngine,
    PodNetwork,
    copy_repo,
    missing_part,
    run_consul,
    running_cluster,
    timed,
)

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session", autouse=True)
def _only_with_e2e_marker(request):
    """Session-scoped, so it runs before any other fixture of the run starts something."""
    if "e2e" not in (request.config.option.markexpr or ""):
        pytest.skip("end-to-end run, minutes long: `make e2e`")


@pytest.fixture(scope="session")
def parts():
    """podman, the docker CLI, the local base image and Consul (what the containers need)."""
    reason = missing_part(("consul",))
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_parts(parts):
    """The toolchain's Pulumi CLI, plugins and control plane (what the real-engine runs need)."""
    reason = missing_part(ENGINE_TOOLS)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    return TIMINGS


@pytest.fixture(scope="session")
def repo(parts, tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def engine(parts, tmp_path_factory):
    engine = ContainerEngine(tmp_path_factory.mktemp("podman"))
    engine.script("start")
    yield engine
    engine.script("stop")


@pytest.fixture(scope="session")
def images(engine, repo, timings) -> dict[str, str]:
    """Both images as CI would build them: `docker build` through podman's Docker API."""
    built = {}
    for service in SERVICES:
        with timed(timings, f"build image {service}"):
            built[service] = engine.build(repo, service)
    return built


@pytest.fixture(scope="session")
def network(parts):
    net = PodNetwork(f"consul-microservices-e2e-{os.getpid()}").create()
    yield net
    net.remove()


@pytest.fixture(scope="session")
def consul(network) -> str:
    """A Consul agent on the podman network; its HTTP API also on a loopback port (returned)."""
    return run_consul(network, "e2e-consul")


@pytest.fixture(scope="session")
def cluster(engine_parts, tmp_path_factory, timings):
    with timed(timings, "cluster up"):
        stack = ExitStack()
        kube = stack.enter_context(running_cluster(tmp_path_factory.mktemp("cluster")))
    with stack:
        yield kube


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("e2e timings (s)")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:8.1f}  {step}")
        terminalreporter.write_line(f"{sum(TIMINGS.values()):8.1f}  total of the steps above")
