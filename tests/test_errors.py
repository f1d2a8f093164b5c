"""error_from_response against every row of docs/gateway.md, "Error catalogue"; the error tree's contract."""

from __future__ import annotations

import json
import pickle

import pytest

from kling_widgets._errors import (
    APIError,
    AuthenticationError,
    KlingError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransportError,
    error_from_response,
)
from kling_widgets._models import Task, TaskStatus

RID = "2026071600000012345678aBcDeFgH"


def shape_a(code: str, message: str) -> dict[str, object]:
    return {"code": code, "message": message, "data": None}


def shape_b(message: str, code: str = "") -> dict[str, object]:
    return {"error": {"message": message, "type": "new_api_error", "code": code}}


KLING_1301 = json.dumps({"code": 1301, "message": "Risk control: content policy", "request_id": "ab-12"})

TOKEN_EXHAUSTED = "[sk-abc***xyz] 该令牌额度已用尽 !token.UnlimitedQuota && token.RemainQuota = 0"
NO_CHANNEL = "获取分组 default 下模型 kling-v9 的可用渠道失败（distributor）: x"
UNMARSHAL = (
    "unmarshal metadata failed: json: cannot unmarshal number into Go struct field requestPayload.duration "
    "of type string"
)
SATURATED = "当前分组上游负载已饱和，请稍后再试"


def row(
    name: str, status: int, body: object, cls: type[APIError], code: str | None, retryable: bool, *texts: str
) -> object:
    """One §8.1 row: the class, code and retryability expected, and texts the message must keep."""
    return pytest.param(status, body, cls, code, retryable, texts, id=name)


def b(message: str, code: str = "") -> dict[str, object]:
    """Shape B as the auth middleware writes it, with the request id suffix."""
    return shape_b(f"{message} (request id: {RID})", code)


CATALOGUE = [
    row("unknown-task", 400, shape_a("task_not_exist", "task_not_exist"), TaskNotFoundError, "task_not_exist",
        False, "task_not_exist", "same key"),
    row("db-error", 500, shape_a("get_task_failed", "database is locked"), ServerError, "get_task_failed",
        True, "database is locked"),
    row("missing-authorization", 401, b("未提供令牌"), AuthenticationError, None, False, "未提供令牌",
        "EZMODEL_API_KEY"),
    row("bad-token", 401, b("无效的令牌"), AuthenticationError, None, False, "无效的令牌", "EZMODEL_API_KEY"),
    row("token-expired", 401, b("该令牌已过期"), AuthenticationError, None, False, "该令牌已过期"),
    row("token-disabled", 401, b("该令牌状态不可用"), AuthenticationError, None, False, "该令牌状态不可用"),
    row("token-quota-exhausted", 401, b(TOKEN_EXHAUSTED), AuthenticationError, None, False,
        "quota is used up", TOKEN_EXHAUSTED),
    row("token-quota-status", 401, b("该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]"),
        AuthenticationError, None, False, "quota is used up", "TokenStatusExhausted"),
    row("upstream-2026-i18n", 401, shape_b("Invalid token"), AuthenticationError, None, False,
        "Invalid token", "EZMODEL_API_KEY"),
    row("ip-not-allowed", 403, b("您的 IP 不在令牌允许访问的列表中"), PermissionDeniedError, None, False,
        "IP allow-list", "您的 IP 不在令牌允许访问的列表中"),
    row("user-banned", 403, b("用户已被封禁"), PermissionDeniedError, None, False, "用户已被封禁"),
    row("model-restricted-token", 403, b("该令牌无权访问模型 "), PermissionDeniedError, None, False,
        "model restrictions", "该令牌无权访问模型"),
    row("missing-model", 400, b("未指定模型名称，模型名称不能为空"), APIError, None, False, "(400)",
        "未指定模型名称"),
    row("malformed-json", 400, b("Invalid request, 无效的请求, invalid character 'x'"), APIError, None, False,
        "无效的请求"),
    row("no-channel", 503, b(NO_CHANNEL, "model_not_found"), ServerError, "model_not_found", True, "(503)",
        NO_CHANNEL),
    row("blank-prompt", 400, shape_a("invalid_request", "prompt is required"), APIError, "invalid_request",
        False, "prompt is required"),
    row("bad-duration-value", 400, shape_a("invalid_request", "metadata.duration must be numeric"), APIError,
        "invalid_request", False, "metadata.duration must be numeric"),
    row("duration-not-5-or-10", 500,
        shape_a("get_price_scale_failed", "legacy endpoint only supports duration 5 or 10, got: 7"),
        ServerError, "get_price_scale_failed", False, "duration", "got: 7"),
    row("unsupported-mode", 500, shape_a("get_price_scale_failed", "unsupported mode: turbo"), ServerError,
        "get_price_scale_failed", False, "mode", "unsupported mode: turbo"),
    row("duration-as-number", 500, shape_a("build_request_failed", UNMARSHAL), ServerError,
        "build_request_failed", False, "as a string", UNMARSHAL),
    row("user-quota", 403, shape_a("quota_not_enough", "user quota is not enough"), PermissionDeniedError,
        "quota_not_enough", False, "quota is used up", "Top up", "user quota is not enough"),
    row("upstream-2026-user-quota", 403, shape_a("insufficient_user_quota", "用户额度不足, 剩余额度: 0"),
        PermissionDeniedError, "insufficient_user_quota", False, "quota is used up", "用户额度不足"),
    row("upstream-2026-token-quota", 403,
        shape_a("pre_consume_token_quota_failed", "token quota is not enough, token remain quota: 0"),
        PermissionDeniedError, "pre_consume_token_quota_failed", False, "quota is used up"),
    row("kling-code-not-0", 400, shape_a("task_failed", "Kling said no"), APIError, "task_failed", False,
        "Kling said no"),
    row("kling-non-2xx-embedded-json", 400, shape_a("fail_to_fetch_task", KLING_1301), APIError,
        "fail_to_fetch_task", False, "Risk control: content policy", "Kling code 1301"),
    row("upstream-saturated", 429, shape_a("fail_to_fetch_task", SATURATED), RateLimitError,
        "fail_to_fetch_task", True, "(429)", SATURATED),
    row("redis-rate-limiter", 429, shape_b("您已达到请求数限制：1分钟内最多请求60次"), RateLimitError, None,
        True, "您已达到请求数限制"),
    row("empty-body-429", 429, None, RateLimitError, None, True, "Retry in a moment"),
    row("network-to-kling", 500, shape_a("do_request_failed", "dial tcp: i/o timeout"), ServerError,
        "do_request_failed", True, "(500)", "dial tcp: i/o timeout"),
    row("wrong-path", 404, shape_b("Invalid URL (GET /kling/v1/videos/text2video)"), TaskNotFoundError, None,
        False, "Invalid URL (GET /kling/v1/videos/text2video)"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "cls", "code", "retryable", "texts"), CATALOGUE)
