"""Every error leaves as JSON of one shape: {"error": {"status", "type", "message"[, "fields"]}}."""

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


class FieldErrors(HTTPException):
    """400 listing each bad field of a request body or query."""

    code = 400
    description = "the request has invalid fields"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields


def _as_json(error: HTTPException):
    body = {
        "status": error.code,
        "type": (error.name or "error").lower().replace(" ", "_"),
        "message": error.description,
    }
    if isinstance(error, FieldErrors):
        body["fields"] = error.fields
    response = jsonify(error=body)
    response.status_code = error.code
    # Keep what the exception carries for the client, e.g. Allow on 405; drop its HTML content type.
    response.headers.extend((k, v) for k, v in error.get_headers() if k.lower() != "content-type")
    return response


def _unexpected(error: Exception):
    log.exception("unhandled error")
    return _as_json(InternalServerError())


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _as_json)
    app.register_error_handler(Exception, _unexpected)
