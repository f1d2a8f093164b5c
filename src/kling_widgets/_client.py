"""`KlingClient`: submit Kling video tasks through the EZmodel gateway (or Kling's own API), then fetch,
await and download them.

Gateway requests go through `GatewayHTTP` (bounded in time and size, never redirected, never retried by
itself); a `requests.Session` serves downloads only. The credentials are resolved once (argument, then
``EZMODEL_API_KEY``, then the Colab secret of that name; or Kling's access and secret keys), kept by the
backend (`kling_widgets._backend`, which also knows each service's paths, envelopes and error codes) and
added to each request's headers; they never appear in a repr, a log line or an error message (nor in their
``__cause__`` or ``__context__``), and they are never sent to the video host.
"""

from __future__ import annotations

import contextlib
import email.utils
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import requests

from ._backend import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    TOKEN_LIFETIME,
    Backend,
    choose_backend,
)
from ._billing import SUBSCRIPTION_PATH, USAGE_PATH, Balance, parse_balance
from ._errors import (
    APIError,
    KlingError,
    RateLimitError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransportError,
)
from ._files import SNIFF_BYTES, file_name, not_a_video, publish, video_kind
from ._http import CONNECT_TIMEOUT, Answer, GatewayHTTP
from ._ledger import Ledger, shared_ledger
from ._models import Task, TaskStatus, parse_submission, parse_task
from ._params import (
    KlingOptions,
    VideoOptions,
    dynamic_masks_field,
    image_field,
    refuse_unknown,
    shows_options,
    video_body,
)
from ._routes import (
    Face,
    FaceSession,
    ImageInput,
    OmniOptions,
    VideoSource,
    avatar_body,
    extend_body,
    identify_face_body,
    lip_sync_body,
    motion_control_body,
    multi_image_body,
    omni_body,
    parse_faces,
)
from ._schedule import MAX_RETRY_AFTER, PollPolicy, retry_delay
from ._text import clean_text, strip_credentials

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # annotations only: no runtime dependency on typing_extensions
    from typing_extensions import Unpack

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "DEFAULT_BASE_URL", "ENDPOINTS", "KlingClient"]

logger = logging.getLogger("kling_widgets")

#: Kling task endpoints that answer ``GET …/{task_id}``: the video routes under ``/kling/v1/videos/``
#: (docs/gateway.md, "Routes"), and Kling's image and audio routes, whose results are images or sounds
#: (docs/routes.md, "Results that are not videos").
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
        "images/generations",
        "images/omni-image",
        "images/multi-image2image",
        "audio/text-to-audio",
        "audio/video-to-audio",
    }
)

_CHUNK = 1 << 16
# A first try, then a few resumes after a dropped connection (each resume asks only for what is missing).
_DOWNLOAD_ATTEMPTS = 4
_MAX_REDIRECTS = 10
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_REQUEST_ID_HEADER = "X-Oneapi-Request-Id"


