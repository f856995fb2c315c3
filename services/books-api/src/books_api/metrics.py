"""Prometheus metrics (prometheus-client).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py) makes /metrics add up every
worker process; without it the process's own registry is served.
"""

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"])
GREETER_CALLS = Counter("greeter_calls_total", "Calls to ExampleService by outcome", ["outcome"])


def _registry():
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def instrument(app: Flask) -> None:
    """Count and time every request by its route rule (not the raw path, which is unbounded)."""

    @app.before_request
    def _start():
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        LATENCY.labels(request.method, route).observe(time.perf_counter() - g.started)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
