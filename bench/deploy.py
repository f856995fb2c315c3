"""Deploy-loop benchmark (`make bench-deploy`): where the seconds of a deploy go.

It starts what it needs and stops it afterwards, private to the run: the local cluster with its
real node and registry localhost:5001 (hack/cluster.sh on free ports), podman's Docker API,
the postgres image (hack/local-stack.sh), a Consul agent on the node's address, a copy of the repo
and a Pulumi file backend. It runs the side path, as `make e2e` does without the user's
downloads: images built and pushed by podman outside Pulumi and deployed by digest, Consul
outside the cluster. (The user path, pulumi-docker and the chart, is not benchmarked here.)

Each run measures, on the same CLI, backend and PULUMI_HOME:
- floor: the no-op `up` of an empty Python program (the engine's and language host's own cost);
- cold up: `pulumi up` of a new stack until every Deployment is rolled out and a greeting answers
  (the images are built and pushed before it, timed apart);
- no-op up: `up` again;
- change: a one-line greeter edit, from the file write to the first greeting answered by a pod
  of the new digest (build and push, `config set` of the digest, `up`, rollout, greeting);
- preview, and preview with the policy pack (policy/, as `make up` runs it): both under a Python
  language host of the CLI's version, the one that can run the pack (local_stack.python_host;
  without one these two are skipped and the output says why); their ratio is the pack's cost;
- destroy.
Then `make up` and `make down` as a user runs them, wall clock and by phase (bench/make_loop.py).
The median of --runs runs is printed and written; each step's breakdown by resource comes from
Pulumi's `--event-log`, read while it is written, so each event carries the time it was read
(the log's own timestamps are whole seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

import make_loop  # noqa: E402
import report  # noqa: E402
from local_stack import (  # noqa: E402
    ENGINE_TOOLS,
    HACK,
    NAMESPACE,
    POLICY_PACK,
    SERVICES,
    ContainerEngine,
    LocalStack,
    Pulumi,
    _run,
    copy_repo,
    host_consul,
    missing_part,
    python_host,
)
from testkit import running_cluster, wait_until  # noqa: E402

TARGETS = {
    "noop_up_ratio": 1.5, "change_s": 8.0, "cold_up_s": 30.0, "destroy_s": 15.0,
    "pack_preview_ratio": 1.2,
}  # fmt: skip
# Issue 30's targets for the make commands, wall clock (bench/make_loop.py).
MAKE_TARGETS = {
    ("side path", "noop_make_up"): 2.0, ("chart path", "noop_make_up"): 3.0,
    ("side path", "make_down"): 15.0, ("chart path", "make_down"): 25.0,
}  # fmt: skip
EMPTY_PROGRAM = {
    "Pulumi.yaml": "name: engine-floor\nruntime: python\n",
    "__main__.py": '"""Registers nothing: the engine\'s and language host\'s own cost."""\n',
}
GREETER_SOURCE = Path("services/greeter/src/greeter/server.py")
STACK_TYPE = "pulumi:pulumi:Stack"
# `--event-log` is one of the CLI's debug flags (the Automation API sets this too).
EVENT_LOG_ENV = {"PULUMI_DEBUG_COMMANDS": "true"}


@dataclass
class Timed:
    """One pulumi command: its wall time and the events it logged, each with when it was read."""

    seconds: float
    events: list[tuple[float, dict]] = field(default_factory=list)

    def breakdown(self) -> dict:
        """Where the command's time went: until its first step (CLI, plugins, language host;
        in an update, the program up to registering its stack), the program's own start-up
        (imports and config validation: from registering the stack to its first resource), each
        resource's step, and the last event to exit (state written, plugins stopped). `timeline`
        (JSON only) has each step's start and end."""
        pre: dict[str, float] = {}
        timeline: dict[str, tuple[float, float]] = {}
        for at, event in self.events:
            if "resourcePreEvent" in event:
                pre.setdefault(event["resourcePreEvent"]["metadata"]["urn"], at)
            elif "resOutputsEvent" in event:
                urn = event["resOutputsEvent"]["metadata"]["urn"]
                if urn in pre:
                    timeline[urn] = (pre[urn], at)
        phases = {}
        starts = sorted(pre.items(), key=lambda item: item[1])
        if starts:
            phases["to_first_step_s"] = starts[0][1]
            if f"::{STACK_TYPE}::" in starts[0][0] and len(starts) > 1:
                phases["program_startup_s"] = starts[1][1] - starts[0][1]
        if self.events:
            phases["last_event_to_exit_s"] = self.seconds - self.events[-1][0]
        steps = sorted(timeline.items(), key=lambda item: item[1][0] - item[1][1])
        return {
            **{k: round(v, 2) for k, v in phases.items()},
            "resources": {
                _short(urn): round(end - start, 2)
                for urn, (start, end) in steps
                if end - start >= 0.05
            },
            "timeline": {_short(urn): [round(a, 2), round(b, 2)] for urn, (a, b) in steps},
        }


