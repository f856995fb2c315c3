"""`python -m service_template`: the image's entrypoint, gunicorn with this package's settings."""

import sys

from gunicorn.app.wsgiapp import run

sys.argv = [sys.argv[0], "--config", "python:service_template.gunicorn_conf"]
run()
