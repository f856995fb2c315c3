"""service-template's routes (the app factory): its health endpoints and what it serves. Its app
is an ObservedFlask (services/common): each request is counted and timed by route and status, for
the metrics port, and traced when tracing is on, with no code here."""

from flask import Flask, jsonify
from service_common.flask_app import ObservedFlask
from werkzeug.exceptions import HTTPException

from service_template.config import Settings


def create_app(settings: Settings) -> Flask:
    app = ObservedFlask(__name__)

    @app.get("/healthz")
    def healthz():
        """Liveness: the process answers (Kubernetes restarts it otherwise; Consul's check)."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        """Readiness: it can serve; a service with dependencies checks them here."""
        return {"status": "ready"}

    @app.get("/")
    def index():
        return {"service": settings.consul_service_name}

    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        """Every error a client gets is JSON, as from the other services: {"error": ...}."""
        return jsonify(error=error.description), error.code

    return app
