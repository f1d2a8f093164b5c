"""Parse any gateway JSON into an immutable `Task` snapshot.

Three shapes are understood (docs/gateway.md, "The fetch envelope and the TaskDto", "Submit answer" and
"Upstream New API differences"):

- EZmodel's fetch envelope ``{"code": "success", "data": {TaskDto}}``, where the TaskDto's ``data`` holds
  Kling's own query response, ``fail_reason`` carries the video URL on success and usually the literal
  ``"SUCCEED"`` on failure, and ``progress`` is a string such as ``"30%"``;
- the same envelope from upstream New API ≥ 2026 (``result_url``, a ``task_…`` public id);
- raw Kling JSON ``{"code": 0, "data": {"task_id", "task_status": "succeed", …}}``.

`parse_submission` reads the submit response (an OpenAI-video object with ``"status": ""``).

Parsing is total: any input gives a `Task` or raises `TransportError` naming what was missing.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._errors import TransportError
from ._text import clean_text

__all__ = ["Audio", "Image", "Media", "Task", "TaskStatus", "Video", "parse_submission", "parse_task"]

# Kling's lowercase task_status and the OpenAI-video statuses that are not simply our names in lower case.
_STATUS_ALIASES = {
    "SUCCEED": "SUCCESS",
    "COMPLETED": "SUCCESS",
    "PROCESSING": "IN_PROGRESS",
    "FAILED": "FAILURE",
}

# The gateway's task action (TaskDto "action") -> its route (docs/models.md, "Routes and actions").
_ACTION_ENDPOINTS = {
    "textGenerate": "text2video",
    "generate": "image2video",
    "omniVideo": "omni-video",
    "multiImage2Video": "multi-image2video",
    "motionControl": "motion-control",
    "advancedLipSync": "advanced-lip-sync",
    "videoExtend": "video-extend",
    "avatarImage2Video": "avatar/image2video",
    "multiElementsCreate": "multi-elements",
}

# A "seconds" value this large (year 5138) can only be Kling's milliseconds.
_MILLISECONDS_THRESHOLD = 1e11


class TaskStatus(str, enum.Enum):
    """The gateway's unified task status. Only SUCCESS and FAILURE are terminal."""

    NOT_START = "NOT_START"
    SUBMITTED = "SUBMITTED"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:  # "SUCCESS", not "TaskStatus.SUCCESS", in messages and f-strings
        return self.value

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """Read a gateway, Kling (``"succeed"``) or OpenAI-video (``"completed"``) status; else UNKNOWN."""
        if not isinstance(value, str):
            return cls.UNKNOWN
        key = value.strip().upper()
        try:
            return cls(_STATUS_ALIASES.get(key, key))
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """True for SUCCESS and FAILURE: the task will not change any more."""
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)

    @property
    def is_queued(self) -> bool:
        """True while the task waits for Kling to start it (NOT_START, SUBMITTED, QUEUED)."""
        return self in (TaskStatus.NOT_START, TaskStatus.SUBMITTED, TaskStatus.QUEUED)


@dataclass(frozen=True)
class Media:
    """A generated file Kling links to: the part every result kind (`Video`, `Image`, `Audio`) shares.

    Attributes
    ----------
    url : str
        Kling's signed CDN link (it stops working after about 30 days).
    """

    url: str

    @property
    def expires_at(self) -> datetime | None:
        """When the signed URL stops working (its ``Expires`` query parameter), or None if it does not say."""
        try:
            query = urlsplit(self.url).query
        except ValueError:  # e.g. an unbalanced "[" in the host
            return None
        expires = [value for key, value in parse_qsl(query) if key.lower() == "expires"]
        return _timestamp(expires[0]) if expires else None


@dataclass(frozen=True)
class Video(Media):
    """One generated video.

    Attributes
    ----------
    url : str
        Kling's signed CDN link (it stops working after about 30 days).
    duration : float or None
        Length in seconds, when Kling said.
    id : str or None
        Kling's video id.
    """

    duration: float | None = None
    id: str | None = None


