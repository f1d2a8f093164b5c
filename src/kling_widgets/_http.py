"""Send one request to the gateway, bounded in time, size and scope: an `Answer`, or `TransportError`.

`GatewayHTTP.request` gives an `Answer` (status, headers, body bytes) for any HTTP answer, whatever its
status, and a `TransportError` for everything else. Its bounds:

- time: the whole request, connecting to the last body byte, ends within ``timeout`` seconds. A per-read
  timeout alone lets a gateway that trickles one byte a second hold a request for ever, so one watchdog
  thread per process shuts down the socket of any request past its deadline;
- size: at most `MAX_BODY_BYTES` of body, counted after decompression (a small gzip bomb stays small);
- scope: redirects are never followed (the key must not reach another host) and nothing is retried (a
  retried POST can bill twice); no cookie jar (gateway cookies reach no one).

Built on urllib3's connection pools, which cost less than half the CPU of `requests` per poll. After
``os.fork`` a child gets its own pools: it never shares the parent's sockets.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from ._errors import TransportError
from ._text import clean_text, strip_credentials

__all__ = ["CONNECT_TIMEOUT", "MAX_BODY_BYTES", "Answer", "GatewayHTTP"]

#: The largest gateway answer read, in bytes after decompression. A real answer is a few KB; this leaves
#: room for a task with a thousand videos or a reason of several megabytes, and bounds a hostile one.
MAX_BODY_BYTES = 16 << 20

#: The most seconds spent connecting: that should be quick even when answering is not (the gateway
#: refreshes from Kling on every GET).
CONNECT_TIMEOUT = 10.0
_CHUNK = 1 << 16
_SLACK = 0.5  # seconds a deadline may be enforced late; while requests flow, the watchdog wakes that often


@dataclass(frozen=True)
class Answer:
    """What the gateway answered: status, headers (case-insensitive) and the whole body, decompressed."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class GatewayHTTP:
    """Requests to one gateway over a kept-alive connection pool.

    Parameters
    ----------
    base_url : str
        ``http(s)://host[:port]`` and an optional path prefix, without a trailing slash.
    timeout : float
        Seconds one whole request may take, from connecting to the body's last byte.
    proxy : str, optional
        An HTTP(S) proxy URL (the client passes the environment's, as `requests` would use). Other
        schemes (SOCKS) raise `ValueError`.
    ca_certs : str, optional
        A CA bundle for HTTPS (the client passes the one `requests` would use).
    max_body : int
        The largest body read, in bytes after decompression.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        proxy: str | None = None,
        ca_certs: str | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.max_body = max_body
        self._timeouts = urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout), read=timeout)
        if proxy and urllib3.util.parse_url(proxy).scheme not in ("http", "https"):
            raise ValueError(
                f"The proxy {strip_credentials(proxy)!r} (from HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) is "
                "not supported for gateway requests: use an http:// or https:// proxy, or list the gateway "
                "in NO_PROXY."
            )
        self._proxy = proxy
        self._ca_certs = ca_certs
        self._manager, self._pid = self._new_manager(), os.getpid()

    def close(self) -> None:
        """Close the pooled connections (a later request opens new ones)."""
        self._manager.clear()

    def request(
        self, method: str, path: str, *, headers: Mapping[str, str], body: bytes | None = None
    ) -> Answer:
        """Send one request to ``base_url + path``, once.

        Raises
        ------
        TransportError
            No complete answer within ``timeout`` seconds, no connection, a broken answer, or a body
            over ``max_body`` bytes (then not retryable: such an answer cannot improve).
        """
        deadline = _Deadline(time.monotonic() + self.timeout)
        _watchdog.watch(deadline)
        _current.deadline = deadline
        # Raised after the `except` blocks, never inside one, so that it has no __context__: urllib3's
        # exceptions hold the connection and the pool, and no traceback may lead to the request headers.
        failure: TransportError
        try:
            response = self._pool_manager().urlopen(
                method,
                self.base_url + path,
                body=body,
                headers=dict(headers),
                redirect=False,
                retries=False,
                timeout=self._timeouts,
                preload_content=False,
            )
            try:
                return Answer(response.status, response.headers, self._read(response, deadline))
            except BaseException:
                response.close()  # a half-read connection must never go back to the pool
                raise
            finally:
                response.release_conn()
        except _TooLarge:
            failure = TransportError(
                f"The gateway's answer to {method} {path} is larger than {self.max_body:,} bytes; refused "
                "unread (a real answer is a few KB). Check the base URL.",
                retryable=False,
            )
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            failure = TransportError(self._describe(exc, deadline, f"{method} {path}"))
        finally:
            deadline.finish()
            _current.deadline = None
        raise failure

    def _pool_manager(self) -> urllib3.PoolManager:
        """The connection pools; new ones in a forked child, which must never share the parent's sockets."""
        if self._pid != os.getpid():
            self._manager, self._pid = self._new_manager(), os.getpid()
        return self._manager

    def _new_manager(self) -> urllib3.PoolManager:
        options: dict[str, Any] = {"maxsize": 10, "ca_certs": self._ca_certs}
        if self._proxy:
            manager: urllib3.PoolManager = urllib3.ProxyManager(self._proxy, **options)
        else:
            manager = urllib3.PoolManager(**options)
        manager.pool_classes_by_scheme = _POOL_CLASSES  # connections that honour the request's deadline
        return manager

    def _read(self, response: urllib3.BaseHTTPResponse, deadline: _Deadline) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise _TooLarge
        parts = []
        size = 0
        # read(amt) inflates about amt bytes per call, so the cap holds after decompression.
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            parts.append(chunk)
        if deadline.expired:  # a body that ends with the connection looks complete when cut short
            raise TimeoutError
        return b"".join(parts)

    def _describe(self, exc: BaseException, deadline: _Deadline, request: str) -> str:
        if isinstance(exc, NewConnectionError):  # before timeouts: urllib3 makes it a ConnectTimeoutError
            return f"Could not reach the gateway at {self.base_url} ({request}): {_reason(exc)}"
        if deadline.expired or isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
            return (
                f"The gateway did not answer {request} within {self.timeout:g} s. "
                "It may be overloaded; try again, or pass a larger timeout=."
            )
        return f"The connection to the gateway at {self.base_url} broke ({request}): {_reason(exc)}"


