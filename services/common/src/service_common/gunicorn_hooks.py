"""What every HTTP service's gunicorn does besides serving, as gunicorn's server hooks: the
Prometheus multiprocess directory, the metrics port, tracing in each worker and the Consul
registration. A service's gunicorn_conf makes one `Lifecycle` and names its methods as its hooks.

The master owns what exists once per pod: the metrics directory, the metrics port and the Consul
registration. The metrics port is served by the master, from when it is ready to its exit, with
prometheus_client's own server reading every worker's files: one listener bound once, before any
worker exists, that no worker restart takes down, and each scrape sees the whole pod. A server in
each worker could not share the port (and would answer for one worker only if it kept its own
registry). The master's server thread never holds a lock a worker needs: it only reads files.

Tracing is set up in each worker after the fork: its export thread and its gRPC channel are the
worker's own, and a worker that exits exports its last spans, waiting a bounded time.

What the master must not import before it forks is imported in the hooks that need it (hence
PLC0415 off here): prometheus_client until PROMETHEUS_MULTIPROC_DIR is set (see Lifecycle), and
grpcio (through service_common.tracing) at all: its fork support is limited, so nothing of it
runs in the master, as before tracing (the app, and its gRPC client, load in the workers).
"""
# ruff: noqa: PLC0415

import os
import shutil
import tempfile

from service_common.consul_registration import Registration

# Files written per request (worker heartbeats, metric values) go to a tmpfs: the root filesystem is
# read-only, and a disk-backed /tmp (an emptyDir) can stall them. Elsewhere: the temp dir.
TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108


class Lifecycle:
    def __init__(self, settings, registration: Registration | None) -> None:
        """`settings` (ServiceSettings) say which metrics port and collector; `registration` is
        the instance's in Consul (None without Consul).

        Made when gunicorn loads its config, before the app or prometheus_client is imported:
        PROMETHEUS_MULTIPROC_DIR must be set by then, since prometheus_client picks multiprocess
        mode at import time, and the workers inherit the master's choice with the fork.
        """
        self.settings = settings
        self.registration = registration
        self.metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
            prefix="prometheus-", dir=TMPFS
        )
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.metrics_server = None

    def on_starting(self, server) -> None:
        """Start from an empty metrics directory: files of a previous run would be added in."""
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        os.makedirs(self.metrics_dir)

    def when_ready(self, server) -> None:
        if self.settings.metrics_port is not None:
            from service_common.metrics import MetricsServer

            self.metrics_server = MetricsServer(self.settings.metrics_port)
            server.log.info("metrics on port %s", self.metrics_server.port)
        if self.registration:
            self.registration.start()

    def post_fork(self, server, worker) -> None:
        from service_common import tracing

        tracing.configure(self.settings)

    def worker_exit(self, server, worker) -> None:
        from service_common import tracing

        tracing.shutdown()

    def child_exit(self, server, worker) -> None:
        from service_common.metrics import mark_process_dead

        mark_process_dead(worker.pid)

    def on_exit(self, server) -> None:
        if self.registration:
            self.registration.stop()
        if self.metrics_server:
            self.metrics_server.stop()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
