"""Fixtures of the end-to-end run (`make e2e`): every part started here and stopped afterwards.

CI starts no process, so this starts them all, private to the run: a cluster (hack/cluster.sh on
free ports), podman's Docker API on its own socket, a podman network with a Consul dev agent, both
images built from a temporary copy of the repo. Selected only with `-m e2e` (it takes minutes);
a missing part is a skip naming the command that provides it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from local_stack import (
    ENGINE_TOOLS,
    FAULTS,
    HACK,
    NODE_FAULTS,
    SERVICES,
    ContainerEngine,
    PodNetwork,
    _run,
    copy_repo,
    host_consul,
    missing_part,
    python_host,
    run_consul,
    timed,
    user_path_parts,
)
from testkit import running_cluster

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
def workdir() -> Iterator[Path]:
    """A private temp dir, not pytest's basetemp: other pytest runs on the machine delete all but
    their three newest basetemps, which would take a running cluster's state with them."""
    path = Path(tempfile.mkdtemp(prefix="consul-microservices-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def subdir(workdir: Path, name: str) -> Path:
    (workdir / name).mkdir()
    return workdir / name


@pytest.fixture(scope="session")
def repo(parts, workdir):
    return copy_repo(subdir(workdir, "repo"))


@pytest.fixture(scope="session")
def engine(parts, workdir):
    engine = ContainerEngine(subdir(workdir, "podman"))
    engine.script("start")
    yield engine
    engine.script("stop")


@pytest.fixture(scope="session")
def images(engine, repo, cluster, timings) -> dict[str, str]:
    """Both images as CI would build them (`docker build` through podman's Docker API), pushed to
    the cluster's registry localhost:5001."""
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
def cluster(engine_parts, workdir, timings):
    """The local cluster with its real node: pods run, pulling from the registry localhost:5001."""
    with timed(timings, "cluster up"):
        stack = ExitStack()
        kube = stack.enter_context(running_cluster(subdir(workdir, "cluster"), node="real"))
    with stack:
        yield kube


@pytest.fixture(scope="session")
def postgres_image(cluster, timings) -> str:
    """The databases' image in the node's registry, built as `make up CLUSTER=local` builds it
    (no registry here serves the official postgres image)."""
    with timed(timings, "build the postgres image"):
        done = _run([str(HACK / "local-stack.sh"), "postgres-image"], timeout=900)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def prometheus_image(cluster, timings) -> str:
    """The stack's Prometheus image in the node's registry, built from its Go module as `make up
    CLUSTER=local` builds it (no registry here serves the official image)."""
    with timed(timings, "build the prometheus image"):
        done = _run([str(HACK / "local-stack.sh"), "prometheus-image"], timeout=1200)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def node_consul(cluster, workdir) -> Iterator[str]:
    """Consul outside the cluster, on the node's address where pods reach it (HTTP address)."""
    with host_consul(subdir(workdir, "node-consul")) as addr:
        yield addr


@pytest.fixture(scope="session")
def policy_host() -> Path:
    """A language host that runs the policy pack under the engine (local_stack.python_host)."""
    host, why = python_host()
    if host is None:
        pytest.skip(f"the policy pack under the engine skipped: {why}")
    return host


@pytest.fixture(scope="session")
def user_path() -> dict[str, str] | None:
    """The user path's parts (local_stack.user_path_parts), or None when one is missing."""
    found, missing = user_path_parts()
    return None if missing else found


@pytest.fixture(scope="session")
def user_parts(user_path) -> dict[str, str]:
    if user_path is None:
        pytest.skip("user path skipped: " + "; ".join(user_path_parts()[1]))
    return user_path


@pytest.fixture(scope="session")
def mirrored_images(user_parts, cluster) -> dict[str, str]:
    """The chart's two images, in the node's registry, by the code `make up CLUSTER=local` runs:
    what an air-gapped user mirrors (consulImage and consulK8sImage)."""
    env = {
        **os.environ,
        "CONSUL_CHART_PATH": user_parts["chart"],
        "CONSUL_K8S_CONTROL_PLANE_IMAGE": user_parts["control-plane image"],
    }
    done = _run([str(HACK / "local-stack.sh"), "chart-images"], timeout=900, env=env)
    images = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert set(images) == {"consulImage", "consulK8sImage"}, done.stdout
    return images


def _user_path_line() -> str:
    found, missing = user_path_parts()
    if not missing:
        return "user path: ON (" + ", ".join(f"{k}: {v}" for k, v in found.items()) + ")"
    return (
        "user path: SKIPPED, the side paths run instead (images built by podman and deployed by "
        "digest, Consul outside the cluster); missing: " + "; ".join(missing)
    )


def pytest_report_header(config):
    if "e2e" in (config.option.markexpr or ""):
        return [_user_path_line()]
    return []


def pytest_terminal_summary(terminalreporter, config):
    if "e2e" in (config.option.markexpr or ""):
        terminalreporter.section("e2e user path")
        terminalreporter.write_line(_user_path_line())
    if TIMINGS:
        terminalreporter.section("e2e timings (s)")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:8.1f}  {step}")
        terminalreporter.write_line(f"{sum(TIMINGS.values()):8.1f}  total of the steps above")
    if FAULTS:
        terminalreporter.section("e2e faults under load (test_faults.py)")
        terminalreporter.write_line(
            f"{'fault':<44} {'requests':>7} {'failures':>20} {'longest gap':>9}"
        )
        for fault, report in FAULTS.items():
            line = report.row(fault) if hasattr(report, "row") else f"{fault:<44} {report}"
            terminalreporter.write_line(line)
    if NODE_FAULTS:
        terminalreporter.section("e2e node faults under load on kind (test_nodes.py)")
        terminalreporter.write_line(
            f"{'fault':<40} {'requests':>7} {'failures':>16} {'longest gap':>9}"
            f" {'full health':>9}  acknowledged writes"
        )
        for fault, report in NODE_FAULTS.items():
            line = report.row(fault) if hasattr(report, "row") else f"{fault:<40} {report}"
            terminalreporter.write_line(line)


# The sequence modules run their steps in file order on one stack: after a failed step the later
# ones would only wait out their timeouts, so they are skipped, naming the step that failed.
# test_kind.py runs its sequence once per path (its `kind` fixture's parameter).
SEQUENCES = (
    "test_faults.py", "test_pulumi_sequence.py", "test_user_path.py", "test_kind.py",
    "test_nodes.py",
)  # fmt: skip
_failed_step: dict[str, str] = {}


def _sequence(item) -> str:
    path = getattr(item, "callspec", None) and item.callspec.params.get("kind")
    return f"{item.path.name}[{path}]" if path else item.path.name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.path.name in SEQUENCES and report.failed:
        _failed_step.setdefault(_sequence(item), item.name)


def pytest_runtest_setup(item):
    failed = _failed_step.get(_sequence(item))
    if failed:
        pytest.skip(f"an earlier step of this sequence failed: {failed}")
