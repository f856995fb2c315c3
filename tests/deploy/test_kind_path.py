"""The kind and minikube paths, which users run first on their own machines and this one cannot
(no Docker): infra/kind.sh, infra/minikube.sh and the make targets around them, against stand-ins
for docker, kind, kubectl, minikube and pulumi that record their arguments."""

from __future__ import annotations

import json

import pytest
from deploy_support import Machine, copy_repo

REGISTRY_RUN = "docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge"
VOLUME = "-v kind-registry-data:/var/lib/registry"

# `exec -i` reads its stdin, as the real one's `cp /dev/stdin` does: a stand-in that left it unread
# could end before the writer of the pipe and fail it with SIGPIPE (seen once under load).
DOCKER = """echo "docker $*" >>"$CALLS"
case "$1 ${2:-}" in
"version "*) echo 28.2.2 ;;
"inspect "*) cat "$STATE/registry" 2>/dev/null || exit 1 ;;
"exec -i") cat >/dev/null ;;
esac"""
# `get clusters` prints the state file's lines, then as many as `$STATE/more` says: enough to
# outlast a pipe's buffer, so that a reader that stops at the first match kills it with SIGPIPE.
KIND = """echo "kind $*" >>"$CALLS"
case "$1 ${2:-}" in
"version "*) echo kind v0.30.0 go1.24.6 linux/amd64 ;;
"get clusters")
	cat "$STATE/clusters" 2>/dev/null
	more=$(cat "$STATE/more" 2>/dev/null || echo 0)
	i=0; while [ "$i" -lt "$more" ]; do echo "other-cluster-$i"; i=$((i + 1)); done ;;
"get nodes") echo "$4-control-plane" ;;
esac"""
KUBECTL = """case "$1" in
version) echo "clientVersion:"; echo "  gitVersion: v1.34.2" ;;
*) echo "kubectl $*" >>"$CALLS"; cat >/dev/null ;;
esac"""
MINIKUBE = """echo "minikube $*" >>"$CALLS"
case "$1" in
version) echo v1.37.0 ;;
profile) cat "$STATE/profiles" 2>/dev/null || echo '{"invalid": [], "valid": []}' ;;
status) [ -f "$STATE/running" ] ;;
esac"""
# Enough of pulumi for `make up`: the stack exists, `up` succeeds; every call is logged with the
# cluster variables it was given.
PULUMI = """case "$1" in
version) echo v3.252.0; exit 0 ;;
esac
given="KIND_CLUSTER=${KIND_CLUSTER:-} KIND_REGISTRY_PORT=${KIND_REGISTRY_PORT:-}"
echo "pulumi $* $given" >>"$CALLS"
case "$1 ${2:-}" in
"stack output") echo '{"portForwards": {}, "consulUiPortForward": "", "services": {}}' ;;
esac"""


@pytest.fixture
def machine(tmp_path):
    machine = Machine(tmp_path / "machine")
    state = tmp_path / "state"
    state.mkdir()
    machine.env_extra["STATE"] = str(state)
    machine.state = state
    for name, body in {
        "docker": DOCKER,
        "kind": KIND,
        "kubectl": KUBECTL,
        "minikube": MINIKUBE,
        "pulumi": PULUMI,
    }.items():
        machine.fake(name, body)
    return machine


def calls(machine: Machine) -> list[str]:
    return machine.pulumi_calls()


def kind_sh(machine: Machine, action: str):
    return machine.run_tool("infra/kind.sh", action)


def test_a_new_registry_keeps_its_data_in_a_named_volume(machine):
    done = kind_sh(machine, "up")
    assert done.returncode == 0, done.stderr
    run = next(c for c in calls(machine) if c.startswith("docker run"))
    assert run.startswith(REGISTRY_RUN) and VOLUME in run, run
    assert "kind create cluster --name consul-microservices --wait 120s --config -" in calls(
        machine
    )


def test_a_stopped_registry_is_started_again_with_its_data(machine):
    """Recreating it would give it an empty volume: the images the stack runs by digest would
    be gone, and pods that restart could not pull them."""
    (machine.state / "registry").write_text("false\n")
    done = kind_sh(machine, "up")
    assert done.returncode == 0, done.stderr
    assert "docker start kind-registry" in calls(machine)
    assert not [c for c in calls(machine) if c.startswith(("docker run", "docker rm"))]


def test_down_removes_the_cluster_the_registry_and_its_volume(machine):
    (machine.state / "clusters").write_text("consul-microservices\n")
    done = kind_sh(machine, "down")
    assert done.returncode == 0, done.stderr
    assert calls(machine)[-3:] == [
        "kind delete cluster --name consul-microservices",
        "docker rm -f kind-registry",
        "docker volume rm kind-registry-data",
    ]


