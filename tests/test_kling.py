"""Kling's own API as a second backend: configuration, the JWT, envelopes and error codes, idempotent
submissions by ``external_task_id``, the task list and units charged; against the kling simulator flavor.

Secret keys here are 32 characters or more, like Kling's: PyJWT warns about shorter HMAC keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

import hostile
from helpers import WAIT, RecordingComm
from kling_widgets import (
    APIError,
    AuthenticationError,
    KlingClient,
    KlingError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    Task,
    TaskNotFoundError,
    TaskStatus,
    TaskStatusWidget,
    TransportError,
    _backend,
    generate,
)
from kling_widgets.__main__ import main
from kling_widgets._backend import KlingBackend, KlingToken, Secret
from kling_widgets._catalogue import ROUTING_NAMES
from kling_widgets._errors import kling_error_from_response
from kling_widgets._ledger import Ledger
from kling_widgets._poller import Engine
from kling_widgets._schedule import PollPolicy
from kling_widgets.simulator import Fault, GatewaySimulator, Scenario

FAST = Scenario(polls=(1, 1))
SK = "sk-test-0123456789abcdef0123456789abcdef"
QUICK = {"poll_interval": 0.01, "max_poll_interval": 0.02}


@pytest.fixture
def ksim() -> Iterator[GatewaySimulator]:
    with GatewaySimulator(flavor="kling", speed=50.0, scenario=FAST) as simulator:
        yield simulator


@pytest.fixture
def kclient(ksim: GatewaySimulator) -> Iterator[KlingClient]:
    with KlingClient(access_key=ksim.access_key, secret_key=ksim.secret_key, base_url=ksim.url) as kling:
        yield kling


@pytest.fixture(autouse=True)
def no_keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "EZMODEL_API_KEY",
        "EZMODEL_BASE_URL",
        "KLING_ACCESS_KEY",
        "KLING_SECRET_KEY",
        "KLING_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


# -- configuration ----------------------------------------------------------------------------------


def test_kling_keys_come_from_the_environment(
    ksim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_ACCESS_KEY", ksim.access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", ksim.secret_key)
    monkeypatch.setenv("KLING_BASE_URL", ksim.url + "/")
    with KlingClient() as kling:
        assert (kling.backend, kling.base_url) == ("kling", ksim.url)
        assert kling.key_id == hashlib.sha256(ksim.access_key.encode()).hexdigest()[:8]
        assert kling.get_task(ksim.add_task()).status is TaskStatus.SUBMITTED


def test_kling_default_base_url() -> None:
    with KlingClient(access_key="ak", secret_key=SK) as kling:
        assert (kling.backend, kling.base_url) == ("kling", "https://api-singapore.klingai.com")
    with KlingClient() as kling:
        assert (kling.backend, kling.base_url) == ("ezmodel", "https://api.ezmodel.cloud")


def test_colab_secrets_hold_kling_keys(ksim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"KLING_ACCESS_KEY": ksim.access_key, "KLING_SECRET_KEY": ksim.secret_key}
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=secrets.get)  # type: ignore[attr-defined]
    google.colab = colab  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    with KlingClient(base_url=ksim.url) as kling:
        assert kling.backend == "kling"
        assert kling.get_task(ksim.add_task()).task_id


def test_both_kinds_of_keys_as_arguments_is_an_error_naming_both() -> None:
    with pytest.raises(AuthenticationError, match=r"api_key=.*access_key=") as info:
        KlingClient("sk-gateway", access_key="ak", secret_key="sk-kling-secret")
    assert "sk-kling-secret" not in str(info.value)
    assert "sk-gateway" not in str(info.value)


def test_both_kinds_of_keys_in_the_environment_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EZMODEL_API_KEY", "sk-gateway")
    monkeypatch.setenv("KLING_ACCESS_KEY", "ak")
    monkeypatch.setenv("KLING_SECRET_KEY", "sk-kling-secret")
    with pytest.raises(AuthenticationError, match=r"EZMODEL_API_KEY.*KLING_ACCESS_KEY") as info:
        KlingClient()
    assert "sk-kling-secret" not in str(info.value)


def test_an_argument_beats_the_other_backends_environment(
    sim: GatewaySimulator, ksim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_ACCESS_KEY", ksim.access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", ksim.secret_key)
    with KlingClient(sim.api_key, base_url=sim.url) as gateway:
        assert gateway.backend == "ezmodel"
        assert gateway.get_task(sim.add_task()).task_id
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    with KlingClient(access_key=ksim.access_key, secret_key=ksim.secret_key, base_url=ksim.url) as kling:
        assert kling.backend == "kling"


def test_a_half_of_the_pair_not_given_comes_from_the_environment(
    ksim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_SECRET_KEY", ksim.secret_key)
    with KlingClient(access_key=ksim.access_key, base_url=ksim.url) as kling:
        assert kling.get_task(ksim.add_task()).task_id


@pytest.mark.parametrize(("given", "missing"), [({"access_key": "ak"}, "KLING_SECRET_KEY"),
                                                 ({"secret_key": "sk"}, "KLING_ACCESS_KEY")])  # fmt: skip
def test_a_missing_half_of_the_pair_is_reported_at_the_first_request(
    ksim: GatewaySimulator, given: dict[str, str], missing: str
) -> None:
    with KlingClient(base_url=ksim.url, **given) as kling:
        assert kling.backend == "kling"
        with pytest.raises(AuthenticationError, match=missing):
            kling.get_task("1")
    assert ksim.requests() == []


# -- the token ----------------------------------------------------------------------------------------


def test_the_token_is_klings_jwt() -> None:
    now = 1_800_000_000.0
    token = KlingToken(Secret("ak-1"), Secret(SK), clock=lambda: now).current()
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, SK, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})
    assert claims == {"iss": "ak-1", "exp": 1_800_001_800, "nbf": 1_799_999_995}


def test_the_token_is_renewed_when_a_sixth_of_its_life_is_left() -> None:
    now = [1_800_000_000.0]
    maker = KlingToken(Secret("ak"), Secret(SK), clock=lambda: now[0])
    first = maker.current()
    now[0] += 1499  # 301 s left
    assert maker.current() == first
    now[0] += 2  # 299 s left
    second = maker.current()
    assert second != first
    assert (
        jwt.decode(second, SK, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})[
            "exp"
        ]
        == 1_800_000_000 + 1501 + 1800
    )
    assert maker.made == 2


@pytest.mark.parametrize("lifetime", [0, 1.5, float("nan")])
def test_a_token_lifetime_under_2_s_is_refused(lifetime: float) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        KlingClient(access_key="ak", secret_key=SK, token_lifetime=lifetime)


def test_threads_asking_at_once_share_one_token() -> None:
    maker = KlingToken(Secret("ak"), Secret(SK))
    start = threading.Barrier(20)
    tokens: list[str] = []

    def ask() -> None:
        start.wait()
        tokens.append(maker.current())

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1
    assert maker.made == 1


def test_tokens_are_renewed_across_expiry_while_50_watches_poll(ksim: GatewaySimulator) -> None:
    # Tokens of 3 s (renewed with 0.5 s left) while tasks run for 7 s: every watch outlives several tokens.
    ksim.speed = 1.0
    task_ids = [ksim.add_task(Scenario(queued=1.0, running=6.0)) for _ in range(50)]
    engine = Engine(max_workers=8, policy=PollPolicy(poll_interval=0.2, max_poll_interval=0.5))
    with KlingClient(
        access_key=ksim.access_key, secret_key=ksim.secret_key, base_url=ksim.url, token_lifetime=3
    ) as kling:
        try:
            watches = [
                engine.watch(lambda t=task_id: kling.get_task(t, retry=False), task_id=task_id, timeout=WAIT)
                for task_id in task_ids
            ]
            results = [w.result(timeout=WAIT) for w in watches]
        finally:
            engine.shutdown()
    assert {task.status for task in results} == {TaskStatus.SUCCESS}
    gets = [r.status for r in ksim.requests() if r.method == "GET"]
    assert len(gets) >= 50 * 3
    assert set(gets) == {200}  # not one 401: no token was used after its expiry
    assert len(ksim.token_expiries()) >= 3


@pytest.mark.parametrize(
    ("shift", "code"),
    [(-3600.0, 1004), (3600.0, 1003)],  # made an hour ago (expired), or an hour ahead (not yet valid)
)
def test_the_simulator_checks_the_token_times(ksim: GatewaySimulator, shift: float, code: int) -> None:
    token = KlingToken(Secret(ksim.access_key), Secret(ksim.secret_key), clock=lambda: time.time() + shift)
    assert raw_get(ksim, f"/v1/videos/text2video/{ksim.add_task()}", token.current()) == (401, code)


@pytest.mark.parametrize(
    ("access", "secret", "code"), [("ak-other", None, 1002), (None, "sk-other-" + "x" * 32, 1002)]
)
def test_the_simulator_checks_the_signature_and_issuer(
    ksim: GatewaySimulator, access: str | None, secret: str | None, code: int
) -> None:
    token = KlingToken(Secret(access or ksim.access_key), Secret(secret or ksim.secret_key)).current()
    assert raw_get(ksim, f"/v1/videos/text2video/{ksim.add_task()}", token) == (401, code)
    assert raw_get(ksim, f"/v1/videos/text2video/{ksim.add_task()}", "") == (401, 1001)


def raw_get(sim: GatewaySimulator, path: str, token: str) -> tuple[int, int]:
    """(HTTP status, Kling code) of a GET with ``token``."""
    request = urllib.request.Request(sim.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return answer.status, json.loads(answer.read())["code"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["code"]


def test_an_expired_token_maps_to_an_authentication_error_naming_the_clock() -> None:
    body = {"code": 1004, "message": "Authorization has expired", "request_id": "r-1"}
    error = kling_error_from_response(401, body)
    assert type(error) is AuthenticationError
    assert (error.code, error.request_id, error.retryable) == ("1004", "r-1", False)
    assert "clock" in str(error)
    assert "KLING_ACCESS_KEY" in str(error)


# -- error codes ----------------------------------------------------------------------------------------

CODES = [
    *[(401, code, AuthenticationError, False, "KLING_SECRET_KEY") for code in range(1000, 1005)],
    (429, 1100, PermissionDeniedError, False, "account"),
    (429, 1101, PermissionDeniedError, False, "recharge"),
    (429, 1102, PermissionDeniedError, False, "resource pack"),
    (403, 1103, PermissionDeniedError, False, "may not use"),
    (400, 1200, APIError, False, "check the parameters"),
    (400, 1201, APIError, False, "check the parameters"),
    (404, 1202, APIError, False, "endpoint"),
    (404, 1203, TaskNotFoundError, False, "task id"),
    (400, 1300, APIError, False, "policy"),
    (400, 1301, APIError, False, "content safety"),
    (429, 1302, RateLimitError, True, "slow down"),
    (429, 1303, RateLimitError, True, "parallel task limit"),
    (429, 1304, PermissionDeniedError, False, "allow-list"),
    (500, 5000, ServerError, True, "internal"),
    (503, 5001, ServerError, True, "maintenance"),
    (504, 5002, ServerError, True, "timed out"),
]


@pytest.mark.parametrize(("status", "code", "cls", "retryable", "fix"), CODES)
def test_each_kling_code_maps_onto_the_error_tree(
    status: int, code: int, cls: type[KlingError], retryable: bool, fix: str
) -> None:
    error = kling_error_from_response(status, {"code": code, "message": "said <b>so</b>", "request_id": "r"})
    assert type(error) is cls
    assert (error.status_code, error.code, error.request_id, error.retryable) == (
        status,
        str(code),
        "r",
        retryable,
    )
    assert fix in str(error)
    assert "Kling said: said <b>so</b>" in str(error)


def test_an_unknown_kling_code_falls_back_to_the_http_status() -> None:
    assert type(kling_error_from_response(429, {"code": 1399, "message": "new"})) is RateLimitError
    assert type(kling_error_from_response(502, None)) is ServerError


def test_a_200_with_a_kling_error_code_is_an_error() -> None:
    backend = KlingBackend("http://127.0.0.1", Secret("ak"), Secret(SK))
    with pytest.raises(APIError, match="code 1201"):
        backend.checked({"code": 1201, "message": "bad", "request_id": "r"})
    assert backend.checked({"code": 0, "data": {}}) == {"code": 0, "data": {}}


@pytest.mark.parametrize(
    ("kind", "cls", "code"),
    [
        ("rate_limit", RateLimitError, "1302"),
        ("server_error", ServerError, "5000"),
        ("not_found", TaskNotFoundError, "1203"),
        ("bad_params", APIError, "1201"),
        ("revoke_key", AuthenticationError, "1000"),
    ],
)
def test_kling_answers_on_the_wire_map_to_errors(
    ksim: GatewaySimulator, kclient: KlingClient, kind: str, cls: type[KlingError], code: str
) -> None:
    task_id = ksim.add_task(Scenario(faults=(Fault(kind),)))  # type: ignore[arg-type]
    with pytest.raises(cls) as info:
        kclient.get_task(task_id, retry=False)
    assert (type(info.value), info.value.code) == (cls, code)
    assert info.value.request_id  # Kling's request id is in the body


def test_the_parallel_limit_is_a_retryable_429_1303_that_creates_nothing(
    ksim: GatewaySimulator, kclient: KlingClient
) -> None:
    ksim.max_parallel = 1
    kclient.text2video("first")
    with pytest.raises(RateLimitError) as info:
        kclient.text2video("second")
    assert (info.value.status_code, info.value.code, info.value.retryable) == (429, "1303", True)
    assert ksim.unfinished() == 1


def test_bad_parameters_name_the_fix(ksim: GatewaySimulator, kclient: KlingClient) -> None:
    with pytest.raises(APIError, match="check the parameters") as info:
        # Past the client's own checks (the catalogue knows no kling-v9), as a newer Kling might refuse.
        kclient._submit("text2video", {"model_name": "kling-v9", "prompt": "a corgi"})
    assert info.value.code == "1201"


# -- envelopes, units and the ledger -------------------------------------------------------------------


def test_a_task_watched_to_success_has_its_units(
    ksim: GatewaySimulator, kclient: KlingClient, tmp_path: Path
) -> None:
    submitted = kclient.text2video("a corgi")
    assert (submitted.status, submitted.units) == (TaskStatus.SUBMITTED, None)
    engine = Engine()
    try:
        watch = engine.watch(
            lambda: kclient.get_task(submitted.task_id, retry=False), task_id=submitted.task_id
        )
        final = watch.result(timeout=WAIT)
    finally:
        engine.shutdown()
    assert (final.status, final.units, len(final.videos)) == (TaskStatus.SUCCESS, 1.0, 1)
    assert final.external_task_id == submitted.external_task_id
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    local_id = ledger.begin("text2video", kclient.base_url, kclient.key_id, {"prompt": "a corgi"})
    ledger.submitted(local_id, submitted)
    ledger.observe(final)
    entry = ledger.get(final.task_id)
    assert entry is not None
    assert (entry.state, entry.units) == ("SUCCESS", 1.0)


def test_units_are_none_through_the_gateway(sim: GatewaySimulator, client: KlingClient) -> None:
    task = client.wait(client.text2video("a corgi").task_id, **QUICK)
    assert (task.status, task.units, task.external_task_id) == (TaskStatus.SUCCESS, None, None)


# -- every route -----------------------------------------------------------------------------------------

CAT = "https://example.com/cat.png"
HELLO = "https://example.com/hello.mp3"
# Each route's call, given a finished task to extend, lip-sync or take a frame from.
ROUTE_CALLS: dict[str, Callable[[KlingClient, Task], Task]] = {
    "text2video": lambda k, done: k.text2video("a corgi"),
    "image2video": lambda k, done: k.image2video(CAT, "the corgi turns"),
    "omni-video": lambda k, done: k.omni_video("a corgi runs", duration=12, sound="on"),
    "multi-image2video": lambda k, done: k.multi_image2video([CAT, CAT], "they play"),
    "video-extend": lambda k, done: k.extend_video(done, prompt="the sun sets"),
    "advanced-lip-sync": lambda k, done: k.lip_sync(done, audio=HELLO, sound_end_time=3000),
    "motion-control": lambda k, done: k.motion_control(
        CAT, "https://example.com/dance.mp4", "dance", character_orientation="image"
    ),
    "avatar/image2video": lambda k, done: k.avatar_image2video(CAT, audio=HELLO),
}


@pytest.mark.parametrize("route", list(ROUTE_CALLS))
def test_every_route_runs_on_klings_own_api(ksim: GatewaySimulator, kclient: KlingClient, route: str) -> None:
    done = kclient.wait(kclient.text2video("a source").task_id, **QUICK)
    before = len(ksim.requests())

    task = ROUTE_CALLS[route](kclient, done)

    posts = [r for r in ksim.requests()[before:] if r.method == "POST"]
    # Kling's paths, without the gateway's /kling prefix; lip-sync's first step is identify-face.
    first = ["/v1/videos/identify-face"] if route == "advanced-lip-sync" else []
    assert [r.path for r in posts] == [*first, f"/v1/videos/{route}"]
    assert all(r.status == 200 for r in posts)
    # The gateway's routing names (kling-video-extend, kling-lip-sync, …) are not Kling models.
    for body in (json.loads(r.body) for r in posts):
        assert body.get("model_name") not in ROUTING_NAMES
    assert json.loads(posts[-1].body)["external_task_id"] == task.external_task_id
    final = kclient.wait(task.task_id, endpoint=task.endpoint, timeout=WAIT, **QUICK)
    assert (final.status, final.endpoint) == (TaskStatus.SUCCESS, route)
    assert {r.path for r in ksim.requests(task.task_id) if r.method == "GET"} == {
        f"/v1/videos/{route}/{task.task_id}"
    }


# -- idempotent submissions ------------------------------------------------------------------------------


def test_every_kling_submit_carries_an_external_task_id(ksim: GatewaySimulator, kclient: KlingClient) -> None:
    chosen = kclient.text2video("a corgi")
    mine = kclient.text2video("a corgi", external_task_id="my-own-id")
    assert chosen.external_task_id is not None
    assert re.fullmatch("kw-[0-9a-f]{32}", chosen.external_task_id)
    assert mine.external_task_id == "my-own-id"
    assert kclient.find_task("my-own-id").task_id == mine.task_id


@pytest.mark.parametrize("hang", [False, True])
def test_a_lost_post_is_found_by_its_external_task_id(
    ksim: GatewaySimulator, hang: bool, caplog: pytest.LogCaptureFixture
) -> None:
    ksim.drop_next_submits(hang=hang)
    with KlingClient(
        access_key=ksim.access_key, secret_key=ksim.secret_key, base_url=ksim.url, timeout=0.5
    ) as kling:
        task = kling.text2video("a corgi", external_task_id="lost-1")
    posts = [r for r in ksim.requests() if r.method == "POST"]
    assert [(r.status, r.task_id) for r in posts] == [(0, task.task_id)]  # one POST, one task, never resent
    assert (task.task_id, task.external_task_id) == (posts[0].task_id, "lost-1")
    assert "found its task" in caplog.text


def test_a_lost_post_that_created_nothing_names_its_external_task_id() -> None:
    def respond(sock: socket.socket) -> None:
        if server.heads[-1].startswith(b"POST"):
            sock.shutdown(socket.SHUT_RDWR)  # the answer is lost
        else:
            body = json.dumps({"code": 1203, "message": "task not found", "request_id": "r"}).encode()
            sock.sendall(hostile.response(body, "404 Not Found"))

    with (
        hostile.HostileServer(respond) as server,
        KlingClient(access_key="ak", secret_key=SK, base_url=server.url) as kling,
        pytest.raises(TransportError, match=r"external_task_id 'lost-2'.*find_task"),
    ):
        kling.text2video("a corgi", external_task_id="lost-2")
    assert [head.split(b" ")[:2] for head in server.heads] == [
        [b"POST", b"/v1/videos/text2video"],
        [b"GET", b"/v1/videos/text2video?external_task_id=lost-2"],
    ]


def test_a_lost_post_through_the_gateway_stays_lost(sim: GatewaySimulator, client: KlingClient) -> None:
    sim.drop_next_submits()
    with pytest.raises(TransportError):
        client.text2video("a corgi")
    with pytest.raises(KlingError, match="cannot look tasks up") as info:
        client.find_task("kw-x")
    assert info.value.code == "not_supported"
    assert [r.method for r in sim.requests()] == ["POST"]


def test_find_task_of_an_unknown_external_id(kclient: KlingClient) -> None:
    with pytest.raises(TaskNotFoundError):
        kclient.find_task("never-used")
    with pytest.raises(ValueError, match="external_task_id"):
        kclient.find_task(" ")


# -- the account's history -------------------------------------------------------------------------------


def test_list_tasks_pages_newest_first(ksim: GatewaySimulator, kclient: KlingClient) -> None:
    ids = []
    for n in range(3):
        ids.append(kclient.text2video(f"prompt {n}").task_id)
        time.sleep(0.002)  # distinct creation milliseconds
    kclient.image2video("https://example.com/cat.png", "the cat yawns")
    assert [t.task_id for t in kclient.list_tasks(page_size=2)] == ids[:0:-1]
    assert [t.task_id for t in kclient.list_tasks(page=2, page_size=2)] == ids[:1]
    assert len(kclient.list_tasks("image2video", page_size=500)) == 1
    paths = {r.path for r in ksim.requests() if r.method == "GET"}
    assert paths == {"/v1/videos/text2video", "/v1/videos/image2video"}


@pytest.mark.parametrize(("page", "page_size"), [(0, 30), (1001, 30), (1, 0), (1, 501), (True, 30)])
def test_list_tasks_checks_its_page_before_sending(
    ksim: GatewaySimulator, kclient: KlingClient, page: Any, page_size: Any
) -> None:
    with pytest.raises(ValueError, match="page"):
        kclient.list_tasks(page=page, page_size=page_size)
    assert ksim.requests() == []


def test_the_gateway_has_no_task_list(sim: GatewaySimulator, client: KlingClient) -> None:
    with pytest.raises(KlingError, match="no task list") as info:
        client.list_tasks()
    assert info.value.code == "not_supported"
    assert sim.requests() == []


def test_merge_remote_brings_in_the_tasks_the_ledger_never_saw(
    ksim: GatewaySimulator, kclient: KlingClient, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    known = kclient.text2video("recorded here")
    ledger.submitted(ledger.begin("text2video", kclient.base_url, kclient.key_id, {"prompt": "x"}), known)
    lost_row = ledger.begin("text2video", kclient.base_url, kclient.key_id, {"external_task_id": "lost-3"})
    ledger.unanswered(lost_row, TransportError("no answer"))
    ksim.drop_next_submits()
    lost = kclient.text2video("answer lost", external_task_id="lost-3")  # recovered here, not in the ledger
    elsewhere = ksim.add_task()  # made from another machine
    listed = kclient.list_tasks(page_size=500)
    merged = ledger.merge_remote(
        listed, endpoint="text2video", gateway=kclient.base_url, key_id=kclient.key_id
    )
    assert merged == 2
    assert (
        ledger.merge_remote(listed, endpoint="text2video", gateway=kclient.base_url, key_id=kclient.key_id)
        == 0
    )
    entries = {e.task_id: e for e in ledger.entries()}
    assert set(entries) == {known.task_id, lost.task_id, elsewhere}
    assert entries[lost.task_id].local_id == lost_row  # the unanswered row became its task
    assert entries[elsewhere].params == {}
    assert {e.key_id for e in entries.values()} == {kclient.key_id}


@pytest.mark.parametrize("flavor", ["ezmodel", "kling"])
def test_the_simulators_environment_points_a_client_at_it(
    monkeypatch: pytest.MonkeyPatch, flavor: Any
) -> None:
    with GatewaySimulator(flavor=flavor, scenario=FAST) as simulator:
        environment = simulator.environment()
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        with KlingClient() as kling:
            assert (kling.backend, kling.base_url) == (flavor, simulator.url)
            assert kling.get_task(simulator.add_task()).status is TaskStatus.SUBMITTED
    named = {_backend.BASE_URL_ENV, _backend.API_KEY_ENV}
    if flavor == "kling":
        named = {_backend.KLING_BASE_URL_ENV, _backend.ACCESS_KEY_ENV, _backend.SECRET_KEY_ENV}
    assert set(environment) == named


# -- widgets and the command line -------------------------------------------------------------------


def test_widgets_watch_kling_tasks_unchanged(
    ksim: GatewaySimulator,
    kclient: KlingClient,
    comms: list[RecordingComm],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submitted = generate("a corgi", client=kclient, **QUICK)
    monkeypatch.setenv("KLING_ACCESS_KEY", ksim.access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", ksim.secret_key)
    monkeypatch.setenv("KLING_BASE_URL", ksim.url)
    from_environment = TaskStatusWidget(ksim.add_task(), **QUICK)
    try:
        for widget in (submitted, from_environment):
            task = widget.wait(WAIT)
            assert (task.status, task.units, widget.status) == (TaskStatus.SUCCESS, 1.0, "SUCCESS")
            assert widget.video_url.startswith(ksim.url)
    finally:
        submitted.close()
        from_environment.close()
    assert all(r.path.startswith(("/v1/videos/", "/bs2/")) for r in ksim.requests())


def test_cli_status_and_watch_use_kling_keys_from_the_environment(
    ksim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KLING_ACCESS_KEY", ksim.access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", ksim.secret_key)
    monkeypatch.setenv("KLING_BASE_URL", ksim.url)
    task_id = ksim.add_task(Scenario(polls=(1, 1)))
    assert main(["status", task_id]) == 0
    assert capsys.readouterr().out == f"{task_id}: SUBMITTED 0%\n"
    assert main(["watch", task_id, "--interval", "0.01"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(ksim.url)
    assert err.splitlines()[-1].split(" · ")[1:3] == ["Done", "100%"]
    assert main(["status", task_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == 1.0
    assert {r.path for r in ksim.requests(task_id)} == {f"/v1/videos/text2video/{task_id}"}


# -- secrets --------------------------------------------------------------------------------------------


def test_the_secret_key_and_token_never_reach_reprs_logs_or_errors(
    ksim: GatewaySimulator, kclient: KlingClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    kclient.wait(kclient.text2video("a corgi").task_id, **QUICK)
    for kind in ("rate_limit", "server_error", "html", "not_found", "bad_params", "revoke_key"):
        with pytest.raises(KlingError) as info:
            kclient.get_task(ksim.add_task(Scenario(faults=(Fault(kind),))), retry=False)  # type: ignore[arg-type]
        errors.append(info.value)
    text = caplog.text + repr(kclient) + repr(kclient.__dict__) + "".join(f"{e}{e!r}{e.args}" for e in errors)
    assert ksim.secret_key not in text
    assert "eyJ" not in text  # no JWT: each starts with the base64 of '{"'
    assert ksim.access_key not in text