def _short(urn: str) -> str:
    qualified, name = urn.split("::")[2:4]
    return f"{qualified.rsplit('$', 1)[-1].rsplit(':', 1)[-1]} {name}"


@contextmanager
def _tail(path: Path, start: float) -> Iterator[list[tuple[float, dict]]]:
    """The JSON lines appended to `path` while the block runs, each with its read time."""
    events: list[tuple[float, dict]] = []
    done = threading.Event()

    def follow() -> None:
        while not path.exists() and not done.is_set():
            time.sleep(0.005)
        with path.open() as log:
            pending = ""
            while True:
                chunk = log.read()
                at = time.monotonic() - start
                pending += chunk
                *lines, pending = pending.split("\n")
                events.extend((at, json.loads(line)) for line in lines if line.strip())
                if done.is_set() and not chunk:
                    return
                time.sleep(0.005)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        yield events
    finally:
        done.set()
        reader.join(timeout=10)


def timed_pulumi(pulumi: Pulumi, log_dir: Path, *args: str) -> Timed:
    log = log_dir / f"events-{time.monotonic_ns()}.jsonl"
    start = time.monotonic()
    with _tail(log, start) as events:
        pulumi(*args, "--event-log", str(log))
        seconds = time.monotonic() - start
    return Timed(seconds, events)


def books_api_url(local: LocalStack) -> str:
    service = local.kubectl_json("-n", NAMESPACE, "get", "service", "books-api")
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def greeting_from(url: str, instances: Callable[[], set[str]] | None = None) -> float:
    """Seconds until books-api answers a greeting (from a greeter whose IP `instances` lists)."""
    start = time.monotonic()

    def answered() -> bool:
        try:
            answer = requests.get(f"{url}/api/v1/greeting", params={"name": "bench"}, timeout=5)
        except requests.RequestException:
            return False
        if answer.status_code != 200:
            return False
        return instances is None or answer.json()["instance"].rsplit(":", 1)[0] in instances()

    wait_until(answered, timeout=120, interval=0.05, what="a greeting through books-api")
    return time.monotonic() - start


def rollout(local: LocalStack, service: str) -> float:
    start = time.monotonic()
    local.cluster.kubectl(
        "-n", NAMESPACE, "rollout", "status", f"deployment/{service}", "--timeout=180s"
    )
    return time.monotonic() - start


def pod_ips(local: LocalStack, service: str, image: str) -> set[str]:
    pods = local.kubectl_json(
        "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/name={service}"
    )["items"]
    return {
        p["status"].get("podIP")
        for p in pods
        if p["spec"]["containers"][0]["image"] == image and p["status"].get("podIP")
    }


