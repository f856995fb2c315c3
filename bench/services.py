"""Service benchmarks (`make bench`): loopback only, bounded duration; prints figures, writes JSON.

books-api (its image's gunicorn config, its books in a PostgreSQL server of the bench's own, as
deployed) against (a) the seed's Flask development server and (b) an empty Flask app answering the
same path with the same bytes under the same gunicorn config, with wrk on GET
/api/v1/resources/books; books-api with its books in memory shows what the database costs a
request. Then POST throughput, wrk adding books, on PostgreSQL and in memory. The greeter as
shipped (health, reflection, the decoding interceptor) against a seed-shaped server
(ThreadPoolExecutor(10), nothing else), one asyncio client. Servers take turns in short slices
and each ratio is the median of back-to-back pairs, so the load of a shared machine hits both
sides alike. Tracing's cost: books-api (on PostgreSQL) and the greeter each once more with an OTLP
collector named (OTEL_EXPORTER_OTLP_ENDPOINT: a real OTLP/gRPC receiver in this process, which
keeps what it gets), so spans are made, sampled as deployed and exported. Where the machine has
two CPUs or more, the servers run on one CPU and the load
generators on another, so one run compares with the next.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import requests

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
COMMON_SRC = ROOT / "services" / "common" / "src"
sys.path[:0] = [str(COMMON_SRC)]

import example_pb2  # noqa: E402
import example_pb2_grpc  # noqa: E402

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "services")]
from services_support import OtlpReceiver  # noqa: E402
from testkit import PostgresServer, postgres_bin_dir  # noqa: E402

BOOKS_PATH = "/api/v1/resources/books"


def python_path(service: str) -> str:
    """A service's PYTHONPATH as in its image: the shared code and stubs, then its own package."""
    return os.pathsep.join(str(ROOT / "services" / d / "src") for d in ("common", service))


GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:books_api.gunicorn_conf"]
# name -> (command, PYTHONPATH, extra env); DATABASE_URL is the bench's own PostgreSQL (main).
HTTP_SERVERS = {
    "books_api_gunicorn": (GUNICORN, python_path("books-api"), {"DATABASE_URL": None}),
    "books_api_traced": (
        GUNICORN,
        python_path("books-api"),
        {"DATABASE_URL": None, "OTEL_EXPORTER_OTLP_ENDPOINT": None},
    ),
    "books_api_in_memory": (GUNICORN, python_path("books-api"), {}),
    "seed_dev_server": ([sys.executable, str(BENCH / "seed_books.py")], None, {}),
    "empty_flask_gunicorn": (
        [*GUNICORN, "empty_flask:app"],
        os.pathsep.join((str(BENCH), python_path("books-api"))),
        {},
    ),
}
POST_SERVERS = ("books_api_gunicorn", "books_api_in_memory")
POST_SCRIPT = BENCH / "post_book.lua"
GRPC_SERVERS = {
    "greeter": ([sys.executable, "-m", "greeter"], python_path("greeter"), {}),
    "greeter_traced": (
        [sys.executable, "-m", "greeter"],
        python_path("greeter"),
        {"OTEL_EXPORTER_OTLP_ENDPOINT": None},
    ),
    "seed_greeter": ([sys.executable, str(BENCH / "seed_greeter.py")], COMMON_SRC, {}),
}
# Issue 30's (listing, POST) and issue 31's (tracing on and exporting vs off) targets.
TARGETS = {
    "books_vs_seed": 1.5, "books_vs_empty_flask": 0.8, "greeter_vs_seed": 0.95,
    "tracing_listing": 0.9, "tracing_greeter": 0.9,
}  # fmt: skip
POST_TARGET = 1500  # books added per second, on PostgreSQL
PAIRS = {
    "books_vs_seed": ("books_api_gunicorn", "seed_dev_server"),
    "database_vs_memory": ("books_api_gunicorn", "books_api_in_memory"),
    "books_vs_empty_flask": ("books_api_gunicorn", "empty_flask_gunicorn"),
    "greeter_vs_seed": ("greeter", "seed_greeter"),
    "tracing_listing": ("books_api_traced", "books_api_gunicorn"),
    "tracing_greeter": ("greeter_traced", "greeter"),
}
# Servers on the last CPU, load generators (wrk, this process's gRPC client) on the first;
# `--no-pin` lets every process use every CPU.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CPUS[-1]} if len(CPUS) > 1 else set(CPUS)
LOAD_CPUS = {CPUS[0]} if len(CPUS) > 1 else set(CPUS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S607


@contextmanager
def server(cmd: list[str], pythonpath, extra_env: dict, port: int, ready):
    """Run one server in its own process group on a loopback port until the block ends."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONSUL_", "GREETER_", "DATABASE_", "PG"))
    }
    env.update(PORT=str(port), GRPC_PORT=str(port), LOG_LEVEL="WARNING", **extra_env)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    process = subprocess.Popen(  # noqa: S603 (commands defined in this file)
        ["taskset", "--cpu-list", cpu_list(SERVER_CPUS), *cmd],  # noqa: S607 (forks inherit it)
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{cmd} did not start (exit code {process.poll()})")
            time.sleep(0.2)
        yield process.pid  # also the process group of everything the server forks
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def cpu_list(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


def http_ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}{BOOKS_PATH}", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def grpc_ready(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1)
            return True
        except grpc.FutureTimeoutError:
            return False


def wrk(port: int, seconds: int, connections: int, script: Path | None = None) -> dict:
    url = f"http://127.0.0.1:{port}{BOOKS_PATH}"
    cmd = ["taskset", "--cpu-list", cpu_list(LOAD_CPUS)]
    cmd += ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += [*(["-s", str(script)] if script else []), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout  # noqa: S603
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "done": int(re.search(r"(\d+) requests in", out).group(1)),
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "latency_p50": latency.get("50"),
        "latency_p99": latency.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": bool(re.search(r"Socket errors", out)),
    }


async def grpc_load(port: int, seconds: float, concurrency: int) -> dict:
    """`concurrency` callers on one channel, each calling again as soon as its reply arrives."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = example_pb2_grpc.ExampleServiceStub(channel)
        request = example_pb2.ClientMessage(client_message="bench")
        deadline = time.monotonic() + seconds

        async def caller() -> int:
            calls = 0
            while time.monotonic() < deadline:
                reply = await stub.GetServerResponse(request, timeout=5)
                assert reply.message == "Hello, bench!"
                calls += 1
            return calls

        started = time.monotonic()
        counts = await asyncio.gather(*(caller() for _ in range(concurrency)))
        return {"done": sum(counts), "per_second": sum(counts) / (time.monotonic() - started)}


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the processes of one process group."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_all(stack: ExitStack, servers: dict, ready) -> dict[str, tuple[int, int]]:
    """Start every server of a comparison at once (port, process group); the others idle while one
    is measured."""
    started = {}
    for name, (cmd, path, env) in servers.items():
        port = free_port()
        started[name] = (port, stack.enter_context(server(cmd, path, env, port, ready)))
    return started


def check_same_json(started: dict[str, tuple[int, int]]) -> None:
    """The comparison is only fair if books-api and the seed answer with the same document."""
    bodies = [
        requests.get(f"http://127.0.0.1:{started[name][0]}{BOOKS_PATH}", timeout=5).json()
        for name in ("books_api_gunicorn", "books_api_in_memory", "seed_dev_server")
    ]
    if not bodies[0] == bodies[1] == bodies[2]:
        raise SystemExit(f"books-api and the seed disagree: {bodies}")


def measure(started: dict[str, tuple[int, int]], run, args) -> dict[str, list[dict]]:
    """Short slices, servers taking turns (order reversed every other slice), so that the machine's
    changing load falls on both sides of a ratio alike. Each slice also records the server's CPU
    time, for a per-CPU-second figure that other load on the machine hardly moves."""
    runs: dict[str, list[dict]] = {name: [] for name in started}
    for port, _ in started.values():
        run(port, 2)  # warm-up: workers imported, connections open
    for slice_no in range(args.slices):
        for name in list(started)[:: 1 if slice_no % 2 == 0 else -1]:
            port, pgid = started[name]
            cpu_before = group_cpu_seconds(pgid)
            result = run(port, args.seconds)
            cpu = group_cpu_seconds(pgid) - cpu_before
            result |= {"server_cpu_seconds": cpu, "per_server_cpu_second": result["done"] / cpu}
            runs[name].append(result)
            print(f"slice {slice_no + 1} {name}: {result}", flush=True)
    return runs


def ratio(runs: dict[str, list[dict]], key: str, ours: str, base: str) -> float:
    """Median over slices of ours/base, each pair measured back to back."""
    return statistics.median(a[key] / b[key] for a, b in zip(runs[ours], runs[base], strict=True))


def measure_all(args) -> tuple[dict, dict]:
    """Every server's slices: the listing's and POST's (HTTP), then the gRPC ones."""
    with ExitStack() as stack:
        database = PostgresServer(postgres_bin_dir() or sys.exit("run `make postgres`")).init()
        stack.callback(database.remove)
        for name in ("books_api_gunicorn", "books_api_traced"):
            HTTP_SERVERS[name][2]["DATABASE_URL"] = database.dsn
        started = start_all(stack, HTTP_SERVERS, http_ready)
        check_same_json(started)
        runs = measure(started, lambda port, sec: wrk(port, sec, args.connections), args)
        posting = {name: started[name] for name in POST_SERVERS}
        posts = measure(
            posting, lambda port, sec: wrk(port, sec, args.connections, POST_SCRIPT), args
        )
    with ExitStack() as stack:
        started = start_all(stack, GRPC_SERVERS, grpc_ready)
        grpc_run = lambda port, sec: asyncio.run(grpc_load(port, sec, args.grpc_concurrency))  # noqa: E731
        runs |= measure(started, grpc_run, args)
    return runs, posts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="per slice and server")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--grpc-concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "services.json")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin servers and load generators to separate CPUs",
    )
    args = parser.parse_args()
    if args.no_pin:
        SERVER_CPUS.update(CPUS)
        LOAD_CPUS.update(CPUS)
    os.sched_setaffinity(0, LOAD_CPUS)  # the gRPC load generator runs in this process
    # A TERM (e.g. from a timeout) still runs the clean-up that stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load_before = load_average()
    collector = OtlpReceiver()
    for name in ("books_api_traced", "greeter_traced"):
        servers = HTTP_SERVERS if name in HTTP_SERVERS else GRPC_SERVERS
        servers[name][2]["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
    with collector:
        runs, posts = measure_all(args)
        exported = Counter(span.service for span in collector.received(lambda _: True))

    def medians(key: str) -> dict[str, float]:
        return {name: statistics.median(r[key] for r in slices) for name, slices in runs.items()}

    def ratios(key: str) -> dict[str, float]:
        return {pair: ratio(runs, key, ours, base) for pair, (ours, base) in PAIRS.items()}

    throughput, per_cpu = ratios("per_second"), ratios("per_server_cpu_second")
    result = {
        "settings": vars(args)
        | {
            "out": str(args.out),
            "cpus": os.cpu_count(),
            "server_cpus": sorted(SERVER_CPUS),
            "load_generator_cpus": sorted(LOAD_CPUS),
        },
        "load_before": load_before,
        "load_after": load_average(),
        "median_per_second": medians("per_second"),
        "median_per_server_cpu_second": medians("per_server_cpu_second"),
        "throughput_ratios": throughput,
        "per_cpu_ratios": per_cpu,
        "targets": TARGETS,
        "throughput_met": {k: throughput[k] >= TARGETS[k] for k in TARGETS},
        "spans_exported": dict(exported),
        "post_target": POST_TARGET,
        "post_median_per_second": {
            name: statistics.median(r["per_second"] for r in slices)
            for name, slices in posts.items()
        },
        "slices": runs,
        "post_slices": posts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load before: {load_before}\nload after:  {result['load_after']}")
    print(f"servers on CPU {cpu_list(SERVER_CPUS)}, load generators on CPU {cpu_list(LOAD_CPUS)}")
    print(
        f"{'':>20} {'per second':>12} {'per server CPU-s':>17}  (medians of {args.slices} slices)"
    )
    for name, value in result["median_per_second"].items():
        print(f"{name:>20} {value:12.0f} {result['median_per_server_cpu_second'][name]:17.0f}")
    print(f"{'':>20} {'throughput':>12} {'per CPU-s':>17}  target")
    for key, target in TARGETS.items():
        verdict = "met" if throughput[key] >= target else "NOT met"
        print(f"{key:>20} {throughput[key]:11.2f}x {per_cpu[key]:16.2f}x  {target}x ({verdict})")
    cost = "database_vs_memory"
    print(f"{cost:>20} {throughput[cost]:11.2f}x {per_cpu[cost]:16.2f}x  (what PostgreSQL costs)")
    for name, value in result["post_median_per_second"].items():
        print(f"{'POST ' + name:>20} {value:12.0f}")
    print(f"{'':>20} POST target on PostgreSQL: {POST_TARGET}/s")
    print(f"spans the collector received (tracing's servers): {dict(exported)}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
