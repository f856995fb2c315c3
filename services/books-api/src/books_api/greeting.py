"""GET /api/v1/greeting?name=…: the seed's gRPC call, exposed over REST."""

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import ServiceUnavailable

from books_api.errors import FieldErrors
from books_api.greeter_client import GreeterClient, GreeterUnavailable, InvalidGreeting
from books_api.metrics import GREETER_CALLS


def blueprint(client: GreeterClient) -> Blueprint:
    bp = Blueprint("greeting", __name__)

    @bp.get("/api/v1/greeting")
    def greeting():
        name = request.args.get("name")
        if name is None:
            raise FieldErrors({"name": "query parameter is required"})
        try:
            message, instance = client.greet(name)
        except InvalidGreeting as err:
            GREETER_CALLS.labels(outcome="invalid").inc()
            field, _, detail = str(err).partition(": ")
            raise FieldErrors({"name": detail or field}) from None
        except GreeterUnavailable as err:
            GREETER_CALLS.labels(outcome="unavailable").inc()
            raise ServiceUnavailable(str(err)) from None
        GREETER_CALLS.labels(outcome="ok").inc()
        return jsonify(message=message, instance=instance)

    return bp
