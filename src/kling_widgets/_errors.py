"""The error tree, and how a gateway (or Kling) error response maps onto it.

Every error carries ``status_code``, ``code``, ``message`` and ``request_id`` where they are known.
Messages are English, name the cause and the fix, and keep the gateway's own text (often Chinese), cleaned
and capped by `clean_text`. Every error survives a pickle round trip (multiprocessing, ipyparallel).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._text import clean_text

if TYPE_CHECKING:
    from ._models import Task

__all__ = [
    "APIError",
    "AuthenticationError",
    "KlingError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "TransportError",
    "error_from_response",
    "kling_error_from_response",
]

# 5xx codes that mean "your parameters are wrong", not "try again"
# (docs/gateway.md, "How the client classifies errors").
NON_RETRYABLE_SERVER_CODES = frozenset({"get_price_scale_failed", "build_request_failed"})


class KlingError(Exception):
    """Root of every error raised by kling_widgets.

    ``task_id`` is set whenever the gateway had already given the task an id: a task that exists (and may
    be billed) is never lost behind an error.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.task_id = task_id

    def __str__(self) -> str:
        # Shape B messages already end with "(request id: …)"; say it once.
        if self.request_id and self.request_id not in self.message:
            return f"{self.message} (request id: {self.request_id})"
        return self.message

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.message!r}, status_code={self.status_code!r}, code={self.code!r})"

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (rate limit, transient server or network trouble)."""
        return False

    def __reduce__(self) -> tuple[Any, ...]:
        # The default re-calls __init__ with ``args`` (the message), which TaskFailedError and
        # TaskTimeoutError do not take; rebuild without __init__, then restore every attribute.
        return (_rebuild, (type(self), self.args), self.__dict__)


class APIError(KlingError):
    """The gateway answered with an error response."""


class AuthenticationError(APIError):
    """401: the API key is missing, unknown, expired, disabled or out of quota."""


class PermissionDeniedError(APIError):
    """403: the account lacks quota or permission (IP list, banned user, model-restricted key)."""


class TaskNotFoundError(APIError):
    """The task id is unknown to this account (400 ``task_not_exist`` or 404)."""


class RateLimitError(APIError):
    """429: the gateway or Kling upstream is saturated. ``retry_after`` is in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return True


class ServerError(APIError):
    """5xx from the gateway. Retryable unless the code says the parameters were wrong."""

    @property
    def retryable(self) -> bool:
        return self.code not in NON_RETRYABLE_SERVER_CODES