def test_catalogue(
    status: int, body: object, cls: type[APIError], code: str | None, retryable: bool, texts: tuple[str, ...]
) -> None:
    error = error_from_response(status, body, request_id=RID)
    assert type(error) is cls
    assert isinstance(error, KlingError)
    assert (error.status_code, error.code, error.request_id, error.retryable) == (
        status,
        code,
        RID,
        retryable,
    )
    for text in texts:
        assert text in error.message
    assert str(error).endswith(f"(request id: {RID})")
    assert error.message.isascii() or body is not None  # the English part is always there
    assert repr(error).startswith(f"{cls.__name__}(")


def test_the_quota_403_and_the_permission_403_say_different_things() -> None:
    quota = error_from_response(403, shape_a("quota_not_enough", "user quota is not enough"))
    ip = error_from_response(403, shape_b("您的 IP 不在令牌允许访问的列表中"))
    assert "quota" in quota.message
    assert "quota" not in ip.message


def test_no_request_id_means_no_suffix() -> None:
    error = error_from_response(500, shape_a("do_request_failed", "boom"))
    assert error.request_id is None
    assert str(error) == error.message
    assert "request id" not in str(error)


@pytest.mark.parametrize("retry_after", [None, 0.0, 8.0, 2.5])
def test_rate_limit_carries_retry_after(retry_after: float | None) -> None:
    error = error_from_response(
        429, shape_a("fail_to_fetch_task", "当前分组上游负载已饱和，请稍后再试"), retry_after=retry_after
    )
    assert isinstance(error, RateLimitError)
    assert error.retry_after == retry_after
    assert error.retryable
    if retry_after is not None:
        assert f"Retry after {retry_after:g} s" in error.message


@pytest.mark.parametrize(
    "message",
    [
        "not json at all",
        json.dumps([1, 2]),
        json.dumps({"code": 1201}),  # no message: keep the raw text
        "12",
    ],
)
def test_embedded_kling_body_that_is_not_a_kling_error_is_kept_verbatim(message: str) -> None:
    error = error_from_response(400, shape_a("fail_to_fetch_task", message))
    assert message in error.message
    assert "Kling code" not in error.message


def test_task_failed_code_also_unpacks_embedded_kling_json() -> None:
    error = error_from_response(400, shape_a("task_failed", KLING_1301))
    assert "Risk control: content policy (Kling code 1301)" in error.message


@pytest.mark.parametrize("body", [None, "<html>502</html>", [1, 2], {}, {"error": None}, 7])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 502, 503])
def test_any_body_is_classified(status: int, body: object) -> None:
    error = error_from_response(status, body)
    assert isinstance(error, APIError)
    assert error.status_code == status
    assert error.code is None
    assert f"({status})" in error.message
    assert "The gateway said" not in error.message


def test_a_proxys_plain_error_string_is_kept() -> None:
    error = error_from_response(502, {"error": "upstream connect error"})
    assert isinstance(error, ServerError)
    assert "The gateway said: upstream connect error" in error.message


