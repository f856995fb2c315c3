"""books-api as the image runs it (`python -m books_api`: gunicorn, its gunicorn_conf), for real."""

import json
import signal
import subprocess

import pytest
import requests
from services_support import answers, free_port, start_gunicorn, wait_until


@pytest.fixture
def gunicorn_factory():
    processes = []

    def start(port: int, **env) -> subprocess.Popen:
        process = start_gunicorn(port, **env)
        processes.append(process)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), what="gunicorn to answer")
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


def test_serves_books_logs_json_and_sums_metrics_over_workers(gunicorn_factory):
    port = free_port()
    process = gunicorn_factory(port, GUNICORN_WORKERS=2)
    base = f"http://127.0.0.1:{port}"
    for _ in range(20):  # new connections, so both workers take some
        assert (
            requests.get(f"{base}/api/v1/resources/books", timeout=5).json()["books"][0]["id"] == 1
        )
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith(
            'http_request_duration_seconds_count{method="GET",route="/api/v1/resources/books",status="200"}'
        )
    )
    assert float(line.rsplit(" ", 1)[1]) == 20
    output = stop(process)
    records = [json.loads(line) for line in output.splitlines()]
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    books = [r for r in access if r["path"] == "/api/v1/resources/books"]
    assert len(books) == 20
    assert {"method": "GET", "status": "200", "remote": "127.0.0.1"}.items() <= books[0].items()
    assert any(r["message"].startswith("Booting worker") for r in records)


def test_bad_environment_stops_gunicorn_naming_the_variable():
    process = start_gunicorn(free_port(), GUNICORN_WORKERS="0")
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "invalid configuration:" in output
    assert "\nGUNICORN_WORKERS\n" in output
