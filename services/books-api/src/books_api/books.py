"""The books resource: the seed's two books in an in-memory store (per process, not persisted)."""

import threading

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from books_api.errors import FieldErrors

SEED_BOOKS = (
    {"id": 1, "title": "微服务架构设计", "author": "John Doe"},
    {"id": 2, "title": "Docker实战", "author": "Jane Doe"},
)


class NewBook(BaseModel):
    """The body of POST /books: both fields required, nothing else accepted."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    author: str = Field(min_length=1, max_length=200)


class BookStore:
    """Thread-safe, seeded, in-memory; gunicorn threads share one store per worker process.

    Reads dominate, so the listing is serialised once and reused until the next write.
    """

    def __init__(self, seed=SEED_BOOKS) -> None:
        self._books = {book["id"]: dict(book) for book in seed}
        self._lock = threading.Lock()
        self._listing: bytes | None = None

    def listing(self) -> bytes:
        """The JSON document of GET /books, {"books": [...]}, as bytes."""
        cached = self._listing  # reading one reference is atomic: no lock on the hot path
        if cached is not None:
            return cached
        with self._lock:
            if self._listing is None:
                books = {"books": list(self._books.values())}
                # Byte for byte what jsonify() sends: compact, keys sorted, newline-terminated.
                self._listing = f"{current_app.json.dumps(books, separators=(',', ':'))}\n".encode()
            return self._listing

    def get(self, book_id: int) -> dict | None:
        with self._lock:
            return self._books.get(book_id)

    def add(self, new: NewBook) -> dict:
        with self._lock:
            book = {"id": max(self._books, default=0) + 1, **new.model_dump()}
            self._books[book["id"]] = book
            self._listing = None
            return book


def blueprint(store: BookStore) -> Blueprint:
    bp = Blueprint("books", __name__, url_prefix="/api/v1/resources/books")

    @bp.get("")
    def list_books():
        return Response(store.listing(), mimetype="application/json")

    @bp.get("/<int:book_id>")
    def get_book(book_id: int):
        book = store.get(book_id)
        if book is None:
            raise NotFound(f"no book with id {book_id}")
        return jsonify(book)

    @bp.post("")
    def add_book():
        if not request.is_json:
            raise UnsupportedMediaType("send the book as application/json")
        try:
            body = request.get_json()  # malformed JSON: werkzeug raises 400
        except RecursionError:  # the parser recurses once per level, and this is not a ValueError
            raise BadRequest("the JSON body is nested too deeply") from None
        try:
            new = NewBook.model_validate(body)
        except ValidationError as err:
            raise FieldErrors(
                {".".join(map(str, e["loc"])) or "body": e["msg"] for e in err.errors()}
            ) from None
        book = store.add(new)
        return jsonify(book), 201, {"Location": url_for(".get_book", book_id=book["id"])}

    return bp
