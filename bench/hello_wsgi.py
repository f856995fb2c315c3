"""A bare hello-world WSGI app, served under books-api's gunicorn config (baseline (b))."""

BODY = b"Hello, World!"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