@dataclass
class Bench:
    work: Path
    local: LocalStack
    floor: Pulumi
    engine: ContainerEngine
    consul: str
    postgres_image: str
    host: Path | None  # a language host that runs the policy pack (local_stack.python_host)

    def run(self, number: int) -> dict:
        """One run of every step on a new stack, which it destroys and removes at its end."""
        repo, local = self.local.repo, self.local
        figures: dict = {}
        start = time.monotonic()
        images = {service: self.engine.build(repo, service) for service in SERVICES}
        figures["build_and_push_s"] = round(time.monotonic() - start, 2)
        local.init(self.consul, images, self.postgres_image)

        floor = timed_pulumi(self.floor, self.work, "up", "--yes", "--skip-preview")
        figures["floor"] = {"seconds": round(floor.seconds, 2), **floor.breakdown()}

        cold = timed_pulumi(local.pulumi, self.work, "up", "--yes", "--skip-preview")
        rolled = sum(rollout(local, service) for service in SERVICES)
        greeting = greeting_from(books_api_url(local))
        figures["cold_up"] = {
            "seconds": round(cold.seconds + rolled + greeting, 2),
            "up_s": round(cold.seconds, 2),
            "then_rolled_out_s": round(rolled, 2),
            "then_greeting_s": round(greeting, 2),
            **cold.breakdown(),
        }

        noop = timed_pulumi(local.pulumi, self.work, "up", "--yes", "--skip-preview")
        figures["noop_up"] = {"seconds": round(noop.seconds, 2), **noop.breakdown()}

        figures["change"] = self.change(number)

        if self.host is not None:
            under = local.pulumi.under(self.host)
            # In turns, first one then the other: neither is always the one with warm caches.
            steps = [("preview", ()), ("pack_preview", ("--policy-pack", str(POLICY_PACK)))]
            for step, pack in steps[:: 1 if number % 2 else -1]:
                done = timed_pulumi(under, self.work, "preview", "--expect-no-changes", *pack)
                figures[step] = {"seconds": round(done.seconds, 2), **done.breakdown()}

        destroy = timed_pulumi(local.pulumi, self.work, "destroy", "--yes", "--skip-preview")
        figures["destroy"] = {"seconds": round(destroy.seconds, 2), **destroy.breakdown()}
        local.pulumi("stack", "rm", "--yes", "--preserve-config")  # the tracked stack file stays
        return figures

    def change(self, number: int) -> dict:
        local = self.local
        source = local.repo / GREETER_SOURCE
        start = time.monotonic()
        source.write_text(source.read_text() + f"# bench: one-line change {number}\n")
        image = self.engine.build(local.repo, "greeter")
        built = time.monotonic()
        local.set_images({"greeter": image})
        configured = time.monotonic()
        up = timed_pulumi(local.pulumi, self.work, "up", "--yes", "--skip-preview")
        rolled = rollout(local, "greeter")
        greeting = greeting_from(books_api_url(local), lambda: pod_ips(local, "greeter", image))
        return {
            "seconds": round(time.monotonic() - start, 2),
            "build_and_push_s": round(built - start, 2),
            "config_set_s": round(configured - built, 2),
            "up_s": round(up.seconds, 2),
            "then_rolled_out_s": round(rolled, 2),
            "then_greeting_s": round(greeting, 2),
            **up.breakdown(),
        }


def bench(runs: int, work: Path) -> dict:
    reason = missing_part((*ENGINE_TOOLS, "consul"))
    if reason:
        return {"skipped": reason}
    with ExitStack() as stack:
        kube = stack.enter_context(running_cluster(work / "cluster", node="real"))
        engine = ContainerEngine(work / "podman")
        engine.script("start")
        stack.callback(engine.script, "stop")
        postgres = _run([str(HACK / "local-stack.sh"), "postgres-image"], timeout=900)
        consul = stack.enter_context(host_consul(_made(work / "consul")))
        repo = copy_repo(work / "repo")
        home = work / "pulumi-home"
        local = LocalStack(repo, Pulumi(repo, home, EVENT_LOG_ENV), kube)
        floor_dir = _made(work / "empty")
        for name, text in EMPTY_PROGRAM.items():
            (floor_dir / name).write_text(text)
        floor = Pulumi(floor_dir, home, EVENT_LOG_ENV)
        floor("stack", "init", "floor")
        floor("up", "--yes", "--skip-preview")
        host, why_not = python_host()
        runner = Bench(work, local, floor, engine, consul, postgres.stdout.strip(), host)
        # A run that fails leaves its stack: destroyed before the cluster goes.
        stack.callback(local.pulumi, "destroy", "--yes", "--skip-preview", check=False)
        results = [runner.run(number) for number in range(runs)]
    found = {"mode": "side path", "runs": results, "median": _medians(results)}
    if why_not:
        found["pack_skipped"] = f"the policy pack under the engine: {why_not}"
    return found


CHART_PARTS_MISSING = (
    "no pulumi-resource-docker on PATH, CONSUL_CHART_PATH and CONSUL_K8S_CONTROL_PLANE_IMAGE "
    "(a user's parts: README, user path)"
)


def make_part(noop_runs: int) -> dict:
    """bench/make_loop.py on the side path, and on the chart path where its parts are at hand."""
    why_not = make_loop.why_not_here() or missing_part((*ENGINE_TOOLS, "consul"))
    if why_not:
        return {"skipped": why_not}
    found = {}
    paths = {"side path": None, "chart path": make_loop.chart_parts()}
    for name, parts in paths.items():
        if name == "chart path" and parts is None:
            found[name] = {"skipped": CHART_PARTS_MISSING}
            continue
        with tempfile.TemporaryDirectory(prefix="bench-make-") as work:
            repo = copy_repo(Path(work) / "repo")
            found[name] = make_loop.make_loop(repo, Path(work) / "cache", noop_runs, parts)
    return found


