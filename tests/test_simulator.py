"""The gateway simulator, driven with raw ``requests``: every endpoint, both error shapes, every fault,
byte ranges, the control API, the request log, concurrency and a clean stop.

GET bodies go through ``kling_widgets._models.parse_task`` and error bodies through
``error_from_response``, to prove the simulator and the parsers agree.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

import kling_widgets
from helpers import FOREVER
from kling_widgets import KlingClient
from kling_widgets._errors import (
    APIError,
    AuthenticationError,
    KlingError,
    RateLimitError,
    ServerError,
    TaskNotFoundError,
    error_from_response,
)
from kling_widgets._models import Task, TaskStatus, Video, parse_task
from kling_widgets.simulator import Fault, GatewaySimulator, RequestRecord, Scenario

CLIP = (Path(kling_widgets.__file__).parent / "_data" / "demo.mp4").read_bytes()
REQUEST_ID = re.compile(r"\d{22}[A-Za-z0-9]{8}")
DTO_KEYS = [
    "task_id",
    "action",
    "status",
    "fail_reason",
    "submit_time",
    "start_time",
    "finish_time",
    "progress",
    "data",
]
BODY = {
    "model_name": "kling-v2-6",
    "prompt": "a corgi surfing at sunset",
    "duration": "5",
    "aspect_ratio": "16:9",
}


def auth(sim: GatewaySimulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


def submit(
    sim: GatewaySimulator, body: object = None, endpoint: str = "text2video", **kw: Any
) -> requests.Response:
    kw.setdefault("headers", auth(sim))
    kw.setdefault("timeout", 10)
    return requests.post(f"{sim.url}/kling/v1/videos/{endpoint}", json=BODY if body is None else body, **kw)


def fetch(sim: GatewaySimulator, task_id: str, endpoint: str = "text2video") -> requests.Response:
    return requests.get(
        f"{sim.url}/kling/v1/videos/{endpoint}/{quote(task_id, safe='')}", headers=auth(sim), timeout=10
    )


def poll(sim: GatewaySimulator, task_id: str) -> Task:
    response = fetch(sim, task_id)
    assert response.status_code == 200, response.text
    return parse_task(response.json())


def statuses(sim: GatewaySimulator, task_id: str, n: int) -> list[TaskStatus]:
    return [poll(sim, task_id).status for _ in range(n)]


def api_error(response: requests.Response) -> APIError:
    return error_from_response(
        response.status_code, response.json(), request_id=response.headers["X-Oneapi-Request-Id"]
    )


# --- submit -------------------------------------------------------------------------------------------------


def test_submit_returns_the_openai_video_object(sim: GatewaySimulator) -> None:
    before = int(time.time())
    response = submit(sim)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert REQUEST_ID.fullmatch(response.headers["X-Oneapi-Request-Id"])
    video = response.json()
    assert list(video) == ["id", "task_id", "object", "model", "status", "progress", "created_at"]
    assert video["id"] == video["task_id"]
    assert re.fullmatch(r"[1-9]\d{17}", video["id"])
    assert (video["object"], video["model"], video["status"], video["progress"]) == (
        "video",
        "kling-v2-6",
        "",
        0,
    )
    assert before <= video["created_at"] <= time.time()
    assert submit(sim).json()["id"] != video["id"]


@pytest.mark.parametrize(
    ("endpoint", "extra", "action"),
    [
        ("text2video", {}, "textGenerate"),
        ("image2video", {"image": "https://example.com/cat.png"}, "generate"),
        ("text2video", {"image_tail": "aGVsbG8="}, "generate"),  # the body decides, not the path
        ("image2video", {}, "textGenerate"),
    ],
)
def test_action_follows_the_image_field(
    sim: GatewaySimulator, endpoint: str, extra: dict[str, str], action: str
) -> None:
    task_id = submit(sim, {**BODY, **extra}, endpoint).json()["task_id"]
    assert fetch(sim, task_id, "image2video").json()["data"]["action"] == action


SHAPE_B_NO_MODEL = (400, "B", "", "未指定模型名称，模型名称不能为空")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({**BODY, "prompt": "   "}, (400, "A", "invalid_request", "prompt is required")),
        ({"model_name": "kling-v2-6"}, (400, "A", "invalid_request", "prompt is required")),
        ({**BODY, "model_name": ""}, SHAPE_B_NO_MODEL),
        ({**BODY, "duration": "abc"}, (400, "A", "invalid_request", "metadata.duration must be numeric")),
        ({**BODY, "duration": "-1"}, (400, "A", "invalid_request", "metadata.duration must be >= 0")),
        ({**BODY, "duration": "601"}, (400, "A", "invalid_request", "metadata.duration must be <= 600")),
        (
            {**BODY, "duration": "7"},
            (500, "A", "get_price_scale_failed", "legacy endpoint only supports duration 5 or 10, got: 7"),
        ),
        (
            {**BODY, "duration": 7},
            (500, "A", "get_price_scale_failed", "legacy endpoint only supports duration 5 or 10, got: 7"),
        ),
        (
            {**BODY, "duration": 5},
            (
                500,
                "A",
                "build_request_failed",
                "unmarshal metadata failed: json: cannot unmarshal number into Go struct "
                "field requestPayload.duration of type string",
            ),
        ),
        ({**BODY, "mode": "turbo"}, (500, "A", "get_price_scale_failed", "unsupported mode: turbo")),
        (
            {**BODY, "mode": "master"},
            (500, "A", "get_price_scale_failed", "model kling-v2-6 does not support master mode"),
        ),
        (
            {**BODY, "model_name": "kling-v9"},
            (503, "B", "model_not_found", "获取分组 default 下模型 kling-v9"),
        ),
        (["not", "an", "object"], (400, "B", "", "Invalid request, 无效的请求, json: cannot unmarshal")),
    ],
)
def test_submit_rejections_use_the_gateways_shapes(
    sim: GatewaySimulator, body: object, expected: tuple[int, str, str, str]
) -> None:
    status, shape, code, message = expected
    response = submit(sim, body)
    assert response.status_code == status
    payload = response.json()
    if shape == "A":
        assert payload == {"code": code, "message": message, "data": None}
    else:
        error = payload["error"]
        assert (error["type"], error["code"]) == ("new_api_error", code)
        assert error["message"].startswith(message)
        assert error["message"].endswith(f"(request id: {response.headers['X-Oneapi-Request-Id']})")
    assert sim.requests()[-1].task_id is None


def test_submit_error_classification_agrees_with_the_client(sim: GatewaySimulator) -> None:
    price = api_error(submit(sim, {**BODY, "duration": "7"}))
    assert isinstance(price, ServerError)
    assert not price.retryable
    assert api_error(submit(sim, {**BODY, "prompt": ""})).code == "invalid_request"


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (json.dumps(BODY), None, "未指定模型名称，模型名称不能为空"),  # no Content-Type: the body is ignored
        (json.dumps(BODY), "text/plain", "未指定模型名称，模型名称不能为空"),
        ("{bad", "application/json", "Invalid request, 无效的请求, invalid character 'b'"),
        ('{"prompt": ', "application/json", "Invalid request, 无效的请求, unexpected end of JSON input"),
    ],
)
def test_submit_needs_a_json_body(
    sim: GatewaySimulator, data: str, content_type: str | None, message: str
) -> None:
    headers = auth(sim) | ({"Content-Type": content_type} if content_type else {})
    response = requests.post(
        f"{sim.url}/kling/v1/videos/text2video", data=data.encode(), headers=headers, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


def test_json_content_type_with_charset_is_accepted(sim: GatewaySimulator) -> None:
    headers = auth(sim) | {"Content-Type": "application/json; charset=utf-8"}
    response = requests.post(
        f"{sim.url}/kling/v1/videos/text2video", data=json.dumps(BODY), headers=headers, timeout=10
    )
    assert response.status_code == 200


# --- auth and routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "未提供令牌"),
        ("Bearer ", "未提供令牌"),
        ("Bearer sk-wrong", "无效的令牌"),
        ("bearer {key}", "无效的令牌"),  # only the exact "Bearer " prefix is stripped
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_or_missing_key_is_401_shape_b(
    sim: GatewaySimulator, header: str | None, message: str, method: str
) -> None:
    task_id = sim.add_task()
    headers = {"Authorization": header.format(key=sim.api_key)} if header is not None else {}
    path = f"/kling/v1/videos/text2video/{task_id}" if method == "GET" else "/kling/v1/videos/text2video"
    response = requests.request(
        method, sim.url + path, json=BODY if method == "POST" else None, headers=headers, timeout=10
    )
    assert response.status_code == 401
    request_id = response.headers["X-Oneapi-Request-Id"]
    assert response.json() == {
        "error": {"message": f"{message} (request id: {request_id})", "type": "new_api_error", "code": ""}
    }
    assert isinstance(api_error(response), AuthenticationError)
    assert sim.api_key not in response.text


@pytest.mark.parametrize("header", ["Bearer {bare}", "{key}", "{bare}"])
def test_key_variants_the_gateway_accepts(sim: GatewaySimulator, header: str) -> None:
    value = header.format(key=sim.api_key, bare=sim.api_key.removeprefix("sk-"))
    assert submit(sim, headers={"Authorization": value}).status_code == 200


def test_given_api_key_is_used() -> None:
    with GatewaySimulator(api_key="sk-mine") as sim:
        assert sim.api_key == "sk-mine"
        assert submit(sim).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/kling/v1/videos/text2video"),
        ("GET", "/kling/v1/videos/effects/123"),  # a Kling route EZmodel does not forward
        ("POST", "/kling/v1/videos/text2video/123"),
        ("PUT", "/kling/v1/videos/text2video"),
        ("DELETE", "/kling/v1/videos/text2video/123"),
        ("GET", "/"),
    ],
)
def test_wrong_path_is_404_without_auth(sim: GatewaySimulator, method: str, path: str) -> None:
    response = requests.request(method, sim.url + path + "?x=1", timeout=10)
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": f"Invalid URL ({method} {path})",
            "type": "invalid_request_error",
            "param": "",
            "code": "",
        }
    }
    assert REQUEST_ID.fullmatch(response.headers["X-Oneapi-Request-Id"])
    assert isinstance(api_error(response), TaskNotFoundError)


def test_unknown_task_is_400_task_not_exist(sim: GatewaySimulator) -> None:
    response = fetch(sim, "842250903629086785")
    assert response.status_code == 400
    assert response.json() == {"code": "task_not_exist", "message": "task_not_exist", "data": None}
    assert isinstance(api_error(response), TaskNotFoundError)


def test_task_id_is_one_quoted_path_segment(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(task_id="a/b c?d%")
    assert poll(sim, task_id).task_id == task_id
    assert sim.requests(task_id)[0].status == 200


# --- the task timeline --------------------------------------------------------------------------------------


def test_poll_driven_success_lifecycle(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 2)))
    answers = [fetch(sim, task_id).json() for _ in range(6)]
    dtos = [answer["data"] for answer in answers]
    assert all(list(answer) == ["code", "message", "data"] for answer in answers)
    assert all((answer["code"], answer["message"]) == ("success", "") for answer in answers)
    assert all(list(dto) == DTO_KEYS for dto in dtos)
    assert [(dto["status"], dto["progress"]) for dto in dtos] == [
        ("NOT_START", "0%"),
        ("SUBMITTED", "10%"),
        ("IN_PROGRESS", "30%"),
        ("IN_PROGRESS", "30%"),
        ("SUCCESS", "100%"),
        ("SUCCESS", "100%"),
    ]
    assert answers[4] == answers[5]  # a terminal task is no longer refreshed
    not_start, submitted, running, _, done, _ = dtos
    created = not_start["data"]["data"]
    assert list(created) == ["task_id", "task_status", "task_info", "created_at", "updated_at"]
    assert (created["task_id"], created["task_status"]) == (task_id, "submitted")
    assert created["created_at"] == created["updated_at"]
    assert list(not_start["data"]) == ["code", "message", "request_id", "data"]
    for dto in (submitted, running, done):
        assert_sorted(dto["data"])
        assert dto["data"]["code"] == 0
        assert dto["data"]["message"] == "SUCCEED"
    assert [dto["data"]["data"]["task_status"] for dto in (submitted, running, done)] == [
        "submitted",
        "processing",
        "succeed",
    ]
    assert not_start["start_time"] == submitted["start_time"] == 0
    assert 0 < done["submit_time"] <= running["start_time"] <= done["finish_time"]
    assert running["finish_time"] == 0
    assert all(dto["fail_reason"] == "" for dto in dtos[:4])
    kling = done["data"]["data"]
    assert kling["created_at"] // 1000 == done["submit_time"]  # Kling ms, gateway seconds
    [video] = kling["task_result"]["videos"]
    assert done["fail_reason"] == video["url"]  # the legacy quirk
    assert video["duration"] == "5.0"
    assert re.fullmatch(r"\d{18}", video["id"])

    tasks = [parse_task(answer) for answer in answers]
    assert [t.status.value for t in tasks] == [dto["status"] for dto in dtos]
    assert [t.progress for t in tasks] == [0, 10, 30, 30, 100, 100]
    assert tasks[4].videos == (Video(video["url"], duration=5.0, id=video["id"]),)
    assert tasks[4].fail_reason is None
    assert tasks[4].start_time is not None
    assert tasks[4].finish_time is not None


def assert_sorted(value: object) -> None:
    """Every object, at every depth, has its keys in order (Go re-serialises through a map)."""
    if isinstance(value, dict):
        assert list(value) == sorted(value)
        for item in value.values():
            assert_sorted(item)
    elif isinstance(value, list):
        for item in value:
            assert_sorted(item)


@pytest.mark.parametrize("message", ["Image pixel is invalid", '<img src=x onerror="alert(1)">&amp; 风控'])
def test_failure_reports_succeed_and_the_real_reason_inside(sim: GatewaySimulator, message: str) -> None:
    task_id = sim.add_task(Scenario(outcome="failure", polls=(1, 1), fail_message=message))
    assert statuses(sim, task_id, 2) == [TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS]
    response = fetch(sim, task_id)
    dto = response.json()["data"]
    assert (dto["status"], dto["progress"], dto["fail_reason"]) == ("FAILURE", "100%", "SUCCEED")
    kling = dto["data"]["data"]
    assert (kling["task_status"], kling["task_status_msg"], kling["task_result"]) == ("failed", message, {})
    assert dto["finish_time"] >= dto["start_time"] > 0
    assert "<" not in response.text  # escaped like Go's encoding/json: \u003c
    task = parse_task(response.json())
    assert (task.status, task.fail_reason, task.videos) == (TaskStatus.FAILURE, message, ())


def test_jump_from_submitted_to_done_leaves_start_time_zero(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(Scenario(polls=(1, 0)))
    assert poll(sim, task_id).status is TaskStatus.SUBMITTED
    dto = fetch(sim, task_id).json()["data"]
    assert (dto["status"], dto["start_time"]) == ("SUCCESS", 0)
    assert dto["finish_time"] > 0


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        (Scenario(queued=1e6, running=0), TaskStatus.NOT_START),
        (Scenario(queued=0, running=1e6), TaskStatus.IN_PROGRESS),
        (Scenario(queued=0, running=0), TaskStatus.SUCCESS),
        (Scenario(outcome="failure", queued=0, running=0), TaskStatus.FAILURE),
    ],
)
def test_time_driven_phases(sim: GatewaySimulator, scenario: Scenario, status: TaskStatus) -> None:
    assert poll(sim, sim.add_task(scenario)).status is status


def test_time_driven_task_finishes_at_speed(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(Scenario(queued=0.5, running=0.5))  # 20 ms at speed 50
    deadline = time.monotonic() + 10
    while not (task := poll(sim, task_id)).is_terminal and time.monotonic() < deadline:
        time.sleep(0.01)
    assert task.status is TaskStatus.SUCCESS


def test_submitted_tasks_follow_the_simulators_scenario(sim: GatewaySimulator) -> None:
    task_id = submit(sim).json()["id"]
    assert statuses(sim, task_id, 3) == [TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS, TaskStatus.SUCCESS]


@pytest.mark.parametrize("sim", [Scenario(outcome="failure", polls=(0, 0))], indirect=True)
def test_sim_fixture_takes_a_scenario(sim: GatewaySimulator) -> None:
    assert poll(sim, submit(sim).json()["id"]).status is TaskStatus.FAILURE


def test_several_videos_each_with_its_own_url(sim: GatewaySimulator) -> None:
    task = poll(sim, sim.add_task(Scenario(polls=(0, 0), videos=3)))
    assert len({video.url for video in task.videos}) == 3
    for video in task.videos:
        assert requests.get(video.url, timeout=10).content == CLIP


def test_success_without_videos_has_empty_fail_reason(sim: GatewaySimulator) -> None:
    dto = fetch(sim, sim.add_task(Scenario(polls=(0, 0), videos=0))).json()["data"]
    assert (dto["status"], dto["fail_reason"], dto["data"]["data"]["task_result"]) == (
        "SUCCESS",
        "",
        {"videos": []},
    )


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://evil.example/<script>.mp4"])
def test_video_url_override(sim: GatewaySimulator, url: str) -> None:
    response = fetch(sim, sim.add_task(Scenario(polls=(0, 0), video_url=url)))
    dto = response.json()["data"]
    assert dto["fail_reason"] == url
    assert dto["data"]["data"]["task_result"]["videos"][0]["url"] == url


def test_signed_video_url_looks_like_klings(sim: GatewaySimulator) -> None:
    url = poll(sim, sim.add_task(Scenario(polls=(0, 0)))).video_url
    assert url is not None
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == sim.url
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    assert re.fullmatch(
        rf"/bs2/upload-ylab-stunt-sgp/muse/\d{{18}}/VIDEO/{day}/[0-9a-f-]{{36}}\.mp4", parts.path
    )
    query = parse_qs(parts.query)
    assert list(query) == ["cacheKey", "x-kcdn-pid", "Expires", "Signature"]
    assert query["x-kcdn-pid"] == ["112781"]
    expires = Video(url).expires_at
    assert expires is not None
    assert timedelta(days=29) < expires - datetime.now(timezone.utc) <= timedelta(days=30)


# --- faults -------------------------------------------------------------------------------------------------


def check_rate_limit(response: requests.Response) -> None:
    assert response.json() == {
        "code": "fail_to_fetch_task",
        "message": "当前分组上游负载已饱和，请稍后再试",
        "data": None,
    }
    assert response.headers["Retry-After"] == "3"
    error = api_error(response)
    assert isinstance(error, RateLimitError)
    assert error.retryable


def check_server_error(response: requests.Response) -> None:
    assert response.json()["code"] == "do_request_failed"
    error = api_error(response)
    assert isinstance(error, ServerError)
    assert error.retryable


def check_html(response: requests.Response) -> None:
    assert response.headers["Content-Type"] == "text/html"
    assert "<center><h1>502 Bad Gateway</h1></center>" in response.text


def check_empty(response: requests.Response) -> None:
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"


def check_malformed(response: requests.Response) -> None:
    assert response.text.startswith('{"code":"success"')
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        json.loads(response.text)


def check_not_found(response: requests.Response) -> None:
    assert response.json() == {"code": "task_not_exist", "message": "task_not_exist", "data": None}
    assert isinstance(api_error(response), TaskNotFoundError)


def check_bad_params(response: requests.Response) -> None:
    payload = response.json()
    assert payload["code"] == "fail_to_fetch_task"
    assert json.loads(payload["message"])["code"] == 1201  # Kling's raw body, as a string
    error = api_error(response)
    assert not error.retryable
    assert "Kling code 1201" in error.message


def check_revoke_key(response: requests.Response) -> None:
    assert response.json()["error"]["message"].startswith("无效的令牌 (request id: ")


@pytest.mark.parametrize(
    ("fault", "status", "check"),
    [
        (Fault("rate_limit", retry_after=3), 429, check_rate_limit),
        (Fault("server_error"), 500, check_server_error),
        (Fault("html"), 502, check_html),
        (Fault("empty"), 200, check_empty),
        (Fault("malformed"), 200, check_malformed),
        (Fault("not_found"), 400, check_not_found),
        (Fault("bad_params"), 400, check_bad_params),
    ],
)
def test_fault_replies_and_does_not_advance_the_timeline(
    sim: GatewaySimulator, fault: Fault, status: int, check: Any
) -> None:
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=(fault,)))
    response = fetch(sim, task_id)
    assert response.status_code == status
    assert REQUEST_ID.fullmatch(response.headers["X-Oneapi-Request-Id"])
    check(response)
    assert statuses(sim, task_id, 3) == [TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS, TaskStatus.SUCCESS]
    assert [r.status for r in sim.requests(task_id)] == [status, 200, 200, 200]


def test_rate_limit_without_retry_after_has_no_header(sim: GatewaySimulator) -> None:
    response = fetch(sim, sim.add_task(Scenario(faults=(Fault("rate_limit"),))))
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert api_error(response).retry_after is None  # type: ignore[attr-defined]


def test_fault_window_counts_every_get(sim: GatewaySimulator) -> None:
    faults = (Fault("server_error", at_poll=2, count=2), Fault("html", at_poll=5))
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=faults))
    codes = [fetch(sim, task_id).status_code for _ in range(6)]
    assert codes == [200, 500, 500, 200, 502, 200]
    assert parse_task(fetch(sim, task_id).json()).status is TaskStatus.SUCCESS  # 4th answered GET


def test_slow_fault_answers_normally_and_advances(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=(Fault("slow", delay=0.05),)))
    assert statuses(sim, task_id, 2) == [TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS]


def test_revoke_key_fault_rejects_the_key_from_then_on(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=(Fault("revoke_key", at_poll=2),)))
    assert poll(sim, task_id).status is TaskStatus.SUBMITTED
    for response in (fetch(sim, task_id), fetch(sim, task_id), submit(sim)):
        assert response.status_code == 401
        check_revoke_key(response)
    assert [r.status for r in sim.requests(task_id)] == [200, 401, 401]
    # the control API keeps working, so a test can still inspect the log
    control = requests.get(f"{sim.url}/_simulator/requests", headers=auth(sim), timeout=10)
    assert control.status_code == 200


def test_revoke_key_method(sim: GatewaySimulator) -> None:
    task_id = sim.add_task()
    sim.revoke_key()
    check_revoke_key(fetch(sim, task_id))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "meteor"},
        {"kind": "html", "at_poll": 0},
        {"kind": "html", "count": 0},
        {"kind": "slow", "delay": -1},
    ],
)
def test_fault_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by eye; any ValueError is right
        Fault(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"outcome": "maybe"}, {"queued": -1}, {"videos": -1}, {"polls": (1,)}, {"polls": (1, -1)}],
)
def test_scenario_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Scenario(**kwargs)


# --- the clip -----------------------------------------------------------------------------------------------


def test_clip_is_served_whole(sim: GatewaySimulator) -> None:
    response = requests.get(sim.clip_url, timeout=10)
    assert response.status_code == 200
    assert response.content == CLIP
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(CLIP))


def test_clip_is_a_faststart_mp4() -> None:
    assert CLIP[4:8] == b"ftyp"
    assert CLIP.index(b"moov") < CLIP.index(b"mdat")  # +faststart: playable while downloading
    assert len(CLIP) < 500_000


def test_head_sends_headers_only(sim: GatewaySimulator) -> None:
    response = requests.head(sim.clip_url, timeout=10)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == str(len(CLIP))
    assert response.headers["Content-Type"] == "video/mp4"


SIZE = len(CLIP)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, SIZE - 1),
        ("bytes=-100", SIZE - 100, SIZE - 1),
        (f"bytes=10-{SIZE + 1000}", 10, SIZE - 1),
        (f"bytes=-{SIZE + 5}", 0, SIZE - 1),
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
    ],
)
def test_single_range_is_206(sim: GatewaySimulator, header: str, start: int, end: int) -> None:
    response = requests.get(sim.clip_url, headers={"Range": header}, timeout=10)
    assert response.status_code == 206
    assert response.content == CLIP[start : end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["Content-Length"] == str(end - start + 1)


@pytest.mark.parametrize(
    "header",
    [f"bytes={SIZE}-", "bytes=5-1", "bytes=-0", "bytes=-", "items=0-1", "bytes=0-1,5-6", "bytes=a-b"],
)
def test_bad_range_is_416(sim: GatewaySimulator, header: str) -> None:
    response = requests.get(sim.clip_url, headers={"Range": header}, timeout=10)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert response.content == b""


def test_unknown_video_path_is_404(sim: GatewaySimulator) -> None:
    path = urlsplit(sim.clip_url).path.replace("VIDEO", "IMAGE")
    assert requests.get(sim.url + path, timeout=10).status_code == 404


# --- control API and request log ----------------------------------------------------------------------------


def test_control_api_creates_a_task_from_a_scenario(sim: GatewaySimulator) -> None:
    scenario = Scenario(
        outcome="failure", polls=(0, 1), fail_message="风控", faults=(Fault("rate_limit", retry_after=1.5),)
    )
    assert Scenario.from_dict(json.loads(json.dumps(scenario.to_dict()))) == scenario
    response = requests.post(
        f"{sim.url}/_simulator/tasks", json=scenario.to_dict(), headers=auth(sim), timeout=10
    )
    assert response.status_code == 200
    task_id = response.json()["task_id"]
    limited = fetch(sim, task_id)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1.5")
    assert statuses(sim, task_id, 2) == [TaskStatus.IN_PROGRESS, TaskStatus.FAILURE]


def test_control_api_task_id_and_default_scenario(sim: GatewaySimulator) -> None:
    url = f"{sim.url}/_simulator/tasks"
    response = requests.post(url, json={"task_id": "my-task"}, headers=auth(sim), timeout=10)
    assert response.json() == {"task_id": "my-task"}
    assert statuses(sim, "my-task", 3) == [TaskStatus.SUBMITTED, TaskStatus.IN_PROGRESS, TaskStatus.SUCCESS]
    again = requests.post(url, json={"task_id": "my-task"}, headers=auth(sim), timeout=10)
    assert again.status_code == 400
    assert "already exists" in again.json()["error"]


@pytest.mark.parametrize(
    "body",
    [{"outcome": "maybe"}, {"faults": [{"kind": "meteor"}]}, {"colour": "red"}, [1, 2], {"polls": 3}],
)
def test_control_api_rejects_what_is_not_a_scenario(sim: GatewaySimulator, body: object) -> None:
    response = requests.post(f"{sim.url}/_simulator/tasks", json=body, headers=auth(sim), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"].startswith("not a Scenario")


@pytest.mark.parametrize(("method", "path"), [("POST", "/_simulator/tasks"), ("GET", "/_simulator/requests")])
def test_control_api_needs_the_key(sim: GatewaySimulator, method: str, path: str) -> None:
    response = requests.request(method, sim.url + path, json={}, timeout=10)
    assert response.status_code == 401
    unknown = requests.get(f"{sim.url}/_simulator/nothing", headers=auth(sim), timeout=10)
    assert unknown.status_code == 404


def test_request_log(sim: GatewaySimulator) -> None:
    start = time.monotonic()
    task_id = submit(sim).json()["id"]
    other = sim.add_task()
    fetch(sim, other)
    url = poll(sim, task_id).video_url
    assert url is None
    fetch(sim, task_id)
    video_url = poll(sim, task_id).video_url
    assert video_url is not None
    requests.get(video_url, headers={"Range": "bytes=0-9"}, timeout=10)
    requests.get(f"{sim.url}/nowhere", timeout=10)

    records = sim.requests(task_id)
    base = f"/kling/v1/videos/text2video/{task_id}"
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", "/kling/v1/videos/text2video", 200),
        *[("GET", base, 200)] * 3,
        ("GET", urlsplit(video_url).path, 206),  # the query string is left out
    ]
    assert all(isinstance(r, RequestRecord) for r in records)
    times = [r.time for r in sim.requests()]
    assert times == sorted(times)
    assert start <= times[0] <= times[-1] <= time.monotonic()
    assert len(sim.requests()) == 7
    assert sim.requests()[-1] == RequestRecord("GET", "/nowhere", None, 404, times[-1])

    over_http = requests.get(
        f"{sim.url}/_simulator/requests", params={"task_id": task_id}, headers=auth(sim), timeout=10
    ).json()
    assert [RequestRecord(**r) for r in over_http] == records
    everything = requests.get(f"{sim.url}/_simulator/requests", headers=auth(sim), timeout=10).json()
    assert len(everything) == 7  # control requests are not logged


# --- concurrency, lifecycle, manners ------------------------------------------------------------------------


def test_many_parallel_gets(sim: GatewaySimulator) -> None:
    task_ids = [sim.add_task(Scenario(polls=(10, 10))) for _ in range(4)]
    jobs = [task_ids[i % 4] for i in range(80)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        tasks = list(pool.map(lambda task_id: poll(sim, task_id), jobs))
    assert [t.task_id for t in tasks] == jobs
    for task_id in task_ids:
        assert len(sim.requests(task_id)) == 20
        assert poll(sim, task_id).status is TaskStatus.SUCCESS  # the 21st answered GET, whatever the order


def sim_threads(ignore: Collection[threading.Thread] = ()) -> list[threading.Thread]:
    """The simulator threads alive now, except ``ignore`` (other simulators, e.g. a session fixture's)."""
    return [t for t in threading.enumerate() if t.name.startswith("kling-simulator") and t not in ignore]


def test_stop_closes_everything_even_with_open_connections() -> None:
    others = sim_threads()
    sim = GatewaySimulator().start()
    url = sim.url
    session = requests.Session()  # keeps its connection open after each request
    slow_task = sim.add_task(Scenario(faults=(Fault("slow", delay=60),)))
    assert session.get(f"{url}/kling/v1/videos/text2video/{sim.add_task()}", headers=auth(sim), timeout=10).ok
    hung = threading.Thread(target=lambda: fetch_quietly(sim, slow_task), daemon=True)
    hung.start()
    while not sim.requests(slow_task) and len(sim_threads(others)) < 3:
        time.sleep(0.01)
    assert sim_threads(others)
    sim.stop()
    hung.join(10)
    assert not hung.is_alive()
    assert sim_threads(others) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    sim.stop()  # idempotent
    session.close()


def fetch_quietly(sim: GatewaySimulator, task_id: str) -> None:
    with contextlib.suppress(requests.RequestException):  # the server goes away mid-request
        fetch(sim, task_id)


def test_lifecycle_rules() -> None:
    sim = GatewaySimulator(api_key="sk-secret-value")
    with pytest.raises(RuntimeError):
        _ = sim.url
    with pytest.raises(RuntimeError):
        _ = sim.clip_url
    assert "not started" in repr(sim)
    with sim:
        assert sim.url.startswith("http://127.0.0.1:")
        assert "sk-secret-value" not in repr(sim)
        with pytest.raises(RuntimeError):
            sim.start()
    with pytest.raises(ValueError, match="speed"):
        GatewaySimulator(speed=0)


def test_serve_forever_blocks_until_stopped() -> None:
    others = sim_threads()
    sim = GatewaySimulator()
    runner = threading.Thread(target=sim.serve_forever)
    runner.start()
    while True:
        try:
            url = sim.url
            break
        except RuntimeError:
            time.sleep(0.01)
    assert requests.post(f"{url}/kling/v1/videos/text2video", json=BODY, headers=auth(sim), timeout=10).ok
    sim.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert sim_threads(others) == []


def test_requests_are_not_logged_to_the_console(
    sim: GatewaySimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    fetch(sim, "nope")
    submit(sim)
    requests.get(f"{sim.url}/nowhere", timeout=10)
    requests.get(sim.clip_url, headers={"Range": "bytes=0-1"}, timeout=10)
    assert capfd.readouterr() == ("", "")


# --- the account's parallel-task limit ----------------------------------------------------------------------

SATURATED = {"code": "fail_to_fetch_task", "message": "当前分组上游负载已饱和，请稍后再试", "data": None}


def test_parallel_limit_answers_the_gateways_429_and_creates_nothing() -> None:
    with GatewaySimulator(max_parallel=2, scenario=Scenario(polls=(1, 1))) as sim:
        first, second = (submit(sim).json()["id"] for _ in range(2))
        over = submit(sim)
        assert over.status_code == 429
        assert over.json() == SATURATED
        assert "Retry-After" not in over.headers
        error = api_error(over)
        assert isinstance(error, RateLimitError)
        assert error.retryable
        assert sim.requests()[-1].task_id is None
        assert sim.unfinished() == 2
        assert statuses(sim, first, 3)[-1] is TaskStatus.SUCCESS  # a task ends: its slot is free
        assert sim.unfinished() == 1
        third = submit(sim)
        assert third.status_code == 200
        assert third.json()["id"] not in (first, second)
        assert submit(sim).status_code == 429


def test_parallel_limit_counts_every_task_of_the_account_and_time_frees_slots() -> None:
    with GatewaySimulator(max_parallel=1, speed=50, scenario=Scenario(queued=0.5, running=0.5)) as sim:
        added = sim.add_task(Scenario(polls=(5, 5)))  # e.g. created by another client
        assert submit(sim).status_code == 429
        statuses(sim, added, 11)
        task_id = submit(sim).json()["id"]  # finishes in 20 ms of its own accord
        deadline = time.monotonic() + 10
        while sim.unfinished() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert submit(sim).status_code == 200
        assert poll(sim, task_id).status is TaskStatus.SUCCESS


def test_parallel_limit_comes_after_validation_and_can_change() -> None:
    with GatewaySimulator(max_parallel=1, scenario=FOREVER) as sim:
        assert submit(sim).status_code == 200
        assert submit(sim, {**BODY, "prompt": " "}).status_code == 400  # refused first for what it is
        assert submit(sim).status_code == 429
        sim.max_parallel = None
        assert submit(sim).status_code == 200


def test_parallel_submits_cannot_share_the_last_slot() -> None:
    with GatewaySimulator(max_parallel=3, scenario=FOREVER) as sim, ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: submit(sim).status_code, range(40)))
        assert sorted(codes) == [200] * 3 + [429] * 37
        assert sim.unfinished() == 3


