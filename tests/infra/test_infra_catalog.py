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
def with_fixture_service(services_tree) -> Path:
    """The fixture service tests/infra/fixtures/catalog-fixture/ dropped into the tree, nothing
    else: a name no user would give a service of theirs, so a real folder never clashes with it."""
    shutil.copytree(FIXTURES / "catalog-fixture", services_tree / "catalog-fixture", symlinks=True)
    return services_tree


def pod(name: str, ip: str) -> Pod:
    return Pod(name, APP_NS, {"app.kubernetes.io/name": name}, ip)


BOOKS, GREETER, FIXTURE = (
    pod("books-api", "10.244.0.10"),
    pod("greeter", "10.244.0.11"),
    pod("catalog-fixture", "10.244.0.12"),
)
OUTSIDER = Pod("client", "default", {"run": "curl"}, "10.244.0.30")
CONSUL = Pod(
    "consul-server", "consul", {"app": "consul", "component": "server", "release": "consul"},
    "10.244.0.20",
)  # fmt: skip


@pytest.fixture
def fixture_run(with_fixture_service) -> Deployment:
    return deploy(PROFILES["kind"])


def test_a_third_service_is_deployed_from_its_folder_alone(fixture_run, with_fixture_service):
    run = fixture_run
    assert {c.name for c in run.of_type(COMPONENT)} == {s.name for s in CATALOG} | {FIXTURE.name}
    image = run.one(IMAGE, "image-catalog-fixture").inputs
    assert image["build"]["args"]["SERVICE"] == "catalog-fixture"
    assert image["build"]["dockerfile"] == str(
        with_fixture_service / "catalog-fixture" / "Dockerfile"
    )
    assert run.container("catalog-fixture")["image"].startswith(
        "localhost:5001/catalog-fixture@sha256:"
    )
    assert (
        run.one(SERVICE_ACCOUNT, "catalog-fixture-sa").inputs["metadata"]["name"]
        == "catalog-fixture"
    )
    (port,) = run.one(SERVICE, "catalog-fixture-service").inputs["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 8090, "http")
    assert run.container("catalog-fixture")["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "http",
    }
    env = run.env("catalog-fixture")
    assert env["CATALOG_FIXTURE_PORT"] == "8090"
    # Metrics with no word of its manifest: the default port, served by services/common.
    assert {"name": "metrics", "containerPort": 9102} in run.container("catalog-fixture")["ports"]
    assert env["METRICS_PORT"] == "9102"
    assert env["OTEL_SERVICE_NAME"] == "catalog-fixture"
    assert env["CATALOG_FIXTURE_SCALE"] == "5"
    assert env["CONSUL_SERVICE_NAME"] == "catalog-fixture"
    # The discovery env of the service it calls, as books-api gets it.
    assert env["GREETER_SERVICE_NAME"] == "example-service"
    assert env["GREETER_ADDR"] == f"greeter.{APP_NS}.svc:50051"
    assert env["GREETER_ADDR"] == run.env("books-api")["GREETER_ADDR"]


def test_a_third_service_is_scraped_from_its_folder_alone(fixture_run):
    """The program's Prometheus gets a job for it and may reach its metrics port (the default)."""
    config = fixture_run.one("kubernetes:core/v1:ConfigMap", "prometheus-config").inputs["data"]
    jobs = {job["job_name"] for job in json.loads(config["prometheus.yml"])["scrape_configs"]}
    assert jobs == {*CATALOG.services, "catalog-fixture"}
    scraper = Pod("prometheus", APP_NS, {"app.kubernetes.io/name": "prometheus"}, "10.244.0.40")
    assert allowed(fixture_run, Conn(scraper, FIXTURE, catalog.METRICS_PORT))
    assert not allowed(fixture_run, Conn(scraper, FIXTURE, 8090))


def test_a_third_service_gets_its_consul_identity_and_checks(fixture_run):
    (job,) = fixture_run.of_type(JOB)
    assert (
        "catalog-fixture=catalog-fixture"
        in job.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert allowed(fixture_run, Conn(CONSUL, FIXTURE, 8090))  # Consul's health check
    assert allowed(fixture_run, Conn(FIXTURE, CONSUL, 8500))  # its registration and login


@pytest.mark.parametrize(
    ("src", "dst", "port", "expected"),
    [
        (FIXTURE, GREETER, 50051, True),  # it calls the greeter
        (BOOKS, GREETER, 50051, True),  # which still admits its other caller
        (BOOKS, FIXTURE, 8090, False),  # nobody calls catalog-fixture
        (GREETER, FIXTURE, 8090, False),
        (OUTSIDER, FIXTURE, 8090, False),  # not exposed
        (FIXTURE, BOOKS, 8080, False),  # it does not call books-api
        (FIXTURE, GREETER, 8080, False),
        (FIXTURE, OUTSIDER, 443, False),
    ],
    ids=lambda v: v.name if isinstance(v, Pod) else str(v),
)
def test_a_third_service_gets_exactly_its_flows(fixture_run, src, dst, port, expected):
    assert allowed(fixture_run, Conn(src, dst, port)) is expected


def test_a_third_service_takes_its_settings_from_the_one_structured_key(with_fixture_service):
    run = deploy(
        PROFILES["kind"] | services_key({"catalog-fixture": {"replicas": 3, "port": 9000}})
    )
    assert run.deployment("catalog-fixture")["spec"]["replicas"] == 3
    assert run.env("catalog-fixture")["CATALOG_FIXTURE_PORT"] == "9000"
    assert (
        run.outputs["services"]["catalog-fixture"]["address"]
        == f"catalog-fixture.{APP_NS}.svc:9000"
    )
    assert run.deployment("greeter")["spec"]["replicas"] == 2  # not named: the defaults


def test_a_third_service_shows_in_the_outputs(fixture_run):
    out = fixture_run.outputs
    assert out["images"]["catalog-fixture"] == fixture_run.container("catalog-fixture")["image"]
    assert out["services"]["catalog-fixture"]["port"] == 8090
    assert "catalog-fixture" not in out["portForwards"]  # not exposed


def test_a_service_named_prometheus_is_refused_while_the_stacks_prometheus_is_on(services_tree):
    """Its objects would take the names and labels of the program's Prometheus."""
    copy_service(services_tree, "greeter", "prometheus")
    mocks = RecordingMocks()
    with pytest.raises(Exception, match="invalid stack configuration") as failure:
        deploy(PROFILES["kind"], mocks=mocks)
    assert (
        "consul-microservices:prometheusInstall: got 'true', expected false: services/prometheus"
        " is a service" in str(failure.value)
    )
    assert not mocks.resources
    assert deploy(PROFILES["kind"] | {"prometheusInstall": "false"}).container("prometheus")


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


MANIFEST = "services/catalog-fixture/service.yaml"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("port: 8090", "portt: 8090",
         f"{MANIFEST}: portt: unknown key, did you mean port?"),
        ("calls: [greeter]", "calls: [greter]",
         f"{MANIFEST}: calls: got 'greter', expected one of "
         + ", ".join(sorted([*(s.name for s in CATALOG), "catalog-fixture"]))),
        # Reported on the later of the two in the catalog's (name) order, naming the other.
        ("consulName: catalog-fixture", "consulName: example-service",
         "services/greeter/service.yaml: consulName: got 'example-service', expected a name no "
         f"other service registers ({MANIFEST} has it)"),
        ("name: catalog-fixture", "name: rating",
         f"{MANIFEST}: name: got 'rating', expected the folder's name 'catalog-fixture'"),
        ("protocol: http", "protocol: tcp",
         f"{MANIFEST}: protocol: got 'tcp', expected 'http' or 'grpc'"),
        ("port: 8090", "port: 80",
         f"{MANIFEST}: port: got 80, expected greater than or equal to 1024"),
        ('CATALOG_FIXTURE_SCALE: "5"', 'CONSUL_HTTP_ADDR: "x"',
         f"{MANIFEST}: env.CONSUL_HTTP_ADDR: set by the program, expected it "
         "left out"),
        ("liveness: /healthz", "liveness: healthz",
         f"{MANIFEST}: health: expected HTTP paths starting with /"),
        ("port: 8090", "port: 8090\nmetricsPort: 8090",
         f"{MANIFEST}: metricsPort: got 8090, expected a port other than port's"),
        ("port: 8090", "port: 8090\nmetricsPort: 443",
         f"{MANIFEST}: metricsPort: got 443, expected greater than or equal to 1024"),
        ('CATALOG_FIXTURE_SCALE: "5"', 'METRICS_PORT: "9000"',
         f"{MANIFEST}: env.METRICS_PORT: set by the program, expected it left out"),
    ],
    ids=["unknown key", "unknown callee", "Consul name twice", "name not the folder's",
         "unknown protocol", "privileged port", "env the program sets", "HTTP path",
         "metrics on the service's port", "privileged metrics port", "metrics port in env"],
)  # fmt: skip
def test_a_manifest_error_fails_before_any_resource_naming_file_and_field(
    with_fixture_service, old, new, expected
):
    _edit(with_fixture_service / "catalog-fixture" / "service.yaml", old, new)
    assert expected in _fails_before_any_resource()


