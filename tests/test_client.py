"""KlingClient against the gateway simulator over real HTTP on 127.0.0.1.

What the simulator cannot show (request headers and bodies on the wire) is checked with `Recorder`, a
tiny loopback server that records every request and answers with a canned reply.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import re
import socket
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hostile
from kling_widgets import (
    APIError,
    AuthenticationError,
    KlingClient,
    KlingError,
    RateLimitError,
    ServerError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    TaskTimeoutError,
    TransportError,
    Video,
    _client,
    _schedule,
)
from kling_widgets._http import Answer
from kling_widgets._models import parse_task
from kling_widgets._schedule import PollPolicy
from kling_widgets.simulator import Fault, GatewaySimulator, Scenario

CLIP = importlib.resources.files("kling_widgets").joinpath("_data/demo.mp4").read_bytes()
# Tests that hold for Kling's own API too run against both simulator flavors.
both_flavors = pytest.mark.parametrize("flavor", ["ezmodel", "kling"])
SUBMITTED = {"id": "842250903629086785", "task_id": "842250903629086785", "object": "video", "status": ""}


# -- fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryCall:
    attempt: int
    retry_after: float | None
    policy_delay: float  # what _schedule.retry_delay asked for (the test sleeps 10 ms instead)


@pytest.fixture(autouse=True)
def retries(monkeypatch: pytest.MonkeyPatch) -> list[RetryCall]:
    """Record every retry the client schedules, with the policy's delay, and keep the real sleep short."""
    calls: list[RetryCall] = []

    def short_retry_delay(attempt: int, *, retry_after: float | None = None) -> float:
        calls.append(RetryCall(attempt, retry_after, _schedule.retry_delay(attempt, retry_after=retry_after)))
        return 0.01

    monkeypatch.setattr(_client, "retry_delay", short_retry_delay)
    return calls


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real gateway configuration."""
    monkeypatch.delenv("EZMODEL_API_KEY", raising=False)
    monkeypatch.delenv("EZMODEL_BASE_URL", raising=False)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Recorder:
    """A loopback HTTP server that records requests and answers each with ``reply`` (status, type, body)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply: tuple[int, str, bytes] = (200, "application/json", json.dumps(SUBMITTED).encode())
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
                status, content_type, payload = recorder.reply
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def wire(recorder: Recorder) -> Iterator[KlingClient]:
    """A client talking to the recorder."""
    with KlingClient("sk-wire-secret", base_url=recorder.url) as kling:
        yield kling


def statuses_until_done(client: KlingClient, task_id: str, endpoint: str = "text2video") -> list[Task]:
    tasks = [client.get_task(task_id, endpoint)]
    while not tasks[-1].is_terminal:
        tasks.append(client.get_task(task_id, endpoint))
    return tasks


# -- configuration --------------------------------------------------------------------------------


def test_repr_shows_the_base_url_and_never_the_key(sim: GatewaySimulator, client: KlingClient) -> None:
    assert repr(client) == f"KlingClient(base_url='{sim.url}')"
    assert sim.api_key not in repr(client) + str(client) + repr(vars(client))


def test_key_id_tells_keys_apart_without_revealing_them(sim: GatewaySimulator) -> None:
    first = KlingClient("sk-first-key", base_url=sim.url)
    assert first.key_id is not None
    assert re.fullmatch(r"[0-9a-f]{8}", first.key_id)
    assert first.key_id == KlingClient("sk-first-key", base_url=sim.url).key_id
    assert first.key_id != KlingClient("sk-other-key", base_url=sim.url).key_id
    assert first.key_id not in "sk-first-key"


