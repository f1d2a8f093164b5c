"""A hostile gateway for the tests: a loopback TCP server that answers each request with raw bytes.

Each connection's request head (and body, per ``Content-Length``) is read, then ``respond(sock)`` writes
whatever it likes: a trickled status line, an endless body, a gzip bomb, a redirect. A client that hangs
up ends the handler (writes then fail), so nothing outlives `HostileServer.close`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

Respond = Callable[[socket.socket], None]


class HostileServer:
    """Serve ``respond`` on 127.0.0.1; ``url`` is its base URL, ``heads`` the request heads received."""

    def __init__(self, respond: Respond, tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self._tls = tls
        self.heads: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), name="hostile-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(5.0)
            try:
                if self._tls is not None:
                    sock = self._tls.wrap_socket(sock, server_side=True)
                self._sockets.append(sock)
                while not self._closing.is_set() and self._read_request(sock):
                    self.respond(sock)
            except OSError:  # the client hung up (or gave up on us, or on our certificate): that is the point
                pass

    def _read_request(self, sock: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        self.heads.append(head)
        lines = head.lower().split(b"\r\n")
        lengths = [line.split(b":", 1)[1] for line in lines if line.startswith(b"content-length:")]
        length = int(lengths[0]) if lengths else 0
        while len(rest) < length:
            rest += sock.recv(4096)
        return True

    def close(self) -> None:
        self._closing.set()
        self._accepter.join()
        self._listener.close()
        for sock in self._sockets:  # a kept-alive connection waits for a next request: end it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def task_json(task_id: str = "1", status: str = "IN_PROGRESS") -> bytes:
    """A minimal, valid EZmodel fetch answer."""
    return json.dumps({"code": "success", "data": {"task_id": task_id, "status": status}}).encode()


def response(
    body: bytes, status: str = "200 OK", content_type: str = "application/json", **headers: Any
) -> bytes:
    """A complete HTTP/1.1 response; extra headers are given as keyword arguments (``_`` reads ``-``)."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer(data: bytes) -> Respond:
    """Send ``data`` at once."""
    return lambda sock: sock.sendall(data)


def trickle(data: bytes, gap: float, *, after: int = 0) -> Respond:
    """Send the first ``after`` bytes at once, then one byte every ``gap`` seconds."""

    def respond(sock: socket.socket) -> None:
        sock.sendall(data[:after])
        for i in range(after, len(data)):
            time.sleep(gap)
            sock.sendall(data[i : i + 1])

    return respond


def endless(limit: int = 1 << 34) -> Respond:
    """A 200 JSON answer whose body never ends (chunked, up to ``limit`` bytes)."""

    def respond(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b'{"a": "' + b"x" * (1 << 16)
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for _ in range(limit // len(piece)):
            sock.sendall(chunk)

    return respond


def gzip_bomb(decompressed: int) -> Respond:
    """A 200 JSON answer, gzip-encoded, that inflates to ``decompressed`` bytes of JSON-ish text."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    block = b" " * (1 << 20)  # compressed block by block: the test process never holds the inflated size
    parts = [packer.compress(b'{"a": "')]
    parts += [packer.compress(block) for _ in range(decompressed // len(block))]
    body = b"".join(parts) + packer.flush()
    return answer(response(body, Content_Encoding="gzip"))
