"""What a client can get wrong, sent as raw bytes to gunicorn with the image's config, for real.

Every answer is our JSON error shape with a 4xx (501 for an unknown transfer coding, as RFC 9112
asks), whether the app or gunicorn's own HTTP parser rejects the request.
"""

import json
import socket

import pytest
from services_support import answers, free_port, start_gunicorn, wait_until

BOOKS = "/api/v1/resources/books"
NESTED = b"[" * 1000 + b"]" * 1000  # about 2 KB; Python's JSON parser recurses once per level


def post(body: bytes, *headers: str, path: str = BOOKS) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(chunks: bytes) -> bytes:
    return post(chunks, "Transfer-Encoding: chunked")


MALFORMED = {
    "nested-json": (post(NESTED, f"Content-Length: {len(NESTED)}"), 400),
    "bad-chunk-size": (chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    "bad-chunk-extension": (chunked(b"5;a\x01b\r\nhello\r\n0\r\n\r\n"), 400),
    "lowercase-method": (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad-content-length": (post(b"{}", "Content-Length: two"), 400),
    "duplicate-content-length": (post(b"{}", "Content-Length: 2", "Content-Length: 3"), 400),
    "control-char-in-header": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
    "unknown-transfer-coding": (post(b"{}", "Transfer-Encoding: zstd2"), 501),
    "request-line-too-long": (f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414),
    "too-many-headers": (
        (
            "GET / HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-{i}: v\r\n" for i in range(120)) + "\r\n"
        ).encode(),
        431,
    ),
    "header-too-long": (f"GET / HTTP/1.1\r\nHost: x\r\nX-A: {'v' * 9000}\r\n\r\n".encode(), 431),
    "odd-expect": (post(b"{}", "Content-Length: 2", "Expect: 100-continue-please"), 417),
}


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a fresh connection; read one response (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def port():
    """One gunicorn (2 workers, as the image) for every case: each must leave it serving."""
    chosen = free_port()
    process = start_gunicorn(chosen, GUNICORN_WORKERS=2)
    wait_until(lambda: answers(f"http://127.0.0.1:{chosen}/healthz"), what="gunicorn to answer")
    yield chosen
    process.kill()
    process.wait()


@pytest.mark.parametrize(("request_bytes", "status"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_our_json_error(port, request_bytes, status):
    got, headers, body = exchange(port, request_bytes)
    assert (got, headers.get("content-type")) == (status, "application/json"), body[:200]
    error = json.loads(body)["error"]
    assert error["status"] == status
    assert error["type"] and error["message"]
    assert set(error) <= {"status", "type", "message", "fields"}
    assert exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


def test_options_answers_204_with_allow_and_no_html(port):
    got, headers, body = exchange(port, f"OPTIONS {BOOKS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert got == 204
    assert set(headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST", "OPTIONS"}
    assert "content-type" not in headers
    assert body == b""
