"""Prometheus metrics (prometheus-client), on the port the manifest declares (METRICS_PORT).

Every service counts and times what it serves by route or RPC method and status (RED: rate,
errors, duration), with no code of its own: an HTTP service through service_common.flask_app, a
gRPC one through service_common.grpc_metrics on the shared server. One histogram per kind: its
`_count` series is the request counter, by status too, so a request pays for one update.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by service_common.gunicorn_hooks before
prometheus_client is first imported: it picks multiprocess mode at import time) has each worker
write its values to files there, and what serves the metrics adds up every worker's files.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
)

# Every process of a pod listens on all its addresses, as the services' own ports do.
ALL_ADDRESSES = "0.0.0.0"


def registry() -> CollectorRegistry:
    """What to expose: every gunicorn worker's values added up, or this process's own."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def exposition() -> tuple[bytes, str]:
    """The text format and its content type, for a /metrics route on a service's own port."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop an exited gunicorn worker's live gauges (counters and histograms are kept)."""
    multiprocess.mark_process_dead(pid)


class MetricsServer:
    """The metrics port: prometheus_client's HTTP server in a daemon thread (any path answers)."""

    def __init__(self, port: int) -> None:
        self._httpd, _thread = start_http_server(port, ALL_ADDRESSES, registry())
        self.port: int = self._httpd.server_port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
