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
from typing import Any

from ._catalogue import ModelSpec, model_spec

__all__ = [
    "CAMERA_TYPES",
    "MAX_IMAGE_BYTES",
    "MAX_PROMPT_CHARS",
    "choice_field",
    "duration_field",
    "dynamic_masks_field",
    "http_url_field",
    "image_field",
    "number_field",
    "prompt_field",
    "refuse_unknown",
    "sound_field",
    "text_field",
    "video_body",
]

MAX_PROMPT_CHARS = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
_CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
_MAX_DYNAMIC_MASKS = 6
_TRAJECTORY_POINTS = (2, 77)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
_IMAGE_FORMS = "an http(s) URL, a path to a .jpg/.png file, or base64 image data"


def video_body(
    route: str,
    prompt: str,
    *,
    model_name: str,
    duration: str | int,
    aspect_ratio: str,
    mode: str | None,
    negative_prompt: str | None,
    cfg_scale: float | None,
    sound: str | None,
    camera_control: Mapping[str, Any] | None,
    callback_url: str | None,
    external_task_id: str | None,
    end_frame: bool = False,
) -> dict[str, Any]:
    """The checked fields shared by text2video and image2video (``route``), against the model catalogue.

    Optional fields left at None are not sent (the gateway's own defaults apply), except ``duration`` and
    ``aspect_ratio``, which are always sent: the gateway's default aspect ratio is 1:1, not Kling's 16:9.
    ``mode`` None is the model's default mode. ``end_frame`` says an ``image_tail`` goes with the body.
    """
    spec = model_spec(model_name, route)
    body: dict[str, Any] = {
        "model_name": spec.model,
        "prompt": prompt_field("prompt", prompt),
        "mode": spec.modes[0] if mode is None else spec.check("mode", choice_field("mode", mode), "modes"),
        "duration": spec.check("duration", duration_field(duration), "durations"),
        "aspect_ratio": spec.check(
            "aspect_ratio", choice_field("aspect_ratio", aspect_ratio), "aspect_ratios"
        ),
    }
    if end_frame:
        spec.require("end_frame", "image_tail")
    if negative_prompt is not None:
        body["negative_prompt"] = prompt_field("negative_prompt", negative_prompt, blank_ok=True)
    if cfg_scale is not None:
        body["cfg_scale"] = number_field("cfg_scale", cfg_scale, 0, 1)
        spec.require("cfg_scale")
    if sound is not None:
        body["sound"] = sound_field(spec, sound)
    if camera_control is not None:
        body["camera_control"] = _camera_control(camera_control)
    if callback_url is not None:
        body["callback_url"] = http_url_field("callback_url", callback_url)
    if external_task_id is not None:
        body["external_task_id"] = text_field("external_task_id", external_task_id)
    return body


def sound_field(spec: ModelSpec, value: object) -> str:
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


def refuse_unknown(method: Callable[..., object], unknown: Mapping[str, object]) -> None:
    """Raise `TypeError` for keyword arguments ``method`` does not take, naming the ones it does.

    A misspelt option must not reach the gateway, which would ignore it and bill the task anyway.
    """
    if not unknown:
        return
    accepted = [
        parameter.name
        for parameter in inspect.signature(method).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
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


# -- images ---------------------------------------------------------------------------------------


def _image_file(name: str, path: pathlib.Path) -> str:
    if path.suffix.lower() not in _IMAGE_SUFFIXES:
        raise ValueError(f"{name}: {path} is not a .jpg, .jpeg or .png file")
    size = path.stat().st_size  # FileNotFoundError names the path
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{name}: {path} is {size / 2**20:.1f} MB; Kling accepts images up to 10 MB")
    data = path.read_bytes()
    _check_image(name, data, str(path))
    return base64.b64encode(data).decode("ascii")


def _image_base64(name: str, text: str) -> str:
    text = "".join(text.split())  # a pasted block may carry line breaks
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        shown = f"{text[:40]!r}…"
        raise ValueError(f"{name} must be {_IMAGE_FORMS}; got {shown}, which is none of these") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{name} is {len(data) / 2**20:.1f} MB; Kling accepts images up to 10 MB")
    _check_image(name, data, "the base64 data")
    return text


def _check_image(name: str, data: bytes, what: str) -> None:
    if not any(data.startswith(magic) for magic in _IMAGE_MAGIC):
        raise ValueError(f"{name}: {what} is not a JPEG or PNG image (Kling accepts only those)")
