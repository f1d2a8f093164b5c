"""`Studio`: a form to try Kling prompts, models and images in a cell (or as a Voila app), its tasks below.

The form's choices come from the model catalogue (`kling_widgets._catalogue`), the very table the client
checks every submission against, so the form cannot offer what the client would refuse. Generate sends one
POST per click: the button is disabled until the answer is in, and the POST runs on a daemon thread so the
kernel stays free; what the answer changes on screen (a card, an inline refusal, the balance line) is
written through `kling_widgets._frontend.deliver`, the one path widget updates from other threads take
(docs/architecture.md, "Threading rules"). Each card is a `TaskStatusWidget` on the same client and the
one shared engine, with "Again", "Show code", "Extend" and "Lip-sync" (docs/studio.md).
"""

from __future__ import annotations

import base64
import html
import logging
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeAlias

import ipywidgets

from ._base import KlingWidget, WatchOptions, shared_layout, shared_style
from ._billing import Balance
from ._catalogue import ROUTES, ModelSpec, model_spec, models_for
from ._client import KlingClient
from ._errors import KlingError, PermissionDeniedError, RateLimitError
from ._extend import REARM_SECONDS, Extension, extendable, script
from ._frontend import deliver, detect
from ._models import Task
from ._params import MAX_IMAGE_BYTES, MAX_PROMPT_CHARS
from ._text import clean_text, strip_credentials
from ._widget import TaskStatusWidget

__all__ = [
    "FORM_ROUTES",
    "MAX_IMAGE_RATIO",
    "MIN_IMAGE_PIXELS",
    "Image",
    "LipSync",
    "Studio",
    "Submission",
    "image_problem",
    "reference_urls",
    "shot_lines",
    "studio",
]

_log = logging.getLogger(__name__)

#: Kling's limits on an input image besides its 10 MB (docs/studio.md, "Images").
MIN_IMAGE_PIXELS = 300
MAX_IMAGE_RATIO = 2.5
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_THUMB = {"width": "96px", "max_height": "96px", "object_fit": "contain"}
_HIDDEN = {"display": "none"}
_FULL = {"width": "100%"}
_ROW = {"display": "flex", "flex_flow": "row wrap", "align_items": "center", "grid_gap": "4px 12px"}
_COLUMN = {"display": "flex", "flex_flow": "column", "grid_gap": "6px"}
_PICK = {"width": "auto", "min_width": "150px"}
_AUTO = {"width": "auto"}
_WIDE = {"width": "auto", "min_width": "360px"}
_ERROR_STYLE = "color: var(--jp-error-color1, #d32f2f)"


