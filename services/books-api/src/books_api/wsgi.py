"""The WSGI entry point gunicorn loads (`books_api.wsgi:app`)."""

from books_api import config
from books_api.app import create_app

app = create_app(config.load())