def test_key_id_is_none_without_a_key(sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EZMODEL_API_KEY", raising=False)
    assert KlingClient(base_url=sim.url).key_id is None


def test_base_url_loses_its_trailing_slash(sim: GatewaySimulator) -> None:
    with KlingClient("k", base_url=sim.url + "/") as kling:
        assert kling.base_url == sim.url


def test_environment_configures_key_and_base_url(
    sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    task_id = sim.add_task()
    with KlingClient() as kling:
        assert kling.base_url == sim.url
        assert kling.get_task(task_id).task_id == task_id


def test_arguments_beat_the_environment(sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EZMODEL_API_KEY", "sk-wrong")
    monkeypatch.setenv("EZMODEL_BASE_URL", "http://127.0.0.1:9")
    task_id = sim.add_task()
    with KlingClient(sim.api_key, base_url=sim.url) as kling:
        assert kling.get_task(task_id).task_id == task_id


def test_default_base_url() -> None:
    with KlingClient("k") as kling:
        assert kling.base_url == "https://api.ezmodel.cloud"


def test_missing_key_is_reported_at_first_request_naming_the_variable(sim: GatewaySimulator) -> None:
    with KlingClient(base_url=sim.url) as kling:  # constructing without a key is fine
        with pytest.raises(AuthenticationError, match="EZMODEL_API_KEY"):
            kling.get_task(sim.add_task())
        with pytest.raises(AuthenticationError, match="EZMODEL_API_KEY"):
            kling.text2video("a corgi")
    assert sim.requests() == []


def fake_colab(monkeypatch: pytest.MonkeyPatch, get: Any) -> None:
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)  # type: ignore[attr-defined]
    google.colab = colab  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)


def test_colab_secret_is_the_last_resort(sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_colab(monkeypatch, {"EZMODEL_API_KEY": sim.api_key}.get)
    task_id = sim.add_task()
    with KlingClient(base_url=sim.url) as kling:
        assert kling.get_task(task_id).task_id == task_id


def test_colab_secret_failures_mean_no_key(sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> str:
        raise RuntimeError("the notebook has no access to this secret")

    fake_colab(monkeypatch, refuse)
    with KlingClient(base_url=sim.url) as kling, pytest.raises(AuthenticationError, match="EZMODEL_API_KEY"):
        kling.get_task("1")


def test_a_key_with_spaces_is_refused_without_being_echoed() -> None:
    with pytest.raises(AuthenticationError) as info:
        KlingClient("sk-abc def")
    assert "abc" not in str(info.value)


@pytest.mark.parametrize("base_url", ["ftp://example.com", "api.ezmodel.cloud"])
def test_base_url_must_be_http(base_url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        KlingClient("k", base_url=base_url)


# -- submitting -----------------------------------------------------------------------------------


def test_text2video_body_on_the_wire(wire: KlingClient, recorder: Recorder) -> None:
    task = wire.text2video("a corgi surfing", duration=10, negative_prompt="blur", sound="on")
    assert task.task_id == SUBMITTED["id"]
    assert task.status is TaskStatus.SUBMITTED
    (sent,) = recorder.requests
    assert (sent.method, sent.path) == ("POST", "/kling/v1/videos/text2video")
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == "Bearer sk-wire-secret"
    assert sent.headers["User-Agent"].startswith("kling-widgets/")
    assert json.loads(sent.body) == {
        "model_name": "kling-v2-6",
        "prompt": "a corgi surfing",
        "mode": "std",
        "duration": "10",  # a JSON number would fail in the gateway (build_request_failed)
        "aspect_ratio": "16:9",  # omitted, the gateway would pick 1:1
        "negative_prompt": "blur",
        "sound": "on",
    }


def test_defaults_always_send_duration_and_aspect_ratio(wire: KlingClient, recorder: Recorder) -> None:
    wire.text2video("a deer")
    body = json.loads(recorder.requests[0].body)
    assert body["duration"] == "5"
    assert body["aspect_ratio"] == "16:9"
    assert "negative_prompt" not in body


def test_image2video_body_on_the_wire(wire: KlingClient, recorder: Recorder) -> None:
    wire.image2video("data:image/png;base64,iVBORw0KGgo=", "it blinks", aspect_ratio="9:16")
    (sent,) = recorder.requests
    assert sent.path == "/kling/v1/videos/image2video"
    body = json.loads(sent.body)
    assert body["image"] == "iVBORw0KGgo="  # Kling wants raw base64, without the data: prefix
    assert (body["prompt"], body["duration"], body["aspect_ratio"]) == ("it blinks", "5", "9:16")


def test_get_sends_no_json_content_type(wire: KlingClient, recorder: Recorder) -> None:
    recorder.reply = (
        200,
        "application/json",
        json.dumps({"code": "success", "data": {"task_id": "7"}}).encode(),
    )
    wire.get_task("7")
    (sent,) = recorder.requests
    assert sent.method == "GET"
    assert "Content-Type" not in sent.headers
    assert sent.body == b""
    assert sent.headers["Authorization"] == "Bearer sk-wire-secret"


@both_flavors
def test_text2video_against_the_simulator(sim: GatewaySimulator, client: KlingClient) -> None:
    task = client.text2video("a corgi surfing at sunset")
    assert task.status is TaskStatus.SUBMITTED
    assert [(r.method, r.status) for r in sim.requests(task.task_id)] == [("POST", 200)]
    tasks = statuses_until_done(client, task.task_id)
    assert tasks[-1].status is TaskStatus.SUCCESS


def test_image2video_against_the_simulator(sim: GatewaySimulator, client: KlingClient) -> None:
    task = client.image2video("https://example.com/cat.png", "the cat yawns")
    final = statuses_until_done(client, task.task_id, "image2video")[-1]
    assert final.status is TaskStatus.SUCCESS
    assert final.raw["data"]["action"] == "generate"


@both_flavors
@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_blank_prompt_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, prompt: str
) -> None:
    with pytest.raises(ValueError, match="prompt"):
        client.text2video(prompt)
    with pytest.raises(ValueError, match="prompt"):
        client.image2video("https://example.com/cat.png", prompt)
    assert sim.requests() == []


@both_flavors
def test_empty_image_is_refused_before_sending(sim: GatewaySimulator, client: KlingClient) -> None:
    with pytest.raises(ValueError, match="image"):
        client.image2video(" ", "it blinks")
    assert sim.requests() == []


def test_a_post_is_never_retried(
    sim: GatewaySimulator, client: KlingClient, retries: list[RetryCall]
) -> None:
    # A 429 (here: the parallel-task limit) is retryable for a GET, but resending a submit could bill twice.
    sim.max_parallel = 1
    sim.add_task()  # an unfinished task takes the only slot
    with pytest.raises(RateLimitError) as info:
        client.text2video("a corgi")
    assert info.value.retryable
    assert [r.method for r in sim.requests()] == ["POST"]
    assert retries == []


# -- fetching -------------------------------------------------------------------------------------


def test_get_task_in_every_state(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 1)))
    tasks = statuses_until_done(client, task_id)
    assert [(t.status, t.progress) for t in tasks] == [
        (TaskStatus.NOT_START, 0),
        (TaskStatus.SUBMITTED, 10),
        (TaskStatus.IN_PROGRESS, 30),
        (TaskStatus.SUCCESS, 100),
    ]
    assert tasks[-1].video_url is not None
    assert tasks[-1].video_url.startswith(sim.url)
    assert all(t.video_url is None and t.fail_reason is None for t in tasks[:-1])


@both_flavors
def test_get_task_of_a_failed_task(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(outcome="failure", polls=(0, 0), fail_message="Image pixel is invalid"))
    task = client.get_task(task_id)
    assert task.status is TaskStatus.FAILURE
    assert task.fail_reason == "Image pixel is invalid"
    assert task.video_url is None


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rate_limit", RateLimitError),
        ("server_error", ServerError),
        ("html", TransportError),
        ("empty", TransportError),
        ("malformed", TransportError),
        ("not_found", TaskNotFoundError),
        ("bad_params", APIError),
        ("revoke_key", AuthenticationError),
    ],
)
def test_each_fault_maps_to_its_error(
    sim: GatewaySimulator, client: KlingClient, kind: str, error: type[KlingError]
) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault(kind),)))  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        client.get_task(task_id, retry=False)
    assert type(info.value) is error
    assert len(sim.requests(task_id)) == 1
    assert info.value.request_id  # every gateway answer carries X-Oneapi-Request-Id


