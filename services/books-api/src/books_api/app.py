"""The Flask app factory: routes, JSON errors, probes, metrics (and a span per request)."""

import logging

from flask import Flask, jsonify
from service_common.consul_session import ConsulSession
from service_common.flask_app import ObservedFlask, metrics_route

from books_api import books, errors, greeting, store
from books_api.config import Settings
from books_api.greeter_client import GreeterClient

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


class BooksApi(ObservedFlask):
    def make_default_options_response(self):
        """OPTIONS: 204 with Allow, no body (Flask's default: 200, an empty text/html body)."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def _books(config: Settings) -> store.Books:
    if config.database_url is None:
        log.warning("DATABASE_URL is unset: books live in this process's memory only")
        return store.MemoryBooks()
    return store.PostgresBooks(
        config.database_url.get_secret_value(),
        pool_size=config.gunicorn_threads,
        timeout=config.database_timeout_seconds,
    )


def create_app(config: Settings) -> Flask:
    app = BooksApi(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    errors.register(app)
    metrics_route(app)

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
    library = _books(config)
    app.register_blueprint(books.blueprint(library))
    app.register_blueprint(greeting.blueprint(client))

    @app.get("/healthz")
    def healthz():
        """Liveness: the worker answers requests."""
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        """Readiness: the books store answers. A greeter outage degrades one route, no more."""
        if not library.ready():
            return jsonify(status="unready", database="unreachable"), 503
        return jsonify(status="ready", greeter_discovery=discovery_mode)

    return app