def test_max_parallel_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_parallel"):
        GatewaySimulator(max_parallel=0)


# --- submits that are never answered ------------------------------------------------------------------------


def test_a_dropped_submit_creates_its_task_and_closes_the_connection(sim: GatewaySimulator) -> None:
    sim.drop_next_submits()
    with pytest.raises(requests.ConnectionError):
        submit(sim)
    [record] = sim.requests()
    assert (record.method, record.path, record.status) == ("POST", "/kling/v1/videos/text2video", 0)
    assert record.task_id is not None
    assert statuses(sim, record.task_id, 3)[-1] is TaskStatus.SUCCESS  # the task exists and runs
    assert submit(sim).status_code == 200  # only the next one was dropped


def test_a_hung_submit_creates_its_task_and_the_client_times_out(sim: GatewaySimulator) -> None:
    others = sim_threads()
    sim.drop_next_submits(hang=True)
    with KlingClient(sim.api_key, base_url=sim.url, timeout=0.5) as client, pytest.raises(KlingError):
        client.text2video("a corgi surfing")
    [record] = sim.requests()
    assert (record.status, record.task_id is not None) == (0, True)
    assert sim.unfinished() == 1
    deadline = time.monotonic() + 10  # the client hung up: the held connection ends too
    while sim_threads(others) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim_threads(others) == []  # ``others`` has the server's own thread


