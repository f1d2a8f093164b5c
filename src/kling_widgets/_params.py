"""The body of a Kling submission, checked option by option before anything is sent.

Every POST may bill, so whatever the gateway or Kling would refuse is refused here instead, with a
`TypeError` (wrong kind of value) or a `ValueError` (wrong value) that names the option and what it accepts
(docs/gateway.md, "Submit request"). Pure functions apart from reading local image files.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import inspect
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, cast

from ._catalogue import ModelSpec, model_spec, models_for

__all__ = [
    "CAMERA_TYPES",
    "DEFAULT_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_PROMPT_CHARS",
    "KlingOptions",
    "VideoOptions",
    "aspect_ratio_field",
    "choice_field",
    "chosen_model",
    "duration_field",
    "dynamic_masks_field",
    "file_base64",
    "format_fields",
    "http_url_field",
    "image_field",
    "mode_field",
    "number_field",
    "optional_fields",
    "prompt_field",
    "refuse_unknown",
    "shows_options",
    "text_field",
    "video_body",
]

MAX_PROMPT_CHARS = 2500
DEFAULT_ASPECT_RATIO = "16:9"  # always sent: the gateway's own default is 1:1
MAX_IMAGE_BYTES = 10 * 1024 * 1024
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
_CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
_MAX_DYNAMIC_MASKS = 6
_TRAJECTORY_POINTS = (2, 77)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG
_IMAGE_KIND = "a JPEG or PNG image (Kling accepts only those)"
_IMAGE_FORMS = "an http(s) URL, a path to a .jpg/.png file, or base64 image data"

F = TypeVar("F", bound=Callable[..., object])


class KlingOptions(TypedDict, total=False):
    """The options every generating route takes (multi-image2video exactly these).

    What each one means, its default and its values: `KlingClient`, "Video options". None, where a type
    allows it, is the same as leaving the option out.
    """

    model_name: str
    duration: str | int | None
    aspect_ratio: str
    mode: str | None
    negative_prompt: str | None
    callback_url: str | None
    external_task_id: str | None


class VideoOptions(KlingOptions, total=False):
    """`KlingOptions` and those text2video and image2video add."""

    cfg_scale: float | None
    sound: str | None
    camera_control: Mapping[str, Any] | None


def video_body(route: str, prompt: str, options: VideoOptions, *, end_frame: bool = False) -> dict[str, Any]:
    """The checked fields shared by text2video and image2video (``route``), against the model catalogue.

    ``end_frame`` says an ``image_tail`` goes with the body.
    """
    spec = chosen_model(route, options)
    body: dict[str, Any] = {"model_name": spec.model, "prompt": prompt_field("prompt", prompt)}
    body.update(format_fields(spec, options))
    if end_frame:
        spec.require("end_frame", "image_tail")
    body.update(optional_fields(spec, options))
    return body


def chosen_model(route: str, options: KlingOptions) -> ModelSpec:
    """The catalogue entry of the ``model_name`` option on ``route``; by default the route's first model."""
    return model_spec(options.get("model_name", models_for(route)[0]), route)


def format_fields(spec: ModelSpec, options: KlingOptions) -> dict[str, str]:
    """``mode``, ``duration`` and ``aspect_ratio``, always sent: the gateway's default aspect ratio is 1:1,
    not Kling's 16:9. By default the model's first mode, 5 s and 16:9."""
    mode = mode_field(spec, options.get("mode"))
    duration = options.get("duration")
    seconds = spec.check("duration", duration_field("5" if duration is None else duration), "durations")
    return {
        "mode": mode,
        "duration": seconds,
        "aspect_ratio": aspect_ratio_field(spec, options.get("aspect_ratio", DEFAULT_ASPECT_RATIO)),
    }


def optional_fields(spec: ModelSpec, options: Mapping[str, object]) -> dict[str, Any]:
    """The optional fields ``options`` gives (not None), each checked; the others are not sent, so the
    gateway's defaults apply. Keys that are not optional fields are passed over."""
    return {
        name: check(spec, options[name])
        for name, check in _OPTIONAL_FIELDS.items()
        if options.get(name) is not None
    }


def mode_field(spec: ModelSpec, value: object) -> str:
    """A mode the model takes; None: its first (its default)."""
    return spec.modes[0] if value is None else spec.check("mode", choice_field("mode", value), "modes")


def aspect_ratio_field(spec: ModelSpec, value: object) -> str:
    return spec.check("aspect_ratio", choice_field("aspect_ratio", value), "aspect_ratios")


def _sound(spec: ModelSpec, value: object) -> str:
    """``"on"`` for models with native audio; ``"off"`` anywhere (it is what the gateway sends anyway)."""
    sound = choice_field("sound", value, ("on", "off"))
    if sound == "on":
        spec.require("sound", 'sound="on"')
    return sound


