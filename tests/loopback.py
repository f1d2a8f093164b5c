"""A small real HTTP server on 127.0.0.1 whose answers each test writes, for what the simulator cannot do:
record request headers and bodies, set cookies, send hostile bodies, drop a connection midway.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[["Exchange"], None]


class Exchange(BaseHTTPRequestHandler):
    """The request being answered; ``reply`` and ``drop`` are what answers use."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def reply(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        *,
        length: int | None = None,
    ) -> None:
        """Send a whole answer (``length`` overrides Content-Length, to promise more than is sent)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        """Cut the connection at once, as a network failure would."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        try:
            self.server.answer(self)
        except (BrokenPipeError, ConnectionResetError):  # the client hung up, as it may on a refused body
            self.close_connection = True

    do_GET = do_POST = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Answer) -> None:
        super().__init__(("127.0.0.1", 0), Exchange)
        self.answer = answer
        self.seen: list[Seen] = []


class Loopback:
    """The running server: ``url``, the requests ``seen`` so far, and the ``answer`` it gives (settable)."""

    def __init__(self, answer: Answer) -> None:
        self._server = _Server(answer)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def seen(self) -> list[Seen]:
        return self._server.seen

    @property
    def answer(self) -> Answer:
        return self._server.answer

    @answer.setter
    def answer(self, answer: Answer) -> None:
        self._server.answer = answer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def loopback(answer: Answer) -> Iterator[Loopback]:
    server = Loopback(answer)
    try:
        yield server
    finally:
        server.close()
