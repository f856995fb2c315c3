"""The GitHub workflow (.github/workflows/ci.yml) keeps its promises: actionlint finds nothing,
every action is pinned to a commit, the kind job deploys for real, and kind and kubectl are the
versions of hack/versions.env, not literals.

The workflow itself runs on GitHub only (Docker, kind's images, Pulumi's plugin CDN); these checks
are what this machine can hold it to.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from testkit import HACK, ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
PINNED_VERSIONS = ("KIND_VERSION", "KUBERNETES_VERSION")


def pins() -> dict[str, str]:
    lines = (HACK / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))


def local_passphrase() -> str:
    """The local stacks' documented passphrase, from the project's one convention."""
    out = subprocess.run(
        [HACK / "pulumi.sh", "--convention"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())["LOCAL_PASSPHRASE"]


def jobs() -> dict[str, dict]:
    return yaml.safe_load(CI.read_text())["jobs"]


def runs(job: dict) -> list[str]:
    return [step.get("run", "") for step in job["steps"]]


def kind_job() -> dict:
    found = [job for job in jobs().values() if any("make up CLUSTER=kind" in r for r in runs(job))]
    assert len(found) == 1, "one job runs `make up CLUSTER=kind`"
    return found[0]


def test_actionlint_finds_nothing():
    actionlint = ROOT / "bin" / "actionlint"
    command = str(actionlint) if actionlint.is_file() else shutil.which("actionlint")
    if not command:
        pytest.skip("actionlint not found: run `make tools` (installs it into ./bin)")
    workflows = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    done = subprocess.run(
        [command, *workflows], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_every_action_is_pinned_to_a_commit_with_its_tag_in_a_comment():
    uses = [line for line in CI.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert uses
    for line in uses:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), line


def test_kind_job_deploys_greets_changes_nothing_again_and_tears_down():
    job = kind_job()
    steps = runs(job)

    def first(pattern: str) -> int:
        matching = [i for i, run in enumerate(steps) if re.search(pattern, run, re.MULTILINE)]
        assert matching, f"no step of the kind job runs {pattern!r}"
        return matching[0]

    order = [
        first(r"^make tools$"),
        first(r"^make up CLUSTER=kind$"),
        first(r"port-forward[\s\S]*/api/v1/greeting\?name="),
        first(r"^make up CLUSTER=kind UP_FLAGS=--expect-no-changes$"),
        first(r"^make down CLUSTER=kind$"),
    ]
    assert order == sorted(order), "tools, up, greeting, no-op up, down, in that order"
    assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == local_passphrase()
    assert any("actions/setup-go@" in step.get("uses", "") for step in job["steps"])
    last = job["steps"][-1]
    assert last.get("if") == "failure()"
    for command in ("kubectl get pods -A", "kubectl describe", "kubectl logs"):
        assert command in last["run"]


def test_kind_and_kubectl_versions_come_from_versions_env():
    text = CI.read_text()
    for name in PINNED_VERSIONS:
        assert pins()[name] not in text, f"{name}'s value is repeated in the workflow"
    for job_name, job in jobs().items():
        steps = [str(step) for step in job["steps"]]
        readers = [
            i
            for i, step in enumerate(steps)
            if all(w in step for w in ("hack/versions.env", "GITHUB_ENV", *PINNED_VERSIONS))
        ]
        users = [i for i, step in enumerate(steps) if any(n in step for n in PINNED_VERSIONS)]
        if users:
            assert readers, f"{job_name} uses the versions without reading hack/versions.env"
            assert readers[0] == users[0], f"{job_name} uses a version before reading it"
    kind_actions = [
        step["with"]
        for job in jobs().values()
        for step in job["steps"]
        if step.get("uses", "").startswith("helm/kind-action@")
    ]
    assert kind_actions
    for inputs in kind_actions:
        assert inputs["version"] == "${{ env.KIND_VERSION }}"
        assert inputs["kubectl_version"] == "${{ env.KUBERNETES_VERSION }}"
