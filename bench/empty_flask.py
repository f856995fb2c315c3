"""Anchor (b): an empty Flask app answering books-api's listing path with the same bytes.

Served under books-api's own gunicorn config, so the ratio books-api / this measures what books-api
adds (its blueprints, error handlers, metrics, the store), not Flask or the server.
"""

import json

from flask import Flask, Response
from seed_books import books

# Byte for byte what books-api (and the seed's jsonify) sends: compact, keys sorted, ASCII.
BODY = f"{json.dumps({'books': books}, separators=(',', ':'), sort_keys=True)}\n".encode()

app = Flask(__name__)


@app.get("/api/v1/resources/books")
def listing():
    return Response(BODY, mimetype="application/json")
