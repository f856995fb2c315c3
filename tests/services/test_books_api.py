"""books-api through Flask's test client: all routes and errors; greetings hit a real server."""

import json

import pytest
from books_api import config
from books_api.app import create_app
from books_api.config import Settings
from flask import jsonify
from services_support import free_port, seconds_to_recover

SEED = {
    "books": [
        {"id": 1, "title": "微服务架构设计", "author": "John Doe"},
        {"id": 2, "title": "Docker实战", "author": "Jane Doe"},
    ]
}


def make_client(**settings):
    app = create_app(Settings(**settings))
    app.testing = True
    return app.test_client()


@pytest.fixture
def client():
    return make_client()


def assert_error(response, status: int, kind: str):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["status"] == status
    assert error["type"] == kind
    assert error["message"]
    return error


def test_lists_the_seed_books_in_the_seed_shape(client):
    response = client.get("/api/v1/resources/books")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == SEED


def test_listing_is_byte_for_byte_what_jsonify_sends(client):
    with client.application.app_context():
        expected = jsonify(SEED).get_data()
    assert client.get("/api/v1/resources/books").get_data() == expected


def test_gets_one_book_or_404(client):
    assert client.get("/api/v1/resources/books/2").get_json() == SEED["books"][1]
    error = assert_error(client.get("/api/v1/resources/books/99"), 404, "not_found")
    assert error["message"] == "no book with id 99"
    assert_error(client.get("/api/v1/resources/books/abc"), 404, "not_found")


def test_adds_a_book(client):
    response = client.post("/api/v1/resources/books", json={"title": " SRE ", "author": "Google"})
    assert response.status_code == 201
    created = response.get_json()
    assert created == {"id": 3, "title": "SRE", "author": "Google"}
    assert response.headers["Location"] == "/api/v1/resources/books/3"
    assert client.get("/api/v1/resources/books/3").get_json() == created
    assert len(client.get("/api/v1/resources/books").get_json()["books"]) == 3


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"title": "T"}, {"author"}),
        ({"title": "", "author": "A"}, {"title"}),
        ({"title": "   ", "author": "A"}, {"title"}),
        ({"title": "T" * 201, "author": "A"}, {"title"}),
        ({"title": 5, "author": "A"}, {"title"}),
        ({"title": "T", "author": "A", "isbn": "x"}, {"isbn"}),
        ([1, 2], {"body"}),
    ],
)
def test_rejects_invalid_books_naming_each_field(client, body, fields):
    error = assert_error(client.post("/api/v1/resources/books", json=body), 400, "bad_request")
    assert set(error["fields"]) == fields
    assert len(client.get("/api/v1/resources/books").get_json()["books"]) == 2, (
        "nothing half-applied"
    )


def test_malformed_json_is_400(client):
    response = client.post("/api/v1/resources/books", data="{nope", content_type="application/json")
    assert_error(response, 400, "bad_request")


def test_wrong_content_type_is_415(client):
    response = client.post("/api/v1/resources/books", data="title=x", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


def test_oversized_body_is_413(client):
    body = json.dumps({"title": "x" * 20_000, "author": "A"})
    response = client.post("/api/v1/resources/books", data=body, content_type="application/json")
    assert_error(response, 413, "request_entity_too_large")


def test_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/v1/resources/books/1")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_unknown_path_is_json_404(client):
    assert_error(client.get("/nope"), 404, "not_found")


def test_unexpected_errors_are_json_500():
    app = create_app(Settings())

    @app.get("/boom")
    def boom():
        raise RuntimeError("bug")

    error = assert_error(app.test_client().get("/boom"), 500, "internal_server_error")
    assert "bug" not in error["message"], "internals stay in the log"


def test_probes(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "greeter_discovery": "none"}


def test_metrics_count_requests_by_route(client):
    client.get("/api/v1/resources/books/1")
    client.get("/api/v1/resources/books/1")
    text = client.get("/metrics").get_data(as_text=True)
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith(
            'http_request_duration_seconds_count{method="GET",route="/api/v1/resources/books/<int:book_id>"'
        )
    )
    assert float(line.rsplit(" ", 1)[1]) >= 2
    assert "http_request_duration_seconds_bucket" in text


def test_metrics_fold_made_up_methods_into_other(client):
    assert_error(client.open("/api/v1/resources/books", method="BREW"), 405, "method_not_allowed")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'http_request_duration_seconds_count{method="other",route="unmatched",status="405"}' in text
    )
    assert 'method="BREW"' not in text


def test_greeting_calls_the_greeter(greeter):
    client = make_client(greeter_addr=f"127.0.0.1:{greeter.port}")
    response = client.get("/api/v1/greeting", query_string={"name": "Alice"})
    assert response.status_code == 200
    assert response.get_json() == {
        "message": "Hello, Alice!",
        "instance": f"127.0.0.1:{greeter.port}",
    }
    assert client.get("/readyz").get_json()["greeter_discovery"] == "static"


def test_greeting_needs_a_name(greeter):
    client = make_client(greeter_addr=f"127.0.0.1:{greeter.port}")
    error = assert_error(client.get("/api/v1/greeting"), 400, "bad_request")
    assert error["fields"] == {"name": "query parameter is required"}


@pytest.mark.parametrize(
    ("name", "detail"),
    [("", "must not be empty"), ("x" * 257, "must be at most 256 characters, got 257")],
)
def test_greeting_passes_on_the_greeters_validation_as_400(greeter, name, detail):
    client = make_client(greeter_addr=f"127.0.0.1:{greeter.port}")
    error = assert_error(
        client.get("/api/v1/greeting", query_string={"name": name}), 400, "bad_request"
    )
    assert error["fields"] == {"name": detail}


def test_greeting_is_503_when_the_greeter_is_down():
    client = make_client(greeter_addr=f"127.0.0.1:{free_port()}", greeter_timeout_seconds=1)
    error = assert_error(client.get("/api/v1/greeting?name=A"), 503, "service_unavailable")
    assert "UNAVAILABLE" in error["message"]


def test_greetings_succeed_within_1s_of_a_greeter_restart(greeter_factory):
    port = free_port()
    first = greeter_factory(grpc_port=port)
    client = make_client(greeter_addr=f"127.0.0.1:{port}", greeter_timeout_seconds=1)
    restart = lambda: greeter_factory(grpc_port=port)  # noqa: E731
    assert seconds_to_recover(client, restart, first.stop) <= 1.0


def test_greeting_is_503_when_nothing_is_configured():
    error = assert_error(make_client().get("/api/v1/greeting?name=A"), 503, "service_unavailable")
    assert "no healthy instance" in error["message"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "0"}, "PORT"),
        ({"GUNICORN_WORKERS": "many"}, "GUNICORN_WORKERS"),
        ({"GREETER_ADDR": "greeter"}, "GREETER_ADDR"),
        ({"GREETER_TIMEOUT_SECONDS": "0"}, "GREETER_TIMEOUT_SECONDS"),
        ({"CONSUL_HTTP_ADDR": "consul:port"}, "CONSUL_HTTP_ADDR"),
    ],
)
def test_bad_environment_stops_start_up_naming_the_variable(monkeypatch, env, named):

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as stopped:
        config.load()
    assert str(stopped.value).startswith("invalid configuration:")
    assert f"\n{named}\n" in str(stopped.value)
