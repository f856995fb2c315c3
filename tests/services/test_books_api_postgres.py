"""books-api's books in a real PostgreSQL server on loopback (`make postgres` installs it): every
worker and restart sees what was acknowledged; a database outage is 503s, never a 500."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from books_api.app import create_app
from books_api.config import Settings
from books_api.store import SEED_BOOKS, PostgresBooks
from services_support import SteadyLoad, answers, free_port, start_gunicorn, wait_until

SEED = [{"id": i, **book} for i, book in enumerate(SEED_BOOKS, start=1)]


def client_for(postgres):
    return create_app(Settings(database_url=postgres.dsn)).test_client()


class BooksServers:
    """books-api under gunicorn (2 workers x 4 threads) on the test's database, logs in files."""

    def __init__(self, dsn: str, logs: Path) -> None:
        self.dsn, self.logs, self.processes = dsn, logs, []

    def start(self, **env: str) -> str:
        port = free_port()
        with (self.logs / f"gunicorn-{port}.log").open("w") as log:
            process = start_gunicorn(
                port, log=log, GUNICORN_WORKERS=2, GUNICORN_THREADS=4, DATABASE_URL=self.dsn, **env
            )
        self.processes.append(process)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), what="gunicorn")
        return f"http://127.0.0.1:{port}"

    def stop(self) -> list[dict]:
        """Stops every server; their log records."""
        for process in self.processes:
            process.terminate()
            process.wait(timeout=30)
        self.processes = []
        lines = (line for log in self.logs.glob("gunicorn-*.log") for line in log.open())
        return [json.loads(line) for line in lines]


@pytest.fixture
def books_gunicorn(postgres, tmp_path):
    servers = BooksServers(postgres.dsn, tmp_path)
    yield servers
    servers.stop()


def rows(postgres) -> list[tuple]:
    with psycopg.connect(postgres.dsn) as conn:
        return conn.execute("SELECT id, title, author FROM books ORDER BY id").fetchall()


def test_the_schema_and_the_seed_are_created_once_by_concurrent_start_ups(postgres):
    stores = [PostgresBooks(postgres.dsn, pool_size=2, timeout=5) for _ in range(8)]
    app = create_app(Settings())
    with app.app_context(), ThreadPoolExecutor(8) as pool:
        listings = list(pool.map(lambda store: json.loads(store.listing()), stores))
    assert all(listing == {"books": SEED} for listing in listings)
    assert rows(postgres) == [(b["id"], b["title"], b["author"]) for b in SEED]


def test_the_routes_keep_their_contract_on_the_database(postgres):
    client = client_for(postgres)
    assert client.get("/api/v1/resources/books").get_json() == {"books": SEED}
    title, author = "  Ünïcödé 书名 'quoted'; DROP TABLE books;--  ", "O'Brien \\ %s {x}"
    created = client.post("/api/v1/resources/books", json={"title": title, "author": author})
    assert created.status_code == 201
    book = created.get_json()
    assert book == {"id": 3, "title": title.strip(), "author": author}  # stripped, else as given
    assert created.headers["Location"].endswith("/api/v1/resources/books/3")
    assert client.get("/api/v1/resources/books/3").get_json() == book
    assert client.get("/api/v1/resources/books/4").status_code == 404
    assert client.get(f"/api/v1/resources/books/{2**70}").status_code == 404
    bad = client.post("/api/v1/resources/books", json={"title": "", "author": "x", "x": 1})
    assert bad.status_code == 400
    assert set(bad.get_json()["error"]["fields"]) == {"title", "x"}
    assert rows(postgres)[-1] == (3, title.strip(), author)
    assert client.get("/readyz").get_json()["status"] == "ready"


def test_a_post_is_seen_by_every_worker(books_gunicorn):
    base = books_gunicorn.start()
    created = requests.post(
        f"{base}/api/v1/resources/books", json={"title": "Shared", "author": "All"}, timeout=5
    ).json()
    seen = [  # new connections, so both workers answer some
        created in requests.get(f"{base}/api/v1/resources/books", timeout=5).json()["books"]
        for _ in range(50)
    ]
    assert seen == [True] * 50


