"""The Flask app factory: routes, JSON errors, probes, metrics."""

from flask import Flask, jsonify
from service_common.consul_session import ConsulSession

from books_api import books, errors, greeting, metrics
from books_api.config import Settings
from books_api.greeter_client import GreeterClient

MAX_BODY_BYTES = 16 * 1024


class BooksApi(metrics.TimedFlask):
    def make_default_options_response(self):
        """OPTIONS: 204 with Allow, no body (Flask's default: 200, an empty text/html body)."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(config: Settings) -> Flask:
    app = BooksApi(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    errors.register(app)
    metrics.register(app)

    addr = config.consul_http_addr
    discovery = ConsulSession(config, timeout=config.greeter_timeout_seconds) if addr else None
    client = GreeterClient(
        timeout=config.greeter_timeout_seconds,
        consul_session=discovery,
        service_name=config.greeter_service_name,
        static_addr=config.greeter_addr,
    )
    app.extensions["consul"] = discovery
    discovery_mode = "consul" if addr else "static" if config.greeter_addr else "none"
    app.register_blueprint(books.blueprint(books.BookStore()))
    app.register_blueprint(greeting.blueprint(client))

    @app.get("/healthz")
    def healthz():
        """Liveness: the worker answers requests."""
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        """Readiness: the app is built. A greeter outage degrades one route, no more."""
        return jsonify(status="ready", greeter_discovery=discovery_mode)

    return app
