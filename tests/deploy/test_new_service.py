"""`make service NAME=<name> PROTOCOL=http|grpc` (hack/new-service.py): a new folder from the
project's template that the program deploys and whose own tests pass; a refusal writes nothing.

Runs in a copy of services/ (--services), so the repo's catalog is never touched; the new services'
names are ones no user would pick, so whatever folders the repo holds, none clashes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import ROOT

sys.path.insert(0, str(ROOT / "tests" / "infra"))
from infra_harness import PROFILES, deploy, infra_module

catalog = infra_module("catalog")
NEW_SERVICE = ROOT / "hack" / "new-service.py"


@pytest.fixture
def services(tmp_path) -> Path:
    tree = tmp_path / "services"
    shutil.copytree(
        ROOT / "services", tree, symlinks=True,
        ignore=shutil.ignore_patterns(".offline", "__pycache__"),
    )  # fmt: skip
    return tree


def make_service(services: Path, name: str, protocol: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(NEW_SERVICE), name, protocol, "--services", str(services)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def listing(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))


@pytest.mark.parametrize(
    ("name", "protocol", "message"),
    [
        ("Ratings", "http", "NAME='Ratings': expected a name of lower-case letters"),
        ("9lives", "http", "a letter first"),
        ("greeter", "grpc", "services/greeter/ exists: choose another NAME"),
        ("example-service", "grpc",
         "NAME=example-service: greeter registers the Consul name example-service"),
        ("made-by-a-test", "tcp", "PROTOCOL='tcp': expected one of ['grpc', 'http']"),
    ],
    ids=["upper case", "digit first", "taken", "another's Consul name", "unknown protocol"],
)  # fmt: skip
def test_a_refused_name_or_protocol_says_why_and_writes_nothing(services, name, protocol, message):
    before = listing(services)
    done = make_service(services, name, protocol)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert listing(services) == before


@pytest.mark.parametrize(
    ("name", "protocol", "readiness"),
    [
        ("made-by-a-test", "http", "/readyz"),
        ("made-by-a-test", "grpc", "made_by_a_test.MadeByATest"),
    ],
)
def test_a_new_service_is_deployed_from_its_folder_alone(
    services, monkeypatch, name, protocol, readiness
):
    done = make_service(services, name, protocol)
    assert done.returncode == 0, done.stderr
    folder = services / name
    assert os.readlink(folder / "Dockerfile") == "../Dockerfile"
    leftovers = [
        str(p.relative_to(folder)) for p in folder.rglob("*")
        if "service-template" in str(p) or "service_template" in str(p)
        or (p.is_file() and "service" + "-template" in p.read_text())
    ]  # fmt: skip
    assert leftovers == []
    found = catalog.load(services).services[name]
    assert (found.protocol, found.consul_name, found.health.readiness) == (
        protocol,
        name,
        readiness,
    )
    # Its metrics: a port of its own in its pod, served by services/common, no code in its folder.
    assert not [p for p in (folder / "src").rglob("*.py") if "prometheus" in p.read_text()]
    monkeypatch.setattr(catalog, "SERVICES_DIR", services)
    run = deploy(PROFILES["kind"])
    assert run.deployment(name)["spec"]["template"]["spec"]["containers"][0]["name"] == name
    assert {"name": "metrics", "containerPort": 9102} in run.container(name)["ports"]
    assert run.env(name)["METRICS_PORT"] == "9102"
    (job,) = run.of_type("kubernetes:batch/v1:Job")
    assert f"{name}={name}" in job.inputs["spec"]["template"]["spec"]["containers"][0]["args"]


def stubs(services: Path, name: str) -> None:
    """What `make stubs` makes: the shared stubs and the service's own."""
    from grpc_tools import protoc  # noqa: PLC0415 - the dev venv's, as make stubs runs it

    for proto_dir, out in ((services / "protos", services / "common" / "src"),
                           (services / name / "protos", services / name / "src")):  # fmt: skip
        if proto_dir.is_dir():
            protos = [str(p) for p in proto_dir.glob("*.proto")]
            assert protoc.main(["protoc", f"--proto_path={proto_dir}", f"--python_out={out}",
                                f"--grpc_python_out={out}", *protos]) == 0  # fmt: skip


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_its_own_tests_pass_as_made(services, protocol):
    """Run here with the dev venv, whose pins equal the template's (`make test` gives each such
    service an environment of its own: hack/service-tests.sh). Among them: it serves its metrics
    on METRICS_PORT as its image runs it."""
    name = "made-by-a-test"
    assert make_service(services, name, protocol).returncode == 0
    stubs(services, name)
    path = os.pathsep.join(str(services / f / "src") for f in (name, "common"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(services / name)],
        env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_two_services_of_one_template_share_no_file(services):
    """tests/services/test_stubs.py refuses a file kept twice in services/: each file of the
    template names the service."""
    names = ("made-by-a-test", "made-by-a-test-too")
    for name in names:
        assert make_service(services, name, "http").returncode == 0
    digests: dict[str, str] = {}
    for path in [p for name in names for p in sorted((services / name).rglob("*"))]:
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest not in digests, f"{path} is the same as {digests[digest]}"
            digests[digest] = str(path)
