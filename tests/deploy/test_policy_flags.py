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
