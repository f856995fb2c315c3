"""gunicorn settings for containers: all from the validated environment, logs as JSON on stdout.

Loaded as `python:books_api.gunicorn_conf` (books_api.__main__, the image's entrypoint).

The master owns what exists once per pod: the Prometheus multiprocess directory and the Consul
registration.
"""

import os
import shutil
import tempfile

from service_common.consul_registration import http_registration
from service_common.logs import gunicorn_logconfig

import books_api.config

# Module-level names are read as gunicorn settings (`config` is one): the imports avoid those names.
settings = books_api.config.load()  # a bad variable stops gunicorn here, before it binds

# Files written per request (worker heartbeats, metric values) go to a tmpfs: the root filesystem is
# read-only, and a disk-backed /tmp (an emptyDir) can stall them. Elsewhere: the temp dir.
TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# Set before prometheus_client is first imported (by the workers, after the fork): it picks
# multiprocess mode at import time.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ.get(
    "PROMETHEUS_MULTIPROC_DIR"
) or tempfile.mkdtemp(prefix="prometheus-", dir=TMPFS)

wsgi_app = "books_api.wsgi:app"
bind = [f"0.0.0.0:{settings.port}"]
workers = settings.gunicorn_workers
# gthread, with what its HTTP parser rejects answered in our JSON error shape (books_api.worker).
worker_class = "books_api.worker.JsonErrorWorker"
threads = settings.gunicorn_threads
graceful_timeout = settings.gunicorn_graceful_timeout
timeout = 30
keepalive = 5
worker_tmp_dir = TMPFS
accesslog = "-"
errorlog = "-"
logconfig_dict = gunicorn_logconfig(settings.log_level)
access_log_format = "%(m)s %(U)s %(s)s"
# gunicorn's runtime control socket: unused, and it wants a writable $HOME.
control_socket_disable = True


# CONSUL_SERVICE_NAME in Consul with an HTTP check on /healthz; None without Consul.
registration = http_registration(settings, port=settings.port, check_path="/healthz")


def on_starting(server):
    """Start from an empty metrics directory: files of a previous run would be added in."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def when_ready(server):
    if registration:
        registration.start()


def child_exit(server, worker):
    from prometheus_client import multiprocess  # noqa: PLC0415 (imported after the env var is set)

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if registration:
        registration.stop()
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
