"""Service benchmarks (`make bench`): loopback only, bounded duration; prints figures, writes JSON.

books-api (its image's gunicorn config) against (a) the seed's Flask development server and (b) a
bare hello-world WSGI app under the same gunicorn config, with wrk on GET /api/v1/resources/books.
The greeter against a seed-shaped server (ThreadPoolExecutor(10), nothing else), one asyncio client.
Servers take turns in short slices and each ratio is the median of back-to-back pairs, so the load
of a shared machine hits both sides alike.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import requests

ROOT = Path(__file__).resolve().parents[1]
BENCH, BOOKS_API, GREETER = (
    ROOT / "bench",
    ROOT / "services" / "books-api",
    ROOT / "services" / "greeter",
)
sys.path[:0] = [str(GREETER / "src")]

import example_pb2  # noqa: E402
import example_pb2_grpc  # noqa: E402

BOOKS_PATH = "/api/v1/resources/books"
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", str(BOOKS_API / "gunicorn.conf.py")]
HTTP_SERVERS = {
    "books_api_gunicorn": (GUNICORN, BOOKS_API / "src"),
    "seed_dev_server": ([sys.executable, str(BENCH / "seed_books.py")], None),
    "hello_wsgi_gunicorn": ([*GUNICORN, "hello_wsgi:app"], f"{BENCH}:{BOOKS_API / 'src'}"),
}
GRPC_SERVERS = {
    "greeter": ([sys.executable, "-m", "greeter"], GREETER / "src"),
    "seed_greeter": ([sys.executable, str(BENCH / "seed_greeter.py")], GREETER / "src"),
}
TARGETS = {"books_vs_seed": 3.0, "books_vs_hello": 0.8, "greeter_vs_seed": 0.9}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S607


@contextmanager
def server(cmd: list[str], pythonpath, port: int, ready):
    """Run one server in its own process group on a loopback port until the block ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "GREETER_"))}
    env.update(PORT=str(port), GRPC_PORT=str(port), LOG_LEVEL="WARNING")
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    process = subprocess.Popen(  # noqa: S603 (commands defined in this file)
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{cmd} did not start (exit code {process.poll()})")
            time.sleep(0.2)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def http_ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}{BOOKS_PATH}", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def grpc_ready(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1)
            return True
        except grpc.FutureTimeoutError:
            return False


def wrk(port: int, seconds: int, connections: int) -> dict:
    url = f"http://127.0.0.1:{port}{BOOKS_PATH}"
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout  # noqa: S603
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
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
        return {"calls_per_second": sum(counts) / (time.monotonic() - started)}


def start_all(stack: ExitStack, servers: dict, ready) -> dict[str, int]:
    """Start every server of a comparison at once; they idle while another one is measured."""
    ports = {}
    for name, (cmd, path) in servers.items():
        ports[name] = free_port()
        stack.enter_context(server(cmd, path, ports[name], ready))
    return ports


def check_same_json(ports: dict[str, int]) -> None:
    """The comparison is only fair if books-api and the seed answer with the same document."""
    bodies = [
        requests.get(f"http://127.0.0.1:{ports[name]}{BOOKS_PATH}", timeout=5).json()
        for name in ("books_api_gunicorn", "seed_dev_server")
    ]
    if bodies[0] != bodies[1]:
        raise SystemExit(f"books-api and the seed disagree: {bodies}")


def measure(servers: dict, ports: dict[str, int], run, args) -> dict[str, list[dict]]:
    """Short slices, servers taking turns (order reversed every other slice), so that the machine's
    changing load falls on both sides of a ratio alike."""
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for name in servers:
        run(ports[name], 2)  # warm-up: workers imported, connections open
    for slice_no in range(args.slices):
        for name in list(servers)[:: 1 if slice_no % 2 == 0 else -1]:
            runs[name].append(run(ports[name], args.seconds))
            print(f"slice {slice_no + 1} {name}: {runs[name][-1]}", flush=True)
    return runs


def ratio(runs: dict[str, list[dict]], key: str, ours: str, base: str) -> float:
    """Median over slices of ours/base, each pair measured back to back."""
    return statistics.median(a[key] / b[key] for a, b in zip(runs[ours], runs[base], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="per slice and server")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--grpc-concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "services.json")
    args = parser.parse_args()
    # A TERM (e.g. from a timeout) still runs the clean-up that stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load_before = load_average()
    with ExitStack() as stack:
        ports = start_all(stack, HTTP_SERVERS, http_ready)
        check_same_json(ports)
        http = measure(
            HTTP_SERVERS, ports, lambda port, sec: wrk(port, sec, args.connections), args
        )
    with ExitStack() as stack:
        ports = start_all(stack, GRPC_SERVERS, grpc_ready)
        calls = measure(
            GRPC_SERVERS,
            ports,
            lambda port, sec: asyncio.run(grpc_load(port, sec, args.grpc_concurrency)),
            args,
        )

    rps = {n: statistics.median(r["requests_per_second"] for r in http[n]) for n in http}
    cps = {n: statistics.median(r["calls_per_second"] for r in calls[n]) for n in calls}
    ratios = {
        "books_vs_seed": ratio(
            http, "requests_per_second", "books_api_gunicorn", "seed_dev_server"
        ),
        "books_vs_hello": ratio(
            http, "requests_per_second", "books_api_gunicorn", "hello_wsgi_gunicorn"
        ),
        "greeter_vs_seed": ratio(calls, "calls_per_second", "greeter", "seed_greeter"),
    }
    result = {
        "settings": vars(args) | {"out": str(args.out), "cpus": os.cpu_count()},
        "load_before": load_before,
        "load_after": load_average(),
        "median_requests_per_second": rps,
        "median_calls_per_second": cps,
        "median_ratios": ratios,
        "targets": TARGETS,
        "met": {k: ratios[k] >= TARGETS[k] for k in TARGETS},
        "slices": {**http, **calls},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load before: {load_before}\nload after:  {result['load_after']}")
    for name, value in {**rps, **cps}.items():
        unit = "req/s" if name in rps else "calls/s"
        print(f"{name:>22}: {value:10.0f} {unit} (median of {args.slices} slices)")
    for key, value in ratios.items():
        verdict = "met" if result["met"][key] else "NOT met"
        print(
            f"{key:>22}: {value:6.2f}x (target {TARGETS[key]}x, {verdict}; median per-slice ratio)"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