def test_shape_b_request_id_is_said_once() -> None:
    body = shape_b("无效的令牌 (request id: 20260716abc)")
    error = error_from_response(401, body, request_id="20260716abc")
    assert str(error).count("20260716abc") == 1


def test_unexpected_status_is_a_plain_api_error() -> None:
    error = error_from_response(418, shape_a("teapot", "I am a teapot"))
    assert type(error) is APIError
    assert "I am a teapot" in error.message
    assert not error.retryable


def test_shape_b_code_wins_over_nothing() -> None:
    error = error_from_response(503, shape_b("x", "model_not_found"))
    assert error.code == "model_not_found"


def test_transport_errors_are_retryable_and_the_root_is_not() -> None:
    assert TransportError("connection reset").retryable
    assert not KlingError("stopped").retryable
    assert not APIError("nope", status_code=400).retryable


def test_task_failed_error_holds_the_task_and_its_reason() -> None:
    task = Task("833446756121212121", TaskStatus.FAILURE, 100, fail_reason="Image pixel is invalid")
    error = TaskFailedError(task)
    assert error.task is task
    assert str(error) == "Task 833446756121212121 failed: Image pixel is invalid"
    assert error.code == "task_failed"
    assert not error.retryable
    assert "unknown failure" in str(TaskFailedError(Task("1", TaskStatus.FAILURE)))


def test_task_timeout_error_is_a_builtin_timeout_error() -> None:
    task = Task("842250903629086785", TaskStatus.IN_PROGRESS, 30)
    error = TaskTimeoutError(task, task.task_id, 900.0)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, KlingError)
    assert (error.task, error.task_id, error.timeout) == (task, task.task_id, 900.0)
    assert "842250903629086785" in str(error)
    assert "900 s" in str(error)
    assert "may still finish" in str(error)
    with pytest.raises(TimeoutError):
        raise TaskTimeoutError(None, "x", 1.5)


# -- hardening: shown server text is capped, every error pickles ----------------------------------


def test_task_failed_message_shows_the_reason_cleaned_and_capped() -> None:
    reason = "\u202eevil\u200b " + "x" * 10_000_000
    task = Task("1", TaskStatus.FAILURE, 100, fail_reason=reason, raw={"data": {"fail_reason": reason}})
    error = TaskFailedError(task)
    assert len(str(error)) < 2100
    assert str(error).startswith("Task 1 failed: evil x")
    assert str(error).endswith("…")
    assert error.task.fail_reason == reason  # the full text stays on the task
    assert error.task.raw["data"]["fail_reason"] == reason


def test_the_gateways_words_are_capped_in_error_messages() -> None:
    error = error_from_response(500, shape_a("do_request_failed", "\u2066boom\u2069" + "y" * 5_000_000))
    assert len(str(error)) < 2200
    assert "The gateway said: boomyyy" in str(error)
    huge_code = error_from_response(400, {"code": "z" * 1_000_000, "message": "no"})
    assert len(huge_code.code or "") <= 100


def test_a_nested_structure_is_no_message() -> None:
    deep: object = "bottom"
    for _ in range(50_000):
        deep = [deep]
    for payload in (
        {"code": deep, "message": deep},
        shape_a("fail_to_fetch_task", json.dumps({"message": 1})),
    ):
        assert isinstance(error_from_response(400, payload), APIError)


TASK = Task(
    "842250903629086785", TaskStatus.FAILURE, 100, fail_reason="Image pixel is invalid", raw={"code": 0}
)
EVERY_ERROR = [
    KlingError("root", status_code=418, code="teapot", request_id=RID, task_id="7"),
    APIError("api", status_code=400, code="invalid_request", request_id=RID),
    AuthenticationError("key", status_code=401, code="invalid_api_key", request_id=RID),
    PermissionDeniedError("quota", status_code=403, code="quota_not_enough", request_id=RID),
    TaskNotFoundError("gone", status_code=404, code="task_not_exist", request_id=RID, task_id="9"),
    RateLimitError("slow down", retry_after=7.5, status_code=429, request_id=RID),
    ServerError("broken", status_code=500, code="get_price_scale_failed", request_id=RID),
    TransportError("reset", status_code=502, request_id=RID),
    TransportError("wrong base URL", status_code=404, retryable=False),
    TaskFailedError(TASK),
    TaskTimeoutError(TASK, TASK.task_id, 900.0),
    TaskTimeoutError(None, "842250903629086785", 1.5),
]


@pytest.mark.parametrize("error", EVERY_ERROR, ids=lambda e: type(e).__name__)
def test_every_error_survives_a_pickle_round_trip(error: KlingError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert copy.retryable == error.retryable
    names = ["message", "status_code", "code", "request_id", "task_id", "retry_after", "task", "timeout"]
    for name in names:
        assert getattr(copy, name, None) == getattr(error, name, None), name
    if getattr(error, "task", None) is not None:
        assert dict(copy.task.raw) == dict(error.task.raw)  # type: ignore[attr-defined]
