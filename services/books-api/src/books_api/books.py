"""The books resource: the seed's two books and what clients add, in a store (store.py)."""

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from books_api.errors import FieldErrors
from books_api.store import Books


class NewBook(BaseModel):
    """The body of POST /books: both fields required, nothing else accepted."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    author: str = Field(min_length=1, max_length=200)


def blueprint(store: Books) -> Blueprint:
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
        book = store.add(new.title, new.author)
        return jsonify(book), 201, {"Location": url_for(".get_book", book_id=book["id"])}

    return bp