class KlingClient:
    """A blocking client for Kling video generation, through the EZmodel gateway or Kling's own API.

    Parameters
    ----------
    api_key : str, optional
        The gateway key. Defaults to the ``EZMODEL_API_KEY`` environment variable, then (inside Google
        Colab) the Colab secret of that name. A missing key is reported at the first request, as an
        `AuthenticationError` that names ``EZMODEL_API_KEY``; a key with spaces or non-ASCII characters
        (a bad paste) is refused at once, without being echoed.
    access_key, secret_key : str, optional
        Kling's own API keys instead of a gateway key (default: ``KLING_ACCESS_KEY`` and
        ``KLING_SECRET_KEY``, or the Colab secrets of those names). Each request then carries a JWT made
        from them and renewed before it expires; every submission carries an ``external_task_id``, so a
        POST whose answer was lost is found again, never sent twice. Giving both an EZmodel key and Kling
        keys (as arguments, or all through the environment) is an `AuthenticationError`; an argument beats
        the environment (docs/kling-api.md, "Configuration").
    base_url : str, optional
        Defaults to ``EZMODEL_BASE_URL``, then ``https://api.ezmodel.cloud`` (with Kling keys:
        ``KLING_BASE_URL``, then ``https://api-singapore.klingai.com``).
    timeout : float
        Seconds one gateway request may take in all, from connecting to the answer's last byte
        (connecting alone is bounded by ``min(10, timeout)``). An answer over 16 MiB is refused
        (``kling_widgets._http.MAX_BODY_BYTES``; real answers are a few KB).
    max_retries : int
        How many times a GET is retried after a transient failure (429, 5xx, network). POSTs are never
        retried: a retried submit could create, and bill, a second task.
    ledger : Ledger, str, path-like or bool, optional
        Where submissions are recorded (docs/durable.md, "The ledger"). None or True (the
        default): the process's shared default `Ledger` (``$KLING_WIDGETS_HOME/ledger.sqlite3``, else
        the user data directory); False: none; a path or a `Ledger`: that one.
    token_lifetime : float
        Kling keys only: seconds each JWT is valid (Kling's maximum, 30 minutes, by default); a new one is
        made when less than a sixth is left.

    Video options
    -------------
    The keyword options `text2video`, `image2video`, `omni_video` and `multi_image2video` share; each
    method names those it takes, and any other keyword is a `TypeError` that lists them. Every value is
    checked against the model catalogue (docs/models.md) before anything is sent. An option left out, or
    None where its type allows it, takes the default said here.

    model_name : str
        A model the route takes (``kling_widgets.models_for(route)``), by default the route's first:
        ``"kling-v2-6"`` for text2video and image2video (also ``"kling-v3"``, ``"kling-v2-5-turbo"``,
        ``"kling-v2-1-master"``, ...); ``"kling-v3-omni"`` for omni-video (``"kling-v3"`` takes the same
        options; ``"kling-video-o1"`` 3-10 s, 5 or 10 without frames or a reference video, no sound, shots
        or editing); ``"kling-v1-6"``, the only one, for multi-image2video.
    duration : str or int, optional
        Seconds, ``"5"`` by default; ``"5"`` or ``"10"`` (the gateway prices no other there) except on
        omni-video, which takes 3-15 s but no duration with ``shots`` (each shot has its own) nor when
        editing a video (the result keeps its length). Always sent as a string: the gateway rejects a
        JSON number.
    aspect_ratio : str
        ``"16:9"`` (the default), ``"9:16"`` or ``"1:1"``. Always sent, since the gateway's own default is
        1:1; omni-video leaves it out when editing a video.
    mode : str, optional
        ``"std"`` (720p) or ``"pro"`` (1080p); ``"master"`` for ``*-master`` models, which take only that.
        By default the model's first mode (``"std"``, or ``"master"``).
    negative_prompt : str, optional
        What to avoid (at most 2500 characters).
    sound : str, optional
        Not multi_image2video. ``"on"`` or ``"off"``: generate audio (``"on"`` only for kling-v2-6,
        kling-v3 and kling-v3-omni; it raises the price).
    cfg_scale : float, optional
        text2video and image2video. How closely to follow the prompt, 0 to 1 (the gateway sends 0.5).
        kling-v1.x models only: Kling ignores it on later ones, so it is refused there.
    camera_control : mapping, optional
        text2video and image2video. ``{"type": "simple", "config": {"zoom": 5}}``: exactly one of
        ``horizontal``, ``vertical``, ``pan``, ``tilt``, ``roll``, ``zoom`` non-zero, in [-10, 10]; or a
        preset type without config: ``"down_back"``, ``"forward_up"``, ``"right_turn_forward"``,
        ``"left_turn_forward"``.
    callback_url : str, optional
        An http(s) URL Kling itself POSTs its raw task JSON to when the status changes.
    external_task_id : str, optional
        Your own id for the task, unique per account (the gateway cannot be queried by it). With Kling
        keys, one is chosen (``kw-`` + 32 hex digits) when not given, and `find_task` finds the task by
        it; a submission whose answer was lost is found that way, never sent twice.

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
        ledger: Ledger | str | os.PathLike[str] | bool | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        token_lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        from ._version import __version__

        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        self._backend: Backend = choose_backend(
            api_key, access_key, secret_key, base_url, token_lifetime=token_lifetime
        )
        self._base_url = self._backend.base_url
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self._user_agent = f"kling-widgets/{__version__}"
        self._downloads: requests.Session | None = None
        self._downloads_pid: int | None = None
        # Gateway requests use the proxy and CA bundle that requests would (HTTPS_PROXY, NO_PROXY,
        # REQUESTS_CA_BUNDLE, ...), without requests' per-call cost and without a cookie jar.
        settings = self._session.merge_environment_settings(self._base_url, {}, None, None, None)
        scheme = urllib.parse.urlsplit(self._base_url).scheme
        verify = settings["verify"]
        self._http = GatewayHTTP(
            self._base_url,
            timeout=self.timeout,
            proxy=settings["proxies"].get(scheme) or settings["proxies"].get("all"),
            ca_certs=verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH,
        )
        self._ledger = _ledger_of(ledger)

    @property
    def base_url(self) -> str:
        """The gateway's base URL, without a trailing slash."""
        return self._base_url

    @property
    def ledger(self) -> Ledger | None:
        """The `Ledger` recording this client's submissions and the states it fetches, or None."""
        return self._ledger

    @property
    def backend(self) -> str:
        """``"ezmodel"`` (the gateway) or ``"kling"`` (Kling's own API)."""
        return self._backend.name

    @property
    def key_id(self) -> str | None:
        """A short fingerprint of the API key (8 hex digits of its SHA-256), or None without a key.

        With Kling keys, the fingerprint of the access key (the secret key is never used for it). Safe to
        show, log and store: it tells keys apart without revealing them.
        """
        return self._backend.key_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def __enter__(self) -> KlingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections. Tasks already submitted keep running on the server."""
        self._http.close()
        if self._downloads is not None:
            self._downloads.close()
            self._downloads = None

    @property
    def _session(self) -> requests.Session:
        """The session for downloads; a new one in a forked child (the parent's sockets are not ours)."""
        if self._downloads is None or self._downloads_pid != os.getpid():
            self._downloads, self._downloads_pid = requests.Session(), os.getpid()
            self._downloads.headers["User-Agent"] = self._user_agent
        return self._downloads

    # -- submitting -------------------------------------------------------------------------------

    @shows_options(VideoOptions, "text2video")
    def text2video(self, prompt: str, *, source: str | None = None, **options: Unpack[VideoOptions]) -> Task:
        """Submit a text-to-video task. Every option is checked first; the POST is sent once, never retried.

        Parameters
        ----------
        prompt : str
            What to generate (non-blank; at most 2500 characters).
        source : str, optional
            A label stored with the ledger entry (not sent), e.g. ``"prompts.csv#17"``: batches find
            their rows again with it to resume.
        **options
            The video options (`KlingClient`, "Video options"): ``model_name`` (``"kling-v2-6"`` by
            default), ``duration``, ``aspect_ratio``, ``mode``, ``negative_prompt``, ``cfg_scale``,
            ``sound``, ``camera_control``, ``callback_url``, ``external_task_id``.

        Returns
        -------
        Task
            The new task (status SUBMITTED); poll it with `get_task` or `wait`.

        Raises
        ------
        TypeError
            An option has the wrong type, or is not one of the above (nothing is sent).
        ValueError
            An option has a value the gateway would refuse, e.g. a blank prompt (nothing is sent).
        KlingError
            The gateway refused the task, or could not be reached. If the gateway answered with a task id
            but something failed afterwards, the error's ``task_id`` holds it.
        """
        refuse_unknown(self.text2video, options)
        return self._submit("text2video", video_body("text2video", prompt, options), source)

    @shows_options(VideoOptions, "image2video")
    def image2video(
        self,
        image: str | os.PathLike[str],
        prompt: str,
        *,
        image_tail: str | os.PathLike[str] | None = None,
        static_mask: str | os.PathLike[str] | None = None,
        dynamic_masks: Sequence[Mapping[str, Any]] | None = None,
        source: str | None = None,
        **options: Unpack[VideoOptions],
    ) -> Task:
        """Submit an image-to-video task. Every option is checked first; the POST is sent once, never retried.

        Parameters
        ----------
        image : str or path-like
            The first frame: an http(s) URL (sent as it is), a local .jpg/.jpeg/.png file (a `pathlib.Path`,
            or a string ending in one of those), a ``data:`` URL, or raw base64. Files, data URLs and base64
            are sent as the raw base64 Kling expects, after checking that they hold a JPEG or PNG of at most
            10 MB (Kling also wants at least 300 px and an aspect ratio between 1:2.5 and 2.5:1).
        prompt : str
            What should happen (non-blank: the gateway requires it for image-to-video too).
        image_tail : str or path-like, optional
            The last frame, in any form ``image`` takes (not for the ``*-master`` models).
        static_mask : str or path-like, optional
            Motion brush: the area that stays still, an image in any form ``image`` takes.
        dynamic_masks : sequence of mappings, optional
            Motion brush: up to 6 ``{"mask": image, "trajectories": [{"x": int, "y": int}, ...]}`` with 2
            to 77 points each.
        source, **options
            As for `text2video`.

        Returns
        -------
        Task
            The new task (status SUBMITTED); poll it with ``get_task(task_id, "image2video")``.

        Raises
        ------
        TypeError, ValueError
            An option is wrong (nothing is sent), as for `text2video`.
        FileNotFoundError
            An image path names no file.
        KlingError
            The gateway refused the task, or could not be reached; ``task_id`` as for `text2video`.
        """
        refuse_unknown(self.image2video, options)
        body: dict[str, Any] = {"image": image_field("image", image)}
        body.update(video_body("image2video", prompt, options, end_frame=image_tail is not None))
        if image_tail is not None:
            body["image_tail"] = image_field("image_tail", image_tail)
        if static_mask is not None:
            body["static_mask"] = image_field("static_mask", static_mask)
        if dynamic_masks is not None:
            body["dynamic_masks"] = dynamic_masks_field(dynamic_masks)
        return self._submit("image2video", body, source)

    @shows_options(OmniOptions, "omni-video")
    def omni_video(
        self,
        prompt: str | None = None,
        *,
        start_frame: ImageInput | None = None,
        end_frame: ImageInput | None = None,
        reference_images: Sequence[ImageInput] = (),
        reference_video: str | None = None,
        refer_type: str = "feature",
        keep_original_sound: str | None = None,
        element_ids: Sequence[int] = (),
        shots: Sequence[Mapping[str, Any]] | None = None,
        **options: Unpack[OmniOptions],
    ) -> Task:
        """Submit an omni-video task: 3-15 s, multi-shot, native audio, frames, reference images and videos.

        Every option is checked against the model catalogue first (docs/models.md); the POST is sent
        once, never retried.

        Parameters
        ----------
        prompt : str, optional
            What to generate (at most 2500 characters); required unless ``shots`` is given. Refer to
            reference images as ``<<<image_1>>>``, ... in the order sent (frames first).
        start_frame, end_frame : str or path-like, optional
            The first and last frame, in any form `image2video` takes for ``image``.
        reference_images : sequence
            More images to refer to; at most 7 images in all, frames included.
        reference_video : str, optional
            An http(s) URL of a video (Kling needs a URL: upload a local file first).
        refer_type : str
            ``"feature"`` (take its style and motion) or ``"base"`` (edit that video; kling-v3 models).
        keep_original_sound : str, optional
            ``"yes"`` or ``"no"``, with a ``reference_video``.
        element_ids : sequence of int
            Elements (subjects) from the account's element library.
        shots : sequence of mappings, optional
            Multi-shot (kling-v3 models): 2 to 6 ``{"prompt": str, "duration": seconds}``, each at least
            3 s, together 3 to 15 s.
        **options
            The video options (`KlingClient`, "Video options"): ``model_name`` (``"kling-v3-omni"`` by
            default), ``duration``, ``aspect_ratio``, ``mode``, ``negative_prompt``, ``sound``,
            ``callback_url``, ``external_task_id``.

        Returns
        -------
        Task
            The new task; its ``endpoint`` is ``"omni-video"``, so `get_task`, `wait` and the widget poll
            the right route.

        Raises
        ------
        TypeError, ValueError
            An option is wrong, or the model does not take it (nothing is sent).
        KlingError
            As for `text2video`.

        Examples
        --------
        >>> client.omni_video(shots=[{"prompt": "a door opens", "duration": 4},           # doctest: +SKIP
        ...                          {"prompt": "a cat walks in", "duration": 5}], sound="on")
        """
        refuse_unknown(self.omni_video, options)
        body = omni_body(
            prompt,
            options,
            start_frame=start_frame,
            end_frame=end_frame,
            reference_images=reference_images,
            reference_video=reference_video,
            refer_type=refer_type,
            keep_original_sound=keep_original_sound,
            element_ids=element_ids,
            shots=shots,
        )
        return self._submit("omni-video", body)

    @shows_options(KlingOptions, "multi-image2video")
    def multi_image2video(
        self, images: Sequence[ImageInput], prompt: str, **options: Unpack[KlingOptions]
    ) -> Task:
        """Submit a multi-image-to-video task: up to 4 images (subjects, scenes) brought together.

        Parameters
        ----------
        images : sequence
            1 to 4 images, each in any form `image2video` takes for ``image``.
        prompt : str
            What should happen (non-blank).
        **options
            The video options (`KlingClient`, "Video options"): ``model_name`` (``"kling-v1-6"``, the only
            model this route takes), ``duration``, ``aspect_ratio``, ``mode``, ``negative_prompt``,
            ``callback_url``, ``external_task_id``.

        Returns
        -------
        Task
            The new task (``endpoint`` ``"multi-image2video"``).

        Raises
        ------
        TypeError, ValueError, FileNotFoundError, KlingError
            As for `image2video`.
        """
        refuse_unknown(self.multi_image2video, options)
        return self._submit("multi-image2video", multi_image_body(images, prompt, options))

    def extend_video(
        self,
        video: VideoSource,
        *,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        callback_url: str | None = None,
        **unknown: NoReturn,
    ) -> Task:
        """Submit a video-extend task: 4-5 s more of a video Kling generated, with its model and mode.

        Parameters
        ----------
        video : Task, Video or str
            A finished task (its first video), one of its videos, or a Kling video id. Kling keeps videos
            30 days; the extended video may be extended again, up to 3 minutes in all.
        prompt, negative_prompt : str, optional
            Where the extension should go, and what to avoid (at most 2500 characters each).
        cfg_scale : float, optional
            How closely to follow the prompt, 0 to 1 (Kling's default 0.5).
        callback_url : str, optional
            An http(s) URL Kling POSTs the task's JSON to when its status changes (`KlingClient`, "Video
            options").

        Returns
        -------
        Task
            The new task (``endpoint`` ``"video-extend"``).

        Raises
        ------
        TypeError, ValueError
            An option is wrong, or the task has no finished video (nothing is sent).
        KlingError
            As for `text2video`.
        """
        refuse_unknown(self.extend_video, unknown)
        body = extend_body(
            video,
            prompt=prompt,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            callback_url=callback_url,
        )
        return self._submit("video-extend", body)

    def identify_face(self, video: VideoSource) -> FaceSession:
        """Find the faces lip-sync can animate in a video (synchronous; Kling bills it as one call).

        Parameters
        ----------
        video : Task, Video or str
            A finished task (its first video), one of its videos, a Kling video id, or an http(s) video URL.

        Returns
        -------
        FaceSession
            ``session_id`` (valid 24 hours) and the faces, each with the window (ms) it can speak in.
        """
        body = self._backend.api_body(identify_face_body(video))
        return parse_faces(self._request("POST", self._backend.path("identify-face"), body=body, retry=False))

    def lip_sync(
        self,
        video: VideoSource | FaceSession,
        *,
        sound_end_time: int,
        audio: str | os.PathLike[str] | None = None,
        audio_id: str | None = None,
        face: int | str = 0,
        sound_start_time: int = 0,
        sound_insert_time: int | None = None,
        sound_volume: float | None = None,
        original_audio_volume: float | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **unknown: NoReturn,
    ) -> Task:
        """Make a face in a video speak an audio: identify-face (unless given its session), then the task.

        Everything that can be checked is checked before the first POST; where the audio may go is known
        only after identify-face, and is checked before the second.

        Parameters
        ----------
        video : Task, Video, str or FaceSession
            What `identify_face` takes, or the `FaceSession` it returned (then it is not called again).
        sound_end_time : int
            Where the audio clip ends, in milliseconds of the audio.
        audio : str or path-like, optional
            An http(s) URL, or a local .mp3/.wav/.m4a/.aac file of at most 5 MB (sent as base64).
        audio_id : str, optional
            Instead of ``audio``: an audio Kling generated (its id).
        face : int or str
            Which face: an index into the session's faces, or a face id.
        sound_start_time : int
            Where the audio clip starts, in milliseconds of the audio.
        sound_insert_time : int, optional
            Where the clip goes in the video, in milliseconds; by default where the face's window starts.
        sound_volume, original_audio_volume : float, optional
            0 to 2 (Kling's default 1): the clip's and the video's own sound.
        callback_url, external_task_id
            As in `KlingClient`, "Video options".

        Returns
        -------
        Task
            The new task (``endpoint`` ``"advanced-lip-sync"``).

        Raises
        ------
        TypeError, ValueError
            An option is wrong, or the face or the insert time does not fit the video (no task is sent).
        KlingError
            As for `text2video`; also from identify-face.
        """
        refuse_unknown(self.lip_sync, unknown)
        options: dict[str, Any] = {
            "face": face,
            "audio": audio,
            "audio_id": audio_id,
            "sound_start_time": sound_start_time,
            "sound_end_time": sound_end_time,
            "sound_insert_time": sound_insert_time,
            "sound_volume": sound_volume,
            "original_audio_volume": original_audio_volume,
            "callback_url": callback_url,
            "external_task_id": external_task_id,
        }
        if isinstance(video, FaceSession):
            session = video
        else:
            # Check every option on a stand-in session first: identify-face is billed too.
            stand_in = FaceSession("-", (Face("-", None, 0, sys.maxsize),))
            lip_sync_body(stand_in, **{**options, "face": 0})
            identify_face_body(video)
            session = self.identify_face(video)
        return self._submit("advanced-lip-sync", lip_sync_body(session, **options))

    def motion_control(
        self,
        image: ImageInput,
        video: str,
        prompt: str,
        *,
        character_orientation: str,
        mode: str = "std",
        keep_original_sound: str | None = None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **unknown: NoReturn,
    ) -> Task:
        """Submit a motion-control task: the character of an image performs the motion of a video.

        Every option is checked first; the POST is sent once, never retried.

        Parameters
        ----------
        image : str or path-like
            The character (and background), in any form `image2video` takes for ``image``: a clear upper
            body or whole body with the head, taking up enough of the picture.
        video : str
            An http(s) URL of an .mp4 or .mov video of one person moving (Kling fetches it: at most 100 MB,
            at least 3 s, and at most 10 s with ``character_orientation="image"``, 30 s with ``"video"``;
            its length is not checked here).
        prompt : str
            What to add to the scene or the camera (non-blank: the gateway refuses a motion-control task
            without one, though Kling would not; at most 2500 characters).
        character_orientation : str
            ``"image"`` (the character faces as in the image) or ``"video"`` (as in the video). The gateway
            reserves payment for 10 s or 30 s accordingly, and bills the video's real length.
        mode : str
            ``"std"`` (the default, as the gateway's) or ``"pro"`` (1.6 times the price). Kling requires a
            mode, so it is always sent.
        keep_original_sound : str, optional
            ``"yes"`` (Kling's default) or ``"no"``: keep the video's own sound.
        callback_url, external_task_id
            As in `KlingClient`, "Video options".

        Returns
        -------
        Task
            The new task (``endpoint`` ``"motion-control"``).

        Raises
        ------
        TypeError, ValueError, FileNotFoundError, KlingError
            As for `image2video`.
        """
        refuse_unknown(self.motion_control, unknown)
        body = motion_control_body(
            image,
            video,
            prompt,
            character_orientation=character_orientation,
            mode=mode,
            keep_original_sound=keep_original_sound,
            callback_url=callback_url,
            external_task_id=external_task_id,
        )
        return self._submit("motion-control", body)

    def avatar_image2video(
        self,
        image: ImageInput,
        *,
        audio: str | os.PathLike[str] | None = None,
        audio_id: str | None = None,
        prompt: str | None = None,
        mode: str = "std",
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **unknown: NoReturn,
    ) -> Task:
        """Submit an avatar task: the person (or character) of an image speaks an audio, as a video.

        Every option is checked first; the POST is sent once, never retried. The video lasts as long as
        the audio; the gateway bills it per task (``"pro"`` twice ``"std"``).

        Parameters
        ----------
        image : str or path-like
            The avatar, in any form `image2video` takes for ``image``.
        audio : str or path-like, optional
            An http(s) URL, or a local .mp3/.wav/.m4a/.aac file of at most 5 MB (sent as base64); Kling
            takes 2 to 300 s of audio (not checked here).
        audio_id : str, optional
            Instead of ``audio``: an audio Kling generated in the last 30 days (its id).
        prompt : str, optional
            The avatar's actions, emotions and camera moves (at most 2500 characters).
        mode : str
            ``"std"`` (the default) or ``"pro"``.
        callback_url, external_task_id
            As in `KlingClient`, "Video options".

        Returns
        -------
        Task
            The new task (``endpoint`` ``"avatar/image2video"``).

        Raises
        ------
        TypeError, ValueError, FileNotFoundError, KlingError
            As for `image2video`; also when both or neither of ``audio`` and ``audio_id`` are given.
        """
        refuse_unknown(self.avatar_image2video, unknown)
        body = avatar_body(
            image,
            audio=audio,
            audio_id=audio_id,
            prompt=prompt,
            mode=mode,
            callback_url=callback_url,
            external_task_id=external_task_id,
        )
        return self._submit("avatar/image2video", body)

    def _submit(self, endpoint: str, body: Mapping[str, Any], source: str | None = None) -> Task:
        # The body exactly as it will be sent (with Kling keys an external_task_id is added) is recorded
        # before the POST, so a task paid for is never lost (docs/durable.md, "The ledger"): an answer
        # fills in its id; an error answer created nothing; no answer may have.
        body = self._backend.prepare(body)
        ledger = self._ledger
        local_id = None
        if ledger is not None:
            local_id = ledger.begin(endpoint, self._base_url, self.key_id, body, source=source)
        try:
            task = self._post(endpoint, body)
        except APIError as exc:
            if ledger is not None:
                ledger.refused(local_id, exc)
            raise
        except BaseException as exc:  # no answer, an unusable one, or KeyboardInterrupt: the task may exist
            if ledger is not None:
                ledger.unanswered(local_id, exc)
            raise
        if ledger is not None:
            ledger.submitted(local_id, task)
        return task

    def _post(self, endpoint: str, body: Mapping[str, Any]) -> Task:
        """POST once; a lost answer is looked up by ``external_task_id`` where the backend can; the task."""
        try:
            payload = self._request("POST", self._backend.path(endpoint), body=body, retry=False)
        except TransportError as lost:
            return self._recover(endpoint, body, lost)
        # From here on a task exists and may be billed: whatever fails must not lose its id.
        try:
            task = parse_submission(payload, endpoint)
            logger.info("Submitted Kling %s task %s", endpoint, task.task_id)
        except BaseException as exc:
            error = _failure_after_answer(endpoint, payload, exc)
            if error is exc:
                raise
            raise error from exc
        return task

    def _recover(self, endpoint: str, body: Mapping[str, Any], lost: TransportError) -> Task:
        """The task a POST without a usable answer created, found by its ``external_task_id``; else ``lost``.

        The POST may have created (and billed) a task whose id never arrived. Kling can be asked by the id
        the client chose, so the task is found instead of staying unknown, and is never submitted again.
        """
        external_id = body.get("external_task_id")
        if not isinstance(external_id, str) or self._backend.lookup_path(endpoint, external_id) is None:
            raise lost
        try:
            task = self.find_task(external_id, endpoint)
        except TaskNotFoundError:
            raise TransportError(
                f"{lost.message} Kling has no task with external_task_id {external_id!r} (yet), so none was "
                f"created; look again with find_task({external_id!r}, {endpoint!r}) before submitting again.",
                status_code=lost.status_code,
                request_id=lost.request_id,
            ) from lost
        except KlingError:
            raise lost from None
        logger.warning(
            "The %s submission got no answer (%s); found its task %s by external_task_id %s",
            endpoint, lost, task.task_id, external_id,
        )  # fmt: skip
        return task

    def find_task(self, external_task_id: str, endpoint: str = "text2video", *, retry: bool = True) -> Task:
        """Find a task by the ``external_task_id`` it was submitted with (Kling's own API only).

        With Kling keys every submission carries one (``task.raw["data"]["task_info"]``), chosen by the
        client unless given; a submission whose answer was lost is looked up this way automatically.

        Parameters
        ----------
        external_task_id : str
            The id chosen at submission.
        endpoint : str
            The endpoint it was submitted to.
        retry : bool
            As for `get_task`.

        Returns
        -------
        Task
            Its current state, as `get_task` returns it.

        Raises
        ------
        TaskNotFoundError
            No task of this account has that ``external_task_id``.
        KlingError
            The EZmodel gateway (code ``"not_supported"``): it cannot look tasks up this way.
        """
        if not isinstance(external_task_id, str) or not external_task_id.strip():
            raise ValueError("external_task_id must be a non-empty string")
        _check_endpoint(endpoint)
        path = self._backend.lookup_path(endpoint, external_task_id.strip())
        if path is None:
            raise KlingError(
                "The EZmodel gateway cannot look tasks up by external_task_id; use the task id it answered, "
                "or the ledger (client.ledger).",
                code="not_supported",
            )
        task = parse_task(self._request("GET", path, retry=retry))
        if task.external_task_id not in (None, external_task_id.strip()):
            # As in get_task: a mixed-up answer must not pass for the task asked about.
            raise TransportError(
                f"Kling answered about external_task_id {clean_text(task.external_task_id or '', 100)!r} "
                f"when asked about {external_task_id.strip()!r}; the answer was ignored."
            )
        return task

    def list_tasks(self, endpoint: str = "text2video", *, page: int = 1, page_size: int = 30) -> list[Task]:
        """One page of the account's tasks of ``endpoint``, newest first (Kling's own API only).

        Parameters
        ----------
        endpoint : str
            E.g. ``"text2video"`` or ``"image2video"``.
        page : int
            1 to 1000.
        page_size : int
            1 to 500. A page shorter than this is the last one.

        Returns
        -------
        list of Task
            Entries that are not tasks are skipped (and logged).

        Raises
        ------
        KlingError
            The EZmodel gateway has no task list (code ``"not_supported"``): its tasks are only in the
            ledger; or the request failed.
        """
        _check_endpoint(endpoint)
        for name, value, top in (("page", page, MAX_PAGE), ("page_size", page_size, MAX_PAGE_SIZE)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an integer from 1 to {top}, got {value!r}")
        path = self._backend.list_path(endpoint, page, page_size)
        if path is None:
            raise KlingError(
                "The EZmodel gateway has no task list: its tasks are those in the ledger (client.ledger, "
                "history()). Kling's own API keys (KLING_ACCESS_KEY, KLING_SECRET_KEY) can list an account.",
                code="not_supported",
            )
        items = self._request("GET", path, retry=True).get("data")
        if not isinstance(items, list):
            raise TransportError("Kling answered the task list without a list of tasks in data.")
        tasks = []
        for item in items:
            try:
                tasks.append(parse_task({"data": item}))
            except TransportError as exc:
                logger.warning("Skipped an entry of the %s task list: %s", endpoint, exc)
        return tasks

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
            Retry transient failures (429, 5xx, network) up to ``max_retries`` times with backoff. Each
            pause honours the gateway's ``Retry-After`` up to `MAX_RETRY_AFTER` (300 s), never longer.
            ``False`` sends exactly one request, for callers that schedule their own retries.

        Returns
        -------
        Task

        Raises
        ------
        TaskNotFoundError
            The id is unknown to this API key.
        TransportError
            No usable answer, including an answer about another task than ``task_id``.
        KlingError
            Any other failure (`AuthenticationError`, `RateLimitError`, ...).
        """
        segment = _task_id_segment(task_id)
        _check_endpoint(endpoint)
        payload = self._request("GET", self._backend.path(endpoint, segment), retry=retry)
        task = parse_task(payload, endpoint)
        asked = task_id.strip()
        if task.task_id != asked:
            # A mixed-up answer (a caching proxy, a shared connection) must not pass for this task's state.
            raise TransportError(
                f"The gateway answered about task {clean_text(task.task_id, 100)!r} when asked about "
                f"{asked!r}; the answer was ignored.",
                task_id=asked,
            )
        if self._ledger is not None:
            self._ledger.observe(task)  # memoized: an unchanged poll writes nothing
        return task

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
        """Save a task's video (or any video URL) to a file and return its path.

        The request goes to the video host with neither the API key nor any cookie the gateway set: the
        URL is signed, and neither may leak to a third party. The body is streamed into a temporary file
        next to the target; its first bytes must look like a video (MP4/MOV or WebM), or nothing is saved.
        A connection that drops midway is resumed with a Range request (a few times at most), and the file
        gets its final name only when complete, so an interrupted download never leaves a truncated video.

        Parameters
        ----------
        task_or_url : Task or str
            A finished task (its first video is saved) or a video URL.
        path : str or path-like, optional
            The file to write, or an existing directory to write into. Defaults to
            ``./<task id>.mp4`` for a task, or the URL's file name (shortened with a hash if too long).
        overwrite : bool
            Replace an existing file. By default an existing file is left alone and `FileExistsError`
            is raised: before anything is downloaded, and again at the end if the file appeared meanwhile.

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
            The video host answered with an error (a signed link expires after about 30 days), or with
            something that is not a video (code ``"not_a_video"``); `TransportError` if it could not be
            reached or kept dropping the connection.
        """
        url, default_name = _video_source(task_or_url)
        target = pathlib.Path(path) if path is not None else pathlib.Path(default_name)
        if target.is_dir():
            target = target / default_name
        target = target.absolute()
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        partial = target.with_name(f".{target.stem[:40]}.{secrets.token_hex(4)}.part")
        try:
            with open(partial, "xb") as out:
                self._fetch_video(url, out)
            publish(partial, target, overwrite=overwrite)
        finally:
            partial.unlink(missing_ok=True)
        logger.info("Saved %s", target)
        return target

    def _fetch_video(self, url: str, out: BinaryIO) -> None:
        """Stream ``url`` into ``out``; after a dropped connection, ask for the rest with a Range request.

        A server that answers a resume with the whole video (200) gets it written from the start again.
        """
        validator: str | None = None
        problem = ""
        for _ in range(_DOWNLOAD_ATTEMPTS):
            have = out.tell()
            if problem:
                logger.info("Downloading a video: %s; trying again from byte %d", problem, have)
            # Ranges count the bytes as stored, so ask for them unencoded.
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
                if validator:  # only resume the same version of the file
                    headers["If-Range"] = validator
            try:
                with self._open_video(url, headers) as response:
                    if response.status_code >= 300:
                        raise _download_failed(response.status_code)
                    resumed = response.status_code == 206 and _range_start(response) == have
                    if have and not resumed:  # the whole video again (200), or a range not asked for
                        out.seek(0)
                        out.truncate()
                    if response.status_code == 206 and not resumed:
                        problem = "the video host sent another byte range than asked for"
                        continue
                    chunks = response.iter_content(_CHUNK)
                    if out.tell() == 0:
                        validator = _validator(response)
                        _write_video_start(chunks, response.headers.get("Content-Type", ""), out)
                    for chunk in chunks:
                        out.write(chunk)
                    size = _full_size(response)
            except requests.RequestException as exc:
                problem = _without_userinfo(self._scrub(_describe_exception(exc)), url)
                continue
            if size is None or out.tell() >= size:
                return
            problem = f"the connection closed after {out.tell()} of {size} bytes"
        # Raised outside any except block: no __context__ keeps the request (and a URL's credentials).
        raise TransportError(
            f"Downloading the video failed after {_DOWNLOAD_ATTEMPTS} attempts: {problem}",
            code="download_failed",
        )

    def _open_video(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        """GET ``url`` through the session's connection pool but never its cookie jar.

        Cookies ignore ports, so a cookie the gateway set on a host would otherwise reach a video host on
        the same host name; the video host needs none (its URLs are signed). Redirects are followed here,
        each to an http(s) URL, with the same headers.
        """
        session = self._session
        for _ in range(_MAX_REDIRECTS + 1):
            request = requests.Request("GET", url, headers={**session.headers, **headers}).prepare()
            # What Session.request would add from the environment (proxies, CA bundle), minus its cookies.
            settings = session.merge_environment_settings(url, {}, True, session.verify, session.cert)
            verify = settings["verify"]
            response = session.get_adapter(url).send(
                request,
                stream=True,
                timeout=self._timeouts(),
                verify=True if verify is None else verify,
                cert=settings["cert"],
                proxies=settings["proxies"],
            )
            location = session.get_redirect_target(response)
            if location is None:
                return response
            response.close()
            url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
                raise KlingError(
                    "Downloading the video failed: the video host redirected to a URL that is not http(s).",
                    code="download_failed",
                )
        raise KlingError(
            f"Downloading the video failed: more than {_MAX_REDIRECTS} redirects.", code="download_failed"
        )

    # -- the account ------------------------------------------------------------------------------

    def balance(self) -> Balance | None:
        """What the API key has left, from the gateway's OpenAI-compatible billing endpoints.

        Two GETs (``/v1/dashboard/billing/subscription`` and ``…/usage``), each sent once: a balance is
        worth showing only when it is fresh, and the caller can simply ask again.

        Returns
        -------
        Balance or None
            None when the gateway does not answer these endpoints (no such route, an error object in a
            200 answer, or another shape), so a caller can hide the balance rather than fail.

        Raises
        ------
        AuthenticationError
            The key was rejected (401).
        KlingError
            The gateway could not be asked now: network trouble, a rate limit (429) or a server error.
        """
        answers = []
        for path in (SUBSCRIPTION_PATH, USAGE_PATH):
            try:
                answers.append(self._request("GET", path, retry=False))
            except KlingError as exc:
                status = exc.status_code
                if status is None or status in (401, 408, 429) or status >= 500:
                    raise
                return None  # 404 and the like: this gateway has no billing endpoints
        return parse_balance(*answers)

    # -- HTTP -------------------------------------------------------------------------------------

    def _timeouts(self) -> tuple[float, float]:
        return (min(CONNECT_TIMEOUT, self.timeout), self.timeout)

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
        headers = {
            "Authorization": self._backend.authorization(),
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": self._user_agent,
        }
        # Only a POST has a body; a JSON Content-Type on an empty GET confuses the gateway (§5).
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        answer = self._http.request(method, path, headers=headers, body=data)
        logger.debug("%s %s -> HTTP %d", method, path, answer.status)
        return self._decode(answer)

    def _decode(self, answer: Answer) -> dict[str, Any]:
        """The JSON object of a 2xx answer; otherwise raise the matching `KlingError`."""
        status = answer.status
        payload, problem = _json_object(answer.body, answer.headers.get("Content-Type") or "")
        if 200 <= status < 300 and payload is not None:
            return self._backend.checked(payload)
        request_id = clean_text(answer.headers.get(_REQUEST_ID_HEADER) or "", 100) or None
        if 300 <= status < 400:
            # Never followed: the Authorization header must not reach another host.
            location = clean_text(strip_credentials(answer.headers.get("Location") or "nowhere"), 200)
            raise TransportError(
                f"{self._base_url} redirected to {location} (HTTP {status}); redirects are not followed, "
                "so the key never reaches another host. "
                f"Set {self._backend.base_url_env} to the final address.",
                status_code=status,
                request_id=request_id,
                retryable=False,
            )
        if status >= 400 and (payload is not None or status == 429):
            # The memory-mode rate limiter answers 429 with an empty body (§8.2): still a rate limit.
            raise self._backend.error(
                status,
                payload,
                request_id=request_id,
                retry_after=_parse_retry_after(answer.headers.get("Retry-After")),
            )
        if 400 <= status < 500 and status != 408:
            # A wrong base URL answers its own 404 page; asking again would only repeat it.
            raise TransportError(
                f"{self._base_url} answered with {problem} (HTTP {status}), not the gateway's JSON. "
                f"Check {self._backend.base_url_env} (or base_url=): it should be the service's address, "
                f"such as {self._backend.default_base_url}.",
                status_code=status,
                request_id=request_id,
                retryable=False,
            )
        hint = "probably a proxy in front of the gateway" if status >= 500 else "check the base URL"
        raise TransportError(
            f"{self._base_url} answered with {problem} (HTTP {status}) — {hint}",
            status_code=status,
            request_id=request_id,
        )

    def _scrub(self, text: str) -> str:
        """Remove the key from text that came from elsewhere (an exception message), just in case."""
        return self._backend.scrub(text)


# -- helpers (pure) -------------------------------------------------------------------------------


def _ledger_of(ledger: Ledger | str | os.PathLike[str] | bool | None) -> Ledger | None:
    """The ledger a client records to (None for ``ledger=False``); one per file per process."""
    if ledger is False:
        return None
    if isinstance(ledger, Ledger):
        return ledger
    return shared_ledger(None if ledger is None or ledger is True else ledger)


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(sorted(ENDPOINTS))}")


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
            reason = f": {clean_text(task_or_url.fail_reason)}" if task_or_url.fail_reason else ""
            raise ValueError(
                f"Task {task_or_url.task_id} has no video (status {task_or_url.status.value}{reason}); "
                "wait for it to succeed first"
            )
        stem = task_or_url.task_id
    else:
        url = task_or_url.strip()
        stem = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        shown = clean_text(strip_credentials(url), 80)
        raise ValueError(f"only http(s) video URLs can be downloaded, got {shown!r}")
    return url, file_name(stem)


def _failure_after_answer(endpoint: str, payload: Mapping[str, Any], exc: BaseException) -> BaseException:
    """What to raise when handling a submission's answer failed: an error that carries the task's id."""
    task_id = _answered_task_id(payload)
    with contextlib.suppress(Exception):  # a broken log handler must not replace this error
        logger.warning(
            "The gateway answered the %s submission (task id %s; it may be billed), but handling "
            "the answer failed: %s", endpoint, task_id or "not visible", clean_text(str(exc), 300),
        )  # fmt: skip
    if task_id is None or not isinstance(exc, Exception):  # KeyboardInterrupt stays itself
        return exc
    if isinstance(exc, KlingError):
        exc.task_id = exc.task_id or task_id
        return exc
    return KlingError(
        f"Kling {endpoint} task {task_id} was created (it may be billed), but handling the "
        f"gateway's answer failed: {clean_text(str(exc), 300)}",
        task_id=task_id,
    )


def _answered_task_id(payload: Mapping[str, Any]) -> str | None:
    """The task id a submission answer shows, looked for leniently, or None.

    In the order of docs/gateway.md, "Submit answer".
    """
    data = payload.get("data")
    nested = data.get("task_id") if isinstance(data, Mapping) else None
    for value in (payload.get("task_id"), payload.get("id"), nested):
        if isinstance(value, str) and value.strip():
            return clean_text(value.strip(), 100)
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 128:
            return str(value)
    return None


def _download_failed(status: int) -> KlingError:
    return KlingError(
        f"Downloading the video failed: the video host answered HTTP {status}. "
        "Signed video links expire (Kling deletes videos after 30 days).",
        status_code=status,
        code="download_failed",
    )


def _write_video_start(chunks: Iterator[bytes], content_type: str, out: BinaryIO) -> None:
    """Write the body's first bytes to ``out`` only if they start like a video; else raise ``not_a_video``."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if video_kind(head) is None:
        raise KlingError(
            f"Downloading the video failed: the video host sent {not_a_video(head, content_type)} "
            "instead of a video. The link may have expired, or lead to a page rather than a file.",
            code="not_a_video",
        )
    out.write(head)


def _range_start(response: requests.Response) -> int | None:
    """Where the body of a 206 starts, per its ``Content-Range``; None if not said."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _full_size(response: requests.Response) -> int | None:
    """The whole video's size in bytes, if the answer says."""
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        return int(match.group(2)) if match and match.group(2) != "*" else None
    length = response.headers.get("Content-Length", "").strip()
    return int(length) if length.isdigit() else None


def _validator(response: requests.Response) -> str | None:
    """What an ``If-Range`` may carry to resume this very file: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range only takes a strong ETag
        return etag
    return response.headers.get("Last-Modified")


def _without_userinfo(text: str, url: str) -> str:
    """``text`` without the ``user:password`` of ``url``, should an error message quote it."""
    parts = urllib.parse.urlsplit(url)
    for secret in (parts.netloc.rpartition("@")[0], parts.password):
        if secret:
            text = text.replace(secret, "***")
    return text


def _json_object(content: bytes, content_type: str) -> tuple[dict[str, Any] | None, str]:
    """(the decoded JSON object, "") or (None, a description of what came back instead)."""
    if not content.strip():
        return None, "an empty body"
    if "html" in content_type.lower() or content.lstrip().startswith(b"<"):
        return None, "an HTML page"
    try:
        payload = json.loads(content)
    except RecursionError:
        return None, f"JSON nested too deeply to read ({len(content)} bytes)"
    except ValueError:  # also a number of thousands of digits (Python's int conversion limit)
        return None, f"malformed JSON ({len(content)} bytes)"
    if not isinstance(payload, dict):
        return None, f"a JSON {type(payload).__name__} instead of an object"
    return payload, ""


def _retry_after_of(error: KlingError) -> float | None:
    return error.retry_after if isinstance(error, RateLimitError) else None


def _parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait per a ``Retry-After`` header (delta-seconds or an HTTP-date); None if absent or bad.

    Never raises, and never more than `MAX_RETRY_AFTER`: ``1e10`` or a date in year 9999 would otherwise
    block a retry for centuries (or overflow ``time.sleep``).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # an HTTP-date is always GMT
                when = when.replace(tzinfo=timezone.utc)
            seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def _describe_exception(exc: requests.RequestException) -> str:
    """A one-line description of a requests exception, naming the underlying cause."""
    wrapped = exc.args[0] if exc.args else exc
    # urllib3's MaxRetryError hides the cause ("Connection refused", "Failed to resolve …") in .reason.
    return str(getattr(wrapped, "reason", None) or wrapped) or type(exc).__name__