@pytest.mark.parametrize(
    ("kind", "described"),
    [
        ("html", "an HTML page (HTTP 502)"),
        ("empty", "an empty body (HTTP 200)"),
        ("malformed", "malformed JSON"),
    ],
)
def test_unusable_bodies_say_what_came_back(
    sim: GatewaySimulator, client: KlingClient, kind: str, described: str
) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault(kind),)))  # type: ignore[arg-type]
    with pytest.raises(TransportError, match=re.escape(described)):
        client.get_task(task_id, retry=False)


def test_bad_params_keeps_klings_message(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault("bad_params"),)))
    with pytest.raises(APIError, match="Invalid request parameters") as info:
        client.get_task(task_id)
    assert info.value.status_code == 400
    assert len(sim.requests(task_id)) == 1


@both_flavors
@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "html", "empty", "malformed"])
def test_transient_faults_are_retried(
    sim: GatewaySimulator, client: KlingClient, retries: list[RetryCall], kind: str
) -> None:
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=(Fault(kind, count=2),)))  # type: ignore[arg-type]
    assert client.get_task(task_id).status is TaskStatus.SUBMITTED
    assert len(sim.requests(task_id)) == 3
    assert [call.attempt for call in retries] == [1, 2]


@both_flavors
@pytest.mark.parametrize("kind", ["not_found", "bad_params", "revoke_key"])
def test_fatal_faults_are_not_retried(
    sim: GatewaySimulator, client: KlingClient, retries: list[RetryCall], kind: str
) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault(kind),)))  # type: ignore[arg-type]
    with pytest.raises(APIError):
        client.get_task(task_id)
    assert len(sim.requests(task_id)) == 1
    assert retries == []


