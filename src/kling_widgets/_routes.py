"""Bodies of the Kling routes beyond text2video and image2video, checked before anything is sent.

omni-video, multi-image2video, video-extend, identify-face, advanced-lip-sync, motion-control and
avatar/image2video, each with the fields of EZmodel's page for it and of the gateway's request struct
(``relay/channel/task/kling/adaptor.go``), checked against the model catalogue (docs/models.md). A wrong
value is a `TypeError` or `ValueError` naming the option and what it accepts, like `kling_widgets._params`.
Also the typed answer of identify-face, the one synchronous step (`FaceSession`).
"""

from __future__ import annotations

import os
import pathlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._catalogue import MIN_SHOT_SECONDS, MIN_SHOTS, ModelSpec, model_spec
from ._errors import TransportError
from ._models import Task, Video
from ._params import (
    DEFAULT_ASPECT_RATIO,
    MAX_PROMPT_CHARS,
    KlingOptions,
    aspect_ratio_field,
    choice_field,
    chosen_model,
    duration_field,
    file_base64,
    format_fields,
    http_url_field,
    image_field,
    mode_field,
    number_field,
    optional_fields,
    prompt_field,
    text_field,
)

__all__ = [
    "MAX_AUDIO_BYTES",
    "Face",
    "FaceSession",
    "ImageInput",
    "OmniOptions",
    "VideoSource",
    "avatar_body",
    "extend_body",
    "identify_face_body",
    "lip_sync_body",
    "motion_control_body",
    "multi_image_body",
    "omni_body",
    "parse_faces",
]

#: An image: an http(s) URL, a local .jpg/.png file, or base64 (see `kling_widgets._params.image_field`).
ImageInput: TypeAlias = "str | os.PathLike[str]"
#: A Kling video: a finished `Task` (its first video), one of its `Video` s, or a Kling video id.
VideoSource: TypeAlias = "Task | Video | str"

#: Kling's limit for a lip-sync audio file.
MAX_AUDIO_BYTES = 5 * 1024 * 1024
_AUDIO_SUFFIXES = (".mp3", ".wav", ".m4a", ".aac")
# Names of the models the gateway routes these requests by: their bodies carry no model of their own
# (the struct has no such field, so the name stops at the gateway; docs/models.md, "Routes without a model").
_IDENTIFY_FACE_MODEL = "kling-identify-face"  # one of `ROUTING_NAMES`, which Kling's own API is not sent
_MOTION_VIDEO_SUFFIXES = (".mp4", ".mov")
_VOLUME = (0.0, 2.0)


@dataclass(frozen=True)
class Face:
    """A face identify-face found: lip-sync may put audio on it between ``start_ms`` and ``end_ms``."""

    face_id: str
    image_url: str | None
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class FaceSession:
    """The answer of identify-face: a session (valid 24 hours) and the faces found in the video."""

    session_id: str
    faces: tuple[Face, ...]


class OmniOptions(KlingOptions, total=False):
    """`KlingOptions` and ``sound``: the shared options `KlingClient.omni_video` takes."""

    sound: str | None