# -- images (pure) ----------------------------------------------------------------------------------


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG's or a JPEG's header bytes, or None if there is none to read."""
    if data.startswith(_PNG) and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(_JPEG):
        return None
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD8 or marker == 0x01:  # fill byte or a marker without length
            at += 1 if marker == 0xFF else 2
            continue
        # A start-of-frame segment (SOF0-SOF15, minus DHT, JPG and DAC) holds the size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def image_problem(data: bytes) -> str | None:
    """Why Kling would refuse this image (as the end of a sentence starting with its name), or None.

    Checked: the type by its first bytes (JPEG or PNG), at most 10 MB, at least 300 px on each side, and an
    aspect ratio between 1:2.5 and 2.5:1 (docs/studio.md, "Images").
    """
    if len(data) > MAX_IMAGE_BYTES:
        return f"is {len(data) / 2**20:.1f} MB; Kling accepts images up to 10 MB"
    if not data.startswith((_PNG, _JPEG)):
        return "is not a JPEG or PNG image (Kling accepts only those)"
    size = image_dimensions(data)
    if size is None or 0 in size:
        return "has no readable width and height (a damaged file?)"
    width, height = size
    if min(size) < MIN_IMAGE_PIXELS:
        return f"is {width}×{height} px; Kling needs at least {MIN_IMAGE_PIXELS} px on each side"
    if max(width / height, height / width) > MAX_IMAGE_RATIO:
        return f"is {width}×{height} px; Kling needs an aspect ratio between 1:2.5 and 2.5:1"
    return None


@dataclass(frozen=True)
class Image:
    """An image chosen in the form: an http(s) URL, or the bytes of an uploaded file and its name."""

    url: str = ""
    data: bytes = b""
    name: str = ""

    def field(self) -> str:
        """What the client sends: the URL, or the upload as base64 (never shown, never in code)."""
        return self.url or base64.b64encode(self.data).decode("ascii")

    def code(self) -> str:
        """How `Show code` names it: the URL, or a path named like the uploaded file (a placeholder)."""
        if self.url:
            return self.url
        suffix = ".png" if self.data.startswith(_PNG) else ".jpg"
        stem = self.name.replace("\\", "/").rsplit("/", 1)[-1]
        return stem if stem.lower().endswith((".png", ".jpg", ".jpeg")) else f"image{suffix}"


# -- one submission (pure) ---------------------------------------------------------------------------


#: A client call: the `KlingClient` method, its positional and its keyword arguments.
_Call: TypeAlias = "tuple[Callable[..., Task], list[Any], dict[str, Any]]"


def _sent(value: Any) -> Any:
    """An argument as the client takes it: each image (alone or in a list) as `Image.field`."""
    if isinstance(value, list):
        return [_sent(item) for item in value]
    return value.field() if isinstance(value, Image) else value


def _shown(value: Any) -> Any:
    """An argument as `Show code` writes it: each image as `Image.code`, URLs without credentials."""
    if isinstance(value, list):
        return [_shown(item) for item in value]
    if isinstance(value, Image):
        value = value.code()
    return strip_credentials(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Submission:
    """Everything one Generate click sends: the route and the client call's arguments."""

    prompt: str
    model_name: str
    duration: str | None  # None on the routes without one (motion-control, avatar)
    aspect_ratio: str | None
    mode: str
    negative_prompt: str | None = None
    sound: str | None = None
    cfg_scale: float | None = None
    image: Image | None = None
    image_tail: Image | None = None
    reference_images: tuple[str, ...] = ()
    route: str = "text2video"
    shots: tuple[tuple[str, str], ...] = ()  # (seconds, prompt): multi-shot replaces prompt and duration
    audio: str | None = None  # avatar's voice: an http(s) URL or a local .mp3/.wav/.m4a/.aac path, as typed
    motion_video: str | None = None  # motion-control: the URL of the video whose motion is copied
    facing: str | None = None  # motion-control's character_orientation: "image" or "video"
    keep_sound: str | None = None  # motion-control's keep_original_sound: "yes" or "no"

    def options(self) -> dict[str, Any]:
        """The keyword arguments after the prompt, as sent (options left at None are not)."""
        names = ("model_name", "duration", "aspect_ratio", "mode", "negative_prompt", "sound", "cfg_scale")
        sent = [
            name
            for name in names
            if getattr(self, name) is not None and not (self.shots and name == "duration")
        ]
        return {name: getattr(self, name) for name in sent}

    def _shot_list(self) -> list[dict[str, str]] | None:
        return [{"prompt": prompt, "duration": seconds} for seconds, prompt in self.shots] or None

    @property
    def images(self) -> tuple[Image, ...]:
        """multi-image2video's images: the start image, if any, then the reference URLs."""
        start = () if self.image is None else (self.image,)
        return start + tuple(Image(url=url) for url in self.reference_images)

    def _call(self) -> _Call:
        """The client method, its positional and its keyword arguments, images as `Image`, keywords at
        None or empty left out: `send` and `code` both read it, so the code shown makes the call sent."""
        options, image, prompt = self.options(), self.image, self.prompt
        call: _Call
        match self.route:
            case "multi-image2video":  # the images are one list, the first argument
                call = KlingClient.multi_image2video, [list(self.images), prompt], options
            case "omni-video":  # shots replace the prompt; the start image is the first frame
                call = KlingClient.omni_video, [] if self.shots else [prompt], {
                    "shots": self._shot_list(), **options, "start_frame": image,
                    "end_frame": self.image_tail, "reference_images": list(self.reference_images),
                }  # fmt: skip
            case "motion-control":
                call = KlingClient.motion_control, [image, self.motion_video, prompt], {
                    "character_orientation": self.facing, "mode": self.mode,
                    "keep_original_sound": self.keep_sound,
                }  # fmt: skip
            case "avatar/image2video":  # the prompt is optional here
                optional = prompt if prompt.strip() else None
                call = KlingClient.avatar_image2video, [image], {
                    "audio": self.audio, "prompt": optional, "mode": self.mode
                }  # fmt: skip
            case _ if image is None:
                call = KlingClient.text2video, [prompt], options
            case _:
                call = KlingClient.image2video, [image, prompt], {**options, "image_tail": self.image_tail}
        kept = {name: value for name, value in call[2].items() if value not in (None, [])}
        return call[0], call[1], kept

    def send(self, client: KlingClient) -> Task:
        """Submit it (one POST; the client checks every option first)."""
        method, arguments, keywords = self._call()
        return method(
            client, *map(_sent, arguments), **{name: _sent(value) for name, value in keywords.items()}
        )

    def code(self) -> str:
        """The Python that makes the same task, to move from clicking to a script."""
        method, arguments, keywords = self._call()
        shown = [repr(_shown(value)) for value in arguments]
        shown += [f"{name}={_shown(value)!r}" for name, value in keywords.items()]
        uploads = [image for image in (self.image, self.image_tail) if image is not None and not image.url]
        note = (
            "# Put the uploaded image(s) next to this notebook, or use an http(s) URL.\n" if uploads else ""
        )
        return script(note, method.__name__, self.route, shown)

    @property
    def caption(self) -> str:
        """The card's heading: the prompt, the shots' prompts, or what the avatar speaks."""
        if self.shots:
            return " / ".join(prompt for _, prompt in self.shots)
        if self.prompt.strip() or self.audio is None:
            return self.prompt
        return f"Avatar: {strip_credentials(self.audio)}"


