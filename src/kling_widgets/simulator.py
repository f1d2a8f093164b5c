"""A loopback stand-in for the EZmodel gateway's Kling routes, for tests, demos and benchmarks.

`GatewaySimulator` is a real HTTP server (``http.server.ThreadingHTTPServer`` on 127.0.0.1) that answers
byte for byte like EZmodel does (see docs/gateway.md, from "Submit request" to "Error catalogue"): the
OpenAI-video submit object, the 9-key ``TaskDto`` envelope with the raw Kling JSON inside, both error
shapes with their Chinese texts, the ``X-Oneapi-Request-Id`` header and the ``fail_reason`` quirks. Each
task follows a scripted `Scenario`
(driven by time or by poll count) with optional `Fault` injection, and "generated" videos are a bundled
clip served from a Kling-like signed path with HTTP Range support; a link answers 403, like a signed CDN,
once its ``Expires`` has passed (``url_lifetime``, which may be negative, sets how long links live).

Every Kling task route EZmodel forwards that the client submits to answers like the gateway (docs/models.md):
text2video and image2video, omni-video, multi-image2video, video-extend, advanced-lip-sync, motion-control
and avatar/image2video (POST creates
a task following the simulator's `Scenario`, GET on any of them reads any task), and the synchronous
identify-face, which answers Kling's own JSON with one face and opens a session for lip-sync. Each route
refuses what the gateway refuses, with its error shape and words.

The kling flavor also serves Kling's image and audio routes (`MEDIA_ROUTES`; docs/kling-api.md, "The
simulator's kling flavor"): their tasks succeed with images or sounds, a PNG and a WAV made in code and
served like the clip.

Account-wide behaviour: ``max_parallel`` caps the tasks unfinished at once, as Kling's parallel-task limit
does; a POST over it answers the gateway's 429 and creates nothing. `GatewaySimulator.drop_next_submits`
makes the next POSTs create their task and then send no answer (the connection is closed, or held until the
client gives up), as when a gateway's answer is lost: the client cannot know the task exists. ``balance``
is what the key has left (each created task costs ``task_price``; a POST it cannot pay for answers the
gateway's 403 ``quota_not_enough``), reported by the billing endpoints ``GET /v1/dashboard/billing/
subscription`` and ``…/usage`` in New API's shapes (docs/studio.md, "The balance line"); with
``balance=None`` neither endpoint exists, like a gateway without them.

>>> from kling_widgets.simulator import GatewaySimulator, Scenario, Fault
>>> with GatewaySimulator(speed=10) as sim:                            # doctest: +SKIP
...     task_id = sim.add_task(Scenario(faults=(Fault("rate_limit", at_poll=2),)))
...     ...  # point a KlingClient at sim.url with sim.api_key

Control API for other processes (bearer-authenticated with the simulator's key):
``POST {url}/_simulator/tasks`` with a `Scenario` as JSON (plus an optional ``"task_id"`` and
``"endpoint"``) returns
``{"task_id": ...}``; ``GET {url}/_simulator/requests?task_id=...`` returns the request log as JSON;
``POST {url}/_simulator/drop_submits`` with ``{"count": n, "hang": false}`` drops the next ``n`` submits.
Control requests are not logged themselves, and keep working after the key is revoked.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import importlib.resources
import io
import json
import logging
import math
import re
import secrets
import socket
import string
import struct
import threading
import time
import uuid
import wave
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NamedTuple, get_args
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

__all__ = ["Fault", "GatewaySimulator", "RequestRecord", "Scenario"]

_log = logging.getLogger(__name__)

FaultKind = Literal[
    "rate_limit", "server_error", "html", "empty", "malformed",
    "slow", "revoke_key", "not_found", "bad_params",
]  # fmt: skip
Outcome = Literal["success", "failure"]
Flavor = Literal["ezmodel", "kling"]

KLING_MODELS = frozenset({
    "kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master",
    "kling-v2-5-turbo", "kling-v2-6", "kling-v3",
})  # fmt: skip
#: The models Kling's own API knows (the kling flavor): the video models and omni's.
KLING_OWN_MODELS = KLING_MODELS | {"kling-v3-omni", "kling-video-o1"}
OMNI_SECONDS = tuple(str(seconds) for seconds in range(3, 16))  # omni-video's durations on Kling's own API
_CHOSEN_LENGTH = ("text2video", "image2video", "multi-image2video")  # the routes whose length is 5 or 10 s
#: Every model the gateway has a channel for: the video models, omni's, and the names it routes (and bills)
#: the model-less routes by.
CHANNEL_MODELS = KLING_MODELS | {
    "kling-v3-omni", "kling-video-o1", "kling-video-extend", "kling-lip-sync", "kling-identify-face",
    "kling-avatar",
}  # fmt: skip
#: The task routes a POST creates a task on, with the gateway's action for each (docs/models.md, "Routes and
#: actions").
ACTIONS = {
    "text2video": "textGenerate",
    "image2video": "generate",
    "omni-video": "omniVideo",
    "multi-image2video": "multiImage2Video",
    "video-extend": "videoExtend",
    "advanced-lip-sync": "advancedLipSync",
    "motion-control": "motionControl",
    "avatar/image2video": "avatarImage2Video",
}
#: Kling's image and audio routes (the kling flavor only: the gateway forwards none of them) and the kinds of
#: result each gives (docs/routes.md, "Results that are not videos"). A task on one of them carries its
#: route as its action.
MEDIA_ROUTES: dict[str, tuple[str, ...]] = {
    "images/generations": ("images",),
    "images/omni-image": ("images",),
    "images/multi-image2image": ("images",),
    "audio/text-to-audio": ("audios",),
    "audio/video-to-audio": ("videos", "audios"),
}
#: The media routes a POST creates a task on (the others are scripted with `GatewaySimulator.add_task`).
MEDIA_SUBMIT_ROUTES = ("images/generations", "audio/text-to-audio")
MAX_IMAGES = 9  # Kling's limit for ``n`` on images/generations
AUDIO_SECONDS = (3.0, 10.0)  # Kling's range for ``duration`` on audio/text-to-audio
VIDEO_PATH_PREFIX = "/bs2/upload-ylab-stunt-sgp/muse/"
# Kling deletes generated videos after 30 days (docs/gateway.md, "Signed video URLs and their expiry").
URL_LIFETIME = 30 * 24 * 3600
CLIP_DURATION = "5.0"  # seconds, as Kling writes it: a decimal string
SOUND_SECONDS = 1.0  # the generated sound's length
BILLING_PATHS = ("/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage")
MAX_BODY = 20 * 1024 * 1024  # image2video bodies may carry base64 images


@dataclass(frozen=True)
class Fault:
    """A scripted failure of one task's status GETs.

    Parameters
    ----------
    kind
        ``rate_limit`` (429), ``server_error`` (500 ``do_request_failed``), ``html`` (502 nginx page),
        ``empty`` (200, empty body), ``malformed`` (200, truncated JSON), ``slow`` (answer normally after
        ``delay`` seconds), ``revoke_key`` (the key is rejected with 401 from then on, for every request),
        ``not_found`` (400 ``task_not_exist``) or ``bad_params`` (400 ``fail_to_fetch_task`` carrying
        Kling's code 1201 body, as when Kling rejects the parameters).
    at_poll
        The 1-based number of the GET of this task at which the fault starts.
    count
        How many consecutive GETs it affects (``revoke_key`` is permanent whatever the count).
    retry_after
        ``rate_limit`` only: the ``Retry-After`` header, in seconds (none when ``None``).
    delay
        ``slow`` only: seconds to wait before answering.
    """

    kind: FaultKind
    at_poll: int = 1
    count: int = 1
    retry_after: float | None = None
    delay: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {get_args(FaultKind)}")
        if self.at_poll < 1 or self.count < 1 or self.delay < 0:
            raise ValueError("at_poll and count must be >= 1 and delay >= 0")

    def covers(self, poll: int) -> bool:
        """True if this fault affects the ``poll``-th GET of its task."""
        if self.kind == "revoke_key":
            return poll >= self.at_poll
        return self.at_poll <= poll < self.at_poll + self.count


@dataclass(frozen=True)
class Scenario:
    """How one simulated task evolves.

    Parameters
    ----------
    outcome
        ``"success"`` or ``"failure"``.
    queued, running
        Seconds (divided by the simulator's ``speed``) spent queued (first half NOT_START, then SUBMITTED)
        and IN_PROGRESS.
    polls
        If set, the timeline is driven by GETs instead of time: ``(q, r)`` means the first ``q`` answered
        GETs show the task queued (the first ``q // 2`` as NOT_START), the next ``r`` show IN_PROGRESS and
        later ones the outcome. GETs answered by a fault (other than ``slow``) do not count.
    fail_message
        Kling's ``task_status_msg`` on failure (any string; hostile ones welcome).
    videos
        How many videos a successful task has (on a media route of the kling flavor: how many images or
        sounds, see `MEDIA_ROUTES`).
    video_url
        If set, every result URL (videos, images, sounds) and the success ``fail_reason`` is exactly this
        string.
    faults
        Scripted faults of the status GETs.
    url_lifetime
        Seconds the task's video links stay valid from its creation (negative: already expired); the
        simulator's ``url_lifetime`` when None.
    """

    outcome: Outcome = "success"
    queued: float = 2.0
    running: float = 6.0
    polls: tuple[int, int] | None = None
    fail_message: str = "Image pixel is invalid"
    videos: int = 1
    video_url: str | None = None
    faults: tuple[Fault, ...] = ()
    url_lifetime: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in get_args(Outcome):
            raise ValueError(f"outcome must be 'success' or 'failure', not {self.outcome!r}")
        if self.queued < 0 or self.running < 0 or self.videos < 0:
            raise ValueError("queued, running and videos must be >= 0")
        if self.polls is not None and (len(self.polls) != 2 or min(self.polls) < 0):
            raise ValueError("polls must be a pair of non-negative GET counts")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form accepted by ``POST /_simulator/tasks``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build a Scenario from its JSON form; raises ValueError or TypeError when it is not one."""
        fields = dict(data)
        if fields.get("polls") is not None:
            fields["polls"] = tuple(fields["polls"])
        fields["faults"] = tuple(Fault(**f) for f in fields.get("faults", ()))
        return cls(**fields)

    def fault_at(self, poll: int) -> Fault | None:
        """The fault affecting the ``poll``-th GET, if any (the first listed wins)."""
        return next((f for f in self.faults if f.covers(poll)), None)


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator answered.

    ``path`` excludes the query string; ``task_id`` is the task the request was about (status GETs,
    successful submits and downloads of its videos), else None; ``time`` is ``time.monotonic()`` at arrival.
    ``status`` is 0 for a submit that was never answered (`GatewaySimulator.drop_next_submits`). ``body``
    is what a POST sent, as text (undecodable bytes replaced); empty for other methods.
    """

    method: str
    path: str
    task_id: str | None
    status: int
    time: float
    body: str = ""


# --- wire formats -------------------------------------------------------------------------------------


def _go_json(value: object) -> bytes:
    """Serialise like Go's encoding/json: compact, UTF-8, and <, >, & escaped as gin does."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(char, escape)  # these characters only ever occur inside JSON strings
    return text.encode()


def _sorted(value: object) -> object:
    """Go re-serialises the stored Kling JSON through a map, which sorts keys.

    See docs/gateway.md, "Kling's JSON inside the TaskDto".
    """
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _shape_a(code: str, message: str) -> dict[str, Any]:
    """TaskError: errors from the task relay itself."""
    return {"code": code, "message": message, "data": None}


def _shape_b(message: str, request_id: str, code: str = "") -> dict[str, Any]:
    """OpenAI-style error from the auth and routing middleware; the message ends with the request id."""
    return {
        "error": {"message": f"{message} (request id: {request_id})", "type": "new_api_error", "code": code}
    }


def _request_id() -> str:
    """``YYYYMMDDhhmmss`` + nanoseconds + 8 random characters, like New API's request ids."""
    now = time.time_ns()
    stamp = datetime.fromtimestamp(now // 10**9, timezone.utc).strftime("%Y%m%d%H%M%S")
    suffix = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(8))
    return f"{stamp}{now % 10**8:08d}{suffix}"


def _numeric_id() -> str:
    """An 18-digit Kling id."""
    return str(secrets.randbelow(9 * 10**17) + 10**17)


NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class Reply(NamedTuple):
    """One HTTP answer; status 0 is none at all (see `NO_ANSWER`)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


NO_ANSWER = Reply(0)  # close the connection without a byte
HANG = Reply(0, b"hang")  # keep the connection open, silent, until the client or the simulator gives up


def _json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, _go_json(payload), headers=headers)


# --- tasks ----------------------------------------------------------------------------------------------


@dataclass
class _Task:
    """A task's script and what clients have observed of it so far (guarded by the simulator's lock)."""

    task_id: str
    scenario: Scenario
    action: str
    video_urls: tuple[str, ...]
    created: float = field(default_factory=time.monotonic)
    created_ms: int = field(default_factory=lambda: time.time_ns() // 10**6)
    create_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    video_ids: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    audios: tuple[tuple[str, str, str], ...] = ()  # (id, MP3 link, WAV link)
    gets: int = 0  # every status GET that reached the task
    answered: int = 0  # GETs answered with the task's state: they drive a poll-driven timeline
    start_ms: int = 0  # first time IN_PROGRESS was observed (0: never, as when Kling jumps straight to done)
    finish_ms: int = 0
    external_task_id: str | None = None  # the kling flavor only: the id the client chose
    final: dict[str, Any] | None = None  # a terminal task is no longer refreshed, so its answer freezes

    def phase(self, speed: float) -> str:
        """``not_start``, ``submitted``, ``running`` or ``done``, by answered GETs or by elapsed time."""
        scenario = self.scenario
        if scenario.polls is not None:
            queued, running = scenario.polls
            n = self.answered
            if n <= queued // 2:
                return "not_start"
            if n <= queued:
                return "submitted"
            return "running" if n <= queued + running else "done"
        elapsed = (time.monotonic() - self.created) * speed
        if elapsed < scenario.queued / 2:
            return "not_start"
        if elapsed < scenario.queued:
            return "submitted"
        return "running" if elapsed < scenario.queued + scenario.running else "done"

    def observe(self, speed: float) -> dict[str, Any]:
        """The TaskDto a GET sees now, recording start/finish times the way the gateway does."""
        if self.final is not None:
            return self.final
        phase = self.phase(speed)
        now_ms = time.time_ns() // 10**6
        if phase == "running" and not self.start_ms:
            self.start_ms = now_ms
        if phase == "done":
            self.finish_ms = now_ms
            self.final = self._dto(phase)
            return self.final
        return self._dto(phase)

    def _dto(self, phase: str) -> dict[str, Any]:
        success = self.scenario.outcome == "success"
        status, progress = {
            "not_start": ("NOT_START", "0%"),
            "submitted": ("SUBMITTED", "10%"),
            "running": ("IN_PROGRESS", "30%"),
            "done": ("SUCCESS" if success else "FAILURE", "100%"),
        }[phase]
        if phase != "done":
            fail_reason = ""
        elif success:  # legacy quirk: the first video's URL (docs/gateway.md, "The fail_reason quirks")
            fail_reason = self.video_urls[0] if self.video_urls else ""
        else:  # EZmodel copies Kling's top-level message, which is "SUCCEED" for a successful query
            fail_reason = "SUCCEED"
        return {
            "task_id": self.task_id,
            "action": self.action,
            "status": status,
            "fail_reason": fail_reason,
            "submit_time": self.created_ms // 1000,
            "start_time": self.start_ms // 1000,
            "finish_time": self.finish_ms // 1000,
            "progress": progress,
            "data": self._create_response() if phase == "not_start" else self._query_response(phase),
        }

    def _create_response(self) -> dict[str, Any]:
        """Before the first refresh the gateway still holds Kling's create response, verbatim (unsorted)."""
        return {
            "code": 0,
            "message": "SUCCEED",
            "request_id": self.create_request_id,
            "data": {
                "task_id": self.task_id,
                "task_status": "submitted",
                "task_info": self._task_info(),
                "created_at": self.created_ms,
                "updated_at": self.created_ms,
            },
        }

    def _task_info(self) -> dict[str, Any]:
        return {"external_task_id": self.external_task_id} if self.external_task_id else {}

    def kling_data(self, speed: float) -> dict[str, Any]:
        """The ``data`` of Kling's own query answer now (what the gateway wraps in its TaskDto)."""
        data: dict[str, Any] = self.observe(speed)["data"]["data"]
        return data

    def _query_response(self, phase: str) -> object:
        """Kling's query response as the gateway stores it: keys sorted, ms timestamps."""
        success = self.scenario.outcome == "success"
        kling_status = {"submitted": "submitted", "running": "processing"}.get(
            phase, "succeed" if success else "failed"
        )
        task: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": kling_status,
            "task_status_msg": self.scenario.fail_message if kling_status == "failed" else "",
            "task_info": self._task_info(),
            "task_result": {},
            "created_at": self.created_ms,
            "updated_at": self.finish_ms or self.start_ms or self.created_ms,
        }
        if kling_status == "succeed":
            task["final_unit_deduction"] = "1"
            task["task_result"] = self._result()
        return _sorted({"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": task})

    def _result(self) -> dict[str, Any]:
        """Kling's ``task_result``: the route's kinds of result (docs/routes.md, "Results that are not
        videos")."""
        result: dict[str, Any] = {}
        for kind in MEDIA_ROUTES.get(self.action, ("videos",)):
            if kind == "videos":
                result[kind] = [
                    {"id": video_id, "url": url, "duration": CLIP_DURATION}
                    for video_id, url in zip(self.video_ids, self.video_urls, strict=True)
                ]
            elif kind == "images":
                result[kind] = [{"index": index, "url": url} for index, url in enumerate(self.image_urls)]
            else:
                seconds = f"{SOUND_SECONDS:g}"
                result[kind] = [
                    {"id": audio_id, "url_mp3": mp3, "url_wav": wav, "duration_mp3": seconds,
                     "duration_wav": seconds}
                    for audio_id, mp3, wav in self.audios
                ]  # fmt: skip
        return result


# --- faults -------------------------------------------------------------------------------------------


def _malformed(task_id: str) -> Reply:
    body = _go_json({"code": "success", "message": "", "data": {"task_id": task_id, "status": "IN_PROGRESS"}})
    return Reply(200, body[: len(body) // 2])


def _rate_limited(fault: Fault) -> Reply:
    headers = (("Retry-After", f"{fault.retry_after:g}"),) if fault.retry_after is not None else ()
    return _saturated()._replace(headers=headers)


def _saturated() -> Reply:
    """EZmodel's answer to every upstream 429, Kling's parallel-task limit (1303) included: it retries
    other channels, then replaces Kling's body with its own words."""
    return _json_reply(429, _shape_a("fail_to_fetch_task", "当前分组上游负载已饱和，请稍后再试"))


def _kling_refusal(message: str = "Invalid request parameters") -> Reply:
    """Kling's 400 with its code 1201, which the gateway passes on as a string in a TaskError."""
    kling = {"code": 1201, "message": message, "request_id": str(uuid.uuid4())}
    return _json_reply(400, _shape_a("fail_to_fetch_task", json.dumps(kling, separators=(",", ":"))))


# Faults answered instead of the task's state, by kind: (fault, task id) -> reply. ``slow`` and
# ``revoke_key`` are not here: the first delays a normal answer, the second is an auth failure.
FAULT_REPLIES: dict[str, Callable[[Fault, str], Reply]] = {
    "rate_limit": lambda fault, task_id: _rate_limited(fault),
    "server_error": lambda fault, task_id: _json_reply(
        500, _shape_a("do_request_failed", f'Get "https://***.***.***/v1/videos/text2video/{task_id}": EOF')
    ),
    "html": lambda fault, task_id: Reply(502, NGINX_502, "text/html"),
    "empty": lambda fault, task_id: Reply(200),
    "malformed": lambda fault, task_id: _malformed(task_id),
    "not_found": lambda fault, task_id: _json_reply(400, _shape_a("task_not_exist", "task_not_exist")),
    "bad_params": lambda fault, task_id: _kling_refusal(),
}


# --- Kling's own API (flavor "kling") -------------------------------------------------------------------


def _kling_reply(status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """Kling's error envelope: service code, message, request id (docs/kling-api.md, "Error codes")."""
    return _json_reply(status, {"code": code, "message": message, "request_id": str(uuid.uuid4())}, headers)


def _kling_ok(data: object) -> Reply:
    return _json_reply(200, {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data})


def _kling_rate_limited(fault: Fault) -> Reply:
    headers = (("Retry-After", f"{fault.retry_after:g}"),) if fault.retry_after is not None else ()
    return _kling_reply(429, 1302, "The API request is too fast, please slow down", headers)


KLING_NOT_FOUND = (404, 1203, "task not found")
KLING_PARALLEL_LIMIT = (429, 1303, "parallel task over resource pack limit")

# The kling flavor's faults, by kind, where its answer differs from the gateway's.
KLING_FAULT_REPLIES: dict[str, Callable[[Fault, str], Reply]] = {
    **FAULT_REPLIES,
    "rate_limit": lambda fault, task_id: _kling_rate_limited(fault),
    "server_error": lambda fault, task_id: _kling_reply(500, 5000, "Server internal error"),
    "not_found": lambda fault, task_id: _kling_reply(*KLING_NOT_FOUND),
    "bad_params": lambda fault, task_id: _kling_reply(400, 1201, "Invalid request parameters"),
}


def _check_kling_submit(route: str, content_type: str, raw: bytes) -> dict[str, Any]:
    """Validate a submit to ``route`` the way Kling's API does (code 1201 for any bad parameter); the
    decoded body."""

    def bad(message: str) -> _Rejected:
        return _Rejected(_kling_reply(400, 1201, message))

    if not content_type.startswith("application/json"):
        raise bad("Content-Type must be application/json")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise bad("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    if not isinstance(body.get("external_task_id", ""), str):
        raise bad("external_task_id must be a string")
    if route in MEDIA_ROUTES:
        _check_kling_media(route, body)
        return body
    # Kling's own models only: the gateway's routing names (kling-video-extend, …) are no model of Kling's.
    model = body.get("model_name", "kling-v1")  # Kling's own default
    if model not in KLING_OWN_MODELS:
        raise bad(f"model_name is invalid: {model}")
    prompt = body.get("prompt")
    has_prompt = isinstance(prompt, str) and bool(prompt.strip())
    if route in ("text2video", "image2video", "multi-image2video") and not (has_prompt or body.get("image")):
        raise bad("prompt is required")
    durations = {"omni-video": OMNI_SECONDS}.get(route, ("5", "10") if route in _CHOSEN_LENGTH else None)
    if durations is not None and str(body.get("duration", "5")) not in durations:
        raise bad(f"duration must be one of {', '.join(durations)}")
    if body.get("mode", "std") not in ("std", "pro"):
        raise bad("mode must be std or pro")
    return body


def _check_kling_media(route: str, body: dict[str, Any]) -> None:
    """Kling's required fields of images/generations (``prompt``, ``n`` 1–9) and audio/text-to-audio
    (``prompt``, ``duration`` 3.0–10.0 s)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Rejected(_kling_reply(400, 1201, "prompt is required"))
    if route == "images/generations":
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
            raise _Rejected(_kling_reply(400, 1201, f"n must be an integer from 1 to {MAX_IMAGES}"))
        return
    low, high = AUDIO_SECONDS
    duration = body.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not low <= duration <= high:
        raise _Rejected(_kling_reply(400, 1201, f"duration must be a number from {low:g} to {high:g}"))


# --- submit validation ----------------------------------------------------------------------------------


class _Rejected(Exception):
    """A submit the gateway refuses; carries the reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _invalid(message: str) -> _Rejected:
    return _Rejected(_json_reply(400, _shape_a("invalid_request", message)))


def _price_check(message: str) -> _Rejected:
    """The gateway's pricing pre-check refusing the parameters: a 500, though nothing is wrong with it."""
    return _Rejected(_json_reply(500, _shape_a("get_price_scale_failed", message)))


def _build_failed(message: str) -> _Rejected:
    return _Rejected(_json_reply(500, _shape_a("build_request_failed", message)))


def _check_duration(value: object) -> None:
    """The duration check every route gets (the gateway's ``ValidateBasicTaskRequest``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _invalid("metadata.duration must be numeric")
    try:
        seconds = float(value)
    except ValueError:
        raise _invalid("metadata.duration must be numeric") from None
    for bad, rule in ((seconds < 0, ">= 0"), (seconds > 600, "<= 600")):
        if bad:
            raise _invalid(f"metadata.duration must be {rule}")


def _check_legacy_duration(value: object) -> None:
    if value is not None and str(value) not in {"5", "10"}:
        raise _price_check(f"legacy endpoint only supports duration 5 or 10, got: {value}")


def _check_mode(model: str, mode: object) -> None:
    if mode == "pro" and model.endswith("-master"):  # the master models are priced in master mode only
        raise _price_check(f"unsupported model for pro mode: {model}")
    if mode in (None, "", "std", "pro") or (mode == "master" and model.endswith("-master")):
        return
    raise _price_check(
        f"model {model} does not support master mode" if mode == "master" else f"unsupported mode: {mode}"
    )


def _whole_seconds(value: object) -> int:
    """Go's ``validateIntegerDuration``."""
    text = str(value)
    if not re.fullmatch(r"-?\d+", text):
        raise _price_check(f"invalid duration format: {text}")
    return int(text)


def _check_omni_duration(model: str, body: dict[str, Any]) -> None:
    """``calculateOmniVideoDuration``: which durations omni-video prices, by model and inputs."""
    v3 = model in ("kling-v3-omni", "kling-v3")
    shots = body.get("multi_prompt") or []
    if v3 and shots:
        total = 0
        for index, shot in enumerate(shots):
            shot = shot if isinstance(shot, dict) else {}
            if not shot.get("prompt"):
                raise _price_check(f"multi_prompt[{index}].prompt is required")
            seconds = _whole_seconds(shot.get("duration", ""))
            if seconds < 3:
                raise _price_check(f"multi_prompt[{index}].duration must be >= 3, got: {seconds}")
            total += seconds
        if not 3 <= total <= 15:
            raise _price_check(f"multi-shot total duration must be between 3-15, got: {total}")
        return
    videos = [video for video in body.get("video_list") or [] if isinstance(video, dict)]
    images = [image for image in body.get("image_list") or [] if isinstance(image, dict)]
    if any(video.get("refer_type") == "base" for video in videos):
        if not v3:
            raise _price_check("video editing mode (refer_type=base) is only supported by kling-v3")
        return
    duration = str(body.get("duration", "5"))
    if v3:
        seconds = _whole_seconds(duration)
        if not 3 <= seconds <= 15:
            raise _price_check(f"kling-v3 supports duration 3-15, got: {seconds}")
        return
    framed = any(image.get("type") in ("first_frame", "end_frame") for image in images)
    if not videos and not framed:
        kind = "image2video" if images else "text2video"
        if duration not in ("5", "10"):
            raise _price_check(f"{kind} only supports duration 5 or 10, got: {duration}")
        return
    seconds = _whole_seconds(duration)
    if not 3 <= seconds <= 10:
        rule = (
            "first/end frame mode supports duration" if framed and not videos else "duration must be between"
        )
        raise _price_check(f"{rule} 3-10, got: {seconds}")


def _check_multi_image(body: dict[str, Any]) -> None:
    images = body.get("image_list") or []
    if not images:
        raise _build_failed("image_list is required for multi-image2video")
    if len(images) > 4:
        raise _build_failed(f"image_list supports up to 4 images, got: {len(images)}")


def _check_lip_sync(body: dict[str, Any]) -> None:
    if not body.get("session_id"):
        raise _build_failed("session_id is required for advanced-lip-sync")
    faces = body.get("face_choose") or []
    if not faces:
        raise _build_failed("face_choose is required for advanced-lip-sync")
    for index, face in enumerate(faces):
        face = face if isinstance(face, dict) else {}
        if not face.get("face_id"):
            raise _build_failed(f"face_choose[{index}].face_id is required")
        if bool(face.get("audio_id")) == bool(face.get("sound_file")):
            which = "either audio_id or sound_file is required" if not face.get("audio_id") else (
                "audio_id and sound_file cannot be both provided"
            )  # fmt: skip
            raise _build_failed(f"face_choose[{index}]: {which}")


def _check_motion_control(body: dict[str, Any]) -> None:
    """``convertToMotionControlPayload``: the required fields, in the gateway's order and words."""
    for name in ("image_url", "video_url"):
        if not body.get(name):
            raise _build_failed(f"{name} is required for motion-control")
    orientation = body.get("character_orientation")
    if not orientation:
        raise _build_failed(
            "character_orientation is required for motion-control, must be 'image' or 'video'"
        )
    if orientation not in ("image", "video"):
        raise _build_failed(f"character_orientation must be 'image' or 'video', got: {orientation}")
    mode = body.get("mode") or "std"  # the gateway's default
    if mode not in ("std", "pro"):
        raise _build_failed(f"mode must be 'std' or 'pro', got: {mode}")


def _check_avatar(body: dict[str, Any]) -> None:
    """``convertToAvatarImage2VideoPayload``: an image, one of audio_id and sound_file, the mode, the
    prompt's length."""
    if not body.get("image"):
        raise _build_failed("image is required for avatar image2video")
    if bool(body.get("audio_id")) == bool(body.get("sound_file")):
        which = "either audio_id or sound_file is required" if not body.get("audio_id") else (
            "audio_id and sound_file cannot be both provided"
        )  # fmt: skip
        raise _build_failed(f"{which} for avatar image2video")
    mode = body.get("mode") or ""
    if mode not in ("", "std", "pro"):
        raise _build_failed(f"mode must be 'std' or 'pro', got: {mode}")
    prompt = body.get("prompt")
    size = len(prompt.encode()) if isinstance(prompt, str) else 0  # Go's len: UTF-8 bytes, not characters
    if size > 2500:
        raise _build_failed(f"prompt length exceeds maximum 2500 characters, got: {size}")


def _check_identify_face(body: dict[str, Any]) -> None:
    if bool(body.get("video_id")) == bool(body.get("video_url")):
        which = "either video_id or video_url is required" if not body.get("video_id") else (
            "video_id and video_url cannot be both provided"
        )  # fmt: skip
        raise _build_failed(f"{which} for identify-face")


def _go_syntax_error(raw: bytes, exc: ValueError) -> str:
    """Go's wording for a JSON syntax error."""
    position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
    if position >= len(raw):
        return "unexpected end of JSON input"
    return f"invalid character {chr(raw[position])!r} looking for beginning of value"


# Routes exempt from the prompt requirement (``ValidateRequestAndSetAction``).
_NO_PROMPT_NEEDED = frozenset(
    {"omni-video", "video-extend", "advanced-lip-sync", "identify-face", "avatar/image2video"}
)


def _check_submit(route: str, content_type: str, raw: bytes, request_id: str) -> dict[str, Any]:
    """Validate a submit to ``route`` the way EZmodel's middleware and relay do; return the decoded body."""
    no_model = _json_reply(400, _shape_b("未指定模型名称，模型名称不能为空", request_id))
    if not content_type.startswith("application/json"):
        raise _Rejected(no_model)  # the body is not parsed at all, so the model reads as empty
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        message = f"Invalid request, 无效的请求, {_go_syntax_error(raw, exc)}"
        raise _Rejected(_json_reply(400, _shape_b(message, request_id))) from None
    if not isinstance(body, dict):
        message = "Invalid request, 无效的请求, json: cannot unmarshal into Go value of type map[string]any"
        raise _Rejected(_json_reply(400, _shape_b(message, request_id)))
    model = body.get("model_name") or body.get("model") or ""
    if not isinstance(model, str) or not model:
        raise _Rejected(no_model)
    if model not in CHANNEL_MODELS:
        message = f"获取分组 default 下模型 {model} 的可用渠道失败（distributor）: no available channel"
        raise _Rejected(_json_reply(503, _shape_b(message, request_id, code="model_not_found")))
    prompt = body.get("prompt")
    if route not in _NO_PROMPT_NEEDED and (not isinstance(prompt, str) or not prompt.strip()):
        raise _invalid("prompt is required")
    _check_duration(body.get("duration"))
    if route in ("text2video", "image2video"):
        _check_legacy_duration(body.get("duration"))
        _check_mode(model, body.get("mode"))
    elif route == "omni-video":
        _check_mode(model, body.get("mode"))
        _check_omni_duration(model, body)
    elif route == "multi-image2video":
        _check_mode(model, body.get("mode"))
        _check_multi_image(body)
    elif route == "video-extend" and not body.get("video_id"):
        raise _build_failed("video_id is required for video-extend")
    elif route == "advanced-lip-sync":
        _check_lip_sync(body)
    elif route == "identify-face":
        _check_identify_face(body)
    elif route == "motion-control":
        _check_motion_control(body)
    elif route == "avatar/image2video":
        _check_avatar(body)
    if not isinstance(body.get("duration", ""), str):  # building Kling's body comes after pricing
        raise _build_failed(
            "unmarshal metadata failed: json: cannot unmarshal number into Go struct field "
            "requestPayload.duration of type string"
        )
    return body


# --- the server -----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that can close its keep-alive connections, so stop() leaves no thread behind."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 drops bursts of connects, which then wait 1 s for a SYN retry

    def __init__(self, address: tuple[str, int], simulator: GatewaySimulator) -> None:
        super().__init__(address, _Handler)
        self.simulator = simulator
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address),
            name="kling-simulator-connection", daemon=True,
        )  # fmt: skip
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up is routine here; keep it off stderr (tests and notebooks stay quiet)."""
        _log.debug("simulator connection from %s failed", client_address, exc_info=True)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut every open connection down and wait for its thread."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout)


class GatewaySimulator:
    """A real loopback HTTP server that speaks EZmodel's Kling protocol, with scripted tasks and faults.

    Parameters
    ----------
    api_key
        The bearer key clients must send; a random ``sk-sim-...`` key when None.
    host, port
        Where to listen; port 0 picks a free port (see `url` once started).
    speed
        Time-driven scenarios run this many times faster than their ``queued``/``running`` seconds.
    scenario
        The scenario of tasks created by submits (POST text2video/image2video); default `Scenario()`.
    max_parallel
        Kling's account-wide parallel-task limit: a submit while this many tasks are unfinished (queued or
        running, whether submitted or added) answers the gateway's 429 and creates nothing. None: no limit.
    url_lifetime
        Seconds a video link stays valid from its task's creation, or for `clip_url` from `start` (Kling:
        30 days); negative makes links that have already expired. A `Scenario` may set its own.
    flavor
        ``"ezmodel"``: the gateway's protocol (above). ``"kling"``: Kling's own API (docs/kling-api.md,
        "The simulator's kling flavor"): routes without ``/kling``, a JWT signed with `secret_key` whose
        ``iss`` is `access_key` (checked: signature, ``iss``, ``exp``, ``nbf``; an expired token gets 401
        code 1004), Kling's envelopes, lookups by ``external_task_id``, the task list
        (``?pageNum=&pageSize=``), ``final_unit_deduction`` on success and the parallel limit as 429 code
        1303, and Kling's image and audio routes (`MEDIA_ROUTES`) with their generated PNG and WAV. The
        control API still takes `api_key`.
    access_key, secret_key
        Kling's key pair for the kling flavor; random when None.
    balance
        What the key has left, in US dollars: each task a submit creates takes ``task_price`` from it, and
        a submit it cannot pay for is refused (403 ``quota_not_enough``). None: no accounting, and the
        billing endpoints answer 404 (a gateway without them).
    task_price
        What one task costs.

    ``scenario``, ``max_parallel``, ``url_lifetime``, ``balance`` and ``task_price`` are attributes that
    may be changed at any time (a new ``url_lifetime`` applies to links made from then on); ``used`` is
    what the tasks created so far cost.
    Use as a context manager, or `start` / `stop`. `serve_forever` blocks until Ctrl-C (for the CLI).
    The key never appears in a repr, a log line or an error message.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        scenario: Scenario | None = None,
        max_parallel: int | None = None,
        url_lifetime: float = URL_LIFETIME,
        flavor: Flavor = "ezmodel",
        access_key: str | None = None,
        secret_key: str | None = None,
        balance: float | None = 1000.0,
        task_price: float = 0.35,
    ) -> None:
        if flavor not in get_args(Flavor):
            raise ValueError(f"flavor must be one of {get_args(Flavor)}, not {flavor!r}")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if max_parallel is not None and max_parallel < 1:
            raise ValueError("max_parallel must be >= 1 (or None for no limit)")
        self.api_key = api_key or f"sk-sim-{secrets.token_hex(16)}"
        self.flavor = flavor
        self.access_key = access_key or f"ak-sim-{secrets.token_hex(16)}"
        self.secret_key = secret_key or f"sk-sim-{secrets.token_hex(24)}"
        self._token_expiries: set[int] = set()
        self.speed = speed
        self.scenario = scenario or Scenario()
        self.max_parallel = max_parallel
        self.url_lifetime = url_lifetime
        self.balance = balance
        self.task_price = task_price
        self.used = 0.0
        self._drops: list[Reply] = []  # how the next submits go unanswered, first first
        self._peak_unfinished = 0
        self._address = (host, port)
        self._lock = threading.RLock()  # scripting methods also run inside the submit's critical section
        self._tasks: dict[str, _Task] = {}
        self._video_owner: dict[str, str | None] = {}  # media path -> task id (None for clip_url)
        self._log: list[RequestRecord] = []
        self._revoked = False
        self._sessions: set[str] = set()  # identify-face sessions lip-sync may use
        self._stopping = threading.Event()
        self._signing_key = secrets.token_bytes(16)
        self._muse_id = _numeric_id()
        data = importlib.resources.files(__package__ or "kling_widgets").joinpath("_data")
        clip = data.joinpath("demo.mp4").read_bytes()
        sound = _sound()
        # What a media link serves, by the suffix of its path: (bytes, content type, ETag). The MP3 link
        # serves the WAV too: a valid MP3 needs an encoder (docs/kling-api.md, "The simulator's kling
        # flavor").
        self._files = {
            suffix: (data, kind, f'"{hashlib.md5(data).hexdigest()}"')  # noqa: S324 - an ETag, not security
            for suffix, data, kind in (
                (".mp4", clip, "video/mp4"), (".png", _picture(), "image/png"),
                (".mp3", sound, "audio/wav"), (".wav", sound, "audio/wav"),
            )
        }  # fmt: skip
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clip_url = ""

    def __repr__(self) -> str:
        where = self.url if self._server else "not started"
        flavor = "" if self.flavor == "ezmodel" else f", flavor={self.flavor!r}"
        return f"GatewaySimulator({where}, speed={self.speed:g}{flavor})"

    # lifecycle ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:38123`` (only once started)."""
        if self._server is None:
            raise RuntimeError("the simulator is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def clip_url(self) -> str:
        """A signed-looking Kling CDN URL of the bundled clip on this server (only once started)."""
        if not self._clip_url:
            raise RuntimeError("the simulator is not started; call start() first")
        return self._clip_url

    def start(self) -> GatewaySimulator:
        """Bind and serve on a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the simulator was already started")
        self._server = _Server(self._address, self)
        self._clip_url = self._new_media_url(None, self.url_lifetime, ".mp4")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
            name="kling-simulator", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread. Idempotent."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def serve_forever(self) -> None:
        """Serve until KeyboardInterrupt, then stop (starts the server first if needed)."""
        if self._server is None:
            self.start()
        try:
            while not self._stopping.wait(0.5):  # a timed wait keeps Ctrl-C responsive
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> GatewaySimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # scripting --------------------------------------------------------------------------------------------

    def add_task(
        self, scenario: Scenario | None = None, *, task_id: str | None = None, endpoint: str = "text2video"
    ) -> str:
        """Create a task of ``endpoint`` (a key of `ACTIONS`, or, in the kling flavor, of `MEDIA_ROUTES`)
        following ``scenario`` (default: the simulator's); return its id. On a media route the
        scenario's ``videos`` counts the task's images or sounds."""
        routes = [*ACTIONS, *MEDIA_ROUTES] if self.flavor == "kling" else list(ACTIONS)
        if endpoint not in routes:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(routes)}")
        return self._create_task(scenario or self.scenario, _action(endpoint), task_id).task_id

    def requests(self, task_id: str | None = None) -> list[RequestRecord]:
        """The request log, oldest first; only requests about ``task_id`` when given."""
        with self._lock:
            return [r for r in self._log if task_id is None or r.task_id == task_id]

    def revoke_key(self) -> None:
        """Reject the API key from now on (401 无效的令牌), as when it is deleted in the console."""
        with self._lock:
            self._revoked = True

    def drop_next_submits(self, count: int = 1, *, hang: bool = False) -> None:
        """The next ``count`` valid submits create their task and then never answer.

        Parameters
        ----------
        count
            How many submits, from the next one on (added to any still pending).
        hang
            False: close the connection at once (the client sees it dropped). True: keep it open and silent
            until the client gives up (its read timeout) or the simulator stops.

        A submit the gateway would refuse (bad parameters, the key, the parallel limit) is refused as
        usual and does not use one up. The request log shows each dropped submit with its task id and
        status 0.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._drops.extend([HANG if hang else NO_ANSWER] * count)

    def environment(self) -> dict[str, str]:
        """The environment variables that point a `KlingClient` (or the CLI, or a kernel) at this simulator.

        ``EZMODEL_BASE_URL`` and ``EZMODEL_API_KEY`` for the ezmodel flavor; ``KLING_BASE_URL``,
        ``KLING_ACCESS_KEY`` and ``KLING_SECRET_KEY`` for the kling flavor (only once started).
        """
        if self.flavor == "kling":
            return {
                "KLING_BASE_URL": self.url,
                "KLING_ACCESS_KEY": self.access_key,
                "KLING_SECRET_KEY": self.secret_key,
            }
        return {"EZMODEL_BASE_URL": self.url, "EZMODEL_API_KEY": self.api_key}

    def token_expiries(self) -> list[int]:
        """The distinct ``exp`` claims of the JWTs accepted so far (kling flavor), oldest first."""
        with self._lock:
            return sorted(self._token_expiries)

    def unfinished(self) -> int:
        """How many tasks are queued or running now: what ``max_parallel`` counts."""
        with self._lock:
            return sum(task.phase(self.speed) != "done" for task in self._tasks.values())

    @property
    def peak_unfinished(self) -> int:
        """The most tasks that were queued or running at once (counted whenever a task is created)."""
        with self._lock:
            return self._peak_unfinished

    # internals -----------------------------------------------------------------------------------------

    def _create_task(
        self, scenario: Scenario, action: str, task_id: str | None, count: int | None = None
    ) -> _Task:
        """A new task with ``count`` results of each kind its route gives (default: the scenario's
        ``videos``)."""
        with self._lock:
            if task_id is None:
                task_id = _numeric_id()
            elif task_id in self._tasks:
                raise ValueError(f"task {task_id!r} already exists")
            kinds = MEDIA_ROUTES.get(action, ("videos",))
            results = range(scenario.videos if count is None else count)
            lifetime = self.url_lifetime if scenario.url_lifetime is None else scenario.url_lifetime

            def link(suffix: str) -> str:
                if scenario.video_url is not None:
                    return scenario.video_url
                return self._new_media_url(task_id, lifetime, suffix)

            video_ids = tuple(_numeric_id() for _ in results) if "videos" in kinds else ()
            task = self._tasks[task_id] = _Task(
                task_id, scenario, action, tuple(link(".mp4") for _ in video_ids), video_ids=video_ids,
                image_urls=tuple(link(".png") for _ in results) if "images" in kinds else (),
                audios=tuple((_numeric_id(), link(".mp3"), link(".wav")) for _ in results)
                if "audios" in kinds else (),
            )  # fmt: skip
            self._peak_unfinished = max(self._peak_unfinished, self.unfinished())
        return task

    def _new_media_url(self, task_id: str | None, lifetime: float, suffix: str) -> str:
        """A fresh Kling-like signed URL of the bundled file with ``suffix`` (``.mp4``, ``.png``, ``.mp3``,
        ``.wav``) for ``task_id``, valid for ``lifetime`` seconds."""
        expires = int(time.time() + lifetime)
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        kind = {".mp4": "VIDEO", ".png": "IMAGE"}.get(suffix, "AUDIO")
        path = f"{VIDEO_PATH_PREFIX}{self._muse_id}/{kind}/{day}/{uuid.uuid4()}{suffix}"
        cache_key = base64.urlsafe_b64encode(secrets.token_bytes(45)).decode()
        signature = self._sign(path, str(expires))
        self._video_owner[path] = task_id
        return (
            f"{self.url}{path}?cacheKey={cache_key}&x-kcdn-pid=112781&Expires={expires}&Signature={signature}"
        )

    def _sign(self, path: str, expires: str) -> str:
        return hmac.new(self._signing_key, f"{path}{expires}".encode(), hashlib.sha256).hexdigest()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _authenticate(self, header: str | None, request_id: str, *, control: bool = False) -> Reply | None:
        """None when the bearer key is good, else the gateway's 401 (Shape B)."""
        token = header[len("Bearer ") :] if header and header.startswith("Bearer ") else (header or "")
        if not token.strip():
            return _json_reply(401, _shape_b("未提供令牌", request_id))
        valid = hmac.compare_digest(
            token.removeprefix("sk-").encode(), self.api_key.removeprefix("sk-").encode()
        )
        if not valid or (self._revoked and not control):  # the control API ignores revocation, for tests
            return _json_reply(401, _shape_b("无效的令牌", request_id))
        return None

    def _authenticate_jwt(self, header: str | None) -> Reply | None:
        """Kling's check of its API token (kling flavor): None when good, else its 401 and service code."""
        token = header[len("Bearer ") :] if header and header.startswith("Bearer ") else ""
        if not token.strip():
            return _kling_reply(401, 1001, "Authorization is empty")
        try:
            claims = jwt.decode(
                token,
                self.secret_key,
                algorithms=["HS256"],
                issuer=self.access_key,
                options={"require": ["iss", "exp", "nbf"]},
            )
        except jwt.ExpiredSignatureError:
            return _kling_reply(401, 1004, "Authorization has expired")
        except jwt.ImmatureSignatureError:
            return _kling_reply(401, 1003, "Authorization is not yet valid")
        except jwt.InvalidTokenError:
            return _kling_reply(401, 1002, "Authorization is invalid")
        with self._lock:
            if self._revoked:
                return _kling_reply(401, 1000, "Authentication failed")
            self._token_expiries.add(int(claims["exp"]))
        return None

    def _submit(self, route: str, content_type: str, raw: bytes, request_id: str) -> tuple[Reply, str | None]:
        kling = self.flavor == "kling"
        try:
            if kling:
                body = _check_kling_submit(route, content_type, raw)
            else:
                body = _check_submit(route, content_type, raw, request_id)
            self._check_references(route, body)
        except _Rejected as rejected:
            return rejected.reply, None
        if route == "identify-face":
            return self._identify_face(), None
        if route in ("text2video", "image2video"):  # the body, not the path, picks Kling's route
            action = "generate" if body.get("image") or body.get("image_tail") else "textGenerate"
        else:
            action = _action(route)
        external_id = body.get("external_task_id") if kling else None
        with self._lock:  # counting and creating at once: parallel submits cannot both take the last slot
            if external_id and any(t.external_task_id == external_id for t in self._tasks.values()):
                return _kling_reply(400, 1201, "external_task_id already exists"), None
            if self.max_parallel is not None and self.unfinished() >= self.max_parallel:
                return (_kling_reply(*KLING_PARALLEL_LIMIT) if kling else _saturated()), None
            if self.balance is not None and not kling:
                if self.balance < self.task_price:
                    return _json_reply(403, _shape_a("quota_not_enough", "user quota is not enough")), None
                self.balance -= self.task_price
                self.used += self.task_price
            # Kling makes n images; every other route one result per the scenario (docs/routes.md).
            count = body.get("n", 1) if route == "images/generations" else None
            task = self._create_task(self.scenario, action, None, count)
            task.external_task_id = external_id
            dropped = self._drops.pop(0) if self._drops else None
        if dropped is not None:
            return dropped, task.task_id
        if kling:
            return _kling_ok(task._create_response()["data"]), task.task_id
        model = body.get("model_name") or body.get("model")
        video = {"id": task.task_id, "task_id": task.task_id, "object": "video", "model": model,
                 "status": "", "progress": 0, "created_at": task.created_ms // 1000}  # fmt: skip
        return _json_reply(200, video), task.task_id

    def _check_references(self, route: str, body: dict[str, Any]) -> None:
        """Kling refuses a video id or a lip-sync session it does not know (400, its code 1201)."""
        with self._lock:
            videos = {video_id for task in self._tasks.values() for video_id in task.video_ids}
            if route in ("video-extend", "identify-face") and body.get("video_id") not in (None, *videos):
                raise _Rejected(_kling_refusal("video_id is invalid"))
            if route == "advanced-lip-sync" and body.get("session_id") not in self._sessions:
                raise _Rejected(_kling_refusal("session_id is invalid"))

    def _identify_face(self) -> Reply:
        """Kling's own answer, passed through: one face, speaking from 0 to 5 s, in a new session."""
        session_id = str(uuid.uuid4())
        face = {"face_id": "0", "face_image": self.clip_url, "start_time": 0, "end_time": 5000}
        with self._lock:
            self._sessions.add(session_id)
        data = {"session_id": session_id, "face_data": [face]}
        return _json_reply(
            200, {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}
        )

    def _fetch(self, task_id: str, request_id: str) -> Reply:
        """A status GET: a fault, or the task's state."""
        kling = self.flavor == "kling"
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                if kling:
                    return _kling_reply(*KLING_NOT_FOUND)
                return _json_reply(400, _shape_a("task_not_exist", "task_not_exist"))
            task.gets += 1
            fault = task.scenario.fault_at(task.gets)
            if fault is not None and fault.kind == "revoke_key":
                self._revoked = True
                if kling:
                    return _kling_reply(401, 1000, "Authentication failed")
                return _json_reply(401, _shape_b("无效的令牌", request_id))
            if fault is not None and fault.kind != "slow":
                return (KLING_FAULT_REPLIES if kling else FAULT_REPLIES)[fault.kind](fault, task_id)
        if fault is not None:  # slow: wait outside the lock, then answer with the state at that moment
            self._stopping.wait(fault.delay)
        with self._lock:
            task.answered += 1
            if kling:
                return _kling_ok(task.kling_data(self.speed))
            dto = task.observe(self.speed)
        return _json_reply(200, {"code": "success", "message": "", "data": dto})

    def _kling_query(self, endpoint: str, query: str, request_id: str) -> tuple[Reply, str | None]:
        """``GET /v1/videos/{endpoint}?…``: one task by ``external_task_id``, else a page of the task list."""
        params = {key: values[0] for key, values in parse_qs(query).items()}
        action = _action(endpoint)
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.action == action]
        if "external_task_id" in params:
            found = [t for t in tasks if t.external_task_id == params["external_task_id"]]
            if not found:
                return _kling_reply(*KLING_NOT_FOUND), None
            return self._fetch(found[0].task_id, request_id), found[0].task_id
        page, size = params.get("pageNum", "1"), params.get("pageSize", "30")
        if not (page.isdigit() and size.isdigit() and 1 <= int(page) <= 1000 and 1 <= int(size) <= 500):
            return _kling_reply(400, 1201, "pageNum must be 1-1000 and pageSize 1-500"), None
        newest = sorted(tasks, key=lambda t: t.created_ms, reverse=True)
        start = (int(page) - 1) * int(size)
        with self._lock:
            return _kling_ok([t.kling_data(self.speed) for t in newest[start : start + int(size)]]), None

    def _control_add_task(self, raw: bytes) -> Reply:
        try:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object")
            task_id = data.pop("task_id", None)
            endpoint = data.pop("endpoint", "text2video")
            scenario = Scenario.from_dict(data) if data else self.scenario
            return _json_reply(200, {"task_id": self.add_task(scenario, task_id=task_id, endpoint=endpoint)})
        except (ValueError, TypeError) as exc:
            return _json_reply(400, {"error": f"not a Scenario: {exc}"})

    def _control_drop_submits(self, raw: bytes) -> Reply:
        try:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict) or set(data) - {"count", "hang"}:
                raise TypeError('expected {"count": n, "hang": false}')
            count, hang = data.get("count", 1), data.get("hang", False)
            if not isinstance(count, int) or isinstance(count, bool) or not isinstance(hang, bool):
                raise TypeError("count must be an integer and hang a boolean")
            self.drop_next_submits(count, hang=hang)
        except (ValueError, TypeError) as exc:
            return _json_reply(400, {"error": f"not a drop request: {exc}"})
        with self._lock:
            return _json_reply(200, {"pending": len(self._drops)})

    def _billing(self, path: str) -> Reply:
        """New API's ``GetSubscription`` and ``GetUsage``: the whole quota (used plus left) and the usage
        in hundredths, both in US dollars (the default display unit)."""
        with self._lock:
            balance, used = self.balance, self.used
        if path == BILLING_PATHS[0]:
            total = (balance or 0.0) + used
            return _json_reply(200, {
                "object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": total,
                "hard_limit_usd": total, "system_hard_limit_usd": total, "access_until": 0,
            })  # fmt: skip
        return _json_reply(200, {"object": "list", "total_usage": used * 100})

    def _control_requests(self, query: str) -> Reply:
        task_id = parse_qs(query).get("task_id", [None])[0]
        return _json_reply(200, [dataclasses.asdict(r) for r in self.requests(task_id)])

    def _media(self, path: str, query: str, range_header: str | None) -> tuple[Reply, str | None]:
        """Serve the bundled file a link names (the clip, the picture or the sound) like a signed CDN: 403
        unless signed and unexpired, then single byte ranges (206) and 416 for anything else in Range."""
        with self._lock:
            if path not in self._video_owner:
                return Reply(404, b"Not Found", "text/plain"), None
            owner = self._video_owner[path]
        data, content_type, etag = self._files[path[path.rindex(".") :]]
        signed = parse_qs(query)
        expires, signature = signed.get("Expires", [""])[0], signed.get("Signature", [""])[0]
        valid = hmac.compare_digest(signature, self._sign(path, expires))
        if not valid or not expires.isdigit() or int(expires) <= time.time():
            return Reply(403, b"Forbidden", "text/plain", (("Access-Control-Allow-Origin", "*"),)), owner
        size = len(data)
        headers = [
            ("Accept-Ranges", "bytes"),
            ("ETag", etag),
            ("Access-Control-Allow-Origin", "*"),
            ("Cache-Control", "max-age=2592000"),
        ]
        if range_header is None:
            return Reply(200, data, content_type, tuple(headers)), owner
        byte_range = _parse_range(range_header, size)
        if byte_range is None:
            headers.append(("Content-Range", f"bytes */{size}"))
            return Reply(416, b"", content_type, tuple(headers)), owner
        start, end = byte_range
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        return Reply(206, data[start : end + 1], content_type, tuple(headers)), owner


def _action(route: str) -> str:
    """The action a task of ``route`` carries: the gateway's for a video route, the route itself for a
    media route (which the gateway does not forward)."""
    return ACTIONS.get(route, route)


def _picture(size: int = 64) -> bytes:
    """A valid PNG, ``size`` pixels square, in one colour: what the simulated image routes make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = b"".join(b"\x00" + bytes((66, 133, 244)) * size for _ in range(size))  # filter 0, then pixels
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _sound(rate: int = 8000) -> bytes:
    """A valid WAV of `SOUND_SECONDS` of a quiet 440 Hz tone: what the simulated audio routes make."""
    frames = b"".join(
        struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(rate * SOUND_SECONDS))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return out.getvalue()


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) of a single satisfiable byte range, else None."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        return (max(size - length, 0), size - 1) if length > 0 and size > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


_TASK_PATH = re.compile(
    r"/kling/v1/videos/(?:text2video|image2video|omni-video|multi-image2video|video-extend|advanced-lip-sync"
    r"|motion-control|multi-elements|avatar/image2video)/([^/]+)"
)
_SUBMIT_ROUTES = {f"/kling/v1/videos/{route}": route for route in (*ACTIONS, "identify-face")}
# Kling's own routes: submit and list on the endpoint, query below it (flavor "kling"). The video routes are
# under videos/, the media routes name their own family.
_KLING_ROUTES = {f"videos/{route}": route for route in (*ACTIONS, "identify-face")} | {
    route: route for route in MEDIA_ROUTES
}
_KLING_PATH = re.compile(rf"/v1/({'|'.join(map(re.escape, _KLING_ROUTES))})(?:/([^/]+))?")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the simulator and writes its reply. Never logs."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like the real gateway
    server_version = "kling-widgets-simulator"
    timeout = 60  # an idle keep-alive connection is dropped after this
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't let them wait for an ACK

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: tests and notebooks must not see a line per request."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        arrived = time.monotonic()
        sim = self.server.simulator
        request_id = _request_id()
        split = urlsplit(self.path)
        path = split.path
        raw = self._read_body()
        reply, task_id = self._route(sim, method, path, split.query, raw, request_id)
        if not path.startswith("/_simulator/"):  # the log is about the gateway, not about its test harness
            body = raw.decode("utf-8", "replace") if method == "POST" else ""
            sim._record(RequestRecord(method, path, task_id, reply.status, arrived, body))
        self._send(reply, request_id, head=method == "HEAD")

    def _route(
        self, sim: GatewaySimulator, method: str, path: str, query: str, raw: bytes, request_id: str
    ) -> tuple[Reply, str | None]:
        if path.startswith(VIDEO_PATH_PREFIX) and method in ("GET", "HEAD"):
            return sim._media(path, query, self.headers.get("Range"))
        task_match = _TASK_PATH.fullmatch(path)
        task_id = unquote(task_match.group(1)) if task_match else None
        if path.startswith("/_simulator/"):
            return self._control(sim, method, path, query, raw, request_id), None
        if sim.flavor == "kling":
            return self._route_kling(sim, method, path, query, raw, request_id)
        route = _SUBMIT_ROUTES.get(path) if method == "POST" else None
        billing = method == "GET" and path in BILLING_PATHS and sim.balance is not None
        if not ((method == "GET" and task_id) or route or billing):
            message = f"Invalid URL ({method} {path})"  # gin's NoRoute: no request id suffix
            error = {"message": message, "type": "invalid_request_error", "param": "", "code": ""}
            return _json_reply(404, {"error": error}), None
        rejected = sim._authenticate(self.headers.get("Authorization"), request_id)
        if rejected is not None:
            return rejected, task_id
        if task_id is not None:
            return sim._fetch(task_id, request_id), task_id
        if billing:
            return sim._billing(path), None
        assert route is not None  # a POST that is not a submit was answered 404 above
        return sim._submit(route, self.headers.get("Content-Type", ""), raw, request_id)

    def _route_kling(
        self, sim: GatewaySimulator, method: str, path: str, query: str, raw: bytes, request_id: str
    ) -> tuple[Reply, str | None]:
        match = _KLING_PATH.fullmatch(path)
        if match is None or method not in ("GET", "POST") or (method == "POST" and match.group(2)):
            return _kling_reply(404, 1202, f"Invalid URL ({method} {path})"), None
        endpoint, task_id = _KLING_ROUTES[match.group(1)], unquote(match.group(2)) if match.group(2) else None
        unsubmittable = endpoint in MEDIA_ROUTES and endpoint not in MEDIA_SUBMIT_ROUTES
        if (method == "POST" and unsubmittable) or (method == "GET" and endpoint == "identify-face"):
            return _kling_reply(404, 1202, f"Invalid URL ({method} {path})"), None
        rejected = sim._authenticate_jwt(self.headers.get("Authorization"))
        if rejected is not None:
            return rejected, task_id
        if method == "POST":
            return sim._submit(endpoint, self.headers.get("Content-Type", ""), raw, request_id)
        if task_id is not None:
            return sim._fetch(task_id, request_id), task_id
        return sim._kling_query(endpoint, query, request_id)

    def _control(
        self, sim: GatewaySimulator, method: str, path: str, query: str, raw: bytes, request_id: str
    ) -> Reply:
        rejected = sim._authenticate(self.headers.get("Authorization"), request_id, control=True)
        if rejected is not None:
            return rejected
        if (method, path) == ("POST", "/_simulator/tasks"):
            return sim._control_add_task(raw)
        if (method, path) == ("GET", "/_simulator/requests"):
            return sim._control_requests(query)
        if (method, path) == ("POST", "/_simulator/drop_submits"):
            return sim._control_drop_submits(raw)
        return _json_reply(404, {"error": f"no simulator endpoint {method} {path}"})

    def _hold(self) -> None:
        """Read and ignore until the client hangs up, the idle ``timeout`` passes or the simulator stops
        (`stop` shuts every connection down, which ends the read)."""
        with contextlib.suppress(OSError):
            while self.connection.recv(1 << 16):
                pass

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(min(max(length, 0), MAX_BODY)) if length else b""

    def _send(self, reply: Reply, request_id: str, *, head: bool) -> None:
        if reply.status == 0:  # no answer at all
            self.close_connection = True
            if reply is HANG:
                self._hold()
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if self.server.simulator.flavor == "ezmodel":  # Kling puts its request id in the body
                self.send_header("X-Oneapi-Request-Id", request_id)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client hung up (e.g. a cancelled video load)
            self.close_connection = True
