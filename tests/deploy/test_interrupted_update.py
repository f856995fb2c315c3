"""hack/pulumi-stack.sh after an update that was killed: in a file backend, the lock its gone
process left is removed (and said), a lock of a pulumi that still runs is kept, and the pending
creates it left are cleared once the next `up` has succeeded. Against a stand-in pulumi that
records its calls; the real engine's side is tests/e2e/test_faults.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
from deploy_support import Machine
from testkit import ROOT

PULUMI = """case "$1" in
version) echo v3.252.0 ;;
*) echo "pulumi $*" >>"$CALLS" ;;
esac"""
URN = "urn:pulumi:local::consul-microservices::kubernetes:apps/v1:Deployment::greeter-deployment"


@pytest.fixture
def machine(tmp_path):
    machine = Machine(tmp_path / "machine", tools=())
    machine.fake("pulumi", PULUMI)
    for tool in ("python3", "ps", "awk", "hostname", "kill", "cut"):
        if not (machine.system / tool).exists() and shutil.which(tool):
            (machine.system / tool).symlink_to(shutil.which(tool))
    backend = tmp_path / "backend"
    machine.env_extra["PULUMI_BACKEND_URL"] = f"file://{backend}"
    machine.backend = backend / ".pulumi"
    return machine


def leave_lock(machine: Machine, pid: int) -> None:
    locks = machine.backend / "locks" / "organization" / "consul-microservices" / "local"
    locks.mkdir(parents=True)
    content = {"pid": pid, "username": "root", "hostname": socket.gethostname(),
               "timestamp": "2026-12-05T03:00:00Z"}  # fmt: skip
    (locks / "8dfdce58.json").write_text(json.dumps(content))


def leave_state(machine: Machine, pending: list[str]) -> None:
    stacks = machine.backend / "stacks" / "consul-microservices"
    stacks.mkdir(parents=True)
    operations = [{"type": kind, "resource": {"urn": URN}} for kind in pending]
    checkpoint = {"stack": "local", "latest": {"resources": [], "pending_operations": operations}}
    (stacks / "local.json").write_text(json.dumps({"version": 3, "checkpoint": checkpoint}))


def up(machine: Machine, *args: str) -> subprocess.CompletedProcess:
    return machine.run_tool("hack/pulumi-stack.sh", "local", "up", "--yes", *args, cwd=ROOT)


def a_gone_pid() -> int:
    done = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_the_lock_of_a_killed_update_is_removed_and_said(machine):
    leave_lock(machine, a_gone_pid())
    leave_state(machine, [])
    done = up(machine)
    assert done.returncode == 0, done.stderr
    assert "removed the lock of an interrupted update" in done.stdout
    assert "pulumi cancel --yes --stack local" in machine.pulumi_calls()
    assert machine.pulumi_calls()[-1] == "pulumi up --yes --stack local"


@pytest.mark.parametrize("ps", [True, False], ids=["with ps", "without ps (a minimal Debian)"])
def test_the_lock_of_a_running_pulumi_is_kept(machine, tmp_path, ps):
    if not ps:
        (machine.system / "ps").unlink(missing_ok=True)
    elif not (machine.system / "ps").exists():
        pytest.skip("no ps on this machine: apt-get install procps")
    running = tmp_path / "pulumi"  # a process whose name is pulumi's
    shutil.copy(shutil.which("sleep"), running)
    with subprocess.Popen([str(running), "30"]) as live:
        try:
            leave_lock(machine, live.pid)
            leave_state(machine, [])
            done = up(machine)
        finally:
            live.kill()
    assert "locked by an update that still runs" in done.stderr
    assert not [c for c in machine.pulumi_calls() if c.startswith("pulumi cancel")]


def test_pending_creates_are_cleared_after_the_next_up_succeeds(machine):
    leave_lock(machine, a_gone_pid())
    leave_state(machine, ["creating", "updating"])
    done = up(machine, "--config-file", "Pulumi.local.yaml")
    assert done.returncode == 0, done.stderr
    assert f"  creating {URN}" in done.stdout
    assert f"  updating {URN}" in done.stdout
    assert machine.pulumi_calls()[-2:] == [
        "pulumi up --yes --config-file Pulumi.local.yaml --stack local",
        "pulumi refresh --yes --skip-preview --clear-pending-creates --config-file "
        "Pulumi.local.yaml --stack local",
    ]


def test_a_healthy_stack_costs_no_extra_pulumi_run(machine):
    leave_state(machine, [])
    assert up(machine).returncode == 0
    assert machine.pulumi_calls() == [
        "pulumi stack select --non-interactive --stack local",
        "pulumi up --yes --stack local",
    ]