@dataclass(frozen=True)
class Image(Media):
    """One generated image (the image routes; docs/routes.md, "Results that are not videos").

    Attributes
    ----------
    url : str
        Kling's signed link to the PNG.
    index : int or None
        Its place among the task's images, as Kling numbered it.
    watermark_url : str or None
        The same image with Kling's watermark, when Kling made one.
    """

    index: int | None = None
    watermark_url: str | None = None


@dataclass(frozen=True)
class Audio(Media):
    """One generated sound (the audio routes; docs/routes.md, "Results that are not videos").

    Attributes
    ----------
    url : str
        The MP3 link, else the WAV link.
    duration : float or None
        Length in seconds, when Kling said.
    wav_url : str or None
        The WAV link, when Kling gave one beside the MP3.
    id : str or None
        Kling's audio id.
    """

    duration: float | None = None
    wav_url: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Task:
    """An immutable snapshot of a task, as the gateway last reported it.

    Attributes
    ----------
    task_id : str
        The id to poll with (Kling's numeric id on EZmodel; ``task_…`` on upstream New API ≥ 2026).
    status : TaskStatus
    progress : int
        0–100. The gateway moves it in fixed steps (generation shows 30 throughout); terminal tasks show 100.
    videos : tuple of Video
        The results, on SUCCESS.
    fail_reason : str or None
        Kling's reason for a FAILURE; None otherwise. Never ``"SUCCEED"`` and never the video URL.
    submit_time, start_time, finish_time : datetime or None
        UTC; None when the gateway has not set them.
    endpoint : str
        The route the task was submitted to, and is polled on: ``"text2video"``, ``"omni-video"``, ...
    units : float or None
        Kling's ``final_unit_deduction``: the resource-pack units the task was charged, from Kling's own
        API; None through the gateway (which bills its own quota) and before Kling says.
    external_task_id : str or None
        The id the client chose at submission, as Kling's own API reports it (``task_info``); None
        through the gateway.
    images, audios : tuple of Image, tuple of Audio
        The results of the image and audio routes, on SUCCESS (video-to-audio has both ``videos`` and
        ``audios``).
    raw : Mapping
        The whole decoded response, read-only. Left out of ``==`` and ``repr``.
    """

    task_id: str
    status: TaskStatus
    progress: int = 0
    videos: tuple[Video, ...] = ()
    fail_reason: str | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    endpoint: str = "text2video"
    units: float | None = None
    external_task_id: str | None = None
    images: tuple[Image, ...] = ()
    audios: tuple[Audio, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    # A read-only view of the raw answer cannot be pickled; its dict can (multiprocessing, TaskFailedError).
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "raw": dict(self.raw)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, raw=MappingProxyType(state["raw"]))

    @property
    def video_url(self) -> str | None:
        """The first video's URL, or None."""
        return self.videos[0].url if self.videos else None

    @property
    def is_terminal(self) -> bool:
        """True once the task succeeded or failed."""
        return self.status.is_terminal