def test_retries_stop_after_max_retries(sim: GatewaySimulator, retries: list[RetryCall]) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault("server_error", count=10),)))
    with KlingClient(sim.api_key, base_url=sim.url, max_retries=2) as kling, pytest.raises(ServerError):
        kling.get_task(task_id)
    assert len(sim.requests(task_id)) == 3
    assert len(retries) == 2


@both_flavors
def test_retry_after_is_honoured(
    sim: GatewaySimulator, client: KlingClient, retries: list[RetryCall]
) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault("rate_limit", retry_after=7),)))
    client.get_task(task_id)
    (call,) = retries
    assert call.retry_after == 7.0
    assert call.policy_delay >= 7.0


def test_a_slow_answer_times_out_then_is_retried(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault("slow", delay=5.0),)))
    with KlingClient(sim.api_key, base_url=sim.url, timeout=0.3) as kling:
        with pytest.raises(TransportError, match=r"did not answer .* within 0\.3 s"):
            kling.get_task(task_id, retry=False)
        assert kling.get_task(task_id).task_id == task_id


def unused_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_an_unreachable_gateway_is_a_transport_error() -> None:
    with (
        KlingClient("sk-never-shown", base_url=unused_port_url()) as kling,
        pytest.raises(TransportError, match="Could not reach the gateway") as info,
    ):
        kling.get_task("1", retry=False)
    assert "Connection refused" in str(info.value)
    # No chained urllib3 exception: it would lead a verbose traceback to the request and its headers.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert "sk-never-shown" not in str(info.value)


@pytest.mark.parametrize("task_id", ["../x", "a/b", "a?b#c", "../../v1/models", "%2e%2e", "x y"])
def test_hostile_task_ids_stay_one_path_segment(
    sim: GatewaySimulator, client: KlingClient, task_id: str
) -> None:
    sim.add_task(task_id=task_id)
    assert client.get_task(task_id).task_id == task_id
    (logged,) = sim.requests(task_id)
    assert logged.path == "/kling/v1/videos/text2video/" + quote(task_id, safe="")
    assert logged.path.count("/") == 5


@pytest.mark.parametrize("task_id", ["", "  ", ".", ".."])
def test_unusable_task_ids_are_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, task_id: str
) -> None:
    with pytest.raises(ValueError, match=r"task id|task_id"):
        client.get_task(task_id)
    assert sim.requests() == []


def test_task_id_must_be_a_string(client: KlingClient) -> None:
    with pytest.raises(TypeError, match="string"):
        client.get_task(842250903629086785)  # type: ignore[arg-type]


@both_flavors
def test_endpoint_is_validated(sim: GatewaySimulator, client: KlingClient) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        client.get_task("1", "../../admin")
    assert sim.requests() == []
    task_id = sim.add_task()
    assert client.get_task(task_id, "image2video").task_id == task_id


