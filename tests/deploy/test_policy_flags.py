"""hack/pulumi.sh runs the policy pack on every up and preview, with the stack's pack config, and
says so where it cannot; against a stand-in pulumi that records its calls."""

from __future__ import annotations

import pytest
from deploy_support import Machine

PULUMI = 'echo "pulumi $*" >>"$CALLS"'


@pytest.fixture
def machine(tmp_path):
    machine = Machine(tmp_path / "machine", tools=())
    machine.fake("pulumi", PULUMI)
    pack = tmp_path / "pack"
    (pack / ".venv" / "bin").mkdir(parents=True)
    (pack / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (pack / "config").mkdir()
    (pack / "config" / "prod.json").write_text("{}")
    machine.pack = pack
    machine.env_extra["POLICY_PACK"] = str(pack)
    machine.env_extra["PULUMI_BACKEND_URL"] = f"file://{tmp_path / 'state'}"
    return machine


@pytest.mark.parametrize("command", ["up", "preview"])
def test_up_and_preview_run_the_pack(machine, command):
    done = machine.run_tool("hack/pulumi.sh", "dev", command, "--yes")
    assert done.returncode == 0, done.stderr
    assert machine.pulumi_calls() == [
        f"pulumi {command} --yes --policy-pack {machine.pack} --stack dev"
    ]


def test_a_stack_with_a_pack_config_file_gets_it(machine):
    done = machine.run_tool("hack/pulumi.sh", "prod", "preview")
    assert done.returncode == 0, done.stderr
    config = machine.pack / "config" / "prod.json"
    assert machine.pulumi_calls() == [
        f"pulumi preview --policy-pack {machine.pack} --policy-pack-config {config} --stack prod"
    ]


@pytest.mark.parametrize("command", ["destroy", "refresh", "stack"])
def test_other_commands_run_without_it(machine, command):
    assert machine.run_tool("hack/pulumi.sh", "dev", command).returncode == 0
    assert machine.pulumi_calls() == [f"pulumi {command} --stack dev"]


def test_an_empty_policy_pack_turns_it_off(machine):
    machine.env_extra["POLICY_PACK"] = ""
    assert machine.run_tool("hack/pulumi.sh", "dev", "up").returncode == 0
    assert machine.pulumi_calls() == ["pulumi up --stack dev"]


def test_a_pack_without_its_venv_stops_before_pulumi_naming_the_target(machine):
    (machine.pack / ".venv" / "bin" / "python").unlink()
    done = machine.run_tool("hack/pulumi.sh", "dev", "up")
    assert done.returncode == 2
    assert done.stderr.strip() == f"policy: {machine.pack}/.venv is missing: make policy-venv"
    assert machine.pulumi_calls() == []


def test_the_toolchains_language_host_skips_the_pack_and_says_why(machine):
    machine.build_toolchain(("pulumi-language-python",))
    done = machine.run_tool("hack/pulumi.sh", "dev", "up")
    assert done.returncode == 0, done.stderr
    assert machine.pulumi_calls() == ["pulumi up --stack dev"]
    assert (
        "policy: skipped: the toolchain's pulumi-language-python (sdk v3.79.0) cannot run a "
        "Python policy pack" in done.stderr
    )


# A language host that prints its version, as pulumi-language-python does for -version.
HOST = 'if [ "$1" = -version ]; then echo {version}; fi'
# The stand-in CLI says its version, and records the directory the engine would find hosts in first.
VERSIONED_PULUMI = """case "$1" in
version) echo v3.252.0 ;;
*) echo "pulumi $* first-on-path=${PATH%%:*}" >>"$CALLS" ;;
esac"""


def test_a_host_of_the_clis_version_on_path_runs_the_pack_before_the_toolchains(machine, tmp_path):
    machine.build_toolchain(("pulumi-language-python",))
    machine.fake("pulumi", VERSIONED_PULUMI)
    machine.fake("pulumi-language-python", HOST.format(version="v3.252.0"))
    done = machine.run_tool("hack/pulumi.sh", "dev", "preview")
    assert done.returncode == 0, done.stderr
    assert machine.pulumi_calls() == [
        f"pulumi preview --policy-pack {machine.pack} --stack dev first-on-path={machine.fakes}"
    ]
    assert "policy: skipped" not in done.stderr


def named_host(machine, directory, version: str):
    """The toolchain's host, the CLI, and a host of `version` in `directory` that
    PULUMI_LANGUAGE_PYTHON names."""
    machine.build_toolchain(("pulumi-language-python",))
    machine.fake("pulumi", VERSIONED_PULUMI)
    directory.mkdir()
    machine.fake("pulumi-language-python", HOST.format(version=version), directory)
    machine.env_extra["PULUMI_LANGUAGE_PYTHON"] = str(directory / "pulumi-language-python")


def test_a_host_named_by_pulumi_language_python_is_used(machine, tmp_path):
    named_host(machine, tmp_path / "hosts", "v3.252.0")
    done = machine.run_tool("hack/pulumi.sh", "dev", "destroy")
    assert done.returncode == 0, done.stderr
    assert machine.pulumi_calls() == [
        f"pulumi destroy --stack dev first-on-path={tmp_path / 'hosts'}"
    ]


def test_a_named_host_of_another_version_stops_before_pulumi(machine, tmp_path):
    named_host(machine, tmp_path / "hosts", "v3.79.0")
    done = machine.run_tool("hack/pulumi.sh", "dev", "up")
    assert done.returncode == 2
    assert "is not pulumi-language-python v3.252.0 (the CLI's version)" in done.stderr
    assert machine.pulumi_calls() == []


def test_a_host_of_another_version_on_path_leaves_the_pack_skipped(machine):
    machine.build_toolchain(("pulumi-language-python",))
    machine.fake("pulumi", VERSIONED_PULUMI)
    machine.fake("pulumi-language-python", HOST.format(version="v3.200.0"))
    done = machine.run_tool("hack/pulumi.sh", "dev", "up")
    assert done.returncode == 0, done.stderr
    assert "policy: skipped" in done.stderr
    assert machine.pulumi_calls()[0].startswith("pulumi up --stack dev first-on-path=")