class _TooLarge(Exception):
    """The body exceeds ``max_body``."""


def _reason(exc: BaseException) -> str:
    """The innermost cause's words ("Connection refused", "Remote end closed connection"), one line."""
    while True:
        inner = next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if inner is None:
            break
        exc = inner
    text = str(exc).rsplit(": ", 1)[-1] if isinstance(exc, NewConnectionError) else str(exc)
    return clean_text(text, 300) or type(exc).__name__  # it may quote the server (a bad status line)


# -- the deadline watchdog ------------------------------------------------------------------------


_Watched = HTTPConnection | socket.socket


@dataclass(eq=False)
class _Deadline:
    """One request's deadline and what it uses: its connection, and the socket its answer is read from."""

    at: float
    watched: list[_Watched] = field(default_factory=list)
    expired: bool = False
    finished: bool = False

    def enlist(self, target: _Watched) -> None:
        self.watched.append(target)
        if self.expired:  # enlisted after the watchdog passed by: shut it down ourselves
            _shut(target)

    def expire(self) -> None:
        # The flag first: a target enlisted while we iterate sees it and shuts itself down.
        self.expired = True
        if not self.finished:
            for target in list(self.watched):
                _shut(target)

    def finish(self) -> None:
        self.finished = True
        self.watched.clear()  # the pool reuses the connections for other requests


def _shut(target: _Watched) -> None:
    # A connection's socket as it is now (it may have connected since it was enlisted).
    sock = target.sock if isinstance(target, HTTPConnection) else target
    if sock is not None:
        # The plain socket's shutdown, even for TLS: the reading thread then sees the end of the stream.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires deadlines in time order, waking only when the earliest is due.

    It wakes up to `_SLACK` seconds late, so that one wake-up expires a batch of deadlines (most of them
    of requests long finished) rather than one per request.
    """

    def __init__(self) -> None:
        self._wakeup = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline) -> None:
        with self._wakeup:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kling-http-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wakeup.notify()

    def _run(self) -> None:
        with self._wakeup:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].expire()
                self._wakeup.wait(self._heap[0][0] - now + _SLACK if self._heap else None)


_watchdog = _Watchdog()
_current = threading.local()  # the calling thread's request deadline, for its connections to enlist in


def _forget_watchdog() -> None:
    """In a forked child: the parent's watchdog thread does not exist there, and its lock may be held."""
    global _watchdog
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_watchdog)


def _enlist(target: _Watched | None) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None and target is not None:
        deadline.enlist(target)


class _WatchedHTTPConnection(HTTPConnection):
    """Enlists in the calling request's deadline when connecting, sending and reading the answer.

    The socket itself is enlisted before the answer is read: http.client detaches it from the connection
    when the answer ends with the connection (``Connection: close``), and the read must still be cut.
    """

    def connect(self) -> None:
        _enlist(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _enlist(self)
        super().request(*args, **kwargs)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _enlist(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}
