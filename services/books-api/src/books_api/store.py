"""Where the books live: a PostgreSQL database of books-api's own (DATABASE_URL), which every
worker and replica share and which keeps what it acknowledged; without one, this process's memory.

The memory store is for running the app without a database (development, the HTTP contract's
tests): per process and forgotten on restart, so a deployment always sets DATABASE_URL.
"""

from __future__ import annotations

import json
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from werkzeug.exceptions import ServiceUnavailable

log = logging.getLogger(__name__)

SEED_BOOKS = (
    {"title": "微服务架构设计", "author": "John Doe"},
    {"title": "Docker实战", "author": "Jane Doe"},
)
T = TypeVar("T")
RETRY_SECONDS = 0.2  # between a read's attempts while the database is away
READY_SECONDS = 0.8  # readiness's own wait, within the kubelet's 2 s probe timeout
POOL_WAIT_SECONDS = 0.5
CONNECTION_OPTIONS = {"autocommit": True, "row_factory": dict_row, "connect_timeout": 2}
MAX_ID = 2**63 - 1  # bigint: a larger id in a URL names no book
# Every pod creates the schema if it is missing; the lock makes concurrent start-ups take turns.
SCHEMA_LOCK = 0x626F6F6B73  # "books"
SCHEMA = """
CREATE TABLE books (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title  text NOT NULL,
    author text NOT NULL
)
"""


class Books(Protocol):
    def listing(self) -> bytes:
        """The JSON document of GET /books, {"books": [...]}, as bytes."""

    def get(self, book_id: int) -> dict | None: ...

    def add(self, title: str, author: str) -> dict: ...

    def ready(self) -> bool:
        """Whether the store can serve requests now (readiness)."""