def test_stop_ends_a_hung_submit() -> None:
    others = sim_threads()
    sim = GatewaySimulator().start()
    sim.drop_next_submits(hang=True)
    hung = threading.Thread(target=lambda: submit_quietly(sim), daemon=True)
    hung.start()
    while not sim.requests():
        time.sleep(0.01)
    sim.stop()
    hung.join(10)
    assert not hung.is_alive()
    assert sim_threads(others) == []


def submit_quietly(sim: GatewaySimulator) -> None:
    with contextlib.suppress(requests.RequestException):  # the server goes away mid-request
        requests.post(f"{sim.url}/kling/v1/videos/text2video", json=BODY, headers=auth(sim), timeout=60)


def test_refused_submits_do_not_use_up_a_drop() -> None:
    with GatewaySimulator(max_parallel=1, scenario=FOREVER) as sim:
        sim.add_task()
        sim.drop_next_submits(2)
        assert submit(sim, {**BODY, "duration": "7"}).status_code == 500
        assert submit(sim).status_code == 429
        sim.max_parallel = None
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                submit(sim)
        assert submit(sim).status_code == 200
        assert [r.status for r in sim.requests()] == [500, 429, 0, 0, 200]
        with pytest.raises(ValueError, match="count"):
            sim.drop_next_submits(-1)


