"""gunicorn settings of service-template: all from the validated environment, logs as JSON lines.

Loaded as `python:service_template.gunicorn_conf` (service_template.__main__). The hooks are every
HTTP service's (services/common, service_common.gunicorn_hooks): the master keeps the metrics port
(METRICS_PORT, every worker's figures) and the Consul registration, from the moment it serves to
its exit; each worker its tracing. SIGTERM stops it gracefully (in-flight requests get
GUNICORN_GRACEFUL_TIMEOUT).
"""

from service_common.consul_registration import http_registration
from service_common.gunicorn_hooks import TMPFS, Lifecycle
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
worker_tmp_dir = TMPFS
accesslog = "-"
errorlog = "-"
logconfig_dict = gunicorn_logconfig(settings.log_level)
access_log_format = "%(m)s %(U)s %(s)s"
control_socket_disable = True  # gunicorn's runtime control socket: unused, and it wants a $HOME

# CONSUL_SERVICE_NAME in Consul with an HTTP check on /healthz; none without Consul (on a laptop).
lifecycle = Lifecycle(
    settings, http_registration(settings, port=settings.port, check_path="/healthz")
)
on_starting = lifecycle.on_starting
when_ready = lifecycle.when_ready
post_fork = lifecycle.post_fork
worker_exit = lifecycle.worker_exit
child_exit = lifecycle.child_exit
on_exit = lifecycle.on_exit
