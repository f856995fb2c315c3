"""The deploy targets as a newcomer meets them: make up/preview/down on a clean clone, each tool
missing in turn. A refused target exits non-zero naming the tool and its fix, with that report
last, and changes nothing: no .pulumi-state, no pulumi command besides `pulumi version`, a clean
`git status`."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

import pytest
from deploy_support import Machine, copy_repo, git_status
from testkit import ROOT, require_root

# What the chosen path needs, and a phrase of the fix the preflight must print for it.
KIND_PATH_FIXES = {
    "pulumi": "get.pulumi.com",
    "kubectl": "dl.k8s.io/release/v1.34.2",
    "docker": "docs.docker.com/engine/install",
    "kind": "go install sigs.k8s.io/kind@v0.30.0",
}
LOCAL_TOOLS = (
    "pulumi", "pulumi-language-python", "pulumi-resource-kubernetes", "kubectl",
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
)  # fmt: skip


OWN = "a phrase of the user's own"


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "repo").mkdir()
    return copy_repo(tmp_path / "repo")


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path / "machine")


def assert_refused(done):
    """make's refusal: non-zero, and the preflight's report is the last thing printed (no error
    line of make's after it)."""
    assert done.returncode != 0, done.stderr
    assert "***" not in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith(("  x ", "      "))


def assert_untouched(repo, machine):
    assert not (repo / ".pulumi-state").exists()
    assert machine.pulumi_calls() == []
    assert git_status(repo) == ""


@pytest.mark.parametrize("missing", sorted(KIND_PATH_FIXES))
def test_up_on_kind_names_the_missing_tool_and_its_fix(repo, machine, missing):
    machine.remove(missing)
    done = machine.make(repo, "up", "CLUSTER=kind")
    assert_refused(done)
    assert "stopped before touching any state or cluster; 1 problem:" in done.stderr
    assert f"{missing} not found" in done.stderr
    assert KIND_PATH_FIXES[missing] in done.stderr
    assert_untouched(repo, machine)


def test_every_problem_is_reported_at_once(repo, machine):
    for name in KIND_PATH_FIXES:
        machine.remove(name)
    done = machine.make(repo, "preview", "CLUSTER=kind")
    assert_refused(done)
    assert "4 problems:" in done.stderr
    for fix in KIND_PATH_FIXES.values():
        assert fix in done.stderr
    assert_untouched(repo, machine)


def test_a_pulumi_older_than_the_sdk_pin_is_refused(repo, machine):
    machine.fake("pulumi", "echo v3.100.0")
    done = machine.make(repo, "up", "CLUSTER=kind")
    assert_refused(done)
    assert "is v3.100.0; needs pulumi 3.x at or above 3.252.0" in done.stderr
    assert_untouched(repo, machine)


def test_a_kubectl_out_of_skew_is_refused(repo, machine):
    machine.fake("kubectl", 'echo "  gitVersion: v1.32.4"')
    done = machine.make(repo, "up", "CLUSTER=kind")
    assert_refused(done)
    assert "is v1.32.4; needs kubectl 1.33 or newer" in done.stderr


def test_a_docker_without_daemon_is_not_usable(repo, machine):
    machine.fake("docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    done = machine.make(repo, "up", "CLUSTER=kind")
    assert_refused(done)
    assert "the docker daemon does not answer (Cannot connect to the Docker daemon)" in done.stderr
    # The ways forward without Docker: kind on podman, or the local cluster.
    assert "container-engine.sh install" in done.stderr
    assert "make up CLUSTER=local" in done.stderr
    assert_untouched(repo, machine)


def test_a_kind_whose_kindnet_enforces_no_network_policy_is_refused(repo, machine):
    machine.fake("kind", "echo kind v0.23.0 go1.22.2 linux/amd64")
    done = machine.make(repo, "up", "CLUSTER=kind")
    assert_refused(done)
    assert "kind v0.23.0" in done.stderr
    assert "needs kind v0.24 or newer (its kindnet enforces NetworkPolicy)" in done.stderr
    assert_untouched(repo, machine)


def test_a_docker_daemon_that_takes_seconds_to_wake_counts(machine):
    """Docker Desktop waking from Resource Saver answers after a few seconds, not 1.5."""
    machine.fake("docker", "sleep 3; echo 28.2.2")
    done = machine.run_tool("hack/preflight.py", "up", "--cluster", "kind")
    assert done.returncode == 0, done.stderr
    assert "docker 28.2.2 answers" in done.stderr


def load_preflight(root=ROOT):
    """hack/preflight.py of `root` as a module of its own (a script, not on the import path)."""
    name = f"preflight_{abs(hash(root))}"
    spec = importlib.util.spec_from_file_location(name, root / "hack" / "preflight.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def test_the_preflight_parses_as_the_oldest_python3_it_must_refuse():
    """It runs with the system python3 to say that python3 is too old (macOS has 3.9)."""
    ast.parse((ROOT / "hack" / "preflight.py").read_text(), feature_version=(3, 8))


@pytest.mark.parametrize(
    ("system", "fix"),
    [
        ("linux", "apt-get install python3.11 python3.11-venv"),
        ("darwin", "brew install python@3.11"),
    ],
)
def test_a_python_older_than_requires_python_is_refused_naming_one_that_fits(system, fix):
    preflight = load_preflight()
    preflight.PLATFORM = (system, "arm64")
    [problem] = preflight.check_python([], (3, 9, 6))
    assert "is Python 3.9.6; the deploy's pins need 3.11 or newer" in problem.what
    assert fix in problem.fix
    assert "make up PYTHON=python3.11" in problem.fix
    assert preflight.check_python([], (3, 11, 0)) == []


def test_a_venv_made_by_an_older_python_is_refused(repo):
    (repo / ".venv").mkdir()
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.10.12\n")
    [problem] = load_preflight(repo).check_python([], (3, 12, 3))
    assert ".venv was made with Python 3.10.12; needs 3.11 or newer" in problem.what
    assert problem.fix.startswith("rm -rf .venv")


def test_the_fixes_name_what_fits_the_users_platform(monkeypatch):
    preflight = load_preflight()
    preflight.PLATFORM = ("darwin", "arm64")
    monkeypatch.setattr(preflight, "docker_state", lambda: (False, "docker not found"))
    monkeypatch.setattr(preflight.shutil, "which", lambda _name: None)
    assert "/bin/darwin/arm64/kubectl" in preflight.kubectl_fix()[0]
    [docker] = preflight.check_docker([])
    assert "Docker Desktop" in docker.fix
    assert "systemctl" not in docker.fix
    [minikube] = preflight.check_minikube([])
    assert "minikube-darwin-arm64" in minikube.fix


@pytest.mark.parametrize(
    ("variable", "valid"),
    [
        ("CLUSTER=kube", "valid: kind, minikube, existing, local"),
        ("STACK=staging", "valid: dev, local, minikube, prod"),
    ],
)
def test_unknown_cluster_or_stack_is_refused_with_the_valid_ones(repo, machine, variable, valid):
    done = machine.make(repo, "up", variable)
    assert_refused(done)
    assert f"unknown {variable}; {valid}" in done.stderr
    assert_untouched(repo, machine)


def test_a_stack_for_another_cluster_is_refused(repo, machine):
    done = machine.make(repo, "up", "CLUSTER=kind", "STACK=prod")
    assert_refused(done)
    assert "stack prod has clusterProfile existing (Pulumi.prod.yaml); CLUSTER=kind needs kind" in (
        done.stderr
    )


def test_a_stack_of_your_own_needs_your_passphrase(repo, machine):
    done = machine.make(repo, "preview", "CLUSTER=existing", "STACK=prod")
    assert_refused(done)
    assert "stack prod needs the passphrase of its secrets" in done.stderr
    mine = machine.make(repo, "preview", "CLUSTER=existing", "STACK=prod", passphrase=OWN)
    assert "passphrase" not in mine.stderr


def test_without_cluster_it_chooses_kind_when_docker_and_kind_work(machine):
    done = machine.run_tool("hack/preflight.py", "up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "CLUSTER=kind STACK=dev"
    assert "CLUSTER not set: chose kind: docker 28.2.2 answers and kind v0.30.0 is installed" in (
        done.stderr
    )


def test_without_docker_it_chooses_the_local_cluster_when_the_toolchain_is_built(machine):
    require_root("the preflight refuses the local cluster to anyone else")
    machine.remove("docker")
    machine.remove("pulumi")  # the toolchain's is the one that counts
    machine.build_toolchain(LOCAL_TOOLS)
    machine.fake("podman", "exit 0")
    done = machine.run_tool("hack/preflight.py", "up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "CLUSTER=local STACK=local"
    assert "chose local: docker not found, and the toolchain is built" in done.stderr


def test_as_a_normal_user_it_refuses_the_local_cluster_naming_sudo(machine):
    if os.geteuid() == 0:
        pytest.skip("runs as a non-root user: `FRESH_USER=newcomer make fresh-machine` does")
    machine.remove("docker")
    machine.build_toolchain(LOCAL_TOOLS)
    done = machine.run_tool("hack/preflight.py", "up", "--cluster", "local")
    assert done.returncode == 2
    assert "not root: the local cluster's rootful podman" in done.stderr
    assert "sudo make up CLUSTER=local" in done.stderr


def test_the_local_chart_mode_needs_the_control_plane_image_named_before_anything_starts(
    repo, machine, tmp_path
):
    chart = tmp_path / "consul"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("name: consul\nversion: 1.9.3\n")
    (chart / "values.yaml").write_text(
        "global:\n  imageK8S: hashicorp/consul-k8s-control-plane:1.9.3\n"
    )
    machine.build_toolchain(LOCAL_TOOLS)
    machine.env_extra = {"CONSUL_CHART_PATH": str(chart)}
    done = machine.make(repo, "up", "CLUSTER=local")
    assert_refused(done)
    assert "CONSUL_CHART_PATH is set, but CONSUL_K8S_CONTROL_PLANE_IMAGE is not" in done.stderr
    assert "podman pull docker.io/hashicorp/consul-k8s-control-plane:1.9.3" in done.stderr
    assert_untouched(repo, machine)


def test_without_docker_or_toolchain_it_names_both_ways_forward(repo, machine):
    machine.remove("docker")
    done = machine.make(repo, "up")
    assert_refused(done)
    assert "no cluster to deploy to (CLUSTER not set)" in done.stderr
    assert "install Docker" in done.stderr
    assert "make toolchain (~45 min once), then make up" in done.stderr
    assert_untouched(repo, machine)


EVERY_SERVICE = tuple(sorted(p.parent.name for p in (ROOT / "services").glob("*/service.yaml")))


@pytest.mark.parametrize(
    ("given", "needs_docker"), [(EVERY_SERVICE, False), (("greeter",), True)], ids=["every", "one"]
)
def test_an_existing_cluster_needs_docker_unless_every_image_is_given(
    repo, machine, given, needs_docker
):
    """The services are the folders with a manifest; an image given in the stack file
    (services.<name>.image) is not built."""
    stack = repo / "Pulumi.prod.yaml"
    block = "".join(f"    {s}:\n      image: registry.example.com/{s}:1.0\n" for s in given)
    stack.write_text(
        stack.read_text().replace(
            "  consul-microservices:services:\n", "  consul-microservices:services:\n" + block
        )
    )
    machine.remove("docker")
    done = machine.make(repo, "preview", "CLUSTER=existing", "STACK=prod", passphrase=OWN)
    assert ("docker not found" in done.stderr) is needs_docker, done.stderr


@pytest.mark.parametrize("cluster", ["", "CLUSTER=kind", "CLUSTER=existing STACK=prod"])
def test_down_with_nothing_to_destroy_fails_loudly(repo, machine, cluster):
    done = machine.make(repo, "down", *cluster.split(), passphrase=OWN)
    assert_refused(done)
    assert "nothing to destroy" in done.stderr
    assert_untouched(repo, machine)


def test_down_after_a_failed_first_up_names_the_cluster_it_left_running(repo, machine):
    """No stack to destroy, but the kind cluster `make up` created is there: down says how to stop
    it, and still fails."""
    machine.fake(
        "kind",
        'case "$1" in version) echo kind v0.30.0 ;; get) echo consul-microservices ;; esac',
    )
    done = machine.make(repo, "down", "CLUSTER=kind")
    assert_refused(done)
    assert "nothing to destroy" in done.stderr
    assert "the kind cluster consul-microservices (and its registry) that make up created" in (
        done.stderr
    )
    assert "make cluster-stop CLUSTER=kind" in done.stderr
    assert_untouched(repo, machine)


def test_down_without_pulumi_fails_naming_it(repo, machine):
    machine.remove("pulumi")
    done = machine.make(repo, "down", "CLUSTER=kind")
    assert_refused(done)
    assert "pulumi not found" in done.stderr
    assert "get.pulumi.com" in done.stderr
    assert "make up needs" not in done.stderr + done.stdout