def test_down_removes_its_own_clusters_shared_volumes_only(machine):
    """The volumes of the node image's "shared" class live in the host's state directory, one
    folder per cluster: they go with their cluster, never with another."""
    volumes = machine.root / "cache" / "consul-microservices" / "kind" / "volumes"
    for cluster in ("consul-microservices", "another"):
        (volumes / cluster / "pvc-1").mkdir(parents=True)
    (machine.state / "clusters").write_text("consul-microservices\nanother\n")
    assert kind_sh(machine, "down").returncode == 0
    assert sorted(p.name for p in volumes.iterdir()) == ["another"]


def test_a_cluster_among_many_is_found_under_pipefail(machine):
    """`kind get clusters | grep -qx` fails when grep stops at the first match and kind, still
    writing, dies of SIGPIPE: up then tried to create an existing cluster, down skipped it."""
    (machine.state / "clusters").write_text("consul-microservices\n")
    (machine.state / "more").write_text("20000\n")
    assert kind_sh(machine, "up").returncode == 0
    assert not [c for c in calls(machine) if c.startswith("kind create")]
    assert kind_sh(machine, "down").returncode == 0
    assert "kind delete cluster --name consul-microservices" in calls(machine)


def test_make_up_on_kind_hands_the_cluster_and_registry_to_the_program(machine, tmp_path):
    """KIND_CLUSTER and KIND_REGISTRY_PORT name the cluster and registry infra/kind.sh makes and,
    the same values, the ones the program deploys to (infra/config.py); UP_FLAGS reach `up`."""
    (tmp_path / "repo").mkdir()
    repo = copy_repo(tmp_path / "repo")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to("/usr/bin/python3")
    (repo / ".venv" / ".installed-deploy").touch()  # newer than infra/requirements.txt
    (repo / "policy" / ".venv").mkdir()
    (repo / "policy" / ".venv" / ".installed").touch()  # the pack's, newer than its requirements
    done = machine.make(
        repo, "up", "CLUSTER=kind", "KIND_CLUSTER=team-a", "UP_FLAGS=--expect-no-changes"
    )
    assert done.returncode == 0, done.stderr
    log = calls(machine)
    assert "kind create cluster --name team-a --wait 120s --config -" in log
    assert any(c.startswith(REGISTRY_RUN) for c in log)
    up = next(c for c in log if c.startswith("pulumi up"))
    # The registry port is make's default, handed over all the same.
    assert up == (
        "pulumi up --yes --skip-preview --expect-no-changes --stack dev"
        " KIND_CLUSTER=team-a KIND_REGISTRY_PORT=5001"
    )


def test_make_up_installs_only_what_the_deploy_needs(machine, tmp_path):
    """Not the test tools of requirements-dev.txt (and their Python floor): the program's pins."""
    (tmp_path / "repo").mkdir()
    repo = copy_repo(tmp_path / "repo")
    done = machine.make(repo, "-n", "deploy-venv", "policy-venv")
    assert done.returncode == 0, done.stderr
    assert "pip install --quiet -r infra/requirements.txt" in done.stdout
    assert "pip install --quiet -r policy/requirements.txt" in done.stdout
    assert "requirements-dev.txt" not in done.stdout
    assert "requirements-test.txt" not in done.stdout


def minikube_profile(machine: Machine, cni: str, runtime: str = "docker") -> None:
    config = {"KubernetesConfig": {"CNI": cni, "ContainerRuntime": runtime}}
    profile = {"Name": "consul-microservices", "Status": "Stopped", "Config": config}
    (machine.state / "profiles").write_text(json.dumps({"invalid": [], "valid": [profile]}))


MINIKUBE_START = "minikube start -p consul-microservices --cni=calico --container-runtime=docker"


def test_minikube_starts_with_a_cni_that_enforces_network_policy(machine):
    done = machine.run_tool("infra/minikube.sh", "up")
    assert done.returncode == 0, done.stderr
    assert MINIKUBE_START in calls(machine)


@pytest.mark.parametrize(
    ("cni", "runtime"), [("", "docker"), ("bridge", "docker"), ("calico", "containerd")]
)
def test_a_minikube_profile_made_otherwise_is_refused_naming_the_fix(machine, cni, runtime):
    minikube_profile(machine, cni, runtime)
    done = machine.run_tool("infra/minikube.sh", "up")
    assert done.returncode == 1
    assert f"runs CNI '{cni or 'none'}' and runtime '{runtime}'" in done.stderr
    assert "make cluster-stop CLUSTER=minikube && make up CLUSTER=minikube" in done.stderr
    assert not [c for c in calls(machine) if c.startswith("minikube start")]


@pytest.mark.parametrize("running", [True, False])
def test_a_calico_profile_is_reused(machine, running):
    minikube_profile(machine, "calico")
    if running:
        (machine.state / "running").touch()
    done = machine.run_tool("infra/minikube.sh", "up")
    assert done.returncode == 0, done.stderr
    assert (MINIKUBE_START in calls(machine)) is not running