def parse_task(payload: object, endpoint: str = "text2video") -> Task:
    """Parse a fetch response (``GET …/{endpoint}/{task_id}``) into a `Task`.

    The task's ``endpoint`` is the one its gateway ``action`` names, else ``endpoint``: every route's GET
    answers for any task, so an id polled on the wrong route still learns its own.

    Raises
    ------
    TransportError
        The payload is not a task: not an object, no ``data`` object, or no task id.
    """
    if not isinstance(payload, Mapping):
        raise _not_a_task(payload, f"expected an object, got {_json_type(payload)}")
    dto = payload.get("data")
    if not isinstance(dto, Mapping):
        raise _not_a_task(payload, "missing data")
    if "task_status" in dto and "status" not in dto:
        return _parse_kling(payload, dto, endpoint)

    task_id = _text(dto.get("task_id")) or _text(dto.get("id"))
    if task_id is None:
        raise _not_a_task(payload, "missing data.task_id")
    status = TaskStatus.parse(dto.get("status"))
    kling = _mapping(_mapping(dto.get("data")).get("data"))
    videos, images, audios = _videos(kling), _images(kling), _audios(kling)
    if not (videos or images or audios) and status is TaskStatus.SUCCESS:
        # Upstream ≥ 2026 has result_url; EZmodel puts the URL in fail_reason (docs/gateway.md,
        # "The fail_reason quirks").
        url = _http_url(dto.get("result_url")) or _http_url(dto.get("fail_reason"))
        videos = (Video(url),) if url else ()
    return Task(
        task_id=task_id,
        status=status,
        progress=_progress(dto.get("progress"), status),
        videos=videos,
        fail_reason=_fail_reason(status, kling.get("task_status_msg"), dto.get("fail_reason")),
        submit_time=_timestamp(dto.get("submit_time")),
        start_time=_timestamp(dto.get("start_time")),
        finish_time=_timestamp(dto.get("finish_time")),
        endpoint=_ACTION_ENDPOINTS.get(str(dto.get("action")), endpoint),
        images=images,
        audios=audios,
        raw=MappingProxyType(dict(payload)),
    )


def parse_submission(payload: object, endpoint: str = "text2video") -> Task:
    """Parse a submit response (``POST …/{endpoint}``) into a `Task` of that ``endpoint``.

    The id is the first of ``task_id``, ``id``, ``data.task_id`` (docs/gateway.md, "Submit answer"). An
    empty or unknown status (EZmodel sends ``""``) reads as SUBMITTED.

    Raises
    ------
    TransportError
        The payload is not an object or carries no task id.
    """
    if not isinstance(payload, Mapping):
        raise _not_a_task(payload, f"expected an object, got {_json_type(payload)}")
    kling = _mapping(payload.get("data"))
    task_id = _text(payload.get("task_id")) or _text(payload.get("id")) or _text(kling.get("task_id"))
    if task_id is None:
        raise _not_a_task(payload, "missing task_id")
    status = TaskStatus.parse(payload.get("status", kling.get("task_status")))
    if status is TaskStatus.UNKNOWN:
        status = TaskStatus.SUBMITTED
    return Task(
        task_id=task_id,
        status=status,
        progress=_progress(payload.get("progress"), status),
        submit_time=_timestamp(payload.get("created_at", kling.get("created_at"))),
        endpoint=endpoint,
        external_task_id=_external_task_id(kling),
        raw=MappingProxyType(dict(payload)),
    )


def _parse_kling(payload: Mapping[Any, Any], kling: Mapping[Any, Any], endpoint: str) -> Task:
    """Raw Kling query JSON: lowercase ``task_status``, millisecond timestamps, no progress."""
    task_id = _text(kling.get("task_id"))
    if task_id is None:
        raise _not_a_task(payload, "missing data.task_id")
    status = TaskStatus.parse(kling.get("task_status"))
    return Task(
        task_id=task_id,
        status=status,
        progress=_progress(None, status),
        videos=_videos(kling),
        fail_reason=_fail_reason(status, kling.get("task_status_msg"), None),
        submit_time=_timestamp(kling.get("created_at")),
        finish_time=_timestamp(kling.get("updated_at")) if status.is_terminal else None,
        endpoint=endpoint,
        units=_non_negative(kling.get("final_unit_deduction")),
        external_task_id=_external_task_id(kling),
        images=_images(kling),
        audios=_audios(kling),
        raw=MappingProxyType(dict(payload)),
    )


def _videos(kling: Mapping[Any, Any]) -> tuple[Video, ...]:
    """``task_result.videos[]`` of Kling's query data; entries without a URL are skipped."""
    return tuple(
        Video(url, duration=_non_negative(entry.get("duration")), id=_text(entry.get("id")))
        for entry, url in _results(kling, "videos", "url")
    )


