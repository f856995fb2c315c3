"""Stack config: each invalid value fails before any resource exists, naming key and value."""

from __future__ import annotations

import re

import pulumi
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
)

KIND = PROFILES["kind"]
EXISTING = PROFILES["existing"]

# (name, base config, overrides, key in the message, value in the message, expected fragment)
INVALID = [
    ("unknown profile", KIND, {"clusterProfile": "gke"}, "clusterProfile", "'gke'",
     "one of kind, minikube, existing"),
    ("zero replicas", KIND, {"booksApiReplicas": "0"}, "booksApiReplicas", "0",
     "an integer between 1 and 50"),
    ("replicas not a number", KIND, {"greeterReplicas": "two"}, "greeterReplicas", "'two'",
     "an integer between 1 and 50"),
    ("registry with a scheme", EXISTING, {"imageRegistry": "https://registry.example.com"},
     "imageRegistry", "'https://registry.example.com'", "without a scheme"),
    ("registry in upper case", EXISTING, {"imageRegistry": "Registry.Example.com/Team"},
     "imageRegistry", "'Registry.Example.com/Team'", "host[:port][/path] in lower case"),
    ("push without a registry", EXISTING, {"imageRegistry": ""}, "imageRegistry", "''",
     "a registry to push to"),
    ("CPU quantity Kubernetes rejects", KIND, {"cpuRequest": "100x"}, "cpuRequest", "'100x'",
     "a Kubernetes CPU quantity"),
    ("memory in MB", KIND, {"memoryLimit": "256MB"}, "memoryLimit", "'256MB'",
     "a Kubernetes memory quantity"),
    ("limit below request", KIND, {"cpuLimit": "10m"}, "cpuLimit", "'10m'",
     "a limit at least cpuRequest (50m)"),
    ("zero ephemeral request", KIND, {"ephemeralStorageRequest": "0"},
     "ephemeralStorageRequest", "'0'", "a quantity greater than zero"),
    ("port above range", KIND, {"booksApiPort": "70000"}, "booksApiPort", "70000",
     "an integer between 1024 and 65535"),
    ("privileged port", KIND, {"greeterPort": "80"}, "greeterPort", "80",
     "an integer between 1024 and 65535"),
    ("same port twice", KIND, {"greeterPort": "8080"}, "greeterPort", "8080",
     "a port different from booksApiPort"),
    ("namespace not a DNS label", KIND, {"namespace": "Consul_Apps"}, "namespace",
     "'Consul_Apps'", "a DNS label"),
    ("namespace too long", KIND, {"namespace": "a" * 64}, "namespace", "'" + "a" * 64 + "'",
     "a DNS label"),
    ("Consul namespace equals app namespace", KIND, {"consulNamespace": "consul-microservices"},
     "consulNamespace", "'consul-microservices'", "other than the app namespace"),
    ("external Consul without address", KIND, {"consulInstall": "false"}, "consulAddress", "''",
     "when consulInstall is false"),
    ("malformed Consul address", KIND, {"consulInstall": "false", "consulAddress": "consul:abc"},
     "consulAddress", "'consul:abc'", "host:port or http(s)://host:port"),
    ("address while installing", KIND, {"consulAddress": "consul:8500"}, "consulAddress",
     "'consul:8500'", "empty while consulInstall is true"),
    ("boolean typo", KIND, {"consulInstall": "yes"}, "consulInstall", "'yes'", "true or false"),
    ("chart version range", KIND, {"consulChartVersion": "^1.9"}, "consulChartVersion", "'^1.9'",
     "an exact chart version"),
    ("bad CIDR", KIND, {"consulExternalCidr": "10.0.0.0/33"}, "consulExternalCidr",
     "'10.0.0.0/33'", "a CIDR"),
    ("unknown delivery", KIND, {"imageDelivery": "scp"}, "imageDelivery", "'scp'",
     "one of auto, push, local"),
    ("HPA max below replicas", KIND, {"booksApiMaxReplicas": "1"}, "booksApiMaxReplicas", "1",
     "0 (no autoscaler) or at least booksApiReplicas (2)"),
    ("unknown log level", KIND, {"logLevel": "verbose"}, "logLevel", "'verbose'",
     "one of DEBUG, INFO, WARNING, ERROR"),
    ("username without password", KIND, {"registryUsername": "robot"}, "registryUsername",
     "'robot'", "set together with registryPassword"),
    ("build arg without a value", KIND, {"imageBuildArgs": '["PIP_WHEELHOUSE"]'},
     "imageBuildArgs", "'PIP_WHEELHOUSE'", 'a list of "NAME=value" strings'),
    ("build args not a list", KIND, {"imageBuildArgs": "PIP_WHEELHOUSE=x"}, "imageBuildArgs",
     "'PIP_WHEELHOUSE=x'", 'a list of "NAME=value" strings'),
    ("BASE_IMAGE as a build arg", KIND, {"imageBuildArgs": '["BASE_IMAGE=x"]'},
     "imageBuildArgs", "'BASE_IMAGE=x'", "BASE_IMAGE goes in baseImage"),
    ("image on latest", KIND, {"booksApiImage": "registry.example.com/books-api:latest"},
     "booksApiImage", "'registry.example.com/books-api:latest'", "pinned by digest"),
    ("image neither tagged nor digested", KIND, {"greeterImage": "greeter"}, "greeterImage",
     "'greeter'", "or by a tag other than latest"),
    ("image with a short digest", KIND, {"greeterImage": "greeter@sha256:abc"}, "greeterImage",
     "'greeter@sha256:abc'", "repo@sha256:<64 hex>"),
    ("bad service type", KIND, {"booksApiServiceType": "Ingress"}, "booksApiServiceType",
     "'Ingress'", "one of ClusterIP, NodePort, LoadBalancer"),
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
    assert f"got {value}," in line
    assert expected in line
    assert mocks.resources == []


def test_every_mistake_is_reported_at_once():
    mocks, message = _run_expecting_error(
        KIND | {"clusterProfile": "gke", "booksApiReplicas": "0", "namespace": "Bad"}
    )
    for key in ("clusterProfile", "booksApiReplicas", "namespace"):
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


def test_pulumi_yaml_declares_every_key_the_program_reads(monkeypatch):
    read: set[str] = set()
    original = pulumi.Config.get

    def spy(self, key, default=None):
        read.add(key)
        return original(self, key, default)

    monkeypatch.setattr(pulumi.Config, "get", spy)
    deploy(EXISTING, ("registryPassword",))
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    for key, spec in declared.items():
        assert key.startswith(f"{PROJECT}:"), key
        assert {"type", "default", "description"} <= set(spec), key
    assert read == set(project_defaults())


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
