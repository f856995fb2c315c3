"""Defects a fresh machine met in hack/ and mk/: each test failed before its fix."""

from __future__ import annotations

import pytest
from deploy_support import Machine


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path / "machine")


def test_base_image_starts_in_a_state_dir_it_has_not_created_yet(machine, tmp_path):
    """`mktemp` ran under the state dir before `mkdir -p` on a fresh machine."""
    machine.fake("id", "echo 0")
    machine.fake("dpkg-query", "echo 'install ok installed'")
    machine.fake("podman", "exit 1")  # `podman image exists`: not yet
    machine.fake("debootstrap", 'echo "debootstrap $*" >>"$CALLS"; exit 1')
    state = tmp_path / "fresh" / "container-engine"
    machine.env_extra = {
        "CONTAINER_ENGINE_DIR": str(state),
        "CONTAINERS_CONF": str(tmp_path / "containers.conf"),
        "REGISTRIES_CONF": str(tmp_path / "registries.conf"),
    }
    done = machine.run_tool("hack/container-engine.sh", "base-image")
    assert "No such file or directory" not in done.stderr
    assert "debootstrap failed" in done.stderr  # it got as far as the (stand-in) debootstrap
    assert state.is_dir()
    assert machine.pulumi_calls()[0].startswith("debootstrap --variant=minbase")


def test_e2e_ready_says_why_a_kubectl_on_path_does_not_count(machine):
    done = machine.make(machine.repo_root, "e2e-ready")
    assert done.returncode != 0
    assert (
        "missing: pulumi pulumi-language-python pulumi-resource-kubernetes kubectl" in done.stdout
    )
    assert f"the kubectl on PATH ({machine.fakes}/kubectl) is not used" in done.stdout
