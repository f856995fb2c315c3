"""Stack config: each invalid value fails before any resource exists, naming key and value."""

from __future__ import annotations

import json
import re
import typing

import pytest
import yaml
from infra_harness import (
    PROFILES,
    PROJECT,
    RELEASE,
    ROOT,
    RecordingMocks,
    deploy,
    infra_module,
    project_defaults,
    services_key,
)

KIND = PROFILES["kind"]
EXISTING = PROFILES["existing"]

DIGEST = "sha256:" + "a" * 64
EXTERNAL = {"consulInstall": "false", "consulAddress": "http://10.0.0.5:8500"}


def svc(service: str, **settings) -> dict[str, str]:
    return services_key({service: settings})


# (name, base config, overrides, key in the message, value in the message, expected fragment).
# Values appear as the user wrote them (Pulumi hands every value over as a string).
INVALID = [
    # -- one of a closed set, or not of its type at all
    ("unknown profile", KIND, {"clusterProfile": "gke"}, "clusterProfile", "'gke'",
     "one of kind, minikube, existing"),
    ("zero replicas", KIND, svc("books-api", replicas=0), "services.books-api.replicas", "0",
     "an integer between 1 and 50"),
    ("replicas not a number", KIND, svc("greeter", replicas="two"), "services.greeter.replicas",
     "'two'", "an integer between 1 and 50"),
    ("boolean typo", KIND, {"consulInstall": "yes"}, "consulInstall", "'yes'", "true or false"),
    ("unknown delivery", KIND, {"imageDelivery": "scp"}, "imageDelivery", "'scp'",
     "one of auto, push, local"),
    ("unknown log level", KIND, {"logLevel": "verbose"}, "logLevel", "'verbose'",
     "one of DEBUG, INFO, WARNING, ERROR"),
    ("bad service type", KIND, svc("books-api", serviceType="Ingress"),
     "services.books-api.serviceType", "'Ingress'", "one of ClusterIP, NodePort, LoadBalancer"),
    ("services not a map", KIND, {"services": '["books-api"]'}, "services", """'["books-api"]'""",
     "a map of service name to its settings"),
    # -- accepted by the old checks, refused later by Kubernetes, Docker or Helm
    ("CPU quantity Kubernetes rejects", KIND, {"cpuRequest": "100x"}, "cpuRequest", "'100x'",
     "a Kubernetes CPU quantity"),
    ("registry with a scheme", EXISTING, {"imageRegistry": "https://registry.example.com"},
     "imageRegistry", "'https://registry.example.com'", "without a scheme"),
    ("registry path in upper case", EXISTING, {"imageRegistry": "registry.example.com/Team"},
     "imageRegistry", "'registry.example.com/Team'", "with a lower-case path"),
    ("registry Docker reads as a Docker Hub user", EXISTING, {"imageRegistry": "team"},
     "imageRegistry", "'team'", "a host has a dot, a port or is localhost"),
    ("image tag longer than 128", KIND, svc("greeter", image="greeter:" + "v" * 129),
     "services.greeter.image", "'greeter:" + "v" * 129 + "'", "an OCI image reference"),
    ("image with a short digest", KIND, svc("greeter", image="greeter@sha256:abc"),
     "services.greeter.image", "'greeter@sha256:abc'", "an OCI image reference"),
    ("image with a trailing newline", KIND, svc("greeter", image="greeter:1.4.2\n"),
     "services.greeter.image", "'greeter:1.4.2\\n'", "an OCI image reference"),
    ("tag with a non-ASCII letter", KIND, svc("greeter", image="greeter:v1.é"),
     "services.greeter.image", "'greeter:v1.é'", "an OCI image reference"),
    ("base image in upper case", KIND, {"baseImage": "Python:3.11"}, "baseImage",
     "'Python:3.11'", "an OCI image reference"),
    ("mirrored Consul image on latest", KIND, {"consulImage": "mirror.example.com/consul:latest"},
     "consulImage", "'mirror.example.com/consul:latest'", "a tag other than latest"),
    ("consul-k8s image not a reference", KIND, {"consulK8sImage": "mirror/consul k8s:1.9"},
     "consulK8sImage", "'mirror/consul k8s:1.9'", "an OCI image reference"),
    ("build arg name Docker rejects", KIND, {"imageBuildArgs": '["PIP-WHEELHOUSE=x"]'},
     "imageBuildArgs", '\'["PIP-WHEELHOUSE=x"]\'', 'a JSON list of "NAME=value" strings'),
    ("build args not a list", KIND, {"imageBuildArgs": "PIP_WHEELHOUSE=x"}, "imageBuildArgs",
     "'PIP_WHEELHOUSE=x'", 'a JSON list of "NAME=value" strings'),
    ("BASE_IMAGE as a build arg", KIND, {"imageBuildArgs": '["BASE_IMAGE=x"]'},
     "imageBuildArgs", '\'["BASE_IMAGE=x"]\'', "BASE_IMAGE goes in baseImage"),
    ("chart version range", KIND, {"consulChartVersion": "^1.9"}, "consulChartVersion", "'^1.9'",
     "an exact chart version"),
    ("chart version with a leading zero", KIND, {"consulChartVersion": "1.09.3"},
     "consulChartVersion", "'1.09.3'", "semver"),
    ("chart repository not a URL", KIND, {"consulChartRepo": "helm.releases.hashicorp.com"},
     "consulChartRepo", "'helm.releases.hashicorp.com'", "chart repository URL"),
    ("relative chart path", KIND, {"consulChartPath": "charts/consul"}, "consulChartPath",
     "'charts/consul'", "an absolute path to a chart directory"),
    ("chart path that does not exist", KIND, {"consulChartPath": "/nonexistent/consul.tgz"},
     "consulChartPath", "'/nonexistent/consul.tgz'", "or a .tgz that exists"),
    ("namespace not a DNS label", KIND, {"namespace": "Consul_Apps"}, "namespace",
     "'Consul_Apps'", "a DNS label"),
    ("namespace too long", KIND, {"namespace": "a" * 64}, "namespace", "'" + "a" * 64 + "'",
     "a DNS label"),
    # -- a number inside an address, range-checked like any port
    ("Consul address port out of range", KIND, EXTERNAL | {"consulAddress": "10.0.0.5:99999"},
     "consulAddress", "'10.0.0.5:99999'", "port 1-65535"),
    ("Consul address port zero", KIND, EXTERNAL | {"consulAddress": "http://10.0.0.5:0"},
     "consulAddress", "'http://10.0.0.5:0'", "port 1-65535"),
    ("registry port out of range", EXISTING, {"imageRegistry": "registry.example.com:70000"},
     "imageRegistry", "'registry.example.com:70000'", "a registry port between 1 and 65535"),
    ("image registry port out of range", KIND, svc("books-api", image=f"localhost:0/b@{DIGEST}"),
     "services.books-api.image", f"'localhost:0/b@{DIGEST}'", "a registry port between 1 and"),
    ("malformed Consul address", KIND, EXTERNAL | {"consulAddress": "consul:abc"},
     "consulAddress", "'consul:abc'", "http(s)://host[:port]"),
    ("Consul address with a path", KIND, EXTERNAL | {"consulAddress": "http://10.0.0.5:8500/v1"},
     "consulAddress", "'http://10.0.0.5:8500/v1'", "no path"),
    ("port above range", KIND, svc("books-api", port=70000), "services.books-api.port", "70000",
     "an integer between 1024 and 65535"),
    ("privileged port", KIND, svc("greeter", port="80"), "services.greeter.port", "'80'",
     "an integer between 1024 and 65535"),
    # -- unit habits carried over from Docker
    ("memory in Docker's m", KIND, {"memoryLimit": "512m"}, "memoryLimit", "'512m'",
     "not Docker's m, g or MB"),
    ("memory in Docker's g", KIND, {"memoryLimit": "1g"}, "memoryLimit", "'1g'",
     "a Kubernetes memory quantity in whole bytes"),
    ("storage in MB", KIND, {"consulStorage": "10GB"}, "consulStorage", "'10GB'",
     "a Kubernetes storage quantity in whole bytes"),
    ("StorageClass with capitals", KIND, {"postgresStorageClass": "Shared"},
     "postgresStorageClass", "'Shared'", "a DNS subdomain (DNS labels joined by '.', at most 253)"),
    # -- quantities Kubernetes accepts that cannot mean what was meant
    ("fractional bytes of memory", KIND, {"memoryRequest": "100.5"}, "memoryRequest", "'100.5'",
     "in whole bytes"),
    ("fractional bytes of ephemeral storage", KIND, {"ephemeralStorageRequest": "0.1Ki"},
     "ephemeralStorageRequest", "'0.1Ki'", "in whole bytes"),
    ("CPU finer than a millicore", KIND, {"cpuRequest": "0.0005"}, "cpuRequest", "'0.0005'",
     "at least 1m"),
    ("zero ephemeral request", KIND, {"ephemeralStorageRequest": "0"},
     "ephemeralStorageRequest", "'0'", "in whole bytes"),
    # -- reserved namespaces
    ("app namespace default", KIND, {"namespace": "default"}, "namespace", "'default'",
     "not default or kube-* (reserved)"),
    ("Consul in kube-system", KIND, {"consulNamespace": "kube-system"}, "consulNamespace",
     "'kube-system'", "not default or kube-* (reserved)"),
    # -- an explicitly empty value is refused where it is not documented as meaning the default
    ("empty namespace", KIND, {"namespace": ""}, "namespace", "''", "a DNS label"),
    ("empty profile", KIND, {"clusterProfile": ""}, "clusterProfile", "''", "one of kind"),
    ("empty CPU limit", KIND, {"cpuLimit": ""}, "cpuLimit", "''", "a Kubernetes CPU quantity"),
    ("empty replicas", KIND, svc("greeter", replicas=""), "services.greeter.replicas", "''",
     "an integer between 1 and 50"),
    # -- CIDRs: normalised, or refused
    ("bad CIDR", KIND, EXTERNAL | {"consulExternalCidr": "10.0.0.0/33"}, "consulExternalCidr",
     "'10.0.0.0/33'", "a CIDR"),
    ("CIDR of everyone", KIND, EXTERNAL | {"consulExternalCidr": "0.0.0.0/0"},
     "consulExternalCidr", "'0.0.0.0/0'", "narrower than /0"),
    # -- external Consul requires its CIDR
    ("external Consul by name without a CIDR", KIND,
     {"consulInstall": "false", "consulAddress": "consul.example.com:8500"},
     "consulExternalCidr", "''", "required unless consulAddress is an IP"),
    ("CIDR that misses the Consul address", KIND, EXTERNAL | {"consulExternalCidr": "10.1.0.0/16"},
     "consulExternalCidr", "'10.1.0.0/16'", "contains consulAddress's 10.0.0.5"),
    ("external Consul without address", KIND, {"consulInstall": "false"}, "consulAddress", "''",
     "when consulInstall is false"),
    ("address while installing", KIND, {"consulAddress": "consul:8500"}, "consulAddress",
     "'consul:8500'", "empty while consulInstall is true"),
    ("CIDR while installing", KIND, {"consulExternalCidr": "10.0.0.0/8"}, "consulExternalCidr",
     "'10.0.0.0/8'", "empty while consulInstall is true"),
    # -- the trace collector: a URL, and its network like an external Consul's
    ("collector that is not a URL", KIND, {"otlpEndpoint": "foo"}, "otlpEndpoint", "'foo'",
     "http(s)://host:port"),
    ("collector URL with a path", KIND, {"otlpEndpoint": "http://10.0.0.9:4318/v1/traces"},
     "otlpEndpoint", "'http://10.0.0.9:4318/v1/traces'", "no path"),
    ("collector by name without a CIDR", KIND, {"otlpEndpoint": "http://otel.example.com:4317"},
     "otlpCidr", "''", "required unless otlpEndpoint is an IP"),
    ("collector CIDR that misses its address", KIND,
     {"otlpEndpoint": "http://10.0.0.9:4317", "otlpCidr": "10.1.0.0/16"}, "otlpCidr",
     "'10.1.0.0/16'", "contains otlpEndpoint's 10.0.0.9"),
    ("collector CIDR without a collector", KIND, {"otlpCidr": "10.0.0.0/8"}, "otlpCidr",
     "'10.0.0.0/8'", "empty without otlpEndpoint"),
    ("chart image without the chart", KIND,
     EXTERNAL | {"consulImage": "mirror.example.com/consul:1.21.2"}, "consulImage",
     "'mirror.example.com/consul:1.21.2'", "empty while consulInstall is false"),
    # -- other cross-key rules
    ("limit below request", KIND, {"cpuLimit": "10m"}, "cpuLimit", "'10m'",
     "at least cpuRequest (50m)"),
    ("memory limit below request", KIND, {"memoryLimit": "64Mi"}, "memoryLimit", "'64Mi'",
     "at least memoryRequest (96Mi)"),
    ("Consul namespace equals app namespace", KIND, {"consulNamespace": "consul-microservices"},
     "consulNamespace", "'consul-microservices'", "other than namespace"),
    ("HPA max below replicas", KIND, svc("books-api", maxReplicas=1),
     "services.books-api.maxReplicas", "1",
     "0 (no autoscaler) or at least services.books-api.replicas (2)"),
    ("a service that is not exposed, on a node port", KIND, svc("greeter", serviceType="NodePort"),
     "services.greeter.serviceType", "'NodePort'", "ClusterIP: greeter is not exposed"),
    ("a service's port on its metrics port", KIND, svc("greeter", port=9102),
     "services.greeter.port", "9102",
     "a port other than metricsPort (services/greeter/service.yaml)"),
    ("push without a registry", EXISTING, {"imageRegistry": ""}, "imageRegistry", "''",
     "a registry to push to"),
    ("username without password", KIND, {"registryUsername": "robot"}, "registryUsername",
     "'robot'", "set together with registryPassword"),
    ("image on latest", KIND, svc("books-api", image="registry.example.com/books-api:latest"),
     "services.books-api.image", "'registry.example.com/books-api:latest'", "pinned by digest"),
    ("image neither tagged nor digested", KIND, svc("greeter", image="greeter"),
     "services.greeter.image", "'greeter'", "or by a tag other than latest"),
    # -- unknown keys in the project's namespace
    ("typo in a key", KIND, {"servics": "{}"}, "servics", None,
     "unknown key, did you mean services?"),
    ("typo in a service's key", KIND, svc("books-api", replica=3), "services.books-api.replica",
     None, "unknown key, did you mean replicas?"),
    ("a service that has no folder", KIND, svc("book-api", replicas=3), "services.book-api", None,
     "unknown service, did you mean books-api?"),
    ("a per-service key of before the catalog", KIND, {"booksApiReplicas": "3"}, "booksApiReplicas",
     None, "unknown key, it is services.books-api.replicas now"),
    ("key in the wrong case", KIND, {"ConsulUI": "false"}, "ConsulUI", None,
     "unknown key, did you mean consulUi?"),
]  # fmt: skip


