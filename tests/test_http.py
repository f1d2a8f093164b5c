"""The gateway transport against hostile gateways: every request bounded in time, size and scope.

Each test drives a real `KlingClient` against `hostile.HostileServer` (raw bytes on a loopback socket) or
the simulator: trickled answers, endless bodies, gzip bombs, redirects, a forked child.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

import hostile
from helpers import FOREVER
from kling_widgets import KlingClient, KlingError, RateLimitError, TaskStatus, TransportError
from kling_widgets._http import MAX_BODY_BYTES
from kling_widgets.simulator import GatewaySimulator

KEY = "sk-transport-secret-4242"
TASK = hostile.response(hostile.task_json("1"))


@pytest.fixture
def gateway() -> Iterator[Callable[[hostile.Respond], hostile.HostileServer]]:
    """Start hostile servers answering as told; all are closed after the test."""
    servers: list[hostile.HostileServer] = []

    def start(respond: hostile.Respond) -> hostile.HostileServer:
        servers.append(hostile.HostileServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def get(server: hostile.HostileServer, timeout: float = 5.0) -> KlingError:
    """The error of one GET of task "1" (without retries)."""
    with KlingClient(KEY, base_url=server.url, timeout=timeout) as client, pytest.raises(KlingError) as info:
        client.get_task("1", retry=False)
    return info.value


# -- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, len(TASK) - 20], ids=["status-line", "body"])
def test_a_trickling_gateway_ends_at_the_deadline(gateway: Any, after: int) -> None:
    # One byte every 50 ms: each read is quick, so only a whole-request deadline ends it (in 0.5 s,
    # not the 6 s the trickle lasts; main returned the task after those 6 s).
    server = gateway(hostile.trickle(TASK, 0.05, after=after))
    error = get(server, timeout=0.5)
    assert isinstance(error, TransportError)
    assert "did not answer GET /kling/v1/videos/text2video/1 within 0.5 s" in str(error)
    assert error.retryable


def test_the_deadline_leaves_the_connection_pool_usable(gateway: Any) -> None:
    answers = iter([hostile.trickle(TASK, 0.05), hostile.answer(TASK)])
    server = gateway(lambda sock: next(answers)(sock))
    with KlingClient(KEY, base_url=server.url, timeout=0.5) as client:
        with pytest.raises(TransportError, match="did not answer"):
            client.get_task("1", retry=False)
        assert client.get_task("1", retry=False).task_id == "1"


# -- size -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "respond",
    [
        hostile.endless(limit=3 * MAX_BODY_BYTES),
        hostile.gzip_bomb(4 * MAX_BODY_BYTES),
        hostile.answer(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
        ),
    ],
    ids=["endless", "gzip-bomb", "declared-huge"],
)
def test_an_oversized_answer_is_refused_unread(gateway: Any, respond: hostile.Respond) -> None:
    error = get(gateway(respond), timeout=3.0)
    assert isinstance(error, TransportError)
    assert f"larger than {MAX_BODY_BYTES:,} bytes" in str(error)
    assert not error.retryable  # such an answer does not improve by asking again


def test_an_answer_at_the_limit_is_read(gateway: Any) -> None:
    body = hostile.task_json("1")[:-1] + b', "pad": "' + b"x" * (MAX_BODY_BYTES - 100) + b'"}'
    assert len(body) <= MAX_BODY_BYTES
    with KlingClient(KEY, base_url=gateway(hostile.answer(hostile.response(body))).url) as client:
        assert len(client.get_task("1").raw["pad"]) == MAX_BODY_BYTES - 100


def test_a_gzip_answer_is_decompressed(gateway: Any) -> None:
    server = gateway(
        hostile.answer(hostile.response(gzip.compress(hostile.task_json("1")), Content_Encoding="gzip"))
    )
    with KlingClient(KEY, base_url=server.url) as client:
        assert client.get_task("1").status is TaskStatus.IN_PROGRESS


# -- scope ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_redirect_is_never_followed(gateway: Any, status: str, method: str) -> None:
    elsewhere = gateway(hostile.answer(TASK))
    server = gateway(hostile.answer(hostile.response(b"", status, Location=elsewhere.url + "/steal")))
    with KlingClient(KEY, base_url=server.url) as client, pytest.raises(TransportError) as info:
        client.get_task("1") if method == "GET" else client.text2video("a corgi")
    assert elsewhere.heads == []  # the other host got nothing, let alone the key
    assert len(server.heads) == 1  # and a redirect is no reason to ask again
    assert not info.value.retryable
    assert "EZMODEL_BASE_URL" in str(info.value)


def test_gateway_cookies_are_not_kept(gateway: Any) -> None:
    server = gateway(hostile.answer(hostile.response(hostile.task_json("1"), Set_Cookie="session=gateway")))
    with KlingClient(KEY, base_url=server.url) as client:
        client.get_task("1")
        client.get_task("1")
    assert all(b"cookie" not in head.lower() for head in server.heads)


def test_a_post_that_got_no_answer_is_not_resent(gateway: Any) -> None:
    server = gateway(hostile.trickle(hostile.response(b'{"task_id": "1"}'), 0.05))
    with KlingClient(KEY, base_url=server.url, timeout=0.3) as client, pytest.raises(TransportError):
        client.text2video("a corgi")
    assert len(server.heads) == 1


# -- the key is out of reach of every exception ---------------------------------------------------


def reachable(root: object, depth: int = 10) -> Iterator[object]:
    """Everything reachable from ``root`` through causes, contexts, args, attributes and containers."""
    seen: set[int] = set()
    stack = [(root, 0)]
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    while stack:
        obj, level = stack.pop()
        if id(obj) in seen or level > depth or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, (str, bytes, int, float)):
            continue
        children: list[Any] = []
        if isinstance(obj, BaseException):
            children += [obj.__cause__, obj.__context__, *obj.args]
        if isinstance(obj, Mapping):
            children += [*obj.keys(), *obj.values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children += list(obj)
        children += list(getattr(obj, "__dict__", {}).values())
        for cls in type(obj).__mro__:
            children += [getattr(obj, name, None) for name in getattr(cls, "__slots__", ())]
        stack += [(child, level + 1) for child in children]


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def reset_midway(sock: socket.socket) -> None:
    sock.sendall(TASK[:-10])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
    sock.close()


FAILURES: dict[str, hostile.Respond] = {
    "trickle": hostile.trickle(TASK, 0.05),
    "too-large": hostile.endless(limit=2 * MAX_BODY_BYTES),
    "reset": reset_midway,
    "html-502": hostile.answer(hostile.response(b"<html>bad gateway</html>", "502 Bad Gateway", "text/html")),
    "html-404": hostile.answer(hostile.response(b"<html>not here</html>", "404 Not Found", "text/html")),
    "malformed": hostile.answer(hostile.response(b'{"code": ')),
    "deep": hostile.answer(hostile.response(b"[" * 100_000 + b"]" * 100_000)),
    "redirect": hostile.answer(hostile.response(b"", "302 Found", Location="http://example.invalid/")),
    "401": hostile.answer(hostile.response(b'{"error": {"message": "bad key"}}', "401 Unauthorized")),
    "429": hostile.answer(hostile.response(b"", "429 Too Many Requests", Retry_After="1e10")),
    "500": hostile.answer(hostile.response(b'{"code": "x", "message": "boom"}', "500 Internal Server Error")),
    "other-task": hostile.answer(hostile.response(hostile.task_json("2"))),
}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_exception_leads_to_the_key(gateway: Any, method: str) -> None:
    bases = {"unreachable": closed_port_url()} | {
        name: gateway(respond).url for name, respond in FAILURES.items()
    }
    errors = []
    for base_url in bases.values():
        with KlingClient(KEY, base_url=base_url, timeout=0.5, max_retries=0) as client:
            try:
                client.get_task("1") if method == "GET" else client.text2video("a corgi")
            except KlingError as exc:
                errors.append(exc)
    assert len(errors) >= len(bases) - (1 if method == "POST" else 0)  # "other-task" is a fine POST answer
    for error in errors:
        for obj in reachable(error):
            assert KEY not in (obj.decode("latin-1") if isinstance(obj, bytes) else str(obj)), (error, obj)
        assert error.__cause__ is None
        assert getattr(error.__context__, "request", None) is None


def test_a_rate_limit_in_centuries_waits_at_most_the_cap(gateway: Any) -> None:
    server = gateway(FAILURES["429"])
    error = get(server)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 300.0


# -- fork -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() in a process with threads
def test_a_forked_child_never_shares_the_parents_connections() -> None:
    polls = 100
    with (
        GatewaySimulator(scenario=FOREVER) as sim,
        KlingClient(sim.api_key, base_url=sim.url, timeout=5) as client,
    ):
        mine, theirs = sim.add_task(), sim.add_task()
        client.get_task(mine)  # a kept-alive connection, inherited by the child below
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's result travels by exit status
            signal.alarm(30)
            try:
                ok = all(client.get_task(theirs, retry=False).task_id == theirs for _ in range(polls))
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        answers = []
        try:
            for _ in range(polls):
                answers.append(client.get_task(mine, retry=False).task_id)
        finally:
            _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert answers == [mine] * polls
        requested = {request.task_id for request in sim.requests()}
        assert requested == {mine, theirs}


def test_a_slow_gateway_holds_up_no_other_request(gateway: Any) -> None:
    slow = gateway(hostile.trickle(TASK, 0.05))
    fast = gateway(hostile.answer(TASK))
    outcome: dict[str, Any] = {}

    def poll_slow() -> None:
        outcome["slow"] = get(slow, timeout=0.5)

    worker = threading.Thread(target=poll_slow)
    worker.start()
    with KlingClient(KEY, base_url=fast.url, timeout=5) as client:
        tasks = [client.get_task("1") for _ in range(20)]
    worker.join()
    assert all(task.task_id == "1" for task in tasks)
    assert isinstance(outcome["slow"], TransportError)


# -- HTTPS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (its file, a server context using it)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return str(cert), context


@pytest.fixture
def tls_gateway(
    certificate: tuple[str, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[hostile.Respond], hostile.HostileServer]]:
    """Start HTTPS hostile servers whose certificate the client trusts (REQUESTS_CA_BUNDLE, as before)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    servers: list[hostile.HostileServer] = []

    def start(respond: hostile.Respond) -> hostile.HostileServer:
        servers.append(hostile.HostileServer(respond, tls=certificate[1]))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_https_answers_are_read_with_the_trusted_bundle(tls_gateway: Any) -> None:
    server = tls_gateway(hostile.answer(TASK))
    with KlingClient(KEY, base_url=server.url) as client:
        assert client.get_task("1").task_id == "1"
        assert client.get_task("1").task_id == "1"  # over the kept-alive TLS connection
    assert len(server.heads) == 2


def test_https_certificates_are_verified(tls_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = tls_gateway(hostile.answer(TASK))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # the default bundle does not know our certificate
    error = get(server)
    assert isinstance(error, TransportError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert server.heads == []


def test_a_trickling_https_gateway_ends_at_the_deadline(tls_gateway: Any) -> None:
    error = get(tls_gateway(hostile.trickle(TASK, 0.05)), timeout=0.5)
    assert isinstance(error, TransportError)
    assert "did not answer" in str(error)


def test_a_body_cut_short_by_the_deadline_is_not_taken_for_an_answer(gateway: Any) -> None:
    # No Content-Length and no chunks: the body ends when the connection does, as the deadline ends it.
    # The JSON is complete at once; the trailing spaces trickle on for 5 s (each read is quick).
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    answer = head + hostile.task_json("1")
    error = get(gateway(hostile.trickle(answer + b" " * 100, 0.05, after=len(answer))), timeout=0.5)
    assert isinstance(error, TransportError)
    assert "did not answer" in str(error)