def omni_body(
    prompt: str | None,
    options: OmniOptions,
    *,
    start_frame: ImageInput | None,
    end_frame: ImageInput | None,
    reference_images: Sequence[ImageInput],
    reference_video: str | None,
    refer_type: str,
    keep_original_sound: str | None,
    element_ids: Sequence[int],
    shots: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/omni-video`` (see `KlingClient.omni_video`)."""
    spec = chosen_model("omni-video", options)
    images = _omni_images(spec, start_frame, end_frame, reference_images)
    refer_type = choice_field("refer_type", refer_type, ("feature", "base"))
    editing = reference_video is not None and refer_type == "base"
    duration = options.get("duration")
    body: dict[str, Any] = {"model_name": spec.model}
    if shots is not None:
        spec.require("max_shots", "shots")
        if prompt is not None or duration is not None:
            raise ValueError("shots replace prompt and duration: give each shot its prompt and duration")
        body["multi_prompt"] = _shots(spec, shots)
    else:
        body["prompt"] = prompt_field("prompt", prompt)
    body["mode"] = mode_field(spec, options.get("mode"))
    if editing:
        spec.require("video_edit", 'refer_type="base"')
        if duration is not None:
            raise ValueError('an edited video (refer_type="base") keeps its own length: leave duration out')
    elif shots is None:
        # kling-video-o1 allows 3-10 s only with frames or a reference video; else 5 or 10.
        framed = reference_video is not None or start_frame is not None or end_frame is not None
        within = "plain_durations" if spec.plain_durations and not framed else "durations"
        body["duration"] = spec.check(
            "duration", duration_field("5" if duration is None else duration), within
        )
    if not editing:  # an edited video keeps its own frame
        body["aspect_ratio"] = aspect_ratio_field(spec, options.get("aspect_ratio", DEFAULT_ASPECT_RATIO))
    if images:
        body["image_list"] = images
    if reference_video is not None:
        spec.require("video_reference", "reference_video")
        item = {"video_url": http_url_field("reference_video", reference_video), "refer_type": refer_type}
        if keep_original_sound is not None:
            item["keep_original_sound"] = choice_field(
                "keep_original_sound", keep_original_sound, ("yes", "no")
            )
        body["video_list"] = [item]
    elif keep_original_sound is not None:
        raise ValueError("keep_original_sound needs a reference_video")
    if element_ids:
        body["element_list"] = [
            {"element_id": _element_id(index, value)}
            for index, value in enumerate(_sequence("element_ids", element_ids))
        ]
    body.update(optional_fields(spec, options))
    return body


def multi_image_body(images: Sequence[ImageInput], prompt: str, options: KlingOptions) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/multi-image2video`` (see `KlingClient.multi_image2video`)."""
    spec = chosen_model("multi-image2video", options)
    items = _sequence("images", images)
    if not 1 <= len(items) <= spec.reference_images:
        raise ValueError(f"{spec.model} takes 1 to {spec.reference_images} images, got {len(items)}")
    body: dict[str, Any] = {
        "model_name": spec.model,
        "image_list": [{"image": image_field(f"images[{i}]", image)} for i, image in enumerate(items)],
        "prompt": prompt_field("prompt", prompt),
    }
    body.update(format_fields(spec, options))
    body.update(optional_fields(spec, options))
    return body


def extend_body(
    video: VideoSource,
    *,
    prompt: str | None,
    negative_prompt: str | None,
    cfg_scale: float | None,
    callback_url: str | None,
) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/video-extend`` (see `KlingClient.extend_video`)."""
    spec = model_spec("kling-video-extend", "video-extend")
    body: dict[str, Any] = {"model_name": spec.model, "video_id": _video_id(video, "video-extend")}
    if prompt is not None:
        body["prompt"] = prompt_field("prompt", prompt, blank_ok=True)
    options = {"negative_prompt": negative_prompt, "cfg_scale": cfg_scale, "callback_url": callback_url}
    body.update(optional_fields(spec, options))
    return body


def identify_face_body(video: VideoSource) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/identify-face``: a Kling video id, or a video URL."""
    if isinstance(video, str) and video.strip().lower().startswith(("http://", "https://")):
        return {"model_name": _IDENTIFY_FACE_MODEL, "video_url": video.strip()}
    return {"model_name": _IDENTIFY_FACE_MODEL, "video_id": _video_id(video, "identify-face")}


def lip_sync_body(
    session: FaceSession,
    *,
    face: int | str,
    audio: str | os.PathLike[str] | None,
    audio_id: str | None,
    sound_start_time: int,
    sound_end_time: int,
    sound_insert_time: int | None,
    sound_volume: float | None,
    original_audio_volume: float | None,
    callback_url: str | None,
    external_task_id: str | None,
) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/advanced-lip-sync`` for one face of ``session``.

    Times are milliseconds: the audio from ``sound_start_time`` to ``sound_end_time`` is put on the video
    at ``sound_insert_time`` (by default where the face's window starts), which must lie in that window.
    """
    spec = model_spec("kling-lip-sync", "advanced-lip-sync")
    chosen = _face(session, face)
    choice: dict[str, Any] = {"face_id": chosen.face_id}
    if (audio is None) == (audio_id is None):
        raise ValueError("lip_sync needs exactly one of audio (a URL or a local file) and audio_id")
    if audio is not None:
        choice["sound_file"] = _audio(audio)
    else:
        choice["audio_id"] = text_field("audio_id", audio_id)
    start, end = (
        _milliseconds("sound_start_time", sound_start_time),
        _milliseconds("sound_end_time", sound_end_time),
    )
    if end <= start:
        raise ValueError(f"sound_end_time ({end} ms) must be after sound_start_time ({start} ms)")
    insert = (
        chosen.start_ms
        if sound_insert_time is None
        else _milliseconds("sound_insert_time", sound_insert_time)
    )
    if not chosen.start_ms <= insert <= chosen.end_ms:
        raise ValueError(
            f"sound_insert_time {insert} ms is outside face {chosen.face_id}'s window, "
            f"{chosen.start_ms} to {chosen.end_ms} ms"
        )
    choice.update(sound_start_time=start, sound_end_time=end, sound_insert_time=insert)
    for name, volume in (("sound_volume", sound_volume), ("original_audio_volume", original_audio_volume)):
        if volume is not None:
            choice[name] = number_field(name, volume, *_VOLUME)
    body: dict[str, Any] = {
        "model_name": spec.model,
        "session_id": session.session_id,
        "face_choose": [choice],
    }
    body.update(optional_fields(spec, {"callback_url": callback_url, "external_task_id": external_task_id}))
    return body


def motion_control_body(
    image: ImageInput,
    video: str,
    prompt: str,
    *,
    character_orientation: str,
    mode: str | None,
    keep_original_sound: str | None,
    callback_url: str | None,
    external_task_id: str | None,
) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/motion-control`` (see `KlingClient.motion_control`)."""
    spec = model_spec("kling-v2-6", "motion-control")
    body: dict[str, Any] = {
        "model_name": spec.model,
        "image_url": image_field("image", image),
        "video_url": _motion_video(video),
        "prompt": prompt_field("prompt", prompt),
        "character_orientation": choice_field(
            "character_orientation", character_orientation, ("image", "video")
        ),
        "mode": mode_field(spec, mode),  # Kling requires one; the gateway would send std
    }
    if keep_original_sound is not None:
        body["keep_original_sound"] = choice_field("keep_original_sound", keep_original_sound, ("yes", "no"))
    body.update(optional_fields(spec, {"callback_url": callback_url, "external_task_id": external_task_id}))
    return body


def avatar_body(
    image: ImageInput,
    *,
    audio: str | os.PathLike[str] | None,
    audio_id: str | None,
    prompt: str | None,
    mode: str | None,
    callback_url: str | None,
    external_task_id: str | None,
) -> dict[str, Any]:
    """The body of ``POST /kling/v1/videos/avatar/image2video`` (see `KlingClient.avatar_image2video`)."""
    spec = model_spec("kling-avatar", "avatar/image2video")
    body: dict[str, Any] = {"model_name": spec.model, "image": image_field("image", image)}
    if (audio is None) == (audio_id is None):
        raise ValueError("avatar_image2video needs exactly one of audio (a URL or a local file) and audio_id")
    if audio is not None:
        body["sound_file"] = _audio(audio)
    else:
        body["audio_id"] = text_field("audio_id", audio_id)
    if prompt is not None:
        body["prompt"] = prompt_field("prompt", prompt, blank_ok=True)
        size = len(prompt.encode("utf-8"))
        if size > MAX_PROMPT_CHARS:  # the gateway counts this route's prompt in UTF-8 bytes
            raise ValueError(
                f"prompt is {size} bytes long in UTF-8; the gateway takes at most {MAX_PROMPT_CHARS}"
            )
    body["mode"] = mode_field(spec, mode)
    body.update(optional_fields(spec, {"callback_url": callback_url, "external_task_id": external_task_id}))
    return body


def parse_faces(payload: Mapping[str, Any]) -> FaceSession:
    """Read identify-face's answer (Kling's own JSON, passed through by the gateway).

    Raises
    ------
    TransportError
        The answer carries no session id.
    """
    data = payload.get("data")
    session_id = data.get("session_id") if isinstance(data, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(session_id, str) or not session_id.strip():
        raise TransportError("the gateway's answer to identify-face carries no session_id")
    faces = []
    for item in data.get("face_data") or ():
        if isinstance(item, Mapping) and isinstance(item.get("face_id"), (str, int)):
            image = item.get("face_image")
            faces.append(
                Face(
                    str(item["face_id"]),
                    image if isinstance(image, str) and image.startswith(("http://", "https://")) else None,
                    _int(item.get("start_time")),
                    _int(item.get("end_time")),
                )
            )
    return FaceSession(session_id.strip(), tuple(faces))


# -- parts --------------------------------------------------------------------------------------------


def _sequence(name: str, value: object) -> Sequence[Any]:
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return value


def _omni_images(
    spec: ModelSpec,
    start_frame: ImageInput | None,
    end_frame: ImageInput | None,
    reference_images: Sequence[ImageInput],
) -> list[dict[str, str]]:
    images = []
    if start_frame is not None:
        images.append({"image_url": image_field("start_frame", start_frame), "type": "first_frame"})
    if end_frame is not None:
        spec.require("end_frame")
        if start_frame is None:
            raise ValueError("end_frame needs a start_frame")
        images.append({"image_url": image_field("end_frame", end_frame), "type": "end_frame"})
    references = _sequence("reference_images", reference_images)
    images += [
        {"image_url": image_field(f"reference_images[{i}]", image)} for i, image in enumerate(references)
    ]
    if len(images) > spec.reference_images:
        raise ValueError(
            f"{spec.model} takes at most {spec.reference_images} images (frames included), got {len(images)}"
        )
    return images


def _shots(spec: ModelSpec, shots: object) -> list[dict[str, str]]:
    items = _sequence("shots", shots)
    if not MIN_SHOTS <= len(items) <= spec.max_shots:
        raise ValueError(f"{spec.model} takes {MIN_SHOTS} to {spec.max_shots} shots, got {len(items)}")
    result = []
    for index, shot in enumerate(items):
        name = f"shots[{index}]"
        if not isinstance(shot, Mapping) or set(shot) != {"prompt", "duration"}:
            raise ValueError(f"{name} must be a mapping with exactly 'prompt' and 'duration'")
        seconds = duration_field(shot["duration"], f"{name}['duration']")
        if not seconds.isdigit() or int(seconds) < MIN_SHOT_SECONDS:
            raise ValueError(f"{name}['duration'] must be a whole number of seconds >= {MIN_SHOT_SECONDS}")
        result.append({"prompt": prompt_field(f"{name}['prompt']", shot["prompt"]), "duration": seconds})
    total = str(sum(int(shot["duration"]) for shot in result))
    if total not in spec.durations:
        raise ValueError(
            f"the shots last {total} s together; {spec.model} takes "
            f"{spec.durations[0]} to {spec.durations[-1]} s"
        )
    return result


def _element_id(index: int, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TypeError(f"element_ids[{index}] must be a positive int (an element id), got {value!r:.40}")
    return value


def _video_id(video: VideoSource, route: str) -> str:
    """The Kling video id of a finished task's first video, of a `Video`, or as given."""
    if isinstance(video, Task):
        if not video.videos:
            raise ValueError(
                f"task {video.task_id} has no video yet (status {video.status}); {route} needs a finished one"
            )
        video = video.videos[0]
    if isinstance(video, Video):
        if video.id is None:
            raise ValueError(f"this video has no Kling video id, which {route} needs")
        return video.id
    text = text_field("video", video)
    if text.lower().startswith(("http://", "https://")):
        raise ValueError(f"{route} takes a Kling video id (or a finished Task), not a URL")
    return text


def _motion_video(value: object) -> str:
    """An http(s) URL of an .mp4 or .mov video: Kling fetches it, so a local file must be uploaded first.
    A URL whose path names no file type (a CDN link) is accepted as it is."""
    if isinstance(value, os.PathLike) or (
        isinstance(value, str) and not value.strip().lower().startswith(("http://", "https://"))
    ):
        raise ValueError("video must be an http(s) URL of an .mp4 or .mov file (upload a local file first)")
    url = http_url_field("video", value)
    suffix = pathlib.PurePosixPath(urllib.parse.urlsplit(url).path).suffix.lower()
    if suffix and suffix not in _MOTION_VIDEO_SUFFIXES:
        raise ValueError(f"video must be an .mp4 or .mov file, got a {suffix} URL")
    return url


def _face(session: FaceSession, face: int | str) -> Face:
    if not isinstance(session, FaceSession):
        raise TypeError(f"session must be a FaceSession, got {type(session).__name__}")
    if not session.faces:
        raise ValueError("identify-face found no face in this video: there is nothing to lip-sync")
    if isinstance(face, str):
        for found in session.faces:
            if found.face_id == face:
                return found
        raise ValueError(
            f"no face {face!r} in this session; faces: {', '.join(f.face_id for f in session.faces)}"
        )
    if isinstance(face, bool) or not isinstance(face, int) or not 0 <= face < len(session.faces):
        raise ValueError(f"face must be an index below {len(session.faces)} or a face_id, got {face!r:.40}")
    return session.faces[face]


def _milliseconds(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int of milliseconds, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 ms, got {value}")
    return value


def _audio(value: str | os.PathLike[str]) -> str:
    """An http(s) URL as it is; a local .mp3/.wav/.m4a/.aac file as the base64 Kling takes."""
    if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
        return value.strip()
    if isinstance(value, str) and not value.strip().lower().endswith(_AUDIO_SUFFIXES):
        raise ValueError(f"audio must be an http(s) URL or a path to a {'/'.join(_AUDIO_SUFFIXES)} file")
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"audio must be a URL or a path, got {type(value).__name__}")
    return file_base64(
        "audio",
        pathlib.Path(value),
        suffixes=_AUDIO_SUFFIXES,
        max_bytes=MAX_AUDIO_BYTES,
        kind="an MP3, WAV, M4A or AAC file",
        is_kind=_looks_like_audio,
    )


def _looks_like_audio(data: bytes) -> bool:
    frame_sync = len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0  # MP3 and ADTS AAC
    wav = data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    return data.startswith(b"ID3") or frame_sync or wav or data[4:8] == b"ftyp"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
