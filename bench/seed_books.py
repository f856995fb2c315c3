"""Baseline (a): the seed's books API as the tutorial runs it, Flask's dev server, debug=True."""

import os

from flask import Flask, jsonify

app = Flask(__name__)
books = [
    {"id": 1, "title": "微服务架构设计", "author": "John Doe"},
    {"id": 2, "title": "Docker实战", "author": "Jane Doe"},
]


@app.route("/api/v1/resources/books", methods=["GET"])
def api_all():
    return jsonify({"books": books})


if __name__ == "__main__":
    app.run(debug=True, port=int(os.environ["PORT"]))  # noqa: S201 (the seed's own setting, loopback only)