class TransportError(KlingError):
    """The request never produced a usable answer: network failure, timeout, or a non-JSON body.

    Retryable unless made with ``retryable=False`` (an answer that cannot improve, such as a wrong base
    URL's HTML 404 page).
    """

    def __init__(self, message: str, *, retryable: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        return self._retryable


class TaskFailedError(KlingError):
    """The task ended in FAILURE. ``task`` holds the final snapshot; the message holds Kling's reason.

    The reason is shown cleaned and capped (`clean_text`); the full text stays on ``task.raw``.
    """

    def __init__(self, task: Task) -> None:
        reason = clean_text(task.fail_reason or "") or "unknown failure (the gateway gave no reason)"
        super().__init__(f"Task {task.task_id} failed: {reason}", code="task_failed", task_id=task.task_id)
        self.task = task


class TaskTimeoutError(KlingError, TimeoutError):
    """The client-side deadline passed before the task ended. The task may still finish on the server."""

    def __init__(self, task: Task | None, task_id: str, timeout: float) -> None:
        super().__init__(
            f"Task {task_id} did not finish within {timeout:g} s; it may still finish on the server. "
            f"Watch it again with its id, or pass a larger timeout=.",
            task_id=task_id,
        )
        self.task = task
        self.timeout = timeout


def _rebuild(cls: type[KlingError], args: tuple[Any, ...]) -> KlingError:
    """Unpickle an error: an instance with its ``args``; pickle then restores its attributes."""
    error = cls.__new__(cls)
    error.args = args  # set here: OSError's __new__ (TaskTimeoutError is a TimeoutError) leaves them out
    return error


def _gateway_text(payload: object) -> tuple[str | None, str]:
    """Return (code, message) from either error shape; ``message`` may be empty."""
    if not isinstance(payload, Mapping):
        return None, ""
    inner = payload.get("error")
    if isinstance(inner, Mapping):  # Shape B: {"error": {"message", "type", "code"}}
        code, message = inner.get("code"), inner.get("message")
    elif isinstance(inner, str):  # what a proxy or CDN in front of the gateway may send
        code, message = payload.get("code"), inner
    else:  # Shape A: {"code", "message", "data"}
        code, message = payload.get("code"), payload.get("message")
    return _scalar_text(code, limit=100) or None, _scalar_text(message)


def _scalar_text(value: object, limit: int | None = None) -> str:
    """A JSON string or number as text; "" for anything else (a nested structure is no message)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    text = str(value)
    return clean_text(text, limit) if limit is not None else text


def _embedded_kling_message(message: str) -> str:
    """``fail_to_fetch_task`` carries Kling's raw JSON body as a string; pull its message out."""
    try:
        inner = json.loads(message)
    except (ValueError, RecursionError):
        return message
    if isinstance(inner, Mapping) and _scalar_text(inner.get("message")):
        return f"{_scalar_text(inner['message'])} (Kling code {_scalar_text(inner.get('code'), limit=100)})"
    return message


def error_from_response(
    status_code: int,
    payload: object,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Map an HTTP error status and its decoded JSON body (or ``None``) to the right `APIError`."""
    code, gateway = _gateway_text(payload)
    if gateway and code in {"fail_to_fetch_task", "task_failed"}:
        gateway = _embedded_kling_message(gateway)
    # Shown text only: the code stays whole (it is matched), the message is cleaned and capped.
    said = f" The gateway said: {clean_text(gateway)}" if gateway else ""
    kwargs: dict[str, Any] = {"status_code": status_code, "code": code, "request_id": request_id}

    if status_code == 401:
        if "额度" in gateway:  # an exhausted token is a 401 too, and no key check would help (§8.1)
            return AuthenticationError(
                f"The API key's quota is used up (401). Top up the key's quota or use another key.{said}",
                **kwargs,
            )
        return AuthenticationError(
            f"The API key was rejected (401). Check EZMODEL_API_KEY or pass api_key=.{said}", **kwargs
        )
    if status_code == 403:
        if code == "quota_not_enough" or "额度" in gateway or "quota" in gateway.lower():
            return PermissionDeniedError(
                f"The account's quota is used up (403). Top up the balance, then try again.{said}", **kwargs
            )
        return PermissionDeniedError(
            f"The API key may not do this (403): check its IP allow-list and model restrictions.{said}",
            **kwargs,
        )
    if status_code == 404 or code == "task_not_exist":
        return TaskNotFoundError(
            f"No such task for this API key ({status_code}). Check the task id and that it was created "
            f"with the same key.{said}",
            **kwargs,
        )
    if status_code == 429:
        wait = f" Retry after {retry_after:g} s." if retry_after is not None else " Retry in a moment."
        return RateLimitError(
            f"The gateway is rate-limiting or saturated (429).{wait}{said}", retry_after=retry_after, **kwargs
        )
    if status_code >= 500:
        if code in NON_RETRYABLE_SERVER_CODES:
            return ServerError(
                f"The gateway rejected the request parameters ({status_code} {code}): check duration "
                f'("5" or "10", as a string), mode and model_name.{said}',
                **kwargs,
            )
        return ServerError(f"The gateway had a server error ({status_code}); it may pass.{said}", **kwargs)
    return APIError(f"The gateway refused the request ({status_code}).{said}", **kwargs)


# Kling's own API: its service codes (docs/kling-api.md, "Error codes"), each with its meaning and the
# fix. The class follows the code, not the HTTP status: Kling answers an exhausted resource pack with 429,
# which no retry can fix.
_KLING_CODES: dict[int, tuple[type[APIError], str]] = {
    1000: (AuthenticationError, "authentication failed"),
    1001: (AuthenticationError, "the Authorization header is empty"),
    1002: (AuthenticationError, "the token is invalid"),
    1003: (AuthenticationError, "the token is not valid yet: check this computer's clock"),
    1004: (AuthenticationError, "the token has expired: check this computer's clock"),
    1100: (PermissionDeniedError, "the account has a problem: check its settings in Kling's console"),
    1101: (PermissionDeniedError, "the account is in arrears: recharge it"),
    1102: (PermissionDeniedError, "the resource pack is used up or expired: buy or renew one"),
    1103: (PermissionDeniedError, "the account may not use this API or model"),
    1200: (APIError, "invalid request parameters: check the parameters"),
    1201: (APIError, "invalid request parameters: check the parameters"),
    1202: (APIError, "invalid request method: check the endpoint"),
    1203: (TaskNotFoundError, "no such resource: check the task id, the endpoint and model_name"),
    1300: (APIError, "refused by the platform's policy: change the request"),
    1301: (APIError, "refused by content safety: change the prompt or the images"),
    1302: (RateLimitError, "too many requests: slow down"),
    1303: (RateLimitError, "the resource pack's parallel task limit is reached: wait for running tasks"),
    1304: (PermissionDeniedError, "this IP address is not on the account's allow-list"),
    5000: (ServerError, "Kling had an internal error"),
    5001: (ServerError, "Kling is under maintenance"),
    5002: (ServerError, "Kling timed out (backlog)"),
}
_KLING_AUTH_FIX = "Check KLING_ACCESS_KEY and KLING_SECRET_KEY, or pass access_key= and secret_key=."


def kling_error_from_response(
    status_code: int,
    payload: object,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Map an answer of Kling's own API (``{"code", "message", "request_id"}``) to the right `APIError`.

    Known service codes decide the class and name the fix; an unknown one falls back to the HTTP status,
    as for the gateway. ``code`` is the service code as text (``"1303"``).
    """
    code, said_text = _gateway_text(payload)
    if request_id is None and isinstance(payload, Mapping):
        request_id = _scalar_text(payload.get("request_id"), limit=100) or None
    number = int(code) if code is not None and code.isdigit() else None
    if number not in _KLING_CODES:
        return error_from_response(status_code, payload, request_id=request_id, retry_after=retry_after)
    cls, meaning = _KLING_CODES[number]
    said = f" Kling said: {clean_text(said_text)}" if said_text else ""
    fix = f" {_KLING_AUTH_FIX}" if cls is AuthenticationError else ""
    message = f"Kling refused the request ({status_code}, code {number}): {meaning}.{fix}{said}"
    kwargs: dict[str, Any] = {"status_code": status_code, "code": code, "request_id": request_id}
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=retry_after, **kwargs)
    return cls(message, **kwargs)
