"""`python -m books_api`: the image's entrypoint, gunicorn with this package's settings."""

import sys

from gunicorn.app.wsgiapp import run

sys.argv = [sys.argv[0], "--config", "python:books_api.gunicorn_conf"]
run()
