"""gunicorn's gthread worker, answering what its own HTTP parser rejects in our JSON error shape.

gunicorn still decides everything about such a request: the status (400, 414, 431, 417, 501 for an
unknown transfer coding), the WARNING line and the access-log line. Only its HTML error page is
replaced, as it reaches the socket: `handle_error` is the one place gunicorn writes it, and it
writes one `HTTP/1.1 <status> <reason>` response there. gunicorn has no hook for that page.
"""

import json

from gunicorn.workers.gthread import ThreadWorker

from books_api.errors import error_document

MAX_MESSAGE_CHARS = 200


class _JsonErrorSocket:
    """The client socket as handle_error sees it: what it sends becomes our JSON document."""

    def __init__(self, sock, error: Exception) -> None:
        self._sock = sock
        self._error = error

    def gettimeout(self):
        return self._sock.gettimeout()

    def setblocking(self, flag) -> None:
        self._sock.setblocking(flag)

    def sendall(self, page: bytes) -> None:
        status_line = page.split(b"\r\n", 1)[0].decode("latin-1")
        _, status, reason = status_line.split(" ", 2)
        status_code = int(status)
        # A 5xx here is the server's own problem: its details stay in the log.
        message = reason if status_code >= 500 and status_code != 501 else str(self._error)
        document = error_document(status_code, message[:MAX_MESSAGE_CHARS])
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()  # as jsonify
        head = (
            f"HTTP/1.1 {status_code} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body) + 1}\r\n\r\n"
        )
        self._sock.sendall(head.encode("latin-1") + body + b"\n")


class JsonErrorWorker(ThreadWorker):
    def handle_request(self, req, conn):
        keepalive = super().handle_request(req, conn)
        req.answered = True  # a body error found later, while draining, gets no second response
        return keepalive

    def handle_error(self, req, client, addr, exc):
        if getattr(req, "answered", False):
            self.log.warning("Closing connection after a malformed request body: %s", exc)
            return
        super().handle_error(req, _JsonErrorSocket(client, exc), addr, exc)