def image_field(name: str, value: str | os.PathLike[str]) -> str:
    """An image option as Kling wants it: an http(s) URL as it is, anything else as raw base64.

    A path (a `pathlib.Path`, or a string ending in .jpg/.jpeg/.png) must name an existing JPEG or PNG
    file; a ``data:`` URL loses its prefix; base64 must decode to a JPEG or PNG. Images are at most 10 MB.
    """
    if isinstance(value, os.PathLike):
        return _image_file(name, pathlib.Path(value))
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {_IMAGE_FORMS}; got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(f"{name} must be {_IMAGE_FORMS}; got an empty value")
    lowered = text.lower()
    if lowered.startswith(("http://", "https://")):
        return text
    if lowered.startswith("data:"):
        header, _, data = text.partition(",")
        if not header.lower().endswith(";base64"):
            raise ValueError(f"{name}: only base64 data: URLs are accepted, got {text[:40]!r}…")
        return _image_base64(name, data)
    if lowered.endswith(_IMAGE_SUFFIXES):
        return _image_file(name, pathlib.Path(text))
    return _image_base64(name, text)


def dynamic_masks_field(value: object) -> list[dict[str, Any]]:
    """Kling's motion brush: at most 6 ``{"mask": image, "trajectories": [{"x": int, "y": int}, …]}``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"dynamic_masks must be a list of mappings, got {type(value).__name__}")
    if not 0 < len(value) <= _MAX_DYNAMIC_MASKS:
        raise ValueError(f"dynamic_masks must hold 1 to {_MAX_DYNAMIC_MASKS} masks, got {len(value)}")
    return [_dynamic_mask(index, mask) for index, mask in enumerate(value)]


def shows_options(options: type[Mapping[str, object]], route: str) -> Callable[[F], F]:
    """Name each field of ``options`` (a TypedDict) in the decorated method's signature, with its default,
    first among its keyword-only parameters, in place of its ``**options``.

    Type checkers read the ``Unpack`` annotation itself; Jupyter's Shift-Tab, IPython's keyword completion
    and `refuse_unknown` read `inspect.signature`, which would otherwise show only ``**options``.
    """
    defaults = {"model_name": models_for(route)[0], "aspect_ratio": DEFAULT_ASPECT_RATIO}
    named = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=defaults.get(name),
            annotation=getattr(kind, "__forward_arg__", kind),  # "str | None", not ForwardRef(...)
        )
        for name, kind in options.__annotations__.items()
    ]

    def show(method: F) -> F:
        signature = inspect.signature(method)
        kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        first = next((i for i, p in enumerate(kept) if p.kind is inspect.Parameter.KEYWORD_ONLY), len(kept))
        cast(Any, method).__signature__ = signature.replace(parameters=[*kept[:first], *named, *kept[first:]])
        return method

    return show


def refuse_unknown(method: Callable[..., object], given: Mapping[str, object]) -> None:
    """Raise `TypeError` for the keyword arguments ``method`` collected in its ``**`` parameter that its
    signature does not name, naming the ones it does (see `shows_options`).

    A misspelt option must not reach the gateway, which would ignore it and bill the task anyway.
    """
    accepted = [
        parameter.name
        for parameter in inspect.signature(method).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = [name for name in given if name not in accepted]
    if not unknown:
        return
    guesses = [match for name in unknown for match in difflib.get_close_matches(name, accepted, n=1)]
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    raise TypeError(
        f"{method.__name__}() got unexpected keyword argument(s) {', '.join(map(repr, sorted(unknown)))}"
        f"{hint}; it accepts: {', '.join(accepted)}"
    )


# -- one option each ------------------------------------------------------------------------------


def text_field(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be blank")
    return value.strip()


def prompt_field(name: str, value: object, *, blank_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not blank_ok and not value.strip():
        raise ValueError(f"{name} must be a non-blank string: the gateway refuses a task without one")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters long; Kling accepts at most {MAX_PROMPT_CHARS}")
    return value


def choice_field(name: str, value: object, allowed: tuple[str, ...] = ()) -> str:
    """``value`` if it is a string in ``allowed`` (any string when ``allowed`` is empty: the catalogue
    checks it)."""
    if not isinstance(value, str):
        expected = f"one of {', '.join(map(repr, allowed))}" if allowed else "a string"
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__}")
    if allowed and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value[:40]!r}")
    return value


def duration_field(value: object, name: str = "duration") -> str:
    """Seconds as the string the gateway wants (a JSON number fails there: build_request_failed); the
    catalogue checks the value."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(
            f'{name} must be a number of seconds as a string or an int (e.g. "5"), got {type(value).__name__}'
        )
    return value.strip()