def _document(books: list[dict]) -> bytes:
    """Byte for byte what Flask's jsonify() sends: compact, keys sorted, ASCII, a newline."""
    text = json.dumps({"books": books}, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return f"{text}\n".encode()


class MemoryBooks:
    """Thread-safe, seeded, in this process's memory; reads reuse the serialised listing."""

    def __init__(self) -> None:
        self._books = {i: {"id": i, **book} for i, book in enumerate(SEED_BOOKS, start=1)}
        self._next_id = len(self._books) + 1  # ids only grow: no max() over every book per add
        self._lock = threading.Lock()
        self._listing: bytes | None = None

    def listing(self) -> bytes:
        cached = self._listing  # reading one reference is atomic: no lock on the hot path
        if cached is not None:
            return cached
        with self._lock:
            if self._listing is None:
                self._listing = _document(list(self._books.values()))
            return self._listing

    def get(self, book_id: int) -> dict | None:
        with self._lock:
            return self._books.get(book_id)

    def add(self, title: str, author: str) -> dict:
        with self._lock:
            book = {"id": self._next_id, "title": title, "author": author}
            self._books[book["id"]] = book
            self._next_id += 1
            self._listing = None
            return book

    def ready(self) -> bool:
        return True


def _still_open(conn: psycopg.Connection) -> None:
    """The pool's check before it lends a connection: one poll(2), not a round trip.

    An idle connection has nothing to read unless the server ended it: a restart or a failover
    sends a FATAL message and closes the socket, which makes it readable. Such a connection is
    closed here, so the pool drops it and lends (or opens) another, and the statement is never
    sent on it. A round trip per request (psycopg_pool's `check_connection`) found the same and
    cost books-api a third of its listings' throughput; writes still make it (`_attempt`). A peer
    that vanished without a word (its node lost) is found by the statement itself: a read is tried
    again.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        conn.close()
        raise psycopg.OperationalError("the server closed the connection while it was idle")


class _LostAfterSending(Exception):
    """The connection failed after the statement was sent: whether it took effect is unknown."""


class PostgresBooks:
    """Books in one table, through a connection pool that (re)connects in the background.

    The pool opens on first use (under gunicorn: in each worker, after the fork). A connection
    is checked before it is lent, so one broken by a database restart is replaced, not used.
    A request waits up to `timeout` for the database in all; a failure to reach it within that is
    a 503 with one WARNING line. Values only ever travel as query parameters.
    """

    def __init__(self, conninfo: str, pool_size: int, timeout: float) -> None:
        self._timeout = timeout
        self._conninfo = conninfo
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            check=_still_open,
            kwargs=CONNECTION_OPTIONS,
            name="books",
        )
        self._lock = threading.Lock()
        self._opened = False
        self._schema_ready = False

    def _run(
        self,
        work: Callable[[psycopg.Connection], T],
        *,
        idempotent: bool,
        timeout: float | None = None,
    ) -> T:
        """`work` on a connection, trying again until `timeout` (the store's) has passed.

        A database that moves (its pod rescheduled to another node) is gone for a few seconds and
        ends the connections it had. Until it is back, each attempt fails to connect, and the
        request tries again; a read that lost its connection mid-query runs again too. A write is
        never sent twice: once sent, whether it committed is unknown, and a second INSERT could
        store the book twice."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        while True:
            try:
                return self._attempt(work, deadline, idempotent=idempotent)
            except (psycopg.OperationalError, _LostAfterSending) as err:
                sent = isinstance(err, _LostAfterSending)
                if (sent and not idempotent) or time.monotonic() + RETRY_SECONDS >= deadline:
                    raise self._unavailable(err) from None
                log.info("books database unreachable; trying again", extra={"error": str(err)})
                time.sleep(RETRY_SECONDS)

    def _attempt(
        self, work: Callable[[psycopg.Connection], T], deadline: float, *, idempotent: bool
    ) -> T:
        if not self._opened:
            with self._lock:
                if not self._opened:
                    self._pool.open(wait=False)
                    self._opened = True
        with self._connection(deadline) as conn:
            if not self._schema_ready:
                self._create_schema(conn)
            if not idempotent:
                # A write, which is never sent twice, goes only to a connection that answered a
                # moment ago (one round trip): a database shutting down fails this check, which is
                # tried again, rather than the write. Reads need no more than the pool's poll.
                ConnectionPool.check_connection(conn)
            try:
                return work(conn)
            except psycopg.OperationalError as err:
                raise _LostAfterSending(err) from err

    @contextmanager
    def _connection(self, deadline: float) -> Iterator[psycopg.Connection]:
        """A pooled connection; when none comes within POOL_WAIT_SECONDS, one of its own."""
        wait = max(min(deadline - time.monotonic(), POOL_WAIT_SECONDS), 0.05)
        try:
            pooled = self._pool.getconn(timeout=wait)
        except PoolTimeout:
            # The pool may have lost its connections and be reconnecting with a growing backoff
            # (1, 2, 4 s …): a database that came back in between is reached directly. Still at
            # most one connection per request thread.
            with psycopg.connect(self._conninfo, **CONNECTION_OPTIONS) as conn:
                yield conn
            return
        try:
            yield pooled
        finally:
            self._pool.putconn(pooled)

    @staticmethod
    def _unavailable(err: Exception) -> ServiceUnavailable:
        log.warning("books database unavailable", extra={"error": str(err).strip()})
        return ServiceUnavailable("the books database is unavailable")

    def _create_schema(self, conn: psycopg.Connection) -> None:
        """The table and the seed's two books, once, whichever pod gets there first."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if conn.execute("SELECT to_regclass('books') IS NULL AS missing").fetchone()["missing"]:
                conn.execute(SCHEMA)
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO books (title, author) VALUES (%(title)s, %(author)s)",
                        SEED_BOOKS,
                    )
                log.info("created the books table with the seed's books")
        self._schema_ready = True

    def listing(self) -> bytes:
        query = "SELECT id, title, author FROM books ORDER BY id"
        return _document(self._run(lambda conn: conn.execute(query).fetchall(), idempotent=True))

    def get(self, book_id: int) -> dict | None:
        if book_id > MAX_ID:
            return None
        query = "SELECT id, title, author FROM books WHERE id = %s"
        return self._run(lambda conn: conn.execute(query, (book_id,)).fetchone(), idempotent=True)

    def add(self, title: str, author: str) -> dict:
        query = "INSERT INTO books (title, author) VALUES (%s, %s) RETURNING id, title, author"
        return self._run(
            lambda conn: conn.execute(query, (title, author)).fetchone(), idempotent=False
        )

    def ready(self) -> bool:
        try:
            # Answered within the kubelet's probe timeout, whatever the requests' own.
            self._run(lambda conn: conn.execute("SELECT 1"), idempotent=True, timeout=READY_SECONDS)
        except ServiceUnavailable:
            return False
        return True