def _images(kling: Mapping[Any, Any]) -> tuple[Image, ...]:
    """``task_result.images[]`` (the image routes); entries without a URL are skipped."""
    return tuple(
        Image(url, index=_index(entry.get("index")), watermark_url=_text(entry.get("watermark_url")))
        for entry, url in _results(kling, "images", "url")
    )


def _audios(kling: Mapping[Any, Any]) -> tuple[Audio, ...]:
    """``task_result.audios[]`` (the audio routes): the MP3 first, the WAV kept beside it."""
    audios = []
    for entry, url in _results(kling, "audios", "url_mp3", "url_wav"):
        wav = _text(entry.get("url_wav"))
        duration = _non_negative(entry.get("duration_mp3"))
        audios.append(
            Audio(
                url,
                duration=_non_negative(entry.get("duration_wav")) if duration is None else duration,
                wav_url=wav if wav != url else None,
                id=_text(entry.get("id")),
            )
        )
    return tuple(audios)


def _results(kling: Mapping[Any, Any], key: str, *url_keys: str) -> list[tuple[Mapping[Any, Any], str]]:
    """(entry, URL) of each object in ``task_result[key]`` with a URL under the first of ``url_keys``
    that has one; anything else in the list is skipped."""
    items = _mapping(kling.get("task_result")).get(key)
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        entry = _mapping(item)
        url = next((text for name in url_keys if (text := _text(entry.get(name)))), None)
        if url:
            found.append((entry, url))
    return found


def _index(value: object) -> int | None:
    number = _non_negative(value)
    return int(number) if number is not None and number.is_integer() else None


def _external_task_id(kling: Mapping[Any, Any]) -> str | None:
    """``task_info.external_task_id`` of Kling's task data: the id the client chose at submission."""
    return _text(_mapping(kling.get("task_info")).get("external_task_id"))


def _fail_reason(status: TaskStatus, *candidates: object) -> str | None:
    """The first candidate that is a human reason: not empty, not Kling's "SUCCEED", not a URL."""
    if status is not TaskStatus.FAILURE:
        return None
    for candidate in candidates:
        text = _text(candidate)
        if text and text.upper() != "SUCCEED" and not _http_url(text):
            return text
    return None


def _progress(value: object, status: TaskStatus) -> int:
    """``"30%"``, ``30``, ``""``, garbage -> 0..100. A terminal task is at 100 whatever the gateway says."""
    if status.is_terminal:
        return 100
    number = _number(value.strip().removesuffix("%") if isinstance(value, str) else value)
    return 0 if number is None else int(min(max(number, 0.0), 100.0))


def _non_negative(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _timestamp(value: object) -> datetime | None:
    """Unix seconds (or Kling's milliseconds) -> aware UTC datetime; 0, negative or garbage -> None."""
    seconds = _number(value)
    if seconds is None or seconds <= 0:
        return None
    if seconds >= _MILLISECONDS_THRESHOLD:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):  # beyond year 9999
        return None


def _number(value: object) -> float | None:
    """A finite float from a JSON number or numeric string; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    """A non-empty string (ids may arrive as JSON integers); None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than Python will convert
            return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _http_url(value: object) -> str | None:
    text = _text(value)
    return text if text and text.lower().startswith(("http://", "https://")) else None


def _mapping(value: object) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _json_type(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _not_a_task(payload: object, problem: str) -> TransportError:
    """Explain what was wrong, with the gateway's own code/message when it sent an error-like body."""
    said = ""
    if isinstance(payload, Mapping):
        code, message = _text(payload.get("code")), _text(payload.get("message"))
        said = ", ".join(
            part
            for part in (
                code not in (None, "0", "success") and f"code {clean_text(code, 100)}",
                message and clean_text(message, 200),
            )
            if part
        )
        said = f" (the gateway said: {said})" if said else ""
    return TransportError(f"the gateway answered with JSON that is not a task: {problem}{said}")