def test_a_folder_without_its_build_files_is_named(with_fixture_service):
    (with_fixture_service / "catalog-fixture" / "Dockerfile").unlink()
    (with_fixture_service / "greeter" / "Dockerfile.dockerignore").write_text("*\n!common/\n")
    message = _fails_before_any_resource()
    assert (
        "services/catalog-fixture/service.yaml: expected services/catalog-fixture/Dockerfile"
        in message
    )
    assert (
        "services/greeter/service.yaml: expected services/greeter/Dockerfile.dockerignore to "
        "re-include !greeter/"
    ) in message


def test_a_python_service_needs_its_package(with_fixture_service):
    shutil.rmtree(with_fixture_service / "catalog-fixture" / "src" / "catalog_fixture")
    assert (
        "services/catalog-fixture/service.yaml: expected "
        "services/catalog-fixture/src/catalog_fixture/__main__.py "
        "(the shared Dockerfile runs python -m catalog_fixture)"
    ) in _fails_before_any_resource()


def test_every_problem_is_reported_at_once(with_fixture_service):
    _edit(
        with_fixture_service / "catalog-fixture" / "service.yaml",
        "calls: [greeter]",
        "calls: [nobody]",
    )
    _edit(with_fixture_service / "greeter" / "service.yaml", "port: 50051", "port: fifty")
    message = _fails_before_any_resource()
    assert "services/catalog-fixture/service.yaml: calls: got 'nobody'" in message
    assert "services/greeter/service.yaml: port: got 'fifty'" in message


def test_stack_settings_for_a_service_without_a_folder_are_refused(services_tree):
    config = infra_module("config")
    mocks = RecordingMocks()
    with pytest.raises(config.ConfigError, match=r"services.catalog-fixture: unknown service"):
        deploy(PROFILES["kind"] | {"services": json.dumps({"catalog-fixture": {}})}, mocks=mocks)
    assert mocks.resources == []


def test_the_tutorials_two_services_are_in_the_repos_catalog():
    """Of the tutorial: whatever other folders the repo holds, these two keep their contracts."""
    found = {s.name: (s.consul_name, s.protocol, s.port) for s in CATALOG}
    assert found["books-api"] == ("books-api", "http", 8080)
    assert found["greeter"] == ("example-service", "grpc", 50051)
    assert CATALOG.services["books-api"] in CATALOG.callers_of("greeter")


def test_the_shared_ignore_file_names_no_service():
    """Some builders (podman's Docker API) apply services/.dockerignore on top of a service's own
    ignore file: an allow-list of today's services there would drop a new one's files."""
    patterns = (CATALOG.root / ".dockerignore").read_text().split()
    for service in CATALOG:
        assert not [p for p in patterns if service.name in p]
    assert "*" not in patterns