def _run_expecting_error(config: dict[str, str], secret_keys=("registryPassword",)):
    mocks = RecordingMocks()
    with pytest.raises(infra_module("config").ConfigError) as error:
        deploy(config, secret_keys, mocks)
    return mocks, str(error.value)


@pytest.mark.parametrize(
    ("base", "overrides", "key", "value", "expected"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_config_fails_before_any_resource(base, overrides, key, value, expected):
    mocks, message = _run_expecting_error(base | overrides)
    line = next((ln for ln in message.splitlines() if f"{PROJECT}:{key}:" in ln), None)
    assert line is not None, message
    if value is not None:
        assert f"got {value}, expected " in line
    assert expected in line, line
    assert mocks.resources == []


def test_every_mistake_is_reported_at_once():
    mocks, message = _run_expecting_error(
        KIND | {"clusterProfile": "gke", "namespace": "Bad"} | svc("books-api", replicas=0)
    )
    for key in ("clusterProfile", "services.books-api.replicas", "namespace"):
        assert f"{PROJECT}:{key}:" in message
    assert mocks.resources == []


def test_plaintext_registry_password_is_refused():
    mocks, message = _run_expecting_error(EXISTING, secret_keys=())
    assert f"{PROJECT}:registryPassword: got '<plaintext>'" in message
    assert "--secret" in message
    assert "s3cret" not in message
    assert mocks.resources == []


def test_the_table_is_large_enough_and_distinct():
    assert len(INVALID) >= 12
    assert len({case[0] for case in INVALID}) == len(INVALID)


def test_valid_config_registers_resources():
    assert deploy(KIND).of_type(RELEASE)


PULUMI_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object"}


def _pulumi_type(annotation) -> str:
    origin = typing.get_origin(annotation)
    return "string" if origin is typing.Literal else PULUMI_TYPES[origin or annotation]


def test_pulumi_yaml_and_the_schema_agree_on_keys_types_and_defaults():
    """The schema is the source; Pulumi.yaml repeats keys, types and defaults for the CLI."""
    schema = infra_module("config").StackConfig.model_fields
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert all(key.startswith(f"{PROJECT}:") for key in declared)
    in_yaml = {
        key.split(":", 1)[1]: (spec["type"], spec.get("items"), spec["default"])
        for key, spec in declared.items()
    }
    in_schema = {
        field.alias: (
            _pulumi_type(field.annotation),
            {"type": "string"} if field.annotation == list[str] else None,
            field.default,
        )
        for field in schema.values()
    }
    assert in_yaml == in_schema
    assert all(spec.get("description") for spec in declared.values())


def test_the_schemas_defaults_are_the_programs_defaults():
    """Under the CLI every default comes from Pulumi.yaml; without it, from the schema: the same."""

    def registered(config):
        return sorted((r.typ, r.name, repr(r.inputs)) for r in deploy(config).resources)

    assert registered({}) == registered(project_defaults())


@pytest.mark.parametrize(
    ("key", "empty_means"),
    [("kubeContext", "kind-consul-microservices"), ("imageRegistry", "localhost:5001")],
)
def test_an_empty_value_means_what_pulumi_yaml_says(key, empty_means):
    run = deploy(KIND | {key: ""})
    assert empty_means in repr([r.inputs for r in run.resources])


VALID_REFERENCES = [
    f"registry.example.com/ci/books-api@{DIGEST}",
    "Registry.Example.com:5000/team/books-api:1.4.2",  # a host may have capitals; a path may not
    "[fd00::1]:5000/books-api:1.4.2",
    "gcr.io/my--project/books__api:v1",
    "localhost/books-api:2025.01-rc_1",
    "books-api@sha512:" + "c" * 128,
    f"books-api:1.4.2@{DIGEST}",
]


@pytest.mark.parametrize("reference", VALID_REFERENCES)
def test_valid_image_references_are_accepted(reference):
    run = deploy(KIND | svc("books-api", image=reference) | {"consulImage": reference})
    assert run.container("books-api")["image"] == reference


def test_pulumi_yaml_runs_the_program_from_infra_with_the_repo_venv():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    assert project["main"].rstrip("/") == "infra"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }
    assert (ROOT / "infra" / "__main__.py").is_file()
    assert re.search(r"^pulumi==", (ROOT / "infra" / "requirements.txt").read_text(), re.M)


def test_unknown_keys_are_found_in_the_cli_environment_too(monkeypatch):
    """The language host may hand config over in PULUMI_CONFIG rather than set_all_config."""
    pulumi_config = {f"{PROJECT}:{k}": v for k, v in KIND.items()}
    pulumi_config |= {f"{PROJECT}:namespaces": "x", "kubernetes:context": "other"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(pulumi_config))
    mocks = RecordingMocks()
    with pytest.raises(infra_module("config").ConfigError) as error:
        deploy({}, mocks=mocks)
    assert str(error.value).splitlines()[1:] == [
        f"  {PROJECT}:namespaces: unknown key, did you mean namespace?"
    ]
    assert mocks.resources == []
