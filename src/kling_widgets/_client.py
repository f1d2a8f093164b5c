"""`KlingClient`: submit Kling video tasks through the EZmodel gateway, then fetch, await and download them.

One `requests.Session` per client. The API key is resolved once (argument, then ``EZMODEL_API_KEY``, then
the Colab secret of that name), kept in a private attribute and added to each gateway request's headers;
it never appears in a repr, a log line or an error message, and it is never sent to the video host.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import requests

from ._errors import (
    AuthenticationError,
    KlingError,
    RateLimitError,
    TaskFailedError,
    TaskTimeoutError,
    TransportError,
    error_from_response,
)
from ._models import Task, TaskStatus, parse_submission, parse_task
from ._schedule import PollPolicy, retry_delay

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "DEFAULT_BASE_URL", "ENDPOINTS", "KlingClient"]

logger = logging.getLogger("kling_widgets")

API_KEY_ENV = "EZMODEL_API_KEY"
BASE_URL_ENV = "EZMODEL_BASE_URL"
DEFAULT_BASE_URL = "https://api.ezmodel.cloud"

#: Kling task endpoints under ``/kling/v1/videos/`` that answer ``GET …/{task_id}`` (gateway-api.md §2.1).
ENDPOINTS = frozenset(
    {
        "text2video",
        "image2video",
        "omni-video",
        "multi-image2video",
        "motion-control",
        "advanced-lip-sync",
        "video-extend",
        "multi-elements",
        "avatar/image2video",
    }
)

# Connecting should be quick even when answering is not: the gateway refreshes from Kling on every GET.
_CONNECT_TIMEOUT = 10.0
_CHUNK = 1 << 16
_REQUEST_ID_HEADER = "X-Oneapi-Request-Id"


class KlingClient:
    """A blocking client for Kling video generation through the EZmodel gateway.

    Parameters
    ----------
    api_key : str, optional
        The gateway key. Defaults to the ``EZMODEL_API_KEY`` environment variable, then (inside Google
        Colab) the Colab secret of that name. A missing key is reported at the first request, as an
        `AuthenticationError` that names ``EZMODEL_API_KEY``; a key with spaces or non-ASCII characters
        (a bad paste) is refused at once, without being echoed.
    base_url : str, optional
        Defaults to ``EZMODEL_BASE_URL``, then ``https://api.ezmodel.cloud``.
    timeout : float
        Seconds to wait for an answer to each request (connecting is bounded by ``min(10, timeout)``).
    max_retries : int
        How many times a GET is retried after a transient failure (429, 5xx, network). POSTs are never
        retried: a retried submit could create, and bill, a second task.

    Examples
    --------
    >>> with KlingClient() as client:                                   # doctest: +SKIP
    ...     task = client.text2video("a corgi surfing at sunset")
    ...     task = client.wait(task.task_id)
    ...     client.download(task)
    PosixPath('/home/me/842250903629086785.mp4')
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        from . import __version__  # the package is fully imported by the time a client exists

        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        self._api_key = _resolve_api_key(api_key)
        self._base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
        if urllib.parse.urlsplit(self._base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, got {self._base_url!r}")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"kling-widgets/{__version__}"

    @property
    def base_url(self) -> str:
        """The gateway's base URL, without a trailing slash."""
        return self._base_url

    @property
    def key_id(self) -> str | None:
        """A short fingerprint of the API key (8 hex digits of its SHA-256), or None without a key.

        Safe to show, log and store: it tells keys apart without revealing them.
        """
        return self._api_key.fingerprint() if self._api_key is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def __enter__(self) -> KlingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections. Tasks already submitted keep running on the server."""
        self._session.close()

    # -- submitting -------------------------------------------------------------------------------

    def text2video(
        self,
        prompt: str,
        *,
        model_name: str = "kling-v2-6",
        duration: str | int = "5",
        aspect_ratio: str = "16:9",
        mode: str = "std",
        negative_prompt: str | None = None,
        **extra: Any,
    ) -> Task:
        """Submit a text-to-video task. The POST is sent once, never retried.

        Parameters
        ----------
        prompt : str
            What to generate (non-blank; at most 2500 characters for Kling).
        model_name : str
            A Kling model, e.g. ``"kling-v2-6"``, ``"kling-v2-5-turbo"``, ``"kling-v2-1-master"``.
        duration : str or int
            Seconds, ``"5"`` or ``"10"``. Always sent as a string: the gateway rejects a JSON number.
        aspect_ratio : str
            ``"16:9"``, ``"9:16"`` or ``"1:1"``. Always sent: the gateway's own default is 1:1.
        mode : str
            ``"std"`` (720p) or ``"pro"`` (1080p); ``"master"`` for ``*-master`` models.
        negative_prompt : str, optional
            What to avoid.
        **extra
            Other Kling fields, forwarded as they are (``sound="on"``, ``cfg_scale=0.5``,
            ``camera_control={...}``, ``callback_url=...``).

        Returns
        -------
        Task
            The new task (status SUBMITTED); poll it with `get_task` or `wait`.

        Raises
        ------
        ValueError
            The prompt is blank (nothing is sent).
        KlingError
            The gateway refused the task, or could not be reached.
        """
        body = _video_body(prompt, model_name, duration, aspect_ratio, mode, negative_prompt, extra)
        return self._submit("text2video", body)

    def image2video(
        self,
        image: str,
        prompt: str,
        *,
        model_name: str = "kling-v2-6",
        duration: str | int = "5",
        aspect_ratio: str = "16:9",
        mode: str = "std",
        negative_prompt: str | None = None,
        **extra: Any,
    ) -> Task:
        """Submit an image-to-video task. The POST is sent once, never retried.

        Parameters
        ----------
        image : str
            The first frame: an http(s) URL or raw base64 (jpg/png, at most 10 MB, at least 300 px).
            A ``data:`` URL is accepted and sent as the raw base64 Kling expects.
        prompt : str
            What should happen (non-blank: the gateway requires it for image-to-video too).
        model_name, duration, aspect_ratio, mode, negative_prompt, **extra
            As for `text2video` (``image_tail=`` for the last frame goes in ``extra``).

        Returns
        -------
        Task
            The new task (status SUBMITTED); poll it with ``get_task(task_id, "image2video")``.

        Raises
        ------
        ValueError
            The image or the prompt is empty (nothing is sent).
        KlingError
            The gateway refused the task, or could not be reached.
        """
        if not isinstance(image, str) or not image.strip():
            raise ValueError("image must be an http(s) URL or base64 image data; got an empty value")
        image = image.strip()
        if image.startswith("data:") and ";base64," in image:
            image = image.partition(";base64,")[2]
        body = _video_body(prompt, model_name, duration, aspect_ratio, mode, negative_prompt, extra)
        return self._submit("image2video", {"image": image, **body})

    def _submit(self, endpoint: str, body: Mapping[str, Any]) -> Task:
        payload = self._request("POST", f"/kling/v1/videos/{endpoint}", body=body, retry=False)
        task = parse_submission(payload)
        logger.info("Submitted Kling %s task %s", endpoint, task.task_id)
        return task

    # -- fetching and waiting ---------------------------------------------------------------------

    def get_task(self, task_id: str, endpoint: str = "text2video", *, retry: bool = True) -> Task:
        """Fetch the current state of a task.

        Parameters
        ----------
        task_id : str
            The id returned at submission (sent as one URL path segment, whatever its characters).
        endpoint : str
            The endpoint it was submitted to (`ENDPOINTS`): ``"text2video"``, ``"image2video"``,
            ``"omni-video"``, ...
        retry : bool
            Retry transient failures (429, 5xx, network) up to ``max_retries`` times with backoff.
            ``False`` sends exactly one request, for callers that schedule their own retries.

        Returns
        -------
        Task

        Raises
        ------
        TaskNotFoundError
            The id is unknown to this API key.
        KlingError
            Any other failure (`AuthenticationError`, `RateLimitError`, `TransportError`, ...).
        """
        segment = _task_id_segment(task_id)
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(sorted(ENDPOINTS))}")
        return parse_task(self._request("GET", f"/kling/v1/videos/{endpoint}/{segment}", retry=retry))

    def wait(
        self,
        task_id: str,
        *,
        endpoint: str = "text2video",
        timeout: float = 900.0,
        poll_interval: float | None = None,
        max_poll_interval: float | None = None,
        on_poll: Callable[[Task], None] | None = None,
        policy: PollPolicy | None = None,
    ) -> Task:
        """Poll a task until it ends, blocking the calling thread.

        Transient failures (429, 5xx, network) are retried with backoff until the deadline. Every delay
        comes from the same `PollPolicy` as the widgets' polling engine.

        Parameters
        ----------
        task_id : str
            The task to wait for.
        endpoint : str
            The endpoint it was submitted to.
        timeout : float
            Seconds before giving up. Kling usually takes 1-5 minutes; the gateway never times a task out.
        poll_interval, max_poll_interval : float, optional
            The shortest and the longest gap between polls (by default the policy's: 1 s and 5 s); in
            between, the gap follows the task's phase (sparse while queued, denser when Kling usually
            finishes).
        on_poll : callable, optional
            Called with every snapshot fetched (e.g. to print progress).
        policy : PollPolicy, optional
            The polling and backoff policy; by default ``PollPolicy()``.

        Returns
        -------
        Task
            The final snapshot, status SUCCESS.

        Raises
        ------
        TaskFailedError
            The task ended in FAILURE; ``.task`` holds it and the message holds Kling's reason.
        TaskTimeoutError
            The deadline passed first (the task may still finish on the server).
        KlingError
            A failure that retrying cannot fix (bad key, unknown task, ...); ``task_id`` is set.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        policy = (policy or PollPolicy()).with_intervals(poll_interval, max_poll_interval)
        started = time.monotonic()
        deadline = started + timeout
        task: Task | None = None
        last_error: KlingError | None = None
        failures = 0
        while True:
            try:
                task = self.get_task(task_id, endpoint, retry=False)
            except KlingError as exc:
                if not exc.retryable:
                    exc.task_id = exc.task_id or task_id
                    raise
                failures += 1
                last_error = exc
                delay = policy.retry(failures, exc)
                logger.info("Polling task %s failed (%s); retrying in %.1f s", task_id, exc, delay)
            else:
                failures = 0
                last_error = None
                if on_poll is not None:
                    on_poll(task)
                if task.status is TaskStatus.SUCCESS:
                    return task
                if task.status is TaskStatus.FAILURE:
                    raise TaskFailedError(task)
                delay = policy.next_poll(task, time.monotonic() - started)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskTimeoutError(task, task_id, timeout) from last_error
            # Sleep at most until the deadline, so the last poll happens right at it.
            time.sleep(min(delay, remaining))

    # -- downloading ------------------------------------------------------------------------------

    def download(
        self,
        task_or_url: Task | str,
        path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
    ) -> pathlib.Path:
        """Save a task's video (or any http(s) video URL) to a file.

        The video host gets no API key: Kling's CDN URLs are signed, and the key must not leak to a
        third party. The file is written under a temporary name and renamed when complete, so an
        interrupted download never leaves a truncated video behind.

        Parameters
        ----------
        task_or_url : Task or str
            A finished task (its first video is saved) or a video URL.
        path : str or path-like, optional
            The file to write, or an existing directory to write into. Defaults to
            ``./<task id>.mp4`` for a task, or the URL's file name.
        overwrite : bool
            Replace an existing file. By default an existing file is left alone and `FileExistsError`
            is raised, before anything is downloaded.

        Returns
        -------
        pathlib.Path
            The absolute path of the saved video.

        Raises
        ------
        ValueError
            The task has no video (yet), or the URL is not http(s).
        FileExistsError
            The file exists and ``overwrite`` is false.
        KlingError
            The video host answered with an error (a signed link expires after about 30 days), or could
            not be reached (`TransportError`).
        """
        url, default_name = _video_source(task_or_url)
        target = pathlib.Path(path) if path is not None else pathlib.Path(default_name)
        if target.is_dir():
            target = target / default_name
        target = target.absolute()
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            # The session itself carries no credentials: only gateway requests get an Authorization header.
            with self._session.get(url, stream=True, timeout=self._timeouts()) as r:
                if r.status_code >= 400:
                    raise KlingError(
                        f"Downloading the video failed: the video host answered HTTP {r.status_code}. "
                        "Signed video links expire (Kling deletes videos after 30 days).",
                        status_code=r.status_code,
                        code="download_failed",
                    )
                with open(partial, "xb") as out:
                    for chunk in r.iter_content(_CHUNK):
                        out.write(chunk)
            os.replace(partial, target)
        except requests.RequestException as exc:
            reason = self._scrub(_describe_exception(exc))
            raise TransportError(f"Downloading the video failed: {reason}") from exc
        finally:
            partial.unlink(missing_ok=True)
        logger.info("Saved %s", target)
        return target

    # -- HTTP -------------------------------------------------------------------------------------

    def _timeouts(self) -> tuple[float, float]:
        return (min(_CONNECT_TIMEOUT, self.timeout), self.timeout)

    def _request(
        self, method: str, path: str, *, body: Mapping[str, Any] | None = None, retry: bool
    ) -> dict[str, Any]:
        """Send one gateway request, retrying transient failures when ``retry``; return the JSON object."""
        attempt = 0
        while True:
            try:
                return self._send(method, path, body)
            except KlingError as exc:
                if not (retry and exc.retryable and attempt < self.max_retries):
                    raise
                attempt += 1
                delay = retry_delay(attempt, retry_after=_retry_after_of(exc))
                logger.info(
                    "%s %s failed (%s); retry %d of %d in %.1f s",
                    method, path, exc, attempt, self.max_retries, delay,
                )  # fmt: skip
                time.sleep(delay)

    def _send(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        if self._api_key is None:
            raise AuthenticationError(
                f"No API key: set the {API_KEY_ENV} environment variable (or a Colab secret of that "
                "name), or pass api_key= to KlingClient.",
                code="missing_api_key",
            )
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}", "Accept": "application/json"}
        # Only a POST has a body; a JSON Content-Type on an empty GET confuses the gateway (§5).
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            response = self._session.request(
                method, self._base_url + path, data=data, headers=headers, timeout=self._timeouts()
            )
        except requests.Timeout as exc:
            raise TransportError(
                f"The gateway did not answer {method} {path} within {self.timeout:g} s. "
                "It may be overloaded; try again, or pass a larger timeout=."
            ) from exc
        except requests.RequestException as exc:
            raise TransportError(
                f"Could not reach the gateway at {self._base_url} ({method} {path}): "
                f"{self._scrub(_describe_exception(exc))}"
            ) from exc
        logger.debug("%s %s -> HTTP %d", method, path, response.status_code)
        return self._decode(response)

    def _decode(self, response: requests.Response) -> dict[str, Any]:
        """The JSON object of a 2xx answer; otherwise raise the matching `KlingError`."""
        status = response.status_code
        request_id = response.headers.get(_REQUEST_ID_HEADER) or None
        payload, problem = _json_object(response)
        if status >= 400 and (payload is not None or status == 429):
            # The memory-mode rate limiter answers 429 with an empty body (§8.2): still a rate limit.
            raise error_from_response(
                status,
                payload,
                request_id=request_id,
                retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if payload is None:
            hint = "probably a proxy in front of the gateway" if status >= 500 else "check the base URL"
            raise TransportError(
                f"{self._base_url} answered with {problem} (HTTP {status}) — {hint}",
                status_code=status,
                request_id=request_id,
            )
        return payload

    def _scrub(self, text: str) -> str:
        """Remove the key from text that came from elsewhere (an exception message), just in case."""
        return text.replace(self._api_key.reveal(), "***") if self._api_key else text


# -- helpers (pure) -------------------------------------------------------------------------------


class _Secret:
    """Holds the API key so that a repr, a debugger or a variable inspector never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "<hidden>"

    def reveal(self) -> str:
        """The key itself, for the Authorization header only."""
        return self._value

    def fingerprint(self) -> str:
        """8 hex digits of the key's SHA-256: tells keys apart, reveals nothing usable."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:8]


def _resolve_api_key(api_key: str | None) -> _Secret | None:
    key = (api_key or os.environ.get(API_KEY_ENV) or _colab_secret(API_KEY_ENV) or "").strip()
    if not key:
        return None
    if not key.isascii() or not key.isprintable() or " " in key:
        # requests would put the whole header value, key included, into its error message.
        raise AuthenticationError(
            "The API key contains spaces or non-ASCII characters; copy it again from the EZmodel console.",
            code="invalid_api_key",
        )
    return _Secret(key)


def _colab_secret(name: str) -> str | None:
    """The Colab secret ``name``, or None outside Colab or when it is unset or access is refused."""
    if "google.colab" not in sys.modules:  # Colab's kernel imports it at start-up
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException, ...
        return None
    return value if isinstance(value, str) else None


def _video_body(
    prompt: str,
    model_name: str,
    duration: str | int,
    aspect_ratio: str,
    mode: str,
    negative_prompt: str | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-blank string: the gateway refuses a task without one")
    seconds = str(duration).strip()
    if isinstance(duration, bool) or not seconds:
        raise ValueError(f'duration must be "5" or "10" (a string or an int), got {duration!r}')
    body: dict[str, Any] = {
        "model_name": model_name,
        "prompt": prompt,
        "mode": mode,
        "duration": seconds,
        "aspect_ratio": aspect_ratio,
    }
    if negative_prompt is not None:
        body["negative_prompt"] = negative_prompt
    body.update(extra)
    return body


def _task_id_segment(task_id: object) -> str:
    """``task_id`` quoted as exactly one URL path segment."""
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a string, got {type(task_id).__name__}")
    task_id = task_id.strip()
    if not task_id:
        raise ValueError("task_id must be a non-empty string")
    if set(task_id) == {"."}:  # "." and ".." survive quoting and are resolved away by URL normalisation
        raise ValueError(f"{task_id!r} is not a task id")
    return urllib.parse.quote(task_id, safe="")


def _video_source(task_or_url: Task | str) -> tuple[str, str]:
    """(URL, default file name) for `KlingClient.download`."""
    if isinstance(task_or_url, Task):
        url = task_or_url.video_url
        if not url:
            reason = f": {task_or_url.fail_reason}" if task_or_url.fail_reason else ""
            raise ValueError(
                f"Task {task_or_url.task_id} has no video (status {task_or_url.status.value}{reason}); "
                "wait for it to succeed first"
            )
        stem = task_or_url.task_id
    else:
        url = task_or_url.strip()
        stem = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValueError(f"only http(s) video URLs can be downloaded, got {url[:80]!r}")
    # Server-provided text becomes a file name: keep it to one harmless path component.
    name = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "video"
    return url, name if name.lower().endswith(".mp4") else f"{name}.mp4"


def _json_object(response: requests.Response) -> tuple[dict[str, Any] | None, str]:
    """(the decoded JSON object, "") or (None, a description of what came back instead)."""
    content = response.content
    if not content.strip():
        return None, "an empty body"
    if "html" in response.headers.get("Content-Type", "").lower() or content.lstrip().startswith(b"<"):
        return None, "an HTML page"
    try:
        payload = json.loads(content)
    except ValueError:
        return None, f"malformed JSON ({len(content)} bytes)"
    if not isinstance(payload, dict):
        return None, f"a JSON {type(payload).__name__} instead of an object"
    return payload, ""


def _retry_after_of(error: KlingError) -> float | None:
    return error.retry_after if isinstance(error, RateLimitError) else None


def _parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait per a ``Retry-After`` header (delta-seconds or an HTTP-date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _describe_exception(exc: requests.RequestException) -> str:
    """A one-line description of a requests exception, naming the underlying cause."""
    wrapped = exc.args[0] if exc.args else exc
    # urllib3's MaxRetryError hides the cause ("Connection refused", "Failed to resolve …") in .reason.
    return str(getattr(wrapped, "reason", None) or wrapped) or type(exc).__name__
