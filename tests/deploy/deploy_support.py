"""A repo copy and a PATH of stand-ins, to run the deploy targets as a newcomer would.

The stand-ins answer the version probes the preflight makes and log every other call, so a test can
tell that a refused `make up` ran no pulumi command that could create a stack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from testkit import ROOT, copy_worktree

# What make, the preflight and hack/*.sh call besides the tools under test.
SYSTEM_TOOLS = (
    "bash", "sh", "env", "python3", "make", "sha256sum", "cut", "dirname", "sed", "head", "cat",
    "grep", "mkdir", "tr", "id", "git", "ls", "rm", "mktemp", "date", "uname", "basename", "tail",
)  # fmt: skip

DEPLOY_SETTINGS = ("PULUMI_", "MAKE", "CONSUL_", "KIND_", "MINIKUBE_", "CLUSTER", "STACK")
VERSIONS = {
    "pulumi": 'case "$1" in version) echo v3.252.0 ;; *) echo "$*" >>"$CALLS"; exit 1 ;; esac',
    "kubectl": 'echo "clientVersion:"; echo "  gitVersion: v1.34.2"',
    "docker": "echo 28.2.2",
    "kind": "echo kind v0.30.0 go1.24.6 linux/amd64",
    "minikube": "echo v1.37.0",
}


def copy_repo(dest: Path) -> Path:
    """Tracked and untracked-not-ignored files, committed in a fresh git repo (so `git status` means
    something), without the venv."""
    copy_worktree(dest)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "clean clone"], cwd=dest, check=True)
    return dest


def git_status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


class Machine:
    """A PATH with the system tools make needs and stand-ins for the deploy tools; no toolchain."""

    def __init__(self, root: Path, tools: tuple[str, ...] = tuple(VERSIONS)) -> None:
        self.root = root
        self.system = root / "system"
        self.fakes = root / "fakes"
        self.calls = root / "calls.log"
        self.toolchain_cache = root / "toolchain-cache"
        self.repo_root = ROOT
        self.env_extra: dict[str, str] = {}
        for directory in (self.system, self.fakes, self.toolchain_cache):
            directory.mkdir(parents=True)
        for name in SYSTEM_TOOLS:
            # The system python3, as on a fresh machine (a pyenv shim would need pyenv on PATH).
            found = "/usr/bin/python3" if name == "python3" else shutil.which(name)
            if found:
                (self.system / name).symlink_to(found)
        for name in tools:
            self.fake(name, VERSIONS[name])

    def fake(self, name: str, body: str, directory: Path | None = None) -> None:
        path = (directory or self.fakes) / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)

    def remove(self, name: str) -> None:
        (self.fakes / name).unlink()

    def build_toolchain(self, names: tuple[str, ...]) -> None:
        """Stand-ins for the toolchain's binaries, where hack/toolchain.sh bin-dir points."""
        bindir = Path(self.run_tool("hack/toolchain.sh", "bin-dir").stdout.strip())
        bindir.mkdir(parents=True)
        for name in names:
            self.fake(name, VERSIONS.get(name, "exit 0"), bindir)

    @property
    def env(self) -> dict[str, str]:
        # Nothing of this machine's deploy settings (a chart path, a control-plane image, a kind
        # cluster name) reaches the newcomer's run unless a test sets it.
        keep = {k: v for k, v in os.environ.items() if not k.startswith(DEPLOY_SETTINGS)}
        return {
            **keep,
            "PATH": f"{self.fakes}:{self.system}",
            "TOOLCHAIN_CACHE": str(self.toolchain_cache),
            # The scripts' state (a kind cluster's volumes, the local cluster's data) lives under
            # the cache: the newcomer's own, never this machine's, which `down` would delete.
            "XDG_CACHE_HOME": str(self.root / "cache"),
            "CALLS": str(self.calls),
            # hack/pulumi.sh adds the policy pack to up and preview: test_policy_flags.py.
            "POLICY_PACK": "",
            **self.env_extra,
        }

    def run_tool(self, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(cwd / args[0]), *args[1:]],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def make(self, repo: Path, *args: str, passphrase: str | None = None):
        passphrase_env = {"PULUMI_CONFIG_PASSPHRASE": passphrase} if passphrase is not None else {}
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=repo,
            env=self.env | passphrase_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def pulumi_calls(self) -> list[str]:
        """What the stand-ins logged (pulumi's calls other than `version`, and any added fake's)."""
        return self.calls.read_text().splitlines() if self.calls.exists() else []