def test_control_api_drops_submits(sim: GatewaySimulator) -> None:
    url = f"{sim.url}/_simulator/drop_submits"
    response = requests.post(url, json={"count": 2}, headers=auth(sim), timeout=10)
    assert (response.status_code, response.json()) == (200, {"pending": 2})
    response = requests.post(url, json={"count": 1, "hang": True}, headers=auth(sim), timeout=10)
    assert response.json() == {"pending": 3}
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            submit(sim)
    with pytest.raises(requests.ReadTimeout):
        submit(sim, timeout=0.3)
    assert submit(sim).status_code == 200
    assert requests.post(url, json={}, headers=auth(sim), timeout=10).json() == {"pending": 1}


@pytest.mark.parametrize(
    "body", [[1], {"count": "2"}, {"count": True}, {"count": -1}, {"hang": 1}, {"count": 1, "when": "now"}]
)
def test_control_api_rejects_bad_drop_requests(sim: GatewaySimulator, body: object) -> None:
    url = f"{sim.url}/_simulator/drop_submits"
    response = requests.post(url, json=body, headers=auth(sim), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"].startswith("not a drop request")
    assert requests.post(url, json={}, timeout=10).status_code == 401


# --- link expiry --------------------------------------------------------------------------------------------


def video_of(sim: GatewaySimulator, url_lifetime: float | None = None) -> Video:
    """The video of a new task that is done at its first GET."""
    return poll(sim, sim.add_task(Scenario(polls=(0, 0), url_lifetime=url_lifetime))).videos[0]


def test_links_live_as_long_as_url_lifetime_says() -> None:
    with GatewaySimulator(url_lifetime=3600) as sim:
        video = video_of(sim)
        assert video.expires_at is not None
        left = video.expires_at - datetime.now(timezone.utc)
        assert timedelta(minutes=59) < left <= timedelta(hours=1)
        assert requests.get(video.url, timeout=10).status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_expired_link_is_403_like_a_signed_cdn(method: str) -> None:
    with GatewaySimulator(url_lifetime=-60) as sim:
        video = video_of(sim)
        assert video.expires_at is not None
        assert video.expires_at < datetime.now(timezone.utc)
        response = requests.request(method, video.url, headers={"Range": "bytes=0-9"}, timeout=10)
        assert response.status_code == 403
        assert response.headers["Content-Type"] == "text/plain"
        assert requests.get(sim.clip_url, timeout=10).status_code == 403
        assert sim.requests()[-2].task_id is not None  # still logged as a download of that task


def test_a_scenario_sets_its_own_lifetime_and_the_default_can_change(sim: GatewaySimulator) -> None:
    expired = video_of(sim, url_lifetime=-1)
    fresh = video_of(sim)
    assert requests.get(expired.url, timeout=10).status_code == 403
    assert requests.get(fresh.url, timeout=10).status_code == 200
    sim.url_lifetime = -5
    assert requests.get(video_of(sim).url, timeout=10).status_code == 403
    assert requests.get(fresh.url, timeout=10).status_code == 200  # links made before keep their expiry
    scenario = Scenario(url_lifetime=-1)
    assert Scenario.from_dict(json.loads(json.dumps(scenario.to_dict()))) == scenario


@pytest.mark.parametrize(
    "change",
    [
        lambda query: {**query, "Expires": [str(int(query["Expires"][0]) + 86400)]},  # extended by hand
        lambda query: {**query, "Signature": ["0" * 64]},
        lambda query: {k: v for k, v in query.items() if k != "Signature"},
        lambda query: {},
    ],
)
def test_a_tampered_link_is_403(sim: GatewaySimulator, change: Any) -> None:
    parts = urlsplit(video_of(sim).url)
    query = change(parse_qs(parts.query))
    url = parts._replace(query="&".join(f"{k}={v[0]}" for k, v in query.items())).geturl()
    assert requests.get(url, timeout=10).status_code == 403