def test_concurrent_posts_are_each_listed_once_and_survive_a_restart(postgres, books_gunicorn):
    base = books_gunicorn.start()

    def post(i: int) -> dict:
        with requests.Session() as session:
            answer = session.post(
                f"{base}/api/v1/resources/books", json={"title": f"t{i}", "author": "a"}, timeout=10
            )
        assert answer.status_code == 201
        return answer.json()

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(post, range(200)))
    listed = requests.get(f"{base}/api/v1/resources/books", timeout=5).json()["books"]
    titles = Counter(book["title"] for book in listed)
    assert all(titles[f"t{i}"] == 1 for i in range(200))
    assert len({book["id"] for book in created}) == 200
    assert len(listed) == len(SEED) + 200
    postgres.stop()
    postgres.start()
    again = books_gunicorn.start()  # a new server on the restarted database
    assert requests.get(f"{again}/api/v1/resources/books", timeout=5).json()["books"] == listed


def test_a_database_outage_is_503s_and_unready_then_heals_without_a_restart(
    postgres, books_gunicorn
):
    # An outage longer than the requests' wait for the database (the next test: a shorter one).
    base = books_gunicorn.start(DATABASE_TIMEOUT_SECONDS="1")
    with SteadyLoad(f"{base}/api/v1/resources/books", clients=8) as load:
        time.sleep(1)
        postgres.stop()
        stopped = time.monotonic()
        wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=10).status_code == 503,
            timeout=10,
            what="readiness to fail",
        )
        unready = requests.get(f"{base}/readyz", timeout=10).json()
        time.sleep(2)
        restarting = time.monotonic()
        postgres.start()
        wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=10).status_code == 200,
            timeout=15,
            what="readiness to come back",
        )
        time.sleep(1)
    counts = Counter(status for *_, status in load.answers)
    assert set(counts) <= {200, 503}, counts
    assert unready == {"status": "unready", "database": "unreachable"}
    during = load.between(stopped, restarting)
    assert during and set(during) == {503}, Counter(during)
    assert load.answers[-1][2] == 200
    records = books_gunicorn.stop()
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    unavailable = [r for r in records if r["message"] == "books database unavailable"]
    assert unavailable and {r["level"] for r in unavailable} == {"WARNING"}


def test_a_database_back_within_the_timeout_costs_reads_time_not_errors(postgres, books_gunicorn):
    """As when the database's pod moves to another node: its connections end, it is away for a
    moment, and reads wait for it (up to DATABASE_TIMEOUT_SECONDS) instead of failing."""
    base = books_gunicorn.start()
    with SteadyLoad(f"{base}/api/v1/resources/books", clients=8) as load:
        time.sleep(1)
        postgres.stop()
        stopped = time.monotonic()
        time.sleep(2.5)  # 2.7 s from stop to ready on kind, the database's node drained
        postgres.start()
        time.sleep(1)
    counts = Counter(status for *_, status in load.answers)
    assert counts.keys() == {200}, counts
    waited = [answered - sent for sent, answered, _ in load.answers if answered > stopped]
    assert max(waited) >= 1, "no read ran while the database was away"
    records = books_gunicorn.stop()
    assert [r for r in records if r["message"] == "books database unavailable"] == []


def test_writes_after_a_database_restart_go_to_new_connections_not_the_ended_ones(
    postgres, books_gunicorn
):
    """A restart ends every pooled connection while it sits idle. A POST must not be sent on one:
    it would fail after sending, and a write is never sent twice, so it would be a 503. The pool's
    check before lending finds them ended without a round trip (books_api.store._still_open)."""
    base = books_gunicorn.start()
    with ThreadPoolExecutor(8) as pool:  # every thread's connection opened and back in the pool
        assert set(pool.map(lambda _: answers(f"{base}/api/v1/resources/books"), range(64))) == {
            True
        }
    postgres.stop()
    postgres.start()

    def post(i: int) -> int:
        book = {"title": f"after-restart-{i}", "author": "a"}
        return requests.post(f"{base}/api/v1/resources/books", json=book, timeout=10).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, range(8))) == [201] * 8
    assert len([row for row in rows(postgres) if row[1].startswith("after-restart-")]) == 8
