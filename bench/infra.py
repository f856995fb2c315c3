"""Program benchmark (`make bench-infra`): prints figures and writes them as JSON.

Program evaluation under Pulumi's mocks: the default (dev) stack, and a program of 0, 10, 50 and
100 copies of the Microservice component. Per-copy cost = (t(N) - t(0)) / N; growth is linear when
it stays flat as N grows (the least-squares slope and R^2 are printed too). Figures are the best
of --repeat runs. The real engine's figures are `make bench-deploy`'s (bench/deploy.py).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "infra")]

import pulumi  # noqa: E402
import report  # noqa: E402
from infra_harness import PROFILES, RecordingMocks, deploy, infra_module  # noqa: E402
from pulumi.runtime.mocks import MockMonitor  # noqa: E402

COPIES = (0, 10, 50, 100)
GREETER_REF = "localhost/bench/greeter@sha256:" + "0" * 64


def _times(action, repeat: int, collect: bool = True) -> list[float]:
    """Wall times; `collect=False` turns CPython's cyclic GC off during each run."""
    times = []
    for _ in range(repeat):
        gc.collect()  # the previous run's garbage is not this run's cost
        if not collect:
            gc.disable()
        try:
            start = time.perf_counter()
            action()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times


def _best(action, repeat: int, collect: bool = True) -> float:
    """Pure CPU work under mocks: the fastest run is the one the machine's other load disturbed
    least (as timeit reports)."""
    return min(_times(action, repeat, collect))


def _copies_program(copies: int) -> None:
    """`copies` Microservices with the greeter's args: only the component's own cost varies."""
    catalog, config, images, workloads = (
        infra_module(m) for m in ("catalog", "config", "images", "workloads")
    )
    microservice, consul_server = infra_module("microservice"), infra_module("consul_server")
    services = catalog.load()
    settings = config.load(services)
    greeter = services.services["greeter"]
    args = workloads.service_args(
        greeter,
        services,
        settings,
        namespace="bench",
        image=images.build("greeter", services.root, settings.images, GREETER_REF),
        consul=consul_server.deploy(settings, pulumi.ResourceOptions()),
        pull_secret=None,
    )
    for i in range(copies):
        microservice.Microservice(f"svc-{i}", args)


def _evaluate_copies(copies: int) -> int:
    """Runs the copies program under mocks; returns how many resources it registered."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, "bench", "bench", preview=False, monitor=MockMonitor(mocks))
    config = PROFILES["kind"] | {
        "consulInstall": "false",
        "consulAddress": "consul:8500",
        "consulExternalCidr": "10.0.0.0/8",
    }
    pulumi.runtime.set_all_config({f"consul-microservices:{k}": v for k, v in config.items()})

    @pulumi.runtime.test
    def run():
        _copies_program(copies)
        return pulumi.Output.from_input(None)

    run()
    return len(mocks.resources)


def _copies_rows(repeat: int, collect: bool) -> dict:
    rows = []
    for copies in COPIES:
        resources = _evaluate_copies(copies)
        seconds = _best(lambda n=copies: _evaluate_copies(n), repeat, collect)
        rows.append({"copies": copies, "resources": resources, "seconds": round(seconds, 4)})
    base = rows[0]["seconds"]
    for row in rows[1:]:
        row["per_copy_ms"] = round(1000 * (row["seconds"] - base) / row["copies"], 2)
    xs, ys = [r["copies"] for r in rows], [r["seconds"] for r in rows]
    slope, intercept = statistics.linear_regression(xs, ys)
    return {
        "rows": rows,
        "slope_ms_per_copy": round(1000 * slope, 2),
        "intercept_s": round(intercept, 4),
        "r_squared": round(statistics.correlation(xs, ys) ** 2, 5),
    }


def bench_mocks(repeat: int) -> dict:
    """The copies twice: as Python runs them, and with the cyclic GC off. Full collections scan
    every live object, and the live objects grow with the copies, so only the second isolates
    the program's own per-copy cost."""
    return {
        "default_stack_s": round(_best(lambda: deploy(PROFILES["kind"]), repeat), 4),
        "copies_gc_on": _copies_rows(repeat, collect=True),
        "copies_gc_off": _copies_rows(repeat, collect=False),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "infra.json")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure")
    args = parser.parse_args()

    results = {"uptime_before": report.uptime(), "mocks": bench_mocks(args.repeat)}
    results["uptime_after"] = report.uptime()
    _print(results)
    report.write(args.out, results)
    return 0


def _print(results: dict) -> None:
    mocks = results["mocks"]
    print(f"mocks: default stack evaluated in {mocks['default_stack_s'] * 1000:.0f} ms")
    for key, title in (("copies_gc_on", "cyclic GC on"), ("copies_gc_off", "cyclic GC off")):
        fit = mocks[key]
        print(f"  Microservice copies, {title}:")
        for row in fit["rows"]:
            per_copy = f"{row['per_copy_ms']:.2f} ms/copy" if "per_copy_ms" in row else "baseline"
            print(f"  {row['copies']:>5} copies, {row['resources']:>4} resources: "
                  f"{row['seconds'] * 1000:8.0f} ms  ({per_copy})")  # fmt: skip
        print(f"    fit: {fit['slope_ms_per_copy']} ms/copy, R^2 = {fit['r_squared']}")


if __name__ == "__main__":
    sys.exit(main())
