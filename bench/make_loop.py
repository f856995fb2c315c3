"""`make up` and `make down` as a user runs them (`make bench-deploy`'s second part): wall clock of
the whole make command, preflight included, and where it went, read from the times its output
lines appeared.

Pulumi's own steps (bench/deploy.py's first part) are not what a user waits for: `make up` also
runs the preflight, starts or checks the cluster and podman's Docker API, builds and pushes the
images it has to (hack/local-stack.sh), and prints the stack's outputs. This part runs the
Docker-free local cluster's commands from a copy of the repo with a cache directory of its own
(so its cluster state and `make down` never touch the user's): a cold `make up` (cluster start
included), no-op `make up`s, a one-line greeter change, `make down`. Where the user path's parts
are at hand (a `pulumi-resource-docker` on PATH and CONSUL_CHART_PATH with
CONSUL_K8S_CONTROL_PLANE_IMAGE), the chart path's cold, no-op and down once more.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GREETER_SOURCE = Path("services/greeter/src/greeter/server.py")
# Where each phase of a command ends: the first (or last) output line that matches. A phase not
# found in the output (no cluster to start, say) is left out; the next one takes its time.
UP_PHASES = (
    ("preflight", r"^make up: cluster", "first"),
    ("cluster_and_engine", r"hack/local-stack\.sh prepare", "first"),
    ("images", r"^\[local-stack ", "last"),
    ("stack_checks_and_cli_start", r"^Updating \(", "first"),
    ("update", r"^Duration: ", "first"),
    ("outputs", None, "end"),
)
DOWN_PHASES = (
    ("preflight", r"^make down: cluster", "first"),
    ("destroy", r"^Duration: ", "first"),
    ("stack_rm", r"hack/cluster\.sh down|infra/kind\.sh down", "first"),
    ("cluster_down", None, "end"),
)


@dataclass
class TimedMake:
    seconds: float
    lines: list[tuple[float, str]]

    def phases(self, marks: Sequence[tuple[str, str | None, str]]) -> dict[str, float]:
        """Seconds per phase: from the previous phase's end to the line that ends this one."""
        found: dict[str, float] = {}
        previous = 0.0
        for name, pattern, which in marks:
            if pattern is None:
                at = self.seconds
            else:
                times = [t for t, line in self.lines if re.search(pattern, line)]
                if not times:
                    continue
                at = times[0] if which == "first" else times[-1]
            found[f"{name}_s"] = round(at - previous, 2)
            previous = at
        return found


def run_make(repo: Path, env: dict[str, str], *args: str, timeout: float = 1800) -> TimedMake:
    """One make command; each output line (stdout and stderr, as a terminal shows them) with the
    time it appeared."""
    start = time.monotonic()
    process = subprocess.Popen(  # noqa: S603
        ["make", "--no-print-directory", *args],  # noqa: S607
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in process.stdout]
    code = process.wait(timeout=timeout)
    seconds = time.monotonic() - start
    if code:
        tail = "\n".join(line for _, line in lines[-40:])
        raise RuntimeError(f"make {' '.join(args)} exited {code}:\n{tail}")
    return TimedMake(seconds, lines)


def chart_parts() -> dict[str, str] | None:
    """The user path's parts where a user would have them, or None."""
    chart = os.environ.get("CONSUL_CHART_PATH")
    image = os.environ.get("CONSUL_K8S_CONTROL_PLANE_IMAGE")
    if chart and image and shutil.which("pulumi-resource-docker"):
        return {"CONSUL_CHART_PATH": chart, "CONSUL_K8S_CONTROL_PLANE_IMAGE": image}
    return None


def why_not_here() -> str | None:
    """A reason this part cannot run now (naming the command that fixes it), or None."""
    status = subprocess.run(  # noqa: S603 (the project's own script)
        [str(ROOT / "hack" / "cluster.sh"), "status"], capture_output=True, check=False
    )
    if status.returncode == 0:
        return "the local cluster already runs here: `make down CLUSTER=local` first"
    return None


def _timed(done: TimedMake, marks) -> dict:
    return {"seconds": round(done.seconds, 2), **done.phases(marks)}


def _median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def make_loop(repo: Path, cache: Path, noop_runs: int, parts: dict[str, str] | None) -> dict:
    """The side path's (or with `parts`, the chart path's) commands, in order, on a cluster of
    this run; `make down` at the end, also when a step fails."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_CHART", "CONSUL_K8S"))},
        **(parts or {}),
        "XDG_CACHE_HOME": str(cache),
        # The toolchain the user built, not a rebuild in the new cache directory.
        "TOOLCHAIN_CACHE": os.environ.get("TOOLCHAIN_CACHE")
        or str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
               / "consul-microservices" / "toolchain"),
    }  # fmt: skip
    if parts is None:  # the side path: no docker provider, whatever this PATH holds
        plugin = "pulumi-resource-docker"
        kept = (d for d in env["PATH"].split(os.pathsep) if not (Path(d) / plugin).exists())
        env["PATH"] = os.pathsep.join(kept)
    up = ("up", "CLUSTER=local")
    figures: dict = {}
    try:
        figures["cold_make_up"] = _timed(run_make(repo, env, *up), UP_PHASES)
        noops = [_timed(run_make(repo, env, *up), UP_PHASES) for _ in range(noop_runs)]
        figures["noop_make_up"] = _median(noops) | {
            "runs_s": [r["seconds"] for r in noops],
            "median_s": statistics.median(r["seconds"] for r in noops),
        }
        if parts is None:
            source = repo / GREETER_SOURCE
            source.write_text(source.read_text() + "# bench: a one-line change\n")
            figures["greeter_change_make_up"] = _timed(run_make(repo, env, *up), UP_PHASES)
    finally:
        down = run_make(repo, env, "down", "CLUSTER=local")
    figures["make_down"] = _timed(down, DOWN_PHASES)
    return figures
