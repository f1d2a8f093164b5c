"""Parsing gateway JSON into Task: the documented examples, every quirk, and totality under fuzzing."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_widgets._errors import TransportError
from kling_widgets._models import Task, TaskStatus, Video, parse_submission, parse_task


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


# The gateway's documented examples, verbatim (docs/gateway.md, "Example answers" shows two).
NOT_START_68 = json.loads("""{
    "code": "success",
    "message": "",
    "data": {
    "task_id": "842250903629086785",
    "action": "textGenerate",
    "status": "NOT_START",
    "fail_reason": "",
    "submit_time": 1784160000,
    "start_time": 0,
    "finish_time": 0,
    "progress": "0%",
    "data": {"code":0,"message":"SUCCEED","request_id":"603e2a28-fb89-4146-ae33-412d74012a6d","data":{"task_id":"842250903629086785","task_status":"submitted","task_info":{},"created_at":1784160000123,"updated_at":1784160000123}}
    }
}""")  # noqa: E501

SUBMITTED_69 = json.loads("""{
    "code": "success",
    "message": "",
    "data": {
    "task_id": "842250903629086785",
    "action": "textGenerate",
    "status": "SUBMITTED",
    "fail_reason": "",
    "submit_time": 1784160000,
    "start_time": 0,
    "finish_time": 0,
    "progress": "10%",
    "data": {"code":0,"data":{"created_at":1784160000123,"task_id":"842250903629086785","task_info":{},"task_result":{},"task_status":"submitted","task_status_msg":"","updated_at":1784160000123},"message":"SUCCEED","request_id":"0c1d9e3a-5b7f-4a55-9a2e-1f4f7e2d8c10"}
    }
}""")  # noqa: E501

IN_PROGRESS_610 = json.loads("""{
    "code": "success",
    "message": "",
    "data": {
    "task_id": "842250903629086785",
    "action": "textGenerate",
    "status": "IN_PROGRESS",
    "fail_reason": "",
    "submit_time": 1784160000,
    "start_time": 1784160012,
    "finish_time": 0,
    "progress": "30%",
    "data": {"code":0,"data":{"created_at":1784160000123,"task_id":"842250903629086785","task_info":{},"task_result":{},"task_status":"processing","task_status_msg":"","updated_at":1784160011876},"message":"SUCCEED","request_id":"7f0b6c2e-3c41-4c8e-b2f1-6d8f0a9e4b21"}
    }
}""")  # noqa: E501

SUCCESS_611 = json.loads("""{
    "code": "success",
    "message": "",
    "data": {
    "task_id": "842250903629086785",
    "action": "textGenerate",
    "status": "SUCCESS",
    "fail_reason": "https://v16-kling-fdl.klingai.com/bs2/upload-ylab-stunt-sgp/muse/…/VIDEO/20260716/….mp4?cacheKey=…&x-kcdn-pid=112781&Expires=1786752187&Signature=…",
    "submit_time": 1784160000,
    "start_time": 1784160012,
    "finish_time": 1784160187,
    "progress": "100%",
    "data": {"code":0,"data":{"created_at":1784160000123,"final_unit_deduction":"1","task_id":"842250903629086785","task_info":{},"task_result":{"videos":[{"duration":"5.1","id":"842250903708762200","url":"https://v16-kling-fdl.klingai.com/bs2/upload-ylab-stunt-sgp/muse/…/VIDEO/20260716/….mp4?cacheKey=…&Expires=1786752187&Signature=…"}]},"task_status":"succeed","task_status_msg":"","updated_at":1784160186950},"message":"SUCCEED","request_id":"b3a8e1f2-9d4c-4f6a-8e2b-5c7d1a0f3e99"}
    }
}""")

FAILURE_612 = json.loads("""{
    "code": "success",
    "message": "",
    "data": {
    "task_id": "833446756121212121",
    "action": "generate",
    "status": "FAILURE",
    "fail_reason": "SUCCEED",
    "submit_time": 1784160000,
    "start_time": 0,
    "finish_time": 1784160002,
    "progress": "100%",
    "data": {"code":0,"data":{"created_at":1784160000125,"task_id":"833446756121212121","task_info":{},"task_result":{},"task_status":"failed","task_status_msg":"Image pixel is invalid","updated_at":1784160001775},"message":"SUCCEED","request_id":"ace7625a-3e18-49aa-abc4-0123456789ab"}
    }
}""")  # noqa: E501

SUBMIT_41 = json.loads("""{
  "id": "842250903629086785",
  "task_id": "842250903629086785",
  "object": "video",
  "model": "kling-v2-6",
  "status": "",
  "progress": 0,
  "created_at": 1784160000
}""")

KLING_CREATE_102 = json.loads(
    '{"code":0,"message":"SUCCEED","request_id":"603e2a28-…","data":{"task_id":"831922345719271433",'
    '"task_status":"submitted","task_info":{"external_task_id":"…"},"created_at":1766374262370,'
    '"updated_at":1766374262370}}'
)

VIDEO_URL_611 = SUCCESS_611["data"]["data"]["data"]["task_result"]["videos"][0]["url"]

# Upstream New API ≥ 2026-02-10: public task id, result_url, fixed fail_reason
# (docs/gateway.md, "Upstream New API differences").
UPSTREAM_ID = "task_0123456789abcdefghijklmnopqrstuv"
UPSTREAM_SUBMIT = {**SUBMIT_41, "id": UPSTREAM_ID, "task_id": UPSTREAM_ID, "status": "queued"}


def upstream(
    status: str, *, fail_reason: str = "", result_url: str = "", kling: dict[str, Any]
) -> dict[str, Any]:
    dto = {
        "id": 42,
        "created_at": 1784160000,
        "updated_at": 1784160187,
        "task_id": UPSTREAM_ID,
        "platform": "kling",
        "user_id": 7,
        "group": "default",
        "channel_id": 3,
        "quota": 1000,
        "action": "textGenerate",
        "status": status,
        "fail_reason": fail_reason,
        "result_url": result_url,
        "submit_time": 1784160000,
        "start_time": 1784160012,
        "finish_time": 1784160187 if status in ("SUCCESS", "FAILURE") else 0,
        "progress": "100%" if status in ("SUCCESS", "FAILURE") else "30%",
        "properties": {},
        "username": "someone",
        "data": {"code": 0, "message": "SUCCEED", "data": kling},
    }
    return {"code": "success", "message": "", "data": dto}


UPSTREAM_SUCCESS = upstream(
    "SUCCESS",
    result_url="https://cdn.example/v.mp4?Expires=1786752187",
    kling={"task_id": "842250903629086785", "task_status": "succeed", "task_result": {}},
)
UPSTREAM_FAILURE = upstream(
    "FAILURE",
    fail_reason="Image pixel is invalid",
    kling={
        "task_id": "842250903629086785",
        "task_status": "failed",
        "task_status_msg": "Image pixel is invalid",
    },
)
UPSTREAM_SWEPT = upstream("FAILURE", fail_reason="任务超时（1440分钟）", kling={})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            NOT_START_68,
            Task("842250903629086785", TaskStatus.NOT_START, 0, submit_time=utc(1784160000)),
            id="6.8-not-start",
        ),
        pytest.param(
            SUBMITTED_69,
            Task("842250903629086785", TaskStatus.SUBMITTED, 10, submit_time=utc(1784160000)),
            id="6.9-submitted",
        ),
        pytest.param(
            IN_PROGRESS_610,
            Task(
                "842250903629086785",
                TaskStatus.IN_PROGRESS,
                30,
                submit_time=utc(1784160000),
                start_time=utc(1784160012),
            ),
            id="6.10-in-progress",
        ),
        pytest.param(
            SUCCESS_611,
            Task(
                "842250903629086785",
                TaskStatus.SUCCESS,
                100,
                videos=(Video(VIDEO_URL_611, duration=5.1, id="842250903708762200"),),
                submit_time=utc(1784160000),
                start_time=utc(1784160012),
                finish_time=utc(1784160187),
            ),
            id="6.11-success",
        ),
        pytest.param(
            FAILURE_612,
            Task(
                "833446756121212121",
                TaskStatus.FAILURE,
                100,
                fail_reason="Image pixel is invalid",
                submit_time=utc(1784160000),
                finish_time=utc(1784160002),
                endpoint="image2video",  # its action is "generate"
            ),
            id="6.12-failure-SUCCEED-quirk",
        ),
        pytest.param(
            UPSTREAM_SUCCESS,
            Task(
                UPSTREAM_ID,
                TaskStatus.SUCCESS,
                100,
                videos=(Video("https://cdn.example/v.mp4?Expires=1786752187"),),
                submit_time=utc(1784160000),
                start_time=utc(1784160012),
                finish_time=utc(1784160187),
            ),
            id="11-upstream-result-url",
        ),
        pytest.param(
            UPSTREAM_FAILURE,
            Task(
                UPSTREAM_ID,
                TaskStatus.FAILURE,
                100,
                fail_reason="Image pixel is invalid",
                submit_time=utc(1784160000),
                start_time=utc(1784160012),
                finish_time=utc(1784160187),
            ),
            id="11-upstream-failure",
        ),
        pytest.param(
            UPSTREAM_SWEPT,
            Task(
                UPSTREAM_ID,
                TaskStatus.FAILURE,
                100,
                fail_reason="任务超时（1440分钟）",
                submit_time=utc(1784160000),
                start_time=utc(1784160012),
                finish_time=utc(1784160187),
            ),
            id="11-upstream-timeout-sweep",
        ),
        pytest.param(
            KLING_CREATE_102,
            Task(
                "831922345719271433",
                TaskStatus.SUBMITTED,
                0,
                submit_time=utc(1766374262.370),
                external_task_id="…",
            ),
            id="raw-kling-create",
        ),
    ],
)
def test_documented_examples(payload: dict[str, Any], expected: Task) -> None:
    task = parse_task(payload)
    assert task == expected
    assert task.raw == payload


@pytest.mark.parametrize(
    ("payload", "task_id", "status", "submit_time"),
    [
        pytest.param(
            SUBMIT_41, "842250903629086785", TaskStatus.SUBMITTED, utc(1784160000), id="4.1-ezmodel"
        ),
        pytest.param(
            UPSTREAM_SUBMIT, UPSTREAM_ID, TaskStatus.QUEUED, utc(1784160000), id="11-upstream-queued"
        ),
        pytest.param(
            {"id": "842250903629086785", "status": "", "created_at": 1784160000},
            "842250903629086785",
            TaskStatus.SUBMITTED,
            utc(1784160000),
            id="id-only",
        ),
        pytest.param(
            {"task_id": "831922345719271433", **KLING_CREATE_102},
            "831922345719271433",
            TaskStatus.SUBMITTED,
            utc(1766374262.370),
            id="4.2-raw-kling-plus-task-id",
        ),
        pytest.param(
            KLING_CREATE_102, "831922345719271433", TaskStatus.SUBMITTED, utc(1766374262.370), id="raw-kling"
        ),
        pytest.param(
            {"task_id": "", "id": "", "data": {"task_id": "9"}, "status": "weird"},
            "9",
            TaskStatus.SUBMITTED,
            None,
            id="empty-ids-fall-through",
        ),
    ],
)
def test_parse_submission(
    payload: dict[str, Any], task_id: str, status: TaskStatus, submit_time: datetime | None
) -> None:
    task = parse_submission(payload)
    assert (task.task_id, task.status, task.progress, task.submit_time) == (task_id, status, 0, submit_time)
    assert task.videos == ()
    assert task.fail_reason is None
    assert not task.is_terminal
    assert task.raw == payload


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (None, "expected an object, got null"),
        ([SUBMIT_41], "expected an object, got an array"),
        ("<html>502 Bad Gateway</html>", "expected an object, got a string"),
        (42, "expected an object, got a number"),
        ({}, "missing data"),
        ({"code": "success", "message": "", "data": None}, "missing data"),
        ({"code": "success", "data": {"status": "SUCCESS"}}, "missing data.task_id"),
        ({"code": "success", "data": {"task_id": "  ", "status": "SUCCESS"}}, "missing data.task_id"),
        ({"code": 0, "data": {"task_status": "succeed"}}, "missing data.task_id"),
    ],
)
def test_not_a_task(payload: object, problem: str) -> None:
    with pytest.raises(TransportError, match=f"not a task: {problem}") as caught:
        parse_task(payload)
    assert caught.value.retryable


def test_not_a_task_keeps_the_gateways_words() -> None:
    body = {"code": "task_not_exist", "message": "task_not_exist", "data": None}
    with pytest.raises(TransportError, match=r"missing data.*code task_not_exist, task_not_exist"):
        parse_task(body)
    with pytest.raises(TransportError, match=r"missing task_id.*当前分组上游负载已饱和"):
        parse_submission({"code": "fail_to_fetch_task", "message": "当前分组上游负载已饱和，请稍后再试"})


@pytest.mark.parametrize("payload", [None, [], "", {"status": ""}, {"data": {"task_status": "submitted"}}])
def test_submission_without_id(payload: object) -> None:
    with pytest.raises(TransportError, match="not a task"):
        parse_submission(payload)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *((status.value, status) for status in TaskStatus),
        *((status.value.lower(), status) for status in TaskStatus),
        # Kling's own task_status
        ("submitted", TaskStatus.SUBMITTED),
        ("processing", TaskStatus.IN_PROGRESS),
        ("succeed", TaskStatus.SUCCESS),
        ("failed", TaskStatus.FAILURE),
        # OpenAI-video status (docs/gateway.md, "The OpenAI-video shape")
        ("queued", TaskStatus.QUEUED),
        ("in_progress", TaskStatus.IN_PROGRESS),
        ("completed", TaskStatus.SUCCESS),
        ("unknown", TaskStatus.UNKNOWN),
        (" SUCCESS\n", TaskStatus.SUCCESS),
        ("", TaskStatus.UNKNOWN),
        ("DONE", TaskStatus.UNKNOWN),
        (None, TaskStatus.UNKNOWN),
        (1, TaskStatus.UNKNOWN),
        (True, TaskStatus.UNKNOWN),
        (["SUCCESS"], TaskStatus.UNKNOWN),
        (TaskStatus.FAILURE, TaskStatus.FAILURE),
    ],
)
def test_status_parse(value: object, expected: TaskStatus) -> None:
    assert TaskStatus.parse(value) is expected


@pytest.mark.parametrize(
    ("status", "terminal", "queued"),
    [
        (TaskStatus.NOT_START, False, True),
        (TaskStatus.SUBMITTED, False, True),
        (TaskStatus.QUEUED, False, True),
        (TaskStatus.IN_PROGRESS, False, False),
        (TaskStatus.SUCCESS, True, False),
        (TaskStatus.FAILURE, True, False),
        (TaskStatus.UNKNOWN, False, False),
    ],
)
def test_status_phases(status: TaskStatus, terminal: bool, queued: bool) -> None:
    assert (status.is_terminal, status.is_queued) == (terminal, queued)
    assert Task("1", status).is_terminal is terminal
    assert status == status.value
    assert str(status) == f"{status}" == status.value


def envelope(**dto: Any) -> dict[str, Any]:
    return {"code": "success", "message": "", "data": {"task_id": "1", "status": "IN_PROGRESS", **dto}}


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        ("0%", 0),
        ("10%", 10),
        ("30%", 30),
        (" 20 % ", 20),
        ("42.9%", 42),
        ("", 0),
        ("%", 0),
        (None, 0),
        ("abc", 0),
        ("150%", 100),
        ("-5%", 0),
        ("nan%", 0),
        ("inf", 0),
        pytest.param("1" * 5000, 0, id="5000-digits"),
        (30, 30),
        (30.7, 30),
        (250, 100),
        (-1, 0),
        pytest.param(10**400, 0, id="int-beyond-float"),
        (float("nan"), 0),
        (True, 0),
        ([30], 0),
        ({"value": 30}, 0),
    ],
)
def test_progress(progress: object, expected: int) -> None:
    assert parse_task(envelope(progress=progress)).progress == expected


@pytest.mark.parametrize("status", ["SUCCESS", "FAILURE"])
def test_terminal_progress_is_100_whatever_the_gateway_says(status: str) -> None:
    assert parse_task(envelope(status=status, progress="")).progress == 100


def kling_failure(msg: object) -> dict[str, Any]:
    return {"code": 0, "message": "SUCCEED", "data": {"task_status": "failed", "task_status_msg": msg}}


@pytest.mark.parametrize(
    ("status", "kling", "fail_reason", "expected"),
    [
        pytest.param(
            "FAILURE", kling_failure("Image pixel is invalid"), "SUCCEED", "Image pixel is invalid", id="msg"
        ),
        pytest.param("FAILURE", kling_failure("内容安全风险"), "SUCCEED", "内容安全风险", id="chinese"),
        pytest.param("FAILURE", kling_failure(""), "SUCCEED", None, id="only-SUCCEED"),
        pytest.param("FAILURE", kling_failure(""), "succeed", None, id="only-succeed-lowercase"),
        pytest.param(
            "FAILURE", kling_failure(None), "quota refunded: bad", "quota refunded: bad", id="fail-reason"
        ),
        pytest.param("FAILURE", kling_failure("SUCCEED"), "Real reason", "Real reason", id="msg-SUCCEED"),
        pytest.param("FAILURE", kling_failure(""), "https://cdn/x.mp4", None, id="never-the-url"),
        pytest.param("FAILURE", kling_failure("  "), "  ", None, id="blank"),
        pytest.param("FAILURE", kling_failure(123), "", "123", id="numeric-msg"),
        pytest.param("FAILURE", kling_failure(["x"]), "", None, id="garbage-msg"),
        pytest.param("FAILURE", "not an object", "Timeout", "Timeout", id="garbage-kling"),
        pytest.param(
            "SUCCESS", kling_failure("Image pixel is invalid"), "https://cdn/x.mp4", None, id="success"
        ),
        pytest.param("IN_PROGRESS", kling_failure("whatever"), "oops", None, id="not-terminal"),
    ],
)
def test_fail_reason(status: str, kling: object, fail_reason: str, expected: str | None) -> None:
    task = parse_task(envelope(status=status, fail_reason=fail_reason, data=kling))
    assert task.fail_reason == expected


def kling_videos(*videos: object) -> dict[str, Any]:
    return {"code": 0, "data": {"task_status": "succeed", "task_result": {"videos": list(videos)}}}


@pytest.mark.parametrize(
    ("status", "dto", "expected"),
    [
        pytest.param(
            "SUCCESS",
            {
                "data": kling_videos(
                    {"url": "https://a/1.mp4", "duration": "5.042", "id": "v1"}, {"url": "https://a/2.mp4"}
                )
            },
            (Video("https://a/1.mp4", 5.042, "v1"), Video("https://a/2.mp4")),
            id="several-videos",
        ),
        pytest.param(
            "SUCCESS",
            {
                "data": kling_videos(
                    {"url": ""}, {"duration": "5"}, "x", None, {"url": "https://a/3.mp4", "id": 77}
                )
            },
            (Video("https://a/3.mp4", id="77"),),
            id="skip-videos-without-url",
        ),
        pytest.param(
            "SUCCESS",
            {"data": kling_videos({"url": "https://a/1.mp4", "duration": "abc"})},
            (Video("https://a/1.mp4"),),
            id="garbage-duration",
        ),
        pytest.param(
            "SUCCESS",
            {"data": kling_videos({"url": "https://a/1.mp4", "duration": 10})},
            (Video("https://a/1.mp4", 10.0),),
            id="int-duration",
        ),
        pytest.param(
            "SUCCESS",
            {"data": kling_videos({"url": "https://a/1.mp4", "duration": "-1"})},
            (Video("https://a/1.mp4"),),
            id="negative-duration",
        ),
        pytest.param(
            "SUCCESS",
            {
                "data": kling_videos({"url": "https://a/1.mp4"}),
                "result_url": "https://b/r.mp4",
                "fail_reason": "https://c/f.mp4",
            },
            (Video("https://a/1.mp4"),),
            id="videos-first",
        ),
        pytest.param(
            "SUCCESS",
            {"result_url": "https://b/r.mp4", "fail_reason": "https://c/f.mp4"},
            (Video("https://b/r.mp4"),),
            id="then-result-url",
        ),
        pytest.param(
            "SUCCESS",
            {"result_url": "", "fail_reason": "https://c/f.mp4"},
            (Video("https://c/f.mp4"),),
            id="then-fail-reason",
        ),
        pytest.param(
            "SUCCESS", {"fail_reason": "HTTP://C/F.MP4"}, (Video("HTTP://C/F.MP4"),), id="scheme-case"
        ),
        pytest.param("SUCCESS", {"fail_reason": "SUCCEED"}, (), id="fail-reason-not-a-url"),
        pytest.param("SUCCESS", {"fail_reason": "javascript:alert(1)"}, (), id="fail-reason-not-http"),
        pytest.param("SUCCESS", {"result_url": "file:///etc/passwd"}, (), id="result-url-not-http"),
        pytest.param("SUCCESS", {"result_url": 5, "fail_reason": None}, (), id="garbage"),
        pytest.param("FAILURE", {"fail_reason": "https://c/f.mp4"}, (), id="fallbacks-only-on-success"),
        pytest.param("IN_PROGRESS", {"result_url": "https://b/r.mp4"}, (), id="no-result-url-before-success"),
        pytest.param(
            "SUCCESS", {"data": {"data": {"task_result": {"videos": "x"}}}}, (), id="videos-not-a-list"
        ),
    ],
)
def test_videos(status: str, dto: dict[str, Any], expected: tuple[Video, ...]) -> None:
    task = parse_task(envelope(status=status, **dto))
    assert task.videos == expected
    assert task.video_url == (expected[0].url if expected else None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (VIDEO_URL_611, utc(1786752187)),
        ("https://a/v.mp4?Expires=1786752187", utc(1786752187)),
        ("https://a/v.mp4?x=1&expires=1786752187&Signature=abc%3D", utc(1786752187)),
        ("https://a/v.mp4", None),
        ("https://a/v.mp4?Expires=", None),
        ("https://a/v.mp4?Expires=soon", None),
        ("https://a/v.mp4?Expires=0", None),
        ("https://a/v.mp4?Expires=-5", None),
        ("https://a/v.mp4?Expires=99999999999999999999999", None),
        ("https://a/v.mp4?Expires=1e400", None),
        ("http://[::1/v.mp4?Expires=1786752187", None),
        ("", None),
    ],
)
def test_expires_at(url: str, expected: datetime | None) -> None:
    assert Video(url).expires_at == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1784160000, utc(1784160000)),
        (1784160000.5, utc(1784160000.5)),
        ("1784160000", utc(1784160000)),
        (1784160000123, utc(1784160000.123)),  # Kling milliseconds
        (0, None),
        ("0", None),
        (-1, None),
        ("", None),
        ("abc", None),
        ("2026-07-16T00:00:00Z", None),
        (None, None),
        (True, None),
        (10**30, None),
        (10**400, None),
        (1e308, None),
        (float("inf"), None),
        (float("nan"), None),
        ([1784160000], None),
    ],
)
def test_timestamps(value: object, expected: datetime | None) -> None:
    task = parse_task(envelope(submit_time=value, start_time=value, finish_time=value))
    assert task.submit_time == task.start_time == task.finish_time == expected
    if expected is not None:
        assert expected.tzinfo is timezone.utc


def test_raw_is_a_read_only_view_of_the_payload() -> None:
    payload = copy.deepcopy(SUCCESS_611)
    task = parse_task(payload)
    assert isinstance(task.raw, MappingProxyType)
    assert task.raw == SUCCESS_611
    with pytest.raises(TypeError):
        task.raw["code"] = "changed"  # type: ignore[index]
    payload["code"] = "changed"
    assert task.raw["code"] == "success"
    assert "raw" not in repr(task)
    assert task == parse_task(SUCCESS_611)
    assert hash(task) == hash(parse_task(SUCCESS_611))
    assert Task("1", TaskStatus.QUEUED).raw == {}


def test_task_is_immutable() -> None:
    task = parse_task(SUCCESS_611)
    with pytest.raises(AttributeError):
        task.status = TaskStatus.FAILURE  # type: ignore[misc]
    assert task.video_url == VIDEO_URL_611
    assert Task("1", TaskStatus.SUCCESS).video_url is None


# --- totality under fuzzing ------------------------------------------------------------------------------

KEYS = [
    "code", "message", "data", "task_id", "id", "status", "task_status", "task_status_msg", "fail_reason",
    "result_url", "progress", "submit_time", "start_time", "finish_time", "created_at", "updated_at",
    "task_result", "videos", "url", "duration",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["SUCCESS", "FAILURE", "succeed", "SUCCEED", "30%", "https://x/y.mp4?Expires=9", "0"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(), children, max_size=6)
    ),
    max_leaves=20,
)


def assert_sane(task: Task) -> None:
    assert isinstance(task.task_id, str)
    assert task.task_id
    assert isinstance(task.status, TaskStatus)
    assert 0 <= task.progress <= 100
    assert isinstance(task.progress, int)
    if task.fail_reason is not None:
        assert task.status is TaskStatus.FAILURE
        assert task.fail_reason.upper() != "SUCCEED"
        assert not task.fail_reason.lower().startswith(("http://", "https://"))
    for moment in (task.submit_time, task.start_time, task.finish_time):
        assert moment is None or moment.tzinfo is timezone.utc
    for video in task.videos:
        assert isinstance(video.url, str)
        assert video.url
        assert video.duration is None or video.duration >= 0
        video.expires_at  # noqa: B018 - must not raise
    repr(task)


def parse_totally(payload: object) -> None:
    for parse in (parse_task, parse_submission):
        try:
            task = parse(payload)
        except TransportError:  # the only error allowed: "not a task"
            continue
        assert_sane(task)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_parses_or_raises_transport_error(payload: object) -> None:
    parse_totally(payload)


def paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a decoded JSON value (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


EXAMPLES = [
    NOT_START_68,
    SUBMITTED_69,
    IN_PROGRESS_610,
    SUCCESS_611,
    FAILURE_612,
    SUBMIT_41,
    UPSTREAM_SUCCESS,
]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_envelopes_parse_or_raise_transport_error(data: st.DataObject) -> None:
    payload = copy.deepcopy(data.draw(st.sampled_from(EXAMPLES)))
    for _ in range(data.draw(st.integers(1, 4))):
        candidates = paths(payload)
        if not candidates:
            break
        *parents, last = data.draw(st.sampled_from(candidates))
        container = payload
        for key in parents:
            container = container[key]
        if isinstance(container, dict) and data.draw(st.booleans()):
            del container[last]
        else:
            container[last] = data.draw(json_values)
    parse_totally(payload)


def test_a_task_survives_a_pickle_round_trip_with_its_raw_answer() -> None:
    payload = {"code": "success", "data": {"task_id": "7", "status": "FAILURE", "fail_reason": "no"}}
    task = parse_task(payload)
    copied = pickle.loads(pickle.dumps(task))
    assert copied == task
    assert dict(copied.raw) == payload
    assert isinstance(copied.raw, MappingProxyType)  # still read-only
    with pytest.raises(TypeError):
        copied.raw["code"] = "changed"  # type: ignore[index]


def test_an_error_like_answer_is_quoted_cleaned_and_capped() -> None:
    payload = {"code": "\u202e" + "c" * 10_000, "message": "m\u200b" * 10_000}
    with pytest.raises(TransportError) as info:
        parse_task(payload)
    assert len(str(info.value)) < 500
    assert "\u202e" not in str(info.value)
    assert "\u200b" not in str(info.value)