# -- waiting --------------------------------------------------------------------------------------


def test_wait_returns_the_successful_task(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 2)))
    seen: list[TaskStatus] = []
    task = client.wait(
        task_id, poll_interval=0.01, max_poll_interval=0.02, on_poll=lambda t: seen.append(t.status)
    )
    assert task.status is TaskStatus.SUCCESS
    assert task.video_url
    assert seen == [
        TaskStatus.NOT_START,
        TaskStatus.SUBMITTED,
        TaskStatus.IN_PROGRESS,
        TaskStatus.IN_PROGRESS,
        TaskStatus.SUCCESS,
    ]


@both_flavors
def test_wait_raises_task_failed_with_the_reason(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(outcome="failure", polls=(1, 1), fail_message="content policy: 1301"))
    with pytest.raises(TaskFailedError, match="content policy: 1301") as info:
        client.wait(task_id, poll_interval=0.01, max_poll_interval=0.02)
    assert info.value.task.status is TaskStatus.FAILURE


@both_flavors
def test_wait_times_out(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(queued=10_000.0))
    with pytest.raises(TaskTimeoutError) as info:
        client.wait(task_id, timeout=0.2, poll_interval=0.01, max_poll_interval=0.02)
    assert isinstance(info.value, TimeoutError)
    assert info.value.task is not None
    assert info.value.task.status.is_queued
    assert info.value.task_id == task_id


@both_flavors
def test_wait_rides_out_transient_errors(sim: GatewaySimulator, client: KlingClient) -> None:
    faults = (Fault("server_error", at_poll=2, count=2), Fault("rate_limit", at_poll=5, retry_after=3))
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=faults))
    # The engine's policy, with short retries and Retry-After honoured up to 0.05 s only.
    fast = PollPolicy(poll_interval=0.01, max_poll_interval=0.02, retry_base=0.01, max_retry_after=0.05)
    assert client.wait(task_id, policy=fast).status is TaskStatus.SUCCESS
    statuses = [r.status for r in sim.requests(task_id) if r.method == "GET"]
    assert statuses == [200, 500, 500, 200, 429, 200]


@both_flavors
def test_wait_stops_at_a_fatal_error(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(polls=(3, 3), faults=(Fault("revoke_key", at_poll=2),)))
    with pytest.raises(AuthenticationError):
        client.wait(task_id, poll_interval=0.01, max_poll_interval=0.02)
    assert len(sim.requests(task_id)) == 2


