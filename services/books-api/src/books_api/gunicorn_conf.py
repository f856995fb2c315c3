"""gunicorn settings for containers: all from the validated environment, logs as JSON on stdout.

Loaded as `python:books_api.gunicorn_conf` (books_api.__main__, the image's entrypoint).

The hooks are every HTTP service's (service_common.gunicorn_hooks): the master keeps the
Prometheus multiprocess directory, the metrics port and the Consul registration; each worker
its tracing.
"""

from service_common.consul_registration import http_registration
from service_common.gunicorn_hooks import TMPFS, Lifecycle
from service_common.logs import gunicorn_logconfig

import books_api.config

# Module-level names are read as gunicorn settings (`config` is one): the imports avoid those names.
settings = books_api.config.load()  # a bad variable stops gunicorn here, before it binds

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


# Registered as CONSUL_SERVICE_NAME with an HTTP check on /healthz (without Consul: none).
lifecycle = Lifecycle(
    settings, http_registration(settings, port=settings.port, check_path="/healthz")
)
on_starting = lifecycle.on_starting
when_ready = lifecycle.when_ready
post_fork = lifecycle.post_fork
worker_exit = lifecycle.worker_exit
child_exit = lifecycle.child_exit
on_exit = lifecycle.on_exit
