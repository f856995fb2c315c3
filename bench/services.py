"""Service benchmarks (`make bench`): loopback only, bounded duration; prints figures, writes JSON.

books-api (its image's gunicorn config) against (a) the seed's Flask development server and (b) a
bare hello-world WSGI app under the same gunicorn config, with wrk on GET /api/v1/resources/books.
The greeter against a seed-shaped server (ThreadPoolExecutor(10), nothing else), one asyncio client.
Both sides of every ratio run in the same round, one after the other, so machine load hits both.
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
from contextlib import contextmanager
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


def check_same_json() -> None:
    """The comparison is only fair if books-api and the seed answer with the same document."""
    bodies = []
    for name in ("books_api_gunicorn", "seed_dev_server"):
        cmd, path = HTTP_SERVERS[name]
        port = free_port()
        with server(cmd, path, port, http_ready):
            bodies.append(requests.get(f"http://127.0.0.1:{port}{BOOKS_PATH}", timeout=5).json())
    if bodies[0] != bodies[1]:
        raise SystemExit(f"books-api and the seed disagree: {bodies}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--grpc-concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "services.json")
    args = parser.parse_args()

    check_same_json()
    load_before = load_average()
    runs: dict[str, list[dict]] = {name: [] for name in (*HTTP_SERVERS, *GRPC_SERVERS)}
    for round_no in range(1, args.rounds + 1):
        # Alternate the order each round, so a load trend on the machine favours no side.
        order = 1 if round_no % 2 else -1
        for name, (cmd, path) in list(HTTP_SERVERS.items())[::order]:
            port = free_port()
            with server(cmd, path, port, http_ready):
                wrk(port, 2, args.connections)  # warm-up: workers imported, connections open
                runs[name].append(wrk(port, args.seconds, args.connections))
            print(f"round {round_no} {name}: {runs[name][-1]}", flush=True)
        for name, (cmd, path) in list(GRPC_SERVERS.items())[::order]:
            port = free_port()
            with server(cmd, path, port, grpc_ready):
                asyncio.run(grpc_load(port, 2, args.grpc_concurrency))
                runs[name].append(asyncio.run(grpc_load(port, args.seconds, args.grpc_concurrency)))
            print(f"round {round_no} {name}: {runs[name][-1]}", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    rps = {name: median(name, "requests_per_second") for name in HTTP_SERVERS}
    cps = {name: median(name, "calls_per_second") for name in GRPC_SERVERS}
    ratios = {
        "books_vs_seed": rps["books_api_gunicorn"] / rps["seed_dev_server"],
        "books_vs_hello": rps["books_api_gunicorn"] / rps["hello_wsgi_gunicorn"],
        "greeter_vs_seed": cps["greeter"] / cps["seed_greeter"],
    }
    result = {
        "settings": vars(args) | {"out": str(args.out), "cpus": os.cpu_count()},
        "load_before": load_before,
        "load_after": load_average(),
        "median_requests_per_second": rps,
        "median_calls_per_second": cps,
        "ratios": ratios,
        "targets": TARGETS,
        "met": {k: ratios[k] >= TARGETS[k] for k in TARGETS},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load before: {load_before}\nload after:  {result['load_after']}")
    for name, value in {**rps, **cps}.items():
        unit = "req/s" if name in rps else "calls/s"
        print(f"{name:>22}: {value:10.0f} {unit} (median of {args.rounds})")
    for key, value in ratios.items():
        verdict = "met" if result["met"][key] else "NOT met"
        print(f"{key:>22}: {value:6.2f}x (target {TARGETS[key]}x, {verdict})")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