def _made(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _medians(results: list[dict]) -> dict:
    """The median run of each step (by its total), with that run's breakdown."""
    medians: dict = {"build_and_push_s": statistics.median(r["build_and_push_s"] for r in results)}
    for step in ("floor", "cold_up", "noop_up", "change", "preview", "pack_preview", "destroy"):
        if step not in results[0]:
            continue
        ordered = sorted(results, key=lambda r, s=step: r[s]["seconds"])
        medians[step] = ordered[len(ordered) // 2][step]
    return medians


def _verdicts(median: dict) -> dict:
    ratio = median["noop_up"]["seconds"] / median["floor"]["seconds"]
    verdicts = {
        "noop_up_ratio": round(ratio, 2),
        "met": {
            "noop_up_ratio": ratio <= TARGETS["noop_up_ratio"],
            "change_s": median["change"]["seconds"] <= TARGETS["change_s"],
            "cold_up_s": median["cold_up"]["seconds"] <= TARGETS["cold_up_s"],
            "destroy_s": median["destroy"]["seconds"] <= TARGETS["destroy_s"],
        },
    }
    if "pack_preview" in median:
        pack = median["pack_preview"]["seconds"] / median["preview"]["seconds"]
        verdicts["pack_preview_ratio"] = round(pack, 2)
        verdicts["met"]["pack_preview_ratio"] = pack <= TARGETS["pack_preview_ratio"]
    return verdicts


def _print(results: dict) -> None:
    if "skipped" in results:
        print(f"bench-deploy: skipped ({results['skipped']})")
        return
    median = results["median"]
    print(f"bench-deploy: {results['mode']}, median of {len(results['runs'])} runs")
    print(f"  images built and pushed (outside Pulumi): {median['build_and_push_s']:.1f} s")
    rows = (
        ("floor", "empty program no-op up", ""),
        ("cold_up", "cold up to greeting", f"target <= {TARGETS['cold_up_s']:.0f} s"),
        ("noop_up", "no-op up", f"{results['noop_up_ratio']}x the floor (target <= 1.5x)"),
        ("change", "greeter change to serving", f"target <= {TARGETS['change_s']:.0f} s"),
        ("preview", "no-op preview", ""),
        (
            "pack_preview",
            "no-op preview with the pack",
            f"{results.get('pack_preview_ratio')}x the preview (target <= 1.2x)",
        ),
        ("destroy", "destroy", f"target <= {TARGETS['destroy_s']:.0f} s"),
    )
    if "pack_skipped" in results:
        print(f"  policy pack: skipped ({results['pack_skipped']})")
    for key, title, target in rows:
        if key not in median:
            continue
        step = median[key]
        print(f"  {title:<28} {step['seconds']:6.1f} s   {target}")
        print(_phases(step))
        for resource, seconds in list(step.get("resources", {}).items())[:6]:
            print(f"        {seconds:6.2f} s  {resource}")


def _phases(step: dict) -> str:
    """A step's phases on one line: "to first step 0.61, program startup 0.42, …"."""
    parts = {
        k: v
        for k, v in step.items()
        if k.endswith("_s") and k != "median_s" and not isinstance(v, list)
    }
    return "      " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.2f}" for k, v in parts.items())


def _print_make(results: dict) -> None:
    if "skipped" in results:
        print(f"make up/down: skipped ({results['skipped']})")
        return
    for path, figures in results.items():
        if "skipped" in figures:
            print(f"make, {path}: skipped ({figures['skipped']})")
            continue
        print(f"make, {path} (wall clock of the make command):")
        for step, timed in figures.items():
            target = MAKE_TARGETS.get((path, step))
            print(f"  {step.replace('_', ' '):<28} {timed['seconds']:6.1f} s"
                  + (f"   target <= {target:.0f} s" if target else ""))  # fmt: skip
            print(_phases(timed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "deploy.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--make-runs", type=int, default=3, help="no-op `make up`s (0: no make part)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as work:
        results = {"uptime_before": report.uptime(), **bench(args.runs, Path(work))}
    if args.make_runs:
        results["make"] = make_part(args.make_runs)
    results |= {"uptime_after": report.uptime(), "targets": TARGETS}
    if "median" in results:
        results |= _verdicts(results["median"])
    _print(results)
    if "make" in results:
        _print_make(results["make"])
    report.write(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
