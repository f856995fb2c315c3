"""gunicorn settings of service-template: all from the validated environment, logs as JSON lines.

Loaded as `python:service_template.gunicorn_conf` (service_template.__main__). The master keeps the
Consul registration, from the moment it serves to its exit; SIGTERM stops it gracefully (in-flight
requests get GUNICORN_GRACEFUL_TIMEOUT).
"""

import os

from service_common.consul_registration import http_registration
from service_common.logs import gunicorn_logconfig

import service_template.config

# Module-level names are read as gunicorn settings: the imports avoid those names.
settings = service_template.config.load()  # a bad variable stops gunicorn here, before it binds

wsgi_app = "service_template.wsgi:app"
bind = [f"0.0.0.0:{settings.port}"]
workers = settings.gunicorn_workers
worker_class = "gthread"
threads = settings.gunicorn_threads
graceful_timeout = settings.gunicorn_graceful_timeout
# Worker heartbeats on a tmpfs: the root filesystem is read-only in the cluster.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
accesslog = "-"
errorlog = "-"
logconfig_dict = gunicorn_logconfig(settings.log_level)
access_log_format = "%(m)s %(U)s %(s)s"
control_socket_disable = True  # gunicorn's runtime control socket: unused, and it wants a $HOME

# CONSUL_SERVICE_NAME in Consul with an HTTP check on /healthz; None without Consul (on a laptop).
registration = http_registration(settings, port=settings.port, check_path="/healthz")


def when_ready(server):
    if registration:
        registration.start()


def on_exit(server):
    if registration:
        registration.stop()
