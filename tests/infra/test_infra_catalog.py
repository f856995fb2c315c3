"""The service catalog: a service is its folder. A third service, added by a folder alone, gets
the whole chain under mocks; a bad manifest fails before any resource, naming file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from infra_harness import (
    CATALOG,
    COMPONENT,
    IMAGE,
    JOB,
    PROFILES,
    SERVICE,
    SERVICE_ACCOUNT,
    Deployment,
    RecordingMocks,
    deploy,
    infra_module,
    services_key,
)
from network_eval import APP_NS, Conn, Pod, allowed
from testkit import copy_service

catalog = infra_module("catalog")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def services_tree(tmp_path, monkeypatch) -> Path:
    """A copy of services/ that the program loads instead of the repo's."""
    tree = tmp_path / "services"
    shutil.copytree(CATALOG.root, tree, symlinks=True, ignore=shutil.ignore_patterns(".offline"))
    monkeypatch.setattr(catalog, "SERVICES_DIR", tree)
    return tree


@pytest.fixture
def with_ratings(services_tree) -> Path:
    """The fixture service tests/infra/fixtures/ratings/ dropped into the tree, nothing else."""
    shutil.copytree(FIXTURES / "ratings", services_tree / "ratings", symlinks=True)
    return services_tree


def pod(name: str, ip: str) -> Pod:
    return Pod(name, APP_NS, {"app.kubernetes.io/name": name}, ip)


BOOKS, GREETER, RATINGS = (
    pod("books-api", "10.244.0.10"),
    pod("greeter", "10.244.0.11"),
    pod("ratings", "10.244.0.12"),
)
OUTSIDER = Pod("client", "default", {"run": "curl"}, "10.244.0.30")
CONSUL = Pod(
    "consul-server", "consul", {"app": "consul", "component": "server", "release": "consul"},
    "10.244.0.20",
)  # fmt: skip


@pytest.fixture
def ratings_run(with_ratings) -> Deployment:
    return deploy(PROFILES["kind"])


def test_a_third_service_is_deployed_from_its_folder_alone(ratings_run, with_ratings):
    run = ratings_run
    assert {c.name for c in run.of_type(COMPONENT)} == {"books-api", "greeter", "ratings"}
    image = run.one(IMAGE, "image-ratings").inputs
    assert image["build"]["args"]["SERVICE"] == "ratings"
    assert image["build"]["dockerfile"] == str(with_ratings / "ratings" / "Dockerfile")
    assert run.container("ratings")["image"].startswith("localhost:5001/ratings@sha256:")
    assert run.one(SERVICE_ACCOUNT, "ratings-sa").inputs["metadata"]["name"] == "ratings"
    (port,) = run.one(SERVICE, "ratings-service").inputs["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 8090, "http")
    assert run.container("ratings")["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "http",
    }
    env = run.env("ratings")
    assert env["RATINGS_PORT"] == "8090"
    assert env["RATINGS_SCALE"] == "5"
    assert env["CONSUL_SERVICE_NAME"] == "ratings"
    # The discovery env of the service it calls, as books-api gets it.
    assert env["GREETER_SERVICE_NAME"] == "example-service"
    assert env["GREETER_ADDR"] == f"greeter.{APP_NS}.svc:50051"
    assert env["GREETER_ADDR"] == run.env("books-api")["GREETER_ADDR"]


def test_a_third_service_gets_its_consul_identity_and_checks(ratings_run):
    (job,) = ratings_run.of_type(JOB)
    assert "ratings=ratings" in job.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert allowed(ratings_run, Conn(CONSUL, RATINGS, 8090))  # Consul's health check
    assert allowed(ratings_run, Conn(RATINGS, CONSUL, 8500))  # its registration and login


@pytest.mark.parametrize(
    ("src", "dst", "port", "expected"),
    [
        (RATINGS, GREETER, 50051, True),  # it calls the greeter
        (BOOKS, GREETER, 50051, True),  # which still admits its other caller
        (BOOKS, RATINGS, 8090, False),  # nobody calls ratings
        (GREETER, RATINGS, 8090, False),
        (OUTSIDER, RATINGS, 8090, False),  # not exposed
        (RATINGS, BOOKS, 8080, False),  # it does not call books-api
        (RATINGS, GREETER, 8080, False),
        (RATINGS, OUTSIDER, 443, False),
    ],
    ids=lambda v: v.name if isinstance(v, Pod) else str(v),
)
def test_a_third_service_gets_exactly_its_flows(ratings_run, src, dst, port, expected):
    assert allowed(ratings_run, Conn(src, dst, port)) is expected


def test_a_third_service_takes_its_settings_from_the_one_structured_key(with_ratings):
    run = deploy(PROFILES["kind"] | services_key({"ratings": {"replicas": 3, "port": 9000}}))
    assert run.deployment("ratings")["spec"]["replicas"] == 3
    assert run.env("ratings")["RATINGS_PORT"] == "9000"
    assert run.outputs["services"]["ratings"]["address"] == f"ratings.{APP_NS}.svc:9000"
    assert run.deployment("greeter")["spec"]["replicas"] == 2  # not named: the defaults


def test_a_third_service_shows_in_the_outputs(ratings_run):
    out = ratings_run.outputs
    assert out["images"]["ratings"] == ratings_run.container("ratings")["image"]
    assert out["services"]["ratings"]["port"] == 8090
    assert "ratings" not in out["portForwards"]  # not exposed


def test_a_copy_of_the_greeter_with_only_its_names_changed_is_a_service(services_tree):
    copy_service(services_tree, "greeter", "greeter-copy")
    run = deploy(PROFILES["kind"])
    env = run.env("greeter-copy")
    assert env["CONSUL_SERVICE_NAME"] == "greeter-copy"
    assert env["GRPC_PORT"] == "50051"
    assert run.container("greeter-copy")["readinessProbe"]["grpc"] == {
        "port": 50051,
        "service": "ExampleService",
    }
    (job,) = run.of_type(JOB)
    assert (
        "greeter-copy=greeter-copy"
        in job.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert run.one(IMAGE, "image-greeter-copy").inputs["build"]["args"]["SERVICE"] == "greeter-copy"


def _fails_before_any_resource(config: dict | None = None) -> str:
    mocks = RecordingMocks()
    with pytest.raises(catalog.CatalogError) as error:
        deploy(config or PROFILES["kind"], mocks=mocks)
    assert mocks.resources == []
    return str(error.value)


def _edit(manifest: Path, old: str, new: str) -> None:
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("port: 8090", "portt: 8090",
         "services/ratings/service.yaml: portt: unknown key, did you mean port?"),
        ("calls: [greeter]", "calls: [greter]",
         "services/ratings/service.yaml: calls: got 'greter', expected one of books-api, greeter,"
         " ratings"),
        ("consulName: ratings", "consulName: example-service",
         "services/ratings/service.yaml: consulName: got 'example-service', expected a name no "
         "other service registers (services/greeter/service.yaml has it)"),
        ("name: ratings", "name: rating",
         "services/ratings/service.yaml: name: got 'rating', expected the folder's name 'ratings'"),
        ("protocol: http", "protocol: tcp",
         "services/ratings/service.yaml: protocol: got 'tcp', expected 'http' or 'grpc'"),
        ("port: 8090", "port: 80",
         "services/ratings/service.yaml: port: got 80, expected greater than or equal to 1024"),
        ('RATINGS_SCALE: "5"', 'CONSUL_HTTP_ADDR: "x"',
         "services/ratings/service.yaml: env.CONSUL_HTTP_ADDR: set by the program, expected it "
         "left out"),
        ("liveness: /healthz", "liveness: healthz",
         "services/ratings/service.yaml: health: expected HTTP paths starting with /"),
    ],
    ids=["unknown key", "unknown callee", "Consul name twice", "name not the folder's",
         "unknown protocol", "privileged port", "env the program sets", "HTTP path"],
)  # fmt: skip
def test_a_manifest_error_fails_before_any_resource_naming_file_and_field(
    with_ratings, old, new, expected
):
    _edit(with_ratings / "ratings" / "service.yaml", old, new)
    assert expected in _fails_before_any_resource()


