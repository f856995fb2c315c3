"""gunicorn settings for containers: all from the validated environment, logs as JSON on stdout.

The master owns what exists once per pod: the Prometheus multiprocess directory and the Consul
registration.
"""

import os
import shutil
import tempfile

# Before prometheus_client is imported anywhere: it picks multiprocess mode at import time, and the
# workers inherit the variable.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="prometheus-"))

import books_api.config
from books_api.logs import gunicorn_logconfig
from books_api.registration import Registration

# Module-level names are read as gunicorn settings (`config` is one): the imports avoid those names.
settings = books_api.config.load()  # a bad variable stops gunicorn here, before it binds

wsgi_app = "books_api.wsgi:app"
bind = [f"0.0.0.0:{settings.port}"]
workers = settings.gunicorn_workers
worker_class = "gthread"
threads = settings.gunicorn_threads
graceful_timeout = settings.gunicorn_graceful_timeout
timeout = 30
keepalive = 5
# Heartbeat file on a tmpfs: the root filesystem is read-only, and a disk-backed /tmp can stall.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
accesslog = "-"
errorlog = "-"
logconfig_dict = gunicorn_logconfig(settings.log_level)
access_log_format = "%(m)s %(U)s %(s)s"
control_socket_disable = (
    True  # gunicorn's runtime control socket: unused, and it wants a writable $HOME
)

registration = Registration(settings) if settings.consul_http_addr else None


def on_starting(server):
    """Start from an empty metrics directory: files of a previous run would be added in."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def when_ready(server):
    if registration:
        registration.thread.start()


def child_exit(server, worker):
    from prometheus_client import multiprocess  # noqa: PLC0415 (imported after the env var is set)

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if registration:
        registration.stop()
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