@both_flavors
def test_wait_times_out_while_the_gateway_keeps_failing(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(Scenario(faults=(Fault("server_error", count=10_000),)))
    with pytest.raises(TaskTimeoutError) as info:
        client.wait(task_id, timeout=0.2, poll_interval=0.01, max_poll_interval=0.02)
    assert info.value.task is None
    assert isinstance(info.value.__cause__, ServerError)


# -- downloading ----------------------------------------------------------------------------------


def finished(sim: GatewaySimulator, client: KlingClient) -> Task:
    return client.wait(sim.add_task(Scenario(polls=(0, 0))), poll_interval=0.01, max_poll_interval=0.02)


@both_flavors
def test_download_saves_the_clip_as_task_id_mp4(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = finished(sim, client)
    monkeypatch.chdir(tmp_path)
    path = client.download(task)
    assert path == tmp_path / f"{task.task_id}.mp4"
    assert path.read_bytes() == CLIP
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind
    assert [r.method for r in sim.requests(task.task_id)][-1] == "GET"


def test_download_into_a_directory_or_to_a_file(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    task = finished(sim, client)
    assert client.download(task, tmp_path) == tmp_path / f"{task.task_id}.mp4"
    chosen = tmp_path / "corgi.mp4"
    assert client.download(task.video_url or "", chosen) == chosen
    assert chosen.read_bytes() == CLIP


def test_download_of_a_url_is_named_after_it(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    path = client.download(sim.clip_url, tmp_path)
    assert path.name == sim.clip_url.split("?")[0].rsplit("/", 1)[-1]
    assert path.read_bytes() == CLIP


def test_download_refuses_to_overwrite_unless_asked(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    target = tmp_path / "video.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        client.download(sim.clip_url, target)
    assert target.read_bytes() == b"precious"
    client.download(sim.clip_url, target, overwrite=True)
    assert target.read_bytes() == CLIP


def test_download_never_sends_the_key_to_the_video_host(
    wire: KlingClient, recorder: Recorder, tmp_path: Path
) -> None:
    recorder.reply = (200, "video/mp4", CLIP)
    video_url = f"{recorder.url}/bs2/video.mp4?Expires=1786752187&Signature=abc"
    task = Task("842250903629086785", TaskStatus.SUCCESS, 100, (Video(video_url),))
    assert wire.download(task, tmp_path).read_bytes() == CLIP
    (sent,) = recorder.requests
    assert sent.path == "/bs2/video.mp4?Expires=1786752187&Signature=abc"
    assert "Authorization" not in sent.headers
    assert "sk-wire-secret" not in json.dumps(sent.headers)


def test_a_failed_download_leaves_nothing_behind(
    recorder: Recorder, wire: KlingClient, tmp_path: Path
) -> None:
    recorder.reply = (403, "text/html", b"<html>AccessDenied</html>")
    with pytest.raises(KlingError, match="HTTP 403") as info:
        wire.download(f"{recorder.url}/expired.mp4", tmp_path)
    assert info.value.status_code == 403
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "ftp://example.com/a.mp4"])
def test_download_only_fetches_http_urls(client: KlingClient, tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        client.download(url, tmp_path)


def test_download_of_an_unfinished_task_is_refused(client: KlingClient, tmp_path: Path) -> None:
    task = Task("1", TaskStatus.FAILURE, 100, fail_reason="Image pixel is invalid")
    with pytest.raises(ValueError, match=r"no video.*Image pixel is invalid"):
        client.download(task, tmp_path)


def test_hostile_task_id_cannot_escape_the_directory(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    task = Task("../../etc/evil", TaskStatus.SUCCESS, 100, (Video(sim.clip_url),))
    path = client.download(task, tmp_path)
    assert path.parent == tmp_path
    assert path.name.endswith(".mp4")


# -- secrets --------------------------------------------------------------------------------------


def test_the_key_never_reaches_logs_or_errors(
    sim: GatewaySimulator, client: KlingClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    task = client.wait(client.text2video("a corgi").task_id, poll_interval=0.01, max_poll_interval=0.02)
    client.download(task, tmp_path)
    kinds = ("rate_limit", "server_error", "html", "empty", "malformed", "not_found", "revoke_key")
    retried = tuple(Fault(kind, at_poll=poll) for poll, kind in enumerate(kinds[:3], start=1))  # type: ignore[arg-type]
    client.get_task(sim.add_task(Scenario(faults=retried)))
    for fault in (Fault(kind) for kind in kinds):  # type: ignore[arg-type]
        with pytest.raises(KlingError) as info:
            client.get_task(sim.add_task(Scenario(faults=(fault,))), retry=False)
        errors.append(info.value)
    assert caplog.records  # the client did log
    text = caplog.text + "".join(f"{e}{e!r}{e.args}" for e in errors)
    assert sim.api_key not in text
    assert sim.api_key.removeprefix("sk-") not in text


# -- small pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("1e10", _schedule.MAX_RETRY_AFTER),  # capped: a sleep that long would overflow
        ("1e400", None),  # infinite
        ("Fri, 31 Dec 9999 23:59:59 GMT", _schedule.MAX_RETRY_AFTER),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),  # no such date
    ],
)
def test_parse_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert _client._parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 7, 16, 12, 0, 0, tzinfo=timezone.utc)
    header = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert _client._parse_retry_after(header, now=now) == 90.0
    assert _client._parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0.0


# -- hardening: fatal non-JSON answers, mixed-up answers, unreadable JSON, capped Retry-After ---------


def test_a_rate_limit_for_centuries_is_retried_after_the_cap(retries: list[RetryCall]) -> None:
    answers = iter(
        [
            hostile.response(b"", "429 Too Many Requests", Retry_After="1e10"),
            hostile.response(hostile.task_json("1")),
        ]
    )
    with (
        hostile.HostileServer(lambda sock: sock.sendall(next(answers))) as server,
        KlingClient("sk-x", base_url=server.url) as kling,
    ):
        assert kling.get_task("1").task_id == "1"
    (call,) = retries
    assert call.retry_after == _schedule.MAX_RETRY_AFTER
    assert call.policy_delay <= _schedule.MAX_RETRY_AFTER  # what get_task would really sleep


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410])
def test_a_non_json_4xx_is_fatal_and_names_the_base_url_setting(
    wire: KlingClient, recorder: Recorder, retries: list[RetryCall], status: int
) -> None:
    recorder.reply = (status, "text/html", b"<html><body>Not Found</body></html>")
    with pytest.raises(TransportError, match="Check EZMODEL_BASE_URL") as info:
        wire.get_task("842250903629086785")
    assert not info.value.retryable
    assert info.value.status_code == status
    assert len(recorder.requests) == 1
    assert retries == []