def test_a_folder_without_its_build_files_is_named(with_ratings):
    (with_ratings / "ratings" / "Dockerfile").unlink()
    (with_ratings / "greeter" / "Dockerfile.dockerignore").write_text("*\n!common/\n")
    message = _fails_before_any_resource()
    assert "services/ratings/service.yaml: expected services/ratings/Dockerfile" in message
    assert (
        "services/greeter/service.yaml: expected services/greeter/Dockerfile.dockerignore to "
        "re-include !greeter/"
    ) in message


def test_a_python_service_needs_its_package(with_ratings):
    shutil.rmtree(with_ratings / "ratings" / "src" / "ratings")
    assert (
        "services/ratings/service.yaml: expected services/ratings/src/ratings/__main__.py "
        "(the shared Dockerfile runs python -m ratings)"
    ) in _fails_before_any_resource()


def test_every_problem_is_reported_at_once(with_ratings):
    _edit(with_ratings / "ratings" / "service.yaml", "calls: [greeter]", "calls: [nobody]")
    _edit(with_ratings / "greeter" / "service.yaml", "port: 50051", "port: fifty")
    message = _fails_before_any_resource()
    assert "services/ratings/service.yaml: calls: got 'nobody'" in message
    assert "services/greeter/service.yaml: port: got 'fifty'" in message


def test_stack_settings_for_a_service_without_a_folder_are_refused(services_tree):
    config = infra_module("config")
    mocks = RecordingMocks()
    with pytest.raises(config.ConfigError, match=r"services.ratings: unknown service"):
        deploy(PROFILES["kind"] | {"services": json.dumps({"ratings": {}})}, mocks=mocks)
    assert mocks.resources == []


def test_the_repos_catalog_is_the_tutorials_two_services():
    assert {s.name: (s.consul_name, s.protocol, s.port) for s in CATALOG} == {
        "books-api": ("books-api", "http", 8080),
        "greeter": ("example-service", "grpc", 50051),
    }
    assert CATALOG.callers_of("greeter") == [CATALOG.services["books-api"]]


def test_the_shared_ignore_file_names_no_service():
    """Some builders (podman's Docker API) apply services/.dockerignore on top of a service's own
    ignore file: an allow-list of today's services there would drop a new one's files."""
    patterns = (CATALOG.root / ".dockerignore").read_text().split()
    for service in CATALOG:
        assert not [p for p in patterns if service.name in p]
    assert "*" not in patterns
