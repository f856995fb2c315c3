"""hack/pulumi.sh turns Pulumi's automatic plugin acquisition off where it has nothing to get, so
no command waits on a download it cannot use (about 2.5 s of DNS lookups on a machine that cannot
reach get.pulumi.com), and leaves it on where a first run needs it; against a stand-in pulumi that
records whether acquisition was on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_support import ROOT, Machine

PULUMI = 'echo "acquisition ${PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION:-on}" >>"$CALLS"'
# What the language host names: every provider package in the program's venv (make venv).
PLUGINS = {
    manifest["name"]: manifest["version"]
    for path in ROOT.glob(".venv/lib/python3*/site-packages/pulumi_*/pulumi-plugin.json")
    for manifest in [json.loads(path.read_text())]
}


@pytest.fixture
def machine(tmp_path):
    assert {"kubernetes", "docker"} <= PLUGINS.keys(), "make venv: the program's providers"
    machine = Machine(tmp_path / "machine", tools=())
    machine.fake("pulumi", PULUMI)
    machine.env_extra["PULUMI_HOME"] = str(tmp_path / "pulumi-home")
    machine.env_extra["PULUMI_BACKEND_URL"] = f"file://{tmp_path / 'state'}"
    return machine


def acquisition(machine: Machine, **env: str) -> str:
    machine.env_extra.update(env)
    done = machine.run_tool("hack/pulumi.sh", "dev", "up")
    assert done.returncode == 0, done.stderr
    return machine.pulumi_calls()[-1]


def in_plugin_cache(machine: Machine, name: str) -> None:
    home = Path(machine.env_extra["PULUMI_HOME"])
    (home / "plugins" / f"resource-{name}-v{PLUGINS[name]}").mkdir(parents=True)


def test_off_when_every_plugin_is_on_path(machine):
    machine.fake("pulumi-resource-kubernetes", "exit 0")
    machine.fake("pulumi-resource-docker", "exit 0")
    assert acquisition(machine) == "acquisition true"


def test_off_when_every_plugin_is_in_the_plugin_cache_at_its_version(machine):
    in_plugin_cache(machine, "kubernetes")
    in_plugin_cache(machine, "docker")
    assert acquisition(machine) == "acquisition true"


def test_on_when_a_plugin_the_stack_uses_is_missing(machine):
    """A networked first run downloads it; an offline one fails naming `pulumi plugin install`."""
    machine.fake("pulumi-resource-kubernetes", "exit 0")
    assert acquisition(machine) == "acquisition on"


def test_a_docker_provider_the_stack_does_not_use_is_not_waited_for(machine):
    """make says so on the Docker-free clusters, where podman builds the images without it."""
    machine.fake("pulumi-resource-kubernetes", "exit 0")
    assert acquisition(machine, PULUMI_DOCKER_PROVIDER="unused") == "acquisition true"


def test_the_kubernetes_provider_is_never_taken_as_unused(machine):
    machine.fake("pulumi-resource-docker", "exit 0")
    assert acquisition(machine, PULUMI_DOCKER_PROVIDER="unused") == "acquisition on"


def test_a_cached_plugin_of_another_version_does_not_count(machine):
    machine.fake("pulumi-resource-docker", "exit 0")
    home = Path(machine.env_extra["PULUMI_HOME"])
    (home / "plugins" / "resource-kubernetes-v0.0.1").mkdir(parents=True)
    assert acquisition(machine) == "acquisition on"


def test_the_users_own_setting_wins(machine):
    assert acquisition(machine, PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="false") == (
        "acquisition false"
    )
