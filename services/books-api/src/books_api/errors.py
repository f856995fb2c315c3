"""Every error leaves as JSON of one shape: {"error": {"status", "type", "message"[, "fields"]}}."""

import logging

from flask import Flask, jsonify
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger(__name__)


class FieldErrors(HTTPException):
    """400 listing each bad field of a request body or query."""

    code = 400
    description = "the request has invalid fields"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields


def error_document(status: int, message: str, fields: dict[str, str] | None = None) -> dict:
    """The one error shape, also used by the gunicorn worker for what its parser rejects."""
    kind = HTTP_STATUS_CODES.get(status, "error").lower().replace(" ", "_")
    body = {"status": status, "type": kind, "message": message}
    if fields is not None:
        body["fields"] = fields
    return {"error": body}


def _as_json(error: HTTPException):
    fields = error.fields if isinstance(error, FieldErrors) else None
    response = jsonify(error_document(error.code, error.description, fields))
    response.status_code = error.code
    # Keep what the exception carries for the client, e.g. Allow on 405; drop its HTML content type.
    response.headers.extend((k, v) for k, v in error.get_headers() if k.lower() != "content-type")
    return response


def _unexpected(error: Exception):
    log.exception("unhandled error")
    return _as_json(InternalServerError())


def _unreadable_body(error: ParseException):
    """The server's parser found the body malformed (e.g. a bad chunk) while the app read it."""
    return _as_json(BadRequest(f"malformed request body: {error}"))


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _as_json)
    app.register_error_handler(ParseException, _unreadable_body)
    app.register_error_handler(Exception, _unexpected)