@dataclass(frozen=True)
class LipSync:
    """What "Lip-sync" on a finished card sends: identify-face on the first video of ``source``, then an
    advanced-lip-sync task in which its first face speaks ``audio`` from ``start_ms`` to ``end_ms``."""

    source: Task
    audio: str  # an http(s) URL or a local .mp3/.wav/.m4a/.aac path, as typed
    start_ms: int
    end_ms: int
    route: ClassVar[str] = "advanced-lip-sync"

    def send(self, client: KlingClient) -> Task:
        """Submit it (identify-face, then one POST; the client checks the audio and the times first)."""
        return client.lip_sync(
            self.source, audio=self.audio, sound_start_time=self.start_ms, sound_end_time=self.end_ms
        )

    def code(self) -> str:
        """The same call with the video's id, so the code does not need the task object."""
        video = self.source.videos[0].id if self.source.videos else None
        arguments = [repr(video), f"audio={strip_credentials(self.audio)!r}"]
        arguments += [f"sound_start_time={self.start_ms}"] if self.start_ms else []
        arguments.append(f"sound_end_time={self.end_ms}")
        note = f"# The first video of task {self.source.task_id}; its first face speaks.\n"
        return script(note, "lip_sync", self.route, arguments)

    @property
    def caption(self) -> str:
        """The card's heading: whose video speaks, and what."""
        return f"Lip-sync of {self.source.task_id}: {strip_credentials(self.audio)}"


#: What one click submits: the form, a card's video extended, or a card's video lip-synced.
_Action: TypeAlias = "Submission | Extension | LipSync"

#: The routes the form can build from its fields, in the catalogue's order: all but the two that start
#: from a done card (its Extend and Lip-sync buttons).
FORM_ROUTES = tuple(route for route in ROUTES if route not in ("video-extend", "advanced-lip-sync"))

#: The routes that take an image and fields of their own, none of the video options (negative prompt,
#: seconds, aspect ratio): the form hides those.
_IMAGE_ROUTES = ("motion-control", "avatar/image2video")
#: What the start image is on the routes that need one, for the refusal when it is missing.
_START_IMAGE = {
    "image2video": "a start image",
    "motion-control": "a start image (the character who moves)",
    "avatar/image2video": "a start image (the face that speaks)",
}
_NEEDS_AUDIO = "needs an audio: an https URL or a local .mp3/.wav/.m4a/.aac file. Nothing was sent."
_PROMPT_HINT = {
    "motion-control": "What to add to the scene or the camera (required)",
    "avatar/image2video": "The avatar's actions, emotions, camera moves (optional)",
}


