"""Defects a fresh machine met in hack/ and mk/: each test failed before its fix."""

from __future__ import annotations

import subprocess

import pytest
from deploy_support import Machine
from testkit import ROOT


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


def test_sourcing_env_sh_stops_when_the_toolchain_dir_cannot_be_computed(machine):
    """The export's status hid a failing `toolchain.sh bin-dir`: PATH got an empty first entry
    (the current directory), and the rest ran on. Here it fails: no sha256sum and no shasum."""
    (machine.system / "sha256sum").unlink()
    script = 'source hack/env.sh; echo "status $? PATH=$PATH"'
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=machine.env, capture_output=True,
                          text=True, check=False, timeout=60)  # fmt: skip
    assert "hack/env.sh: `hack/toolchain.sh bin-dir` failed" in done.stderr
    assert done.stdout.strip() == f"status 1 PATH={machine.env['PATH']}"
