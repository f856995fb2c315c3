"""hack/pulumi-stack.sh after an update that was killed: in a file backend, the lock its gone
process left is removed (and said), a lock of a pulumi that still runs is kept, the pending
creates it left are cleared once the next `up` has succeeded, and a Helm release it left pending
in the cluster is unblocked. Against a stand-in pulumi and kubectl that record their calls; the
real engine's side is tests/e2e/test_faults.py."""

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
*)
	echo "pulumi $*" >>"$CALLS"
	if [[ "$1 $2" == "stack export" ]]; then cat "$EXPORT"; fi
	[[ $1 != up || -z ${FAIL_UP-} ]] ;;
esac"""
# Helm's record of each release revision: a Secret labelled with its status. A rollout that
# has not completed within its timeout: ROLLOUT_STUCK.
KUBECTL = """echo "kubectl $*" >>"$CALLS"
if [[ " $* " == *" get secret "* ]]; then echo secret/sh.helm.release.v1.consul.v1; fi
[[ " $* " != *" rollout status "* || -z ${ROLLOUT_STUCK-} ]]"""
URN = "urn:pulumi:local::consul-microservices::kubernetes:apps/v1:Deployment::greeter-deployment"
PROVIDER_URN = "urn:pulumi:local::consul-microservices::pulumi:providers:kubernetes::k8s"
RELEASE = {
    "urn": "urn:pulumi:local::consul-microservices::kubernetes:helm.sh/v3:Release::consul",
    "type": "kubernetes:helm.sh/v3:Release",
    "provider": f"{PROVIDER_URN}::7f",
    "inputs": {"name": "consul", "namespace": "consul"},
}


@pytest.fixture
def machine(tmp_path):
    machine = Machine(tmp_path / "machine", tools=())
    machine.fake("pulumi", PULUMI)
    for tool in ("python3", "ps", "awk", "hostname", "kill", "cut", "mktemp", "rm", "grep"):
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


def workload(kind: str, name: str) -> dict:
    return {
        "urn": f"urn:pulumi:local::consul-microservices::kubernetes:apps/v1:{kind}::{name}",
        "type": f"kubernetes:apps/v1:{kind}",
        "provider": f"{PROVIDER_URN}::7f",
        "outputs": {"metadata": {"name": name, "namespace": "apps"}},
    }


def leave_state(machine: Machine, pending: list[str], resource: dict | None = None) -> None:
    """The state an interrupted update leaves (also what the stand-in's `stack export` prints)."""
    stacks = machine.backend / "stacks" / "consul-microservices"
    stacks.mkdir(parents=True)
    resource = resource or {"urn": URN}
    provider = {"urn": PROVIDER_URN, "id": "7f", "type": "pulumi:providers:kubernetes",
                "inputs": {"kubeconfig": "/home/me/kubeconfig", "context": "kind-x"}}  # fmt: skip
    workloads = [workload("Deployment", "greeter"), workload("StatefulSet", "db")]
    operations = [{"type": kind, "resource": resource} for kind in pending]
    latest = {"resources": [provider, *workloads], "pending_operations": operations}
    (stacks / "local.json").write_text(json.dumps({"version": 3, "checkpoint": {"latest": latest}}))
    export = machine.root / "export.json"
    export.write_text(json.dumps({"version": 3, "deployment": latest}))
    machine.env_extra["EXPORT"] = str(export)


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


@pytest.mark.parametrize("kind", ["creating", "updating"])
def test_a_helm_release_left_pending_is_unblocked_before_the_next_up(machine, kind):
    """Helm refuses to install or upgrade a release whose last record is pending ("cannot re-use
    a name that is still in use"): the record goes, through the stack's own provider settings."""
    machine.fake("kubectl", KUBECTL)
    leave_lock(machine, a_gone_pid())
    leave_state(machine, [kind], RELEASE)
    done = up(machine)
    assert done.returncode == 0, done.stderr
    flags = "-n consul --kubeconfig /home/me/kubeconfig --context kind-x"
    selector = "owner=helm,status in (pending-install,pending-upgrade,pending-rollback),name=consul"
    calls = machine.pulumi_calls()
    assert [c for c in calls if c.startswith("kubectl")] == [
        f"kubectl {flags} get secret -l {selector} -o name",
        f"kubectl {flags} delete secret/sh.helm.release.v1.consul.v1",
    ]
    assert calls.index("pulumi up --yes --stack local") > calls.index(
        f"kubectl {flags} delete secret/sh.helm.release.v1.consul.v1"
    )
    assert "removed sh.helm.release.v1.consul.v1, Helm's record of release consul/consul" in (
        done.stdout
    )


def test_a_pending_deployment_touches_no_helm_record(machine):
    machine.fake("kubectl", KUBECTL)
    leave_lock(machine, a_gone_pid())
    leave_state(machine, ["creating"])
    assert up(machine).returncode == 0
    unblocking = ("kubectl", "pulumi stack export")
    assert not [c for c in machine.pulumi_calls() if c.startswith(unblocking)]


def test_after_an_up_that_did_not_finish_the_next_waits_for_the_rollouts(machine):
    """The provider awaits only enough ready pods when the template was already applied: the
    rollout the unfinished `up` started is awaited by hack/pulumi-stack.sh, once."""
    machine.fake("kubectl", KUBECTL)
    leave_state(machine, [])
    machine.env_extra["FAIL_UP"] = "1"  # a failed up; a killed or Ctrl-C'd one leaves the same
    assert up(machine).returncode != 0
    del machine.env_extra["FAIL_UP"]
    done = up(machine)
    assert done.returncode == 0, done.stderr
    assert "the last `up` of stack local did not finish" in done.stdout
    flags = "-n apps --kubeconfig /home/me/kubeconfig --context kind-x"
    assert [c for c in machine.pulumi_calls() if c.startswith("kubectl")] == [
        f"kubectl {flags} rollout status deployment/greeter --timeout=300s",
        f"kubectl {flags} rollout status statefulset/db --timeout=300s",
    ]
    machine.calls.unlink()
    assert up(machine).returncode == 0
    unsettling = ("kubectl", "pulumi stack export")
    assert not [c for c in machine.pulumi_calls() if c.startswith(unsettling)]


def test_a_rollout_that_does_not_complete_fails_the_up_and_is_awaited_again(machine):
    machine.fake("kubectl", KUBECTL)
    leave_state(machine, [])
    machine.env_extra["FAIL_UP"] = "1"
    up(machine)
    del machine.env_extra["FAIL_UP"]
    machine.env_extra["ROLLOUT_STUCK"] = "1"
    done = up(machine)
    assert done.returncode == 1
    assert "deployment apps/greeter has not rolled out" in done.stderr
    del machine.env_extra["ROLLOUT_STUCK"]
    assert "did not finish" in up(machine).stdout
