"""`make up` never dirties the working tree: a created local stack leaves its stack file as is.

Needs the real pulumi (its passphrase secrets manager decides whether to rewrite the stack file).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from deploy_support import copy_repo, git_status
from testkit import toolchain_bin_dir

LOCAL_STACKS = ("dev", "minikube", "local")


def test_creating_the_local_stacks_on_a_clean_clone_changes_no_file(tmp_path):
    pulumi = toolchain_bin_dir() / "pulumi"
    if not pulumi.is_file():
        pytest.skip(f"{pulumi} not found: run `make toolchain`")
    (tmp_path / "repo").mkdir()
    repo = copy_repo(tmp_path / "repo")
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_HOME": str(tmp_path / "home"),
    }
    env.pop("PULUMI_CONFIG_PASSPHRASE", None)
    for stack in LOCAL_STACKS:
        # The step `make up` runs before `pulumi up` (hack/pulumi-stack.sh: select or create).
        done = subprocess.run(
            [str(repo / "hack" / "pulumi-stack.sh"), stack, "init"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"created stack {stack}" in done.stdout
    assert git_status(repo) == ""