def number_field(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def http_url_field(name: str, value: object) -> str:
    url = text_field(name, value)
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http(s) URL, got {url[:40]!r}")
    return url


def _camera_control(value: object) -> dict[str, Any]:
    """``{"type": …, "config": {one axis: -10..10}}``; only the "simple" type takes a config."""
    if not isinstance(value, Mapping):
        raise TypeError(f"camera_control must be a mapping, got {type(value).__name__}")
    extra = set(value) - {"type", "config"}
    if extra:
        raise ValueError(f"camera_control takes only 'type' and 'config', got {sorted(map(str, extra))}")
    kind = choice_field("camera_control['type']", value.get("type"), CAMERA_TYPES)
    config = value.get("config")
    if kind != "simple":
        if config is not None:
            raise ValueError(f"camera_control of type {kind!r} takes no config (only 'simple' does)")
        return {"type": kind}
    if not isinstance(config, Mapping):
        raise TypeError("camera_control of type 'simple' needs a config mapping, e.g. {'zoom': 5}")
    unknown = set(config) - set(_CAMERA_AXES)
    if unknown:
        got = sorted(map(str, unknown))
        raise ValueError(f"camera_control config axes are {', '.join(_CAMERA_AXES)}; got {got}")
    axes = {
        axis: number_field(f"camera_control config {axis}", config.get(axis, 0), -10, 10)
        for axis in _CAMERA_AXES
    }
    if sum(1 for amount in axes.values() if amount != 0) != 1:
        raise ValueError("camera_control config must move exactly one axis (one non-zero value)")
    return {"type": kind, "config": axes}


def _dynamic_mask(index: int, value: object) -> dict[str, Any]:
    name = f"dynamic_masks[{index}]"
    if not isinstance(value, Mapping) or set(value) != {"mask", "trajectories"}:
        raise ValueError(f"{name} must be a mapping with exactly 'mask' and 'trajectories'")
    points = value["trajectories"]
    low, high = _TRAJECTORY_POINTS
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not low <= len(points) <= high:
        raise ValueError(f"{name}['trajectories'] must be a list of {low} to {high} points")
    trajectory = []
    for point in points:
        if (
            not isinstance(point, Mapping)
            or set(point) != {"x", "y"}
            or not all(isinstance(point[c], int) and not isinstance(point[c], bool) for c in "xy")
        ):
            shown = f"{point!r:.60}"
            raise ValueError(f"{name}['trajectories'] points must be {{'x': int, 'y': int}}, got {shown}")
        trajectory.append({"x": point["x"], "y": point["y"]})
    return {"mask": image_field(f"{name}['mask']", value["mask"]), "trajectories": trajectory}


def _cfg_scale(spec: ModelSpec, value: object) -> float:
    """0 to 1, where Kling honours it (kling-v1.x models, video-extend)."""
    scale = number_field("cfg_scale", value, 0, 1)
    spec.require("cfg_scale")
    return scale


# What `optional_fields` sends, in this order, and how each value is checked.
_OPTIONAL_FIELDS: dict[str, Callable[[ModelSpec, Any], object]] = {
    "negative_prompt": lambda _spec, value: prompt_field("negative_prompt", value, blank_ok=True),
    "cfg_scale": _cfg_scale,
    "sound": _sound,
    "camera_control": lambda _spec, value: _camera_control(value),
    "callback_url": lambda _spec, value: http_url_field("callback_url", value),
    "external_task_id": lambda _spec, value: text_field("external_task_id", value),
}


# -- images ---------------------------------------------------------------------------------------


def file_base64(
    name: str,
    path: pathlib.Path,
    *,
    suffixes: tuple[str, ...],
    max_bytes: int,
    kind: str,
    is_kind: Callable[[bytes], bool],
) -> str:
    """A local file Kling takes inline, as base64, once its suffix, its size and its first bytes
    (``is_kind``) are checked; ``kind`` says what it must hold, for the message."""
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{name}: {path} is not a {'/'.join(suffixes)} file")
    size = path.stat().st_size  # FileNotFoundError names the path
    if size > max_bytes:
        megabytes = f"{size / 2**20:.1f} MB; Kling takes files up to {max_bytes >> 20} MB"
        raise ValueError(f"{name}: {path} is {megabytes}")
    data = path.read_bytes()
    if not is_kind(data):
        raise ValueError(f"{name}: {path} is not {kind}")
    return base64.b64encode(data).decode("ascii")


def _image_file(name: str, path: pathlib.Path) -> str:
    return file_base64(
        name, path, suffixes=_IMAGE_SUFFIXES, max_bytes=MAX_IMAGE_BYTES, kind=_IMAGE_KIND, is_kind=_is_image
    )


def _image_base64(name: str, text: str) -> str:
    text = "".join(text.split())  # a pasted block may carry line breaks
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        shown = f"{text[:40]!r}…"
        raise ValueError(f"{name} must be {_IMAGE_FORMS}; got {shown}, which is none of these") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{name} is {len(data) / 2**20:.1f} MB; Kling accepts images up to 10 MB")
    if not _is_image(data):
        raise ValueError(f"{name}: the base64 data is not {_IMAGE_KIND}")
    return text


def _is_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC)
