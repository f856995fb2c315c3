"""The WSGI entry point gunicorn loads (`service_template.wsgi:app`)."""

from service_template import config
from service_template.app import create_app

app = create_app(config.load())