def test_a_non_json_408_is_still_retried(
    wire: KlingClient, recorder: Recorder, retries: list[RetryCall]
) -> None:
    recorder.reply = (408, "text/html", b"<html>Request Timeout</html>")
    with pytest.raises(TransportError) as info:
        wire.get_task("1")
    assert info.value.retryable
    assert len(recorder.requests) == 1 + wire.max_retries


def test_an_answer_about_another_task_is_refused(wire: KlingClient, recorder: Recorder) -> None:
    recorder.reply = (200, "application/json", hostile.task_json("999"))
    with pytest.raises(TransportError, match="answered about task '999' when asked about '1'") as info:
        wire.get_task("1", retry=False)
    assert info.value.task_id == "1"


@pytest.mark.parametrize(
    ("body", "described"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        (b'{"data": ' * 50_000 + b"1" + b"}" * 50_000, "JSON nested too deeply"),
        (
            b'{"code": "success", "data": {"task_id": "1", "progress": ' + b"9" * 5000 + b"}}",
            "malformed JSON",
        ),
        (b'{"code": ' + b"7" * 100_000 + b"}", "malformed JSON"),
    ],
    ids=["deep-array", "deep-object", "long-number", "longer-number"],
)
def test_unreadable_json_is_a_transport_error(
    wire: KlingClient, recorder: Recorder, body: bytes, described: str
) -> None:
    recorder.reply = (200, "application/json", body)
    with pytest.raises(TransportError, match=described):
        wire.get_task("1", retry=False)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 201, 301, 400, 401, 403, 404, 408, 429, 500, 502, 503]),
    content_type=st.sampled_from(["application/json", "text/html", ""]),
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=30,
        ).map(lambda value: json.dumps(value).encode()),
        st.builds(
            lambda data: json.dumps({"code": "success", "data": data}).encode(),
            st.dictionaries(
                st.sampled_from(["task_id", "status", "progress", "fail_reason", "data"]), st.text()
            ),
        ),
    ),
)
def test_any_answer_gives_a_task_or_a_kling_error(status: int, content_type: str, body: bytes) -> None:
    answer = Answer(status, {"Content-Type": content_type, "Retry-After": "1e10"}, body)
    with contextlib.suppress(KlingError):  # anything else fails the test
        parse_task(FUZZ_CLIENT._decode(answer))


FUZZ_CLIENT = KlingClient("sk-fuzz", base_url="http://127.0.0.1:9", ledger=False)  # never sends: only decodes


def test_the_environments_proxy_carries_gateway_requests(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", recorder.url)  # as requests honoured it, so does the lean GET path
    recorder.reply = (200, "application/json", hostile.task_json("1"))
    with KlingClient("sk-proxied", base_url="http://gateway.invalid") as kling:
        assert kling.get_task("1").task_id == "1"
    (request,) = recorder.requests
    assert request.path == "http://gateway.invalid/kling/v1/videos/text2video/1"


def test_a_socks_proxy_is_refused_at_once_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", "socks5://me:hunter2@127.0.0.1:1080")
    with pytest.raises(ValueError, match=re.escape("socks5://127.0.0.1:1080")) as info:
        KlingClient("sk-x", base_url="https://gateway.invalid")
    assert "hunter2" not in str(info.value)
