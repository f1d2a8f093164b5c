"""`KlingClient.download` keeps what it promises: only videos are saved, never over a file that appeared
meanwhile, under a name the file system takes, resumed after a dropped connection, and with nothing of the
gateway's (key, cookies) or of the URL's credentials going where it should not.

Video hosts here are loopback servers written per test (`loopback.py`); the clip is the simulator's.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.resources
import json
import logging
import os
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import WAIT
from kling_widgets import KlingClient, KlingError, Task, TaskStatus, TransportError, Video
from kling_widgets.simulator import GatewaySimulator, Scenario
from loopback import Exchange, Loopback, loopback

CLIP = importlib.resources.files("kling_widgets").joinpath("_data/demo.mp4").read_bytes()
CLIP_SHA256 = hashlib.sha256(CLIP).hexdigest()
ETAG = '"clip-v1"'
TASK_ID = "842250903629086785"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EZMODEL_API_KEY", raising=False)
    monkeypatch.delenv("EZMODEL_BASE_URL", raising=False)


def serve_clip(exchange: Exchange) -> None:
    exchange.reply(200, CLIP, "video/mp4", {"ETag": ETAG, "Accept-Ranges": "bytes"})


@pytest.fixture
def host() -> Iterator[Loopback]:
    """A video host; it serves the clip unless a test sets another ``answer``."""
    with loopback(serve_clip) as server:
        yield server


@pytest.fixture
def kling() -> Iterator[KlingClient]:
    with KlingClient("sk-download-secret", base_url="http://127.0.0.1:9") as client:
        yield client


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_finished_task_is_saved_whole(sim: GatewaySimulator, client: KlingClient, tmp_path: Path) -> None:
    task = client.wait(sim.add_task(Scenario(polls=(0, 0))), poll_interval=0.01, max_poll_interval=0.02)
    path = client.download(task, tmp_path)
    assert path == tmp_path / f"{task.task_id}.mp4"
    assert sha256(path) == CLIP_SHA256
    assert os.listdir(tmp_path) == [path.name]


# -- only videos ----------------------------------------------------------------------------------

NOT_VIDEOS = [
    ("text/html", b"<!doctype html><html><body>Sign in to continue</body></html>", "an HTML page"),
    ("application/json", b'{"Code": "AccessDenied", "Message": "Request has expired"}', "a JSON answer"),
    ("video/mp4", b"", "an empty body"),
    ("video/mp4", b"\x00\x00\x00\x18moovjunkjunkjunk", "does not start like an MP4/MOV or WebM video"),
]


@pytest.mark.parametrize(("content_type", "body", "what"), NOT_VIDEOS)
def test_a_body_that_is_not_a_video_is_refused_and_nothing_is_left(
    host: Loopback, kling: KlingClient, tmp_path: Path, content_type: str, body: bytes, what: str
) -> None:
    host.answer = lambda exchange: exchange.reply(200, body, content_type)
    with pytest.raises(KlingError, match=what) as info:
        kling.download(f"{host.url}/video.mp4", tmp_path)
    assert info.value.code == "not_a_video"
    assert os.listdir(tmp_path) == []


def test_the_refusal_quotes_what_the_host_said(host: Loopback, kling: KlingClient, tmp_path: Path) -> None:
    host.answer = lambda exchange: exchange.reply(200, NOT_VIDEOS[1][1], "application/json")
    with pytest.raises(KlingError, match="Request has expired"):
        kling.download(f"{host.url}/video.mp4", tmp_path)


def test_a_large_page_is_refused_from_its_first_bytes(
    host: Loopback, kling: KlingClient, tmp_path: Path
) -> None:
    size = 256 * 1024 * 1024  # far more than the socket buffers hold: only a reader that stops hangs up
    sent: list[int] = []
    answered = threading.Event()

    def big_page(exchange: Exchange) -> None:
        exchange.send_response(200)
        exchange.send_header("Content-Type", "text/html")
        exchange.send_header("Content-Length", str(size))
        exchange.end_headers()
        block = b"<p>" + b"x" * (1 << 20)
        written = 0
        try:
            while written < size:
                written += exchange.wfile.write(block[: size - written])
        finally:
            sent.append(written)
            answered.set()

    host.answer = big_page
    with pytest.raises(KlingError, match="an HTML page"):
        kling.download(f"{host.url}/video.mp4", tmp_path)
    assert os.listdir(tmp_path) == []
    assert answered.wait(WAIT)
    assert sent[0] < size


def test_a_webm_video_is_saved(host: Loopback, kling: KlingClient, tmp_path: Path) -> None:
    webm = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40
    host.answer = lambda exchange: exchange.reply(200, webm, "video/webm")
    assert kling.download(f"{host.url}/clip.mp4", tmp_path).read_bytes() == webm


# -- the target file ------------------------------------------------------------------------------


def appearing_target(target: Path, then: Callable[[Exchange], None]) -> Callable[[Exchange], None]:
    """An answer during which someone else creates ``target``."""

    def answer(exchange: Exchange) -> None:
        target.write_bytes(b"theirs")
        then(exchange)

    return answer


def test_a_file_that_appears_during_the_download_is_not_replaced(
    host: Loopback, kling: KlingClient, tmp_path: Path
) -> None:
    target = tmp_path / "corgi.mp4"
    host.answer = appearing_target(target, serve_clip)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        kling.download(f"{host.url}/v.mp4", target)
    assert target.read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["corgi.mp4"]
    assert sha256(kling.download(f"{host.url}/v.mp4", target, overwrite=True)) == CLIP_SHA256


def test_without_hard_links_the_name_is_still_taken_exclusively(
    host: Loopback, kling: KlingClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")  # what vfat answers

    monkeypatch.setattr(os, "link", no_links)
    saved = kling.download(f"{host.url}/v.mp4", tmp_path / "first.mp4")
    assert sha256(saved) == CLIP_SHA256
    target = tmp_path / "second.mp4"
    host.answer = appearing_target(target, serve_clip)
    with pytest.raises(FileExistsError):
        kling.download(f"{host.url}/v.mp4", target)
    assert target.read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["first.mp4", "second.mp4"]


def test_a_too_long_name_from_the_server_is_shortened_the_same_way_each_time(
    host: Loopback, kling: KlingClient, tmp_path: Path
) -> None:
    url = f"{host.url}/{'a' * 300}.mp4?Signature=x"
    first = kling.download(url, tmp_path)
    assert len(first.name.encode()) <= 255
    assert first.name.startswith("aaaa")
    assert first.name.endswith(".mp4")
    assert kling.download(url, tmp_path, overwrite=True) == first
    other = kling.download(f"{host.url}/{'a' * 299}b.mp4", tmp_path)
    assert other != first  # the hash tells apart names with the same prefix
    task = Task("9" * 400, TaskStatus.SUCCESS, 100, (Video(f"{host.url}/v.mp4"),))
    assert len(kling.download(task, tmp_path).name.encode()) <= 255
    assert sorted(sha256(p) for p in tmp_path.iterdir()) == [CLIP_SHA256] * 3


# -- what goes to the video host, and what is shown -----------------------------------------------


def test_gateway_cookies_never_reach_the_video_host(host: Loopback, tmp_path: Path) -> None:
    submitted = json.dumps({"id": TASK_ID, "task_id": TASK_ID, "status": ""}).encode()

    def gateway_with_cookie(exchange: Exchange) -> None:
        exchange.reply(200, submitted, headers={"Set-Cookie": "gw_session=s3cret; Path=/"})

    # Same host name, another port: cookies ignore ports, so a shared cookie jar would send it.
    with loopback(gateway_with_cookie) as gateway, KlingClient("sk-x", base_url=gateway.url) as kling:
        kling.text2video("a corgi")
        task = Task(TASK_ID, TaskStatus.SUCCESS, 100, (Video(f"{host.url}/bs2/v.mp4?Signature=abc"),))
        assert sha256(kling.download(task, tmp_path)) == CLIP_SHA256
    (request,) = host.seen
    assert "Cookie" not in request.headers
    assert "Authorization" not in request.headers


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_credentials_in_a_video_url_are_never_shown(
    host: Loopback, kling: KlingClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    answers: list[Callable[[Exchange], None]] = [
        lambda exchange: exchange.reply(200, b"<html>login</html>", "text/html"),
        lambda exchange: exchange.reply(403, b"denied", "text/plain"),
        Exchange.drop,
    ]
    urls = [
        f"ftp://user:hunter2@{host.url[7:]}/v.mp4",
        f"http://user:hunter2@127.0.0.1:{unused_port()}/v.mp4",
    ]
    for url in urls:
        with pytest.raises((ValueError, KlingError)) as info:
            kling.download(url, tmp_path)
        errors.append(info.value)
    for answer in answers:
        host.answer = answer
        with pytest.raises(KlingError) as info:
            kling.download(f"http://user:hunter2@{host.url[7:]}/v.mp4", tmp_path)
        errors.append(info.value)
    text = caplog.text + "".join(f"{e}{e!r}{e.args}" for e in errors)
    assert "hunter2" not in text
    assert os.listdir(tmp_path) == []


# -- dropped connections --------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-")
# Bigger than the clip: the client writes whole 64 KiB chunks, so a resume needs a few of them first.
BIG = b"\x00\x00\x00\x18ftypmp42" + random.Random(7).randbytes(1 << 20)


def flaky(video: bytes, cuts: list[int], *, ranges: bool = True) -> Callable[[Exchange], None]:
    """A video host that drops the connection at each of ``cuts`` (byte offsets) once; with ``ranges`` it
    answers ``Range: bytes=N-`` with a 206 of the rest, without it always with the whole video."""
    pending = sorted(cuts)

    def answer(exchange: Exchange) -> None:
        match = _RANGE.fullmatch(exchange.headers.get("Range", ""))
        start = int(match.group(1)) if match and ranges else 0
        headers = {"ETag": ETAG, "Accept-Ranges": "bytes" if ranges else "none"}
        status = 200
        if start:
            assert exchange.headers.get("If-Range") == ETAG
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(video) - 1}/{len(video)}"
        cut = next((c for c in pending if c > start), None)
        if cut is None:
            exchange.reply(status, video[start:], "video/mp4", headers)
            return
        pending.remove(cut)
        exchange.reply(status, video[start:cut], "video/mp4", headers, length=len(video) - start)
        exchange.drop()

    return answer


def test_a_dropped_download_resumes_where_it_stopped(
    host: Loopback, kling: KlingClient, tmp_path: Path
) -> None:
    third = len(BIG) // 3
    host.answer = flaky(BIG, [third, 2 * third])
    path = kling.download(f"{host.url}/v.mp4", tmp_path)
    assert path.read_bytes() == BIG
    first, *resumes = (r.headers.get("Range") for r in host.seen)
    assert first is None
    starts = [int(_RANGE.fullmatch(r or "").group(1)) for r in resumes]  # type: ignore[union-attr]
    # Each resume asks for what is missing: the whole chunks received before the drop were kept.
    assert len(starts) == 2
    assert 0 < starts[0] <= third < starts[1] <= 2 * third
    assert os.listdir(tmp_path) == [path.name]


def test_a_host_without_ranges_sends_it_all_again(host: Loopback, kling: KlingClient, tmp_path: Path) -> None:
    host.answer = flaky(BIG, [len(BIG) // 2], ranges=False)
    path = kling.download(f"{host.url}/v.mp4", tmp_path)
    assert path.read_bytes() == BIG  # the 200 to the resume was written from the start, not appended
    assert [r.headers.get("Range") is not None for r in host.seen] == [False, True]


def test_a_host_that_keeps_dropping_is_given_up_on(
    host: Loopback, kling: KlingClient, tmp_path: Path
) -> None:
    host.answer = flaky(CLIP, [len(CLIP) // 2] * 100, ranges=False)
    with pytest.raises(TransportError, match="after 4 attempts") as info:
        kling.download(f"{host.url}/v.mp4", tmp_path)
    assert info.value.__context__ is None  # nothing of the request (headers, URL) hangs off the error
    assert len(host.seen) == 4
    assert os.listdir(tmp_path) == []


# -- redirects ------------------------------------------------------------------------------------


def test_a_redirect_to_the_video_is_followed_without_cookies(
    host: Loopback, kling: KlingClient, tmp_path: Path
) -> None:
    def redirect(exchange: Exchange) -> None:
        cookie = {"Set-Cookie": "cdn=1; Path=/", "Location": f"{host.url}/real.mp4"}
        exchange.reply(302, b"", "text/plain", cookie)

    with loopback(redirect) as signer:
        assert sha256(kling.download(f"{signer.url}/signed.mp4", tmp_path)) == CLIP_SHA256
    (request,) = host.seen
    assert request.path == "/real.mp4"
    assert "Cookie" not in request.headers


@pytest.mark.parametrize(
    ("location", "message"), [("file:///etc/passwd", "not http"), ("/again.mp4", "more than 10 redirects")]
)
def test_bad_redirects_are_refused(
    host: Loopback, kling: KlingClient, tmp_path: Path, location: str, message: str
) -> None:
    host.answer = lambda exchange: exchange.reply(302, b"", "text/plain", {"Location": location})
    with pytest.raises(KlingError, match=message):
        kling.download(f"{host.url}/v.mp4", tmp_path)
    assert os.listdir(tmp_path) == []
