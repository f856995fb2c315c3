"""The cluster `make up` made reaches the program: KIND_CLUSTER, KIND_REGISTRY_PORT and
MINIKUBE_PROFILE (mk/infra.mk passes them) set kindClusterName, kindRegistryPort and minikube's
kubeContext, and a stack file that names another cluster is refused before any resource."""

from __future__ import annotations

import pytest
from infra_harness import (
    IMAGE,
    PROFILES,
    PROJECT,
    RecordingMocks,
    deploy,
    infra_module,
    stack_config,
)

KIND = PROFILES["kind"]


def inputs_text(run) -> str:
    return repr([r.inputs for r in run.resources])


def refused(config: dict[str, str]) -> str:
    mocks = RecordingMocks()
    with pytest.raises(infra_module("config").ConfigError) as error:
        deploy(config, (), mocks)
    assert mocks.resources == []
    return str(error.value)


def test_kind_cluster_names_the_context(monkeypatch):
    monkeypatch.setenv("KIND_CLUSTER", "team-a")
    text = inputs_text(deploy(KIND))
    assert "kind-team-a" in text
    assert "kind-consul-microservices" not in text


def test_kind_registry_port_names_the_registry_pushed_to(monkeypatch):
    monkeypatch.setenv("KIND_REGISTRY_PORT", "5002")
    run = deploy(KIND)
    names = [r.inputs["imageName"] for r in run.resources if r.typ == IMAGE]
    assert names and all(name.startswith("localhost:5002/") for name in names), names
    assert "localhost:5001" not in inputs_text(run)


def test_an_explicit_image_registry_is_not_moved_by_the_port(monkeypatch):
    monkeypatch.setenv("KIND_REGISTRY_PORT", "5002")
    run = deploy(KIND | {"imageRegistry": "registry.example.com/team"})
    names = [r.inputs["imageName"] for r in run.resources if r.typ == IMAGE]
    assert names and all(n.startswith("registry.example.com/team/") for n in names), names


def test_a_stack_naming_another_kind_cluster_is_refused(monkeypatch):
    monkeypatch.setenv("KIND_CLUSTER", "consul-microservices")
    message = refused(KIND | {"kindClusterName": "mine"})
    assert (
        f"{PROJECT}:kindClusterName: got 'mine', expected KIND_CLUSTER's 'consul-microservices'"
        in message
    )
    assert "set KIND_CLUSTER=mine, or unset kindClusterName" in message


def test_a_registry_port_that_is_no_port_is_refused(monkeypatch):
    monkeypatch.setenv("KIND_REGISTRY_PORT", "fivethousand")
    message = refused(KIND)
    assert f"{PROJECT}:kindRegistryPort: got 'fivethousand', expected an integer" in message


def test_minikube_profile_must_match_the_stacks_context(monkeypatch):
    minikube = stack_config("minikube")
    monkeypatch.setenv("MINIKUBE_PROFILE", "consul-microservices")
    assert "consul-microservices" in inputs_text(deploy(minikube))
    monkeypatch.setenv("MINIKUBE_PROFILE", "other")
    message = refused(minikube)
    assert f"{PROJECT}:kubeContext: got 'consul-microservices', expected MINIKUBE_PROFILE's" in (
        message
    )


def test_kind_variables_do_not_touch_other_profiles(monkeypatch):
    monkeypatch.setenv("KIND_CLUSTER", "team-a")
    monkeypatch.setenv("KIND_REGISTRY_PORT", "5002")
    assert "team-a" not in inputs_text(deploy(PROFILES["existing"], ("registryPassword",)))