def _web_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (one Kling can fetch; the studio fetches none)."""
    return urllib.parse.urlsplit(text).scheme.lower() in ("http", "https")


def reference_urls(text: str) -> tuple[str, ...]:
    """The image URLs typed in the reference field (separated by spaces, commas or new lines).

    Raises
    ------
    ValueError
        One is not an http(s) URL (the message starts with ``reference_images``, the option's name).
    """
    urls = tuple(text.replace(",", " ").split())
    for url in urls:
        if not _web_url(url):
            raise ValueError(f"reference_images: {clean_text(url, 80)!r} is not an http(s) URL")
    return urls


def shot_lines(text: str) -> tuple[tuple[str, str], ...]:
    """The shots typed in the multi-shot field: one per line, ``seconds | prompt``.

    Raises
    ------
    ValueError
        A line has another shape (the message starts with ``shots``, the option's name). The client
        checks the rest: 2 to 6 shots, each at least 3 s, together a duration the model takes.
    """
    shots = []
    for number, line in enumerate(filter(str.strip, text.splitlines()), 1):
        seconds, bar, prompt = line.partition("|")
        if not bar or not seconds.strip().isdigit() or not prompt.strip():
            raise ValueError(f"shots: line {number} is not 'seconds | prompt' (e.g. '4 | a door opens')")
        shots.append((seconds.strip(), prompt.strip()))
    return tuple(shots)


def _choices(model: str, route: str) -> ModelSpec:
    """What the form offers for ``model`` on ``route``: the catalogue's entry (the route's first model's
    when the route does not take ``model``)."""
    models = models_for(route)
    return model_spec(model if model in models else models[0], route)


def _offer(dropdown: Any, values: tuple[str, ...]) -> None:
    """Offer ``values``, keeping the current choice when it is one of them, else the first (ipywidgets itself
    would select the first whenever the options change)."""
    keep = dropdown.value if dropdown.value in values else (values[0] if values else None)
    if tuple(dropdown.options) != values:
        dropdown.options = values
    if dropdown.value != keep:
        dropdown.value = keep


def _field_of(exc: BaseException) -> str:
    """The form field a refusal concerns, by the option its message names first."""
    if isinstance(exc, FileNotFoundError):  # the one local path the form sends is the Audio field's
        return "audio"
    message = str(exc)
    for field in (
        "negative_prompt",
        "prompt",
        "image_tail",
        "image",
        "start_frame",
        "end_frame",
        "reference",
        "shots",
        "video",
        "audio",
    ):
        if message.startswith(field):
            return field
    return "generate"


def _refusal_text(exc: BaseException) -> str:
    """What to say inline about a refusal: the fix first for the parallel limit and an empty balance."""
    if isinstance(exc, RateLimitError):
        return (
            "The account's parallel-task limit is reached, or the gateway is busy (429): wait for a running "
            "task to finish, then Generate again. Nothing was created."
        )
    if isinstance(exc, PermissionDeniedError) and (exc.code == "quota_not_enough" or "quota" in str(exc)):
        return "No quota left (403): top up the key's balance, then Generate again. Nothing was created."
    return clean_text(str(exc))


def _card_button(description: str, tooltip: str, disabled: bool = False) -> ipywidgets.Button:
    """A card's button, on the shared layout and style: per card, only the button itself is a new model."""
    return ipywidgets.Button(
        description=description, tooltip=tooltip, disabled=disabled, layout=shared_layout(**_AUTO),
        style=shared_style(ipywidgets.widgets.widget_button.ButtonStyle),
    )  # fmt: skip


# -- the widget -----------------------------------------------------------------------------------------


class _ImageSlot:
    """One image input of the form: an upload or a URL, a thumbnail, a Remove button and an error line."""

    def __init__(self, label: str, on_change: Callable[[], None]) -> None:
        self.image: Image | None = None
        self._on_change = on_change
        self.upload = ipywidgets.FileUpload(
            accept=".png,.jpg,.jpeg,image/png,image/jpeg", multiple=False, description=label,
            layout=shared_layout(**_AUTO), style=shared_style(ipywidgets.widgets.widget_button.ButtonStyle),
        )  # fmt: skip
        self.url = ipywidgets.Text(
            placeholder="or an image URL (https://…)", continuous_update=False, layout=shared_layout(**_PICK)
        )
        self.thumbnail = ipywidgets.Image(format="png", layout=shared_layout(**_HIDDEN))
        self.remove = ipywidgets.Button(description="Remove", layout=shared_layout(**_HIDDEN))
        self.error = ipywidgets.HTML("", layout=shared_layout(**_HIDDEN))
        self.row = ipywidgets.Box(
            [self.upload, self.url, self.thumbnail, self.remove, self.error], layout=shared_layout(**_ROW)
        )
        self.upload.observe(self._uploaded, "value")
        self.url.observe(self._typed, "value")
        self.remove.on_click(lambda _button: self._set(None))

    @property
    def models(self) -> tuple[Any, ...]:
        return (self.upload, self.url, self.thumbnail, self.remove, self.error, self.row)

    def show_error(self, message: str) -> None:
        self.error.value = f'<span style="{_ERROR_STYLE}">{html.escape(message)}</span>' if message else ""
        self.error.layout = shared_layout(**({} if message else _HIDDEN))

    def _uploaded(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            return
        upload = change["new"][0]
        data, name = bytes(upload["content"]), str(upload.get("name", ""))
        problem = image_problem(data)
        if problem is not None:
            self._set(None)
            self.show_error(f"{clean_text(name, 80) or 'The file'} {problem}.")
            return
        self._set(Image(data=data, name=name))

    def _typed(self, change: dict[str, Any]) -> None:
        text = change["new"].strip()
        if not text:
            if self.image is not None and self.image.url:
                self._set(None)
            return
        if not _web_url(text):
            self.show_error("An image URL must start with http:// or https://.")
            return
        self._set(Image(url=text))

    def _set(self, image: Image | None) -> None:
        self.image = image
        self.show_error("")
        if image is None or image.url:
            self.upload.value = ()
        if image is None or not image.url:
            self.url.value = ""
        if image is None:
            self.thumbnail.value = b""
        elif image.url:
            self.thumbnail.format, self.thumbnail.value = "url", image.url.encode()
        else:
            self.thumbnail.format = "png" if image.data.startswith(_PNG) else "jpeg"
            self.thumbnail.value = image.data
        self.thumbnail.layout = shared_layout(**(_HIDDEN if image is None else _THUMB))
        self.remove.layout = shared_layout(**(_HIDDEN if image is None else _AUTO))
        self._on_change()


class Studio(KlingWidget):
    """A form to create Kling tasks, with a card per task below it (newest first) and the key's balance.

    Parameters
    ----------
    client : KlingClient, optional
        The client to submit and poll with. By default the studio builds one from ``api_key`` and
        ``base_url`` (falling back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``) and closes it in `close`.
    api_key, base_url : str, optional
        For the studio's own client; not allowed together with ``client``.
    poll_interval, max_poll_interval, timeout : float
        How each card watches its task (as for `TaskStatusWidget`).

    Attributes
    ----------
    cards : tuple of TaskStatusWidget
        The tasks this studio created, newest first.

    Notes
    -----
    One submission at a time: while a POST is in flight, Generate, "Again", "Extend" and "Lip-sync" are
    disabled and a click does nothing, so a double click bills once. A refusal (blank prompt, a bad image,
    the parallel limit, no quota) shows next to the field it concerns and creates no card.
    """

    def __init__(
        self,
        client: KlingClient | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = 5.0,
        timeout: float | None = 900.0,
    ) -> None:
        self._cards: list[TaskStatusWidget] = []  # before anything can fail: close() reads it
        self._again: list[ipywidgets.Button] = []
        self._video_actions: list[tuple[ipywidgets.Button, TaskStatusWidget]] = []  # Extend, Lip-sync
        self._sending = False
        self._refreshing = False
        self._options = WatchOptions(None, poll_interval, max_poll_interval, timeout)  # a card: its route
        super().__init__(client, api_key, base_url, False, layout=shared_layout(**_COLUMN))
        self._frontend = detect()  # on the cell's thread: the running cell tells VS Code apart
        host = clean_text(urllib.parse.urlsplit(strip_credentials(self._client.base_url)).netloc, 80)
        self._title = ipywidgets.HTML(f"<b>Kling studio</b> · {html.escape(host)}")
        self._prompt = ipywidgets.Textarea(rows=3, layout=shared_layout(**_FULL))  # _refresh: the hint
        self._count = ipywidgets.HTML()
        self._prompt_error = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        self._negative = ipywidgets.Textarea(
            placeholder="What to avoid (optional)", rows=1, layout=shared_layout(**_FULL)
        )
        self._negative_error = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        style = shared_style(
            ipywidgets.widgets.widget_description.DescriptionStyle, description_width="initial"
        )
        pick = {"layout": shared_layout(**_PICK), "style": style}
        self._route = ipywidgets.Dropdown(description="Route", options=FORM_ROUTES, **pick)
        self._model = ipywidgets.Dropdown(description="Model", options=models_for("text2video"), **pick)
        self._duration = ipywidgets.Dropdown(description="Seconds", **pick)
        self._aspect = ipywidgets.Dropdown(description="Aspect ratio", **pick)
        self._mode = ipywidgets.Dropdown(description="Mode", **pick)
        self._sound = ipywidgets.Checkbox(description="Sound", indent=False, layout=shared_layout(**_HIDDEN))
        self._cfg = ipywidgets.FloatSlider(
            0.5, min=0.0, max=1.0, step=0.05, description="cfg_scale", layout=shared_layout(**_HIDDEN)
        )
        self._start = _ImageSlot("Start image", self._image_changed)
        self._end = _ImageSlot("End image", self._refresh)
        self._shots = ipywidgets.Textarea(
            placeholder="Multi-shot (optional): one shot per line, 'seconds | prompt'; 2 to 6 shots, each "
            "3 s or more. Shots replace the prompt and Seconds.",
            rows=2, layout=shared_layout(**_HIDDEN),
        )  # fmt: skip
        self._references = ipywidgets.Textarea(rows=1, layout=shared_layout(**_HIDDEN))  # _refresh says what
        self._omni_error = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        text_style = shared_style(ipywidgets.widgets.widget_string.TextStyle, description_width="initial")
        self._motion_video = ipywidgets.Text(
            description="Motion video", placeholder="the motion to copy: an https URL of an .mp4/.mov",
            layout=shared_layout(**_WIDE), style=text_style,
        )  # fmt: skip
        self._facing = ipywidgets.Dropdown(
            description="Facing", options=("image", "video"), tooltip="The character faces as in the image, "
            "or as in the video (billed for up to 10 s or 30 s of it)", **pick,
        )  # fmt: skip
        self._keep_sound = ipywidgets.Checkbox(
            True, description="Keep the video's sound", indent=False, layout=shared_layout(**_AUTO)
        )
        self._motion_error = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        self._motion = ipywidgets.Box(  # motion-control's own fields: _refresh shows them on that route
            [self._motion_video, self._facing, self._keep_sound, self._motion_error],
            layout=shared_layout(**_HIDDEN),
        )
        self._audio = ipywidgets.Text(
            description="Audio", layout=shared_layout(**_WIDE), style=text_style
        )  # _refresh says what for
        seconds = {"min": 0.0, "max": 3600.0, "step": 0.1, **pick}
        self._audio_from = ipywidgets.BoundedFloatText(0.0, description="from (s)", **seconds)
        self._audio_to = ipywidgets.BoundedFloatText(5.0, description="to (s)", **seconds)
        self._audio_error = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        self._generate = ipywidgets.Button(
            description="Generate", button_style="primary", tooltip="Submit one task (it may be billed)"
        )
        self._generate_error = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        self._balance = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        self._list = ipywidgets.Box(layout=shared_layout(**_COLUMN))
        choices = ipywidgets.Box(
            [self._route, self._model, self._duration, self._aspect, self._mode, self._sound, self._cfg],
            layout=shared_layout(**_ROW),
        )
        actions = ipywidgets.Box([self._generate, self._generate_error], layout=shared_layout(**_ROW))
        audio = ipywidgets.Box(
            [self._audio, self._audio_from, self._audio_to, self._audio_error], layout=shared_layout(**_ROW)
        )
        parts = [
            self._title, self._prompt, self._count, self._prompt_error, self._negative,
            self._negative_error, choices, self._start.row, self._end.row, self._motion, self._shots,
            self._references, self._omni_error, audio, actions, self._balance, self._list,
        ]  # fmt: skip
        self.own(
            *parts, self._route, self._model, self._duration, self._aspect, self._mode, self._sound,
            self._cfg, self._motion_video, self._facing, self._keep_sound, self._motion_error, self._audio,
            self._audio_from, self._audio_to, self._audio_error, self._generate, self._generate_error,
            *self._start.models, *self._end.models,
        )  # fmt: skip
        self.children = tuple(parts)
        self._prompt.observe(self._counted, "value")
        self._model.observe(lambda _change: self._refresh(), "value")
        self._route.observe(lambda _change: self._refresh(), "value")
        self._generate.on_click(lambda _button: self.generate())
        self._counted()
        self._refresh()
        self.register()
        threading.Thread(target=self._show_balance, name="kling-studio-balance", daemon=True).start()

    # -- reading the form (the cell's thread) -------------------------------------------------------

    @property
    def cards(self) -> tuple[TaskStatusWidget, ...]:
        """The tasks this studio created, newest first."""
        return tuple(self._cards)

    @property
    def route(self) -> str:
        """The chosen route (`FORM_ROUTES`); choosing a start image on text2video makes it image2video."""
        return str(self._route.value)

    def _image_changed(self) -> None:
        if self.route in ("text2video", "image2video"):  # omni-video takes the image as its first frame
            self._route.value = "text2video" if self._start.image is None else "image2video"
        self._refresh()

    def _spec(self) -> ModelSpec:
        return _choices(self._model.value or "", self.route)

    def _counted(self, _change: object = None) -> None:
        count = len(self._prompt.value)
        style = f' style="{_ERROR_STYLE}"' if count > MAX_PROMPT_CHARS else ""
        self._count.value = f"<small{style}>{count:,} / {MAX_PROMPT_CHARS:,} characters</small>"
        if self._prompt.value.strip():
            self._show(self._prompt_error, "")

    def _refresh(self) -> None:
        """Offer what the chosen model takes on the current route, keeping every value that still fits."""
        if self._refreshing:  # the model's own observer, while this sets the model
            return
        self._refreshing = True
        try:
            _offer(self._model, models_for(self.route))
            spec = self._spec()
            # kling-video-o1 takes 3-10 s only with a first frame, else 5 or 10 (docs/models.md).
            framed = self._start.image is not None
            durations = spec.plain_durations if spec.plain_durations and not framed else spec.durations
            for dropdown, values in (
                (self._duration, durations), (self._aspect, spec.aspect_ratios), (self._mode, spec.modes)
            ):  # fmt: skip
                if values:  # a route without the option hides it, its choice kept for the next route
                    _offer(dropdown, values)
                dropdown.layout = shared_layout(**(_PICK if values else _HIDDEN))
        finally:
            self._refreshing = False
        self._negative.layout = shared_layout(**(_HIDDEN if self.route in _IMAGE_ROUTES else _FULL))
        self._motion.layout = shared_layout(**(_ROW if self.route == "motion-control" else _HIDDEN))
        self._prompt.placeholder = _PROMPT_HINT.get(self.route, "What should the video show? (required)")
        self._audio.placeholder = (
            "the avatar's voice (required): an https URL or a .mp3/.wav/.m4a/.aac path; also for Lip-sync"
            if self.route == "avatar/image2video"
            else "for Lip-sync on a done card: an https URL or a .mp3/.wav/.m4a/.aac path"
        )
        self._sound.layout = shared_layout(**(_AUTO if spec.sound else _HIDDEN))
        self._cfg.layout = shared_layout(**(_PICK if spec.cfg_scale else _HIDDEN))
        self._end.row.layout = shared_layout(**(_ROW if spec.end_frame else _HIDDEN))
        self._references.layout = shared_layout(**(_FULL if spec.reference_images else _HIDDEN))
        self._references.placeholder = (
            f"More image URLs (https://…), separated by spaces: 1 to {spec.reference_images} images with "
            "the start image"
            if self.route == "multi-image2video"
            else "Reference image URLs (https://…), separated by spaces; <<<image_1>>>… in the prompt"
        )
        self._shots.layout = shared_layout(**(_FULL if spec.max_shots else _HIDDEN))

    def submission(self) -> Submission:
        """What Generate would send now: the visible fields only (a hidden option is kept, not sent)."""
        spec, route = self._spec(), self.route
        if route == "text2video" and self._start.image is not None:
            route = "image2video"  # what the client sends with a start image, so what the card polls
        motion = route == "motion-control"
        return Submission(
            prompt=self._prompt.value,
            model_name=spec.model,
            duration=self._duration.value if spec.durations else None,
            aspect_ratio=self._aspect.value if spec.aspect_ratios else None,
            mode=self._mode.value,
            negative_prompt=None
            if route in _IMAGE_ROUTES or not self._negative.value.strip()
            else self._negative.value,
            sound=("on" if self._sound.value else "off") if spec.sound else None,
            cfg_scale=round(self._cfg.value, 2) if spec.cfg_scale else None,
            image=self._start.image,
            image_tail=self._end.image if spec.end_frame and self._start.image is not None else None,
            reference_images=reference_urls(self._references.value) if spec.reference_images else (),
            route=route,
            shots=shot_lines(self._shots.value) if spec.max_shots else (),
            audio=(self._audio.value.strip() or None) if route == "avatar/image2video" else None,
            motion_video=self._motion_video.value.strip() if motion else None,
            facing=self._facing.value if motion else None,
            keep_sound=("yes" if self._keep_sound.value else "no") if motion else None,
        )

    # -- submitting ---------------------------------------------------------------------------------

    def generate(self) -> None:
        """Submit the form (what the Generate button does); nothing if a submission is in flight."""
        try:
            submission = self.submission()
        except ValueError as exc:  # a reference that is no URL, or a shot line of another shape
            self._show(self._omni_error, clean_text(str(exc)))
            return
        route = submission.route
        if route in _START_IMAGE and submission.image is None:
            self._start.show_error(f"{route} needs {_START_IMAGE[route]}: upload one or give its URL.")
            return
        if route == "avatar/image2video" and submission.audio is None:
            self._show(self._audio_error, f"{route} {_NEEDS_AUDIO}")
            return
        if submission.motion_video is not None and not _web_url(submission.motion_video):
            self._show(
                self._motion_error,
                "motion-control needs the motion video as an http(s) URL of an .mp4 or .mov (Kling fetches "
                "it). Nothing was sent.",
            )
            return
        most = self._spec().reference_images
        if submission.route == "multi-image2video" and not 1 <= len(submission.images) <= most:
            self._show(
                self._omni_error,
                f"multi-image2video takes 1 to {most} images (the start image and these URLs), got "
                f"{len(submission.images)}. Nothing was sent.",
            )
            return
        if not submission.prompt.strip() and not submission.shots and route != "avatar/image2video":
            self._show(self._prompt_error, "Write a prompt first: Kling needs one. Nothing was sent.")
            return
        if len(submission.prompt) > MAX_PROMPT_CHARS:
            self._show(self._prompt_error, f"Kling accepts at most {MAX_PROMPT_CHARS:,} characters.")
            return
        self._submit(submission)

    def extend(self, card: TaskStatusWidget) -> None:
        """Extend ``card``'s video with the form's prompt, if any (what its Extend button does); nothing if
        its task has not succeeded or a submission is in flight."""
        if card.task is None or not extendable(card):
            return
        prompt = self._prompt.value if self._prompt.value.strip() else None
        self._submit(Extension(card.task, prompt))

    def lip_sync(self, card: TaskStatusWidget) -> None:
        """Make the first face in ``card``'s video speak the form's Audio (what its Lip-sync button does);
        nothing if its task has not succeeded or a submission is in flight.

        The seconds typed (from, to) are sent as milliseconds of the audio; a blank Audio is refused at
        its field, and so is anything the client or the gateway refuses (nothing is sent twice).
        """
        if card.task is None or not extendable(card):  # identify-face needs what Extend needs: a video id
            return
        if not self._audio.value.strip():
            self._show(self._audio_error, f"Lip-sync {_NEEDS_AUDIO}")
            return
        start, end = (round(field.value * 1000) for field in (self._audio_from, self._audio_to))
        self._submit(LipSync(card.task, self._audio.value.strip(), start, end))

    def _submit(self, submission: _Action) -> None:
        with self._lock:
            if self._sending or self._closed:
                return  # a second click while the first POST is in flight: one task, one bill
            self._sending = True
        self._enable(False)
        errors = (
            self._prompt_error, self._negative_error, self._omni_error, self._motion_error, self._audio_error
        )  # fmt: skip
        for label in (*errors, self._generate_error):
            self._show(label, "")
        for slot in (self._start, self._end):
            slot.show_error("")
        # The POST waits on the network: a daemon thread keeps the kernel free meanwhile.
        threading.Thread(
            target=self._post, args=(submission,), name="kling-studio-submit", daemon=True
        ).start()

    def _post(self, submission: _Action) -> None:
        task: Task | str | None = None
        refusal: BaseException | None = None
        try:
            task = submission.send(self._client)
        except (KlingError, ValueError, TypeError, OSError) as exc:
            refusal = exc
            if isinstance(exc, KlingError):  # a task the gateway created is never lost: watch it anyway
                task = exc.task_id
        except Exception as exc:  # a bug, not an answer: the POST may have gone out, so it is not resent
            _log.exception("A studio submission failed unexpectedly")
            refusal = KlingError(
                f"Unexpected error ({exc}). The request may have created a task: look with "
                "`kling-widgets history --status unknown` before you Generate again."
            )
        balance = self._fetch_balance()
        deliver(lambda: self._settle(submission, task, refusal, balance), self._frontend)

    def _settle(
        self,
        submission: _Action,
        task: Task | str | None,
        refusal: BaseException | None,
        balance: Balance | None,
    ) -> None:
        with self._lock:
            closed = self._closed
        if closed:
            if task is not None:
                task_id = task if isinstance(task, str) else task.task_id
                _log.warning(
                    "The studio was closed before task %s could be shown; watch it by its id", task_id
                )
            return
        if refusal is not None:
            message = _refusal_text(refusal)
            # A lip-sync's every refusal (audio, times, identify-face, the POST) concerns the audio.
            field = "audio" if isinstance(submission, LipSync) else _field_of(refusal)
            if field in ("image", "image_tail", "start_frame", "end_frame"):
                (self._start if field in ("image", "start_frame") else self._end).show_error(message)
            else:
                label = {
                    "prompt": self._prompt_error, "negative_prompt": self._negative_error,
                    "reference": self._omni_error, "shots": self._omni_error, "video": self._motion_error,
                    "audio": self._audio_error,
                }  # fmt: skip
                self._show(label.get(field, self._generate_error), message)
        if task is not None:
            self._add_card(task, submission)
        self._show_balance_line(balance)
        if task is None:
            self._rearm()
            return
        timer = threading.Timer(REARM_SECONDS, deliver, args=(self._rearm, self._frontend))
        timer.daemon = True
        timer.start()

    def _rearm(self) -> None:
        with self._lock:
            self._sending = False
            closed = self._closed
        if not closed:
            self._enable(True)

    def _add_card(self, task: Task | str, submission: _Action) -> None:
        options = replace(self._options, endpoint=submission.route)
        card = TaskStatusWidget(
            task, client=self._client, endpoint=options.endpoint, poll_interval=options.poll_interval,
            max_poll_interval=options.max_poll_interval, timeout=options.timeout, caption=submission.caption,
        )  # fmt: skip
        again = _card_button("Again", "The same parameters: a new task (billed)")
        show = _card_button("Show code", "The Python call that makes the same task")
        code = ipywidgets.HTML(layout=shared_layout(**_HIDDEN))
        extend = _card_button(
            "Extend", "4-5 s more of this video, with the form's prompt if any: a new task (billed)", True
        )
        lip_sync = _card_button(
            "Lip-sync", "Its face speaks the form's Audio: identify-face, then a task (both billed)", True
        )
        again.on_click(lambda _button: self._submit(submission))
        show.on_click(lambda _button: self._toggle_code(show, code, submission))
        extend.on_click(lambda _button: self.extend(card))
        lip_sync.on_click(lambda _button: self.lip_sync(card))
        row = ipywidgets.Box([again, show, extend, lip_sync], layout=shared_layout(**_ROW))
        box = ipywidgets.Box([card, row, code], layout=shared_layout(**_COLUMN))
        self.own(card, again, show, extend, lip_sync, code, row, box)
        self._cards.insert(0, card)
        self._again.append(again)
        self._video_actions += [(extend, card), (lip_sync, card)]
        again.disabled = self._sending
        self._list.children = (box, *self._list.children)
        # On the engine's or the keeping thread: the button's write goes the one cross-thread path.
        card.add_done_callback(lambda _card: deliver(self._offer_video_actions, self._frontend))

    def _offer_video_actions(self) -> None:
        with self._lock:
            sending, closed = self._sending, self._closed
        if not closed:
            self._enable(not sending)

    def _toggle_code(self, button: Any, code: Any, submission: _Action) -> None:
        showing = button.description == "Hide code"
        code.value = "" if showing else f"<pre>{html.escape(submission.code())}</pre>"
        code.layout = shared_layout(**(_HIDDEN if showing else {}))
        button.description = "Show code" if showing else "Hide code"

    def _enable(self, enabled: bool) -> None:
        for button in (self._generate, *self._again):
            button.disabled = not enabled
        for button, card in self._video_actions:
            button.disabled = not (enabled and extendable(card))

    def _show(self, label: Any, message: str) -> None:
        label.value = f'<span style="{_ERROR_STYLE}">{html.escape(message)}</span>' if message else ""
        label.layout = shared_layout(**({} if message else _HIDDEN))

    # -- the balance line ---------------------------------------------------------------------------

    def _fetch_balance(self) -> Balance | None:
        try:
            return self._client.balance()
        except KlingError as exc:  # no balance to show: the line hides, nothing else depends on it
            _log.debug("no balance: %s", exc)
            return None

    def _show_balance(self) -> None:
        balance = self._fetch_balance()
        deliver(lambda: self._show_balance_line(balance), self._frontend)

    def _show_balance_line(self, balance: Balance | None) -> None:
        if self._closed:
            return
        self._balance.value = f"<small>{html.escape(balance.describe())}</small>" if balance else ""
        self._balance.layout = shared_layout(**({} if balance else _HIDDEN))

    # -- display ------------------------------------------------------------------------------------

    def static_bundle(self) -> dict[str, str]:
        """The cards' final or current state, without the form (readable without widgets)."""
        bundles = [card.static_bundle() for card in self._cards]
        count = f"Kling studio: {len(bundles)} task{'' if len(bundles) == 1 else 's'}"
        return {
            "text/plain": "\n".join([count, *(bundle["text/plain"] for bundle in bundles)]),
            "text/html": "".join([f"<p>{count}</p>", *(bundle["text/html"] for bundle in bundles)]),
        }

    def __repr__(self) -> str:
        return f"Studio(base_url={self._client.base_url!r}, cards={len(self._cards)})"

    def _release(self) -> None:
        for card in self._cards:
            card.stop()


def studio(client: KlingClient | None = None, **options: Any) -> Studio:
    """A `Studio`: a form to create Kling tasks, their cards below (newest first), the key's balance.

    Display it (the last expression of a cell), or render its notebook with Voila as an app.

    Parameters
    ----------
    client : KlingClient, optional
        As for `Studio`.
    **options
        The keyword arguments of `Studio` (``api_key``, ``base_url``, ``poll_interval``,
        ``max_poll_interval``, ``timeout``); anything else is a `TypeError`.

    Returns
    -------
    Studio
    """
    return Studio(client, **options)
