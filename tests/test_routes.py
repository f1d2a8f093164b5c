"""Every route beyond text2video against the simulator: the exact body and path sent, refusals before
anything is sent, and the task watched to SUCCESS on its own route (through ``client.wait`` and through the
polling engine), then the gateway's own refusals for what gets past a careless client.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers import WAIT
from kling_widgets import KlingClient, Task, TaskStatus
from kling_widgets._models import parse_task
from kling_widgets._poller import default_engine
from kling_widgets._routes import Face, FaceSession
from kling_widgets.simulator import GatewaySimulator, Scenario

CAT = "https://example.com/cat.png"
DOG = "https://example.com/dog.png"
CLIP = "https://example.com/clip.mp4"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MP3 = b"ID3\x04\x00" + b"\x00" * 64
# Big enough for the ledger to store them as digests (`kling_widgets._ledger.MIN_BLOB_CHARS`).
PHOTO, SPEECH = PNG + bytes(256), MP3 + bytes(256)
O1 = "kling-video-o1"
QUICK = {"poll_interval": 0.02, "max_poll_interval": 0.05}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def posted(sim: GatewaySimulator) -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of every POST the simulator answered, oldest first."""
    return [(r.path, json.loads(r.body)) for r in sim.requests() if r.method == "POST"]


def finished(client: KlingClient, sim: GatewaySimulator, videos: int = 1) -> Task:
    """A task that succeeded, with ``videos`` videos, fetched through the client."""
    task_id = sim.add_task(Scenario(polls=(0, 0), videos=videos))
    return client.get_task(task_id)


def watched_to_success(client: KlingClient, task: Task) -> None:
    """Through ``client.wait`` and through the engine, polling only the task's own route."""
    done = client.wait(task.task_id, endpoint=task.endpoint, timeout=WAIT, **QUICK)
    assert (done.status, done.endpoint) == (TaskStatus.SUCCESS, task.endpoint)
    watch = default_engine().watch(
        lambda: client.get_task(task.task_id, task.endpoint, retry=False), task_id=task.task_id, **QUICK
    )
    result = watch.result(WAIT)
    assert (result.status, result.endpoint, result.videos) == (TaskStatus.SUCCESS, task.endpoint, done.videos)


def gets(sim: GatewaySimulator, task_id: str) -> set[str]:
    return {r.path for r in sim.requests(task_id) if r.method == "GET"}


# -- omni-video ------------------------------------------------------------------------------------


def test_omni_video_body_path_and_watch(sim: GatewaySimulator, client: KlingClient, tmp_path: Path) -> None:
    start = tmp_path / "start.png"
    start.write_bytes(PNG)
    task = client.omni_video(
        "<<<image_1>>> waves at <<<image_2>>>",
        duration=12,
        mode="pro",
        sound="on",
        start_frame=start,
        reference_images=[DOG],
        reference_video=CLIP,
        keep_original_sound="no",
        element_ids=[42],
        external_task_id="omni-1",
    )
    assert posted(sim) == [
        (
            "/kling/v1/videos/omni-video",
            {
                "model_name": "kling-v3-omni",
                "prompt": "<<<image_1>>> waves at <<<image_2>>>",
                "mode": "pro",
                "duration": "12",
                "aspect_ratio": "16:9",
                "sound": "on",
                "image_list": [{"image_url": b64(PNG), "type": "first_frame"}, {"image_url": DOG}],
                "video_list": [{"video_url": CLIP, "refer_type": "feature", "keep_original_sound": "no"}],
                "element_list": [{"element_id": 42}],
                "external_task_id": "omni-1",
            },
        )
    ]
    assert task.endpoint == "omni-video"
    watched_to_success(client, task)
    assert gets(sim, task.task_id) == {f"/kling/v1/videos/omni-video/{task.task_id}"}


@pytest.mark.parametrize("sim", [Scenario(polls=(1, 1), videos=3)], indirect=True)
def test_a_multi_shot_task_shows_every_video(sim: GatewaySimulator, client: KlingClient) -> None:
    shots = [{"prompt": "a door opens", "duration": 4}, {"prompt": "a cat walks in", "duration": "5"}]
    task = client.omni_video(shots=shots, aspect_ratio="9:16")
    ((_, body),) = posted(sim)
    assert body == {
        "model_name": "kling-v3-omni",
        "multi_prompt": [
            {"prompt": "a door opens", "duration": "4"},
            {"prompt": "a cat walks in", "duration": "5"},
        ],
        "mode": "std",
        "aspect_ratio": "9:16",
    }
    done = client.wait(task.task_id, endpoint=task.endpoint, timeout=WAIT, **QUICK)
    assert len(done.videos) == 3
    assert len({video.id for video in done.videos}) == 3
    assert done.video_url == done.videos[0].url


def test_editing_a_video_sends_neither_duration_nor_aspect_ratio(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    client.omni_video("snow everywhere", model_name="kling-v3", reference_video=CLIP, refer_type="base")
    ((_, body),) = posted(sim)
    assert body == {
        "model_name": "kling-v3",
        "prompt": "snow everywhere",
        "mode": "std",
        "video_list": [{"video_url": CLIP, "refer_type": "base"}],
    }


OMNI_REFUSED: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"prompt": "x", "duration": 16}, ValueError, r"kling-v3-omni on omni-video does not take duration='16'"),
    ({"prompt": "x", "model_name": "kling-video-o1", "duration": 7}, ValueError, r"'5', '10'"),
    ({"prompt": "x", "model_name": "kling-video-o1", "sound": "on"}, ValueError, r"kling-v3-omni, kling-v3"),
    ({"prompt": "x", "model_name": O1, "reference_video": CLIP, "refer_type": "base"}, ValueError,
     r'refer_type="base"'),
    ({"prompt": "x", "model_name": "kling-video-o1", "shots": []}, ValueError, "does not take shots"),
    ({"prompt": "x", "cfg_scale": 0.5}, TypeError, r"'cfg_scale'.*it accepts: model_name"),
    ({}, TypeError, "prompt"),
    ({"prompt": "x", "shots": [{"prompt": "a", "duration": 3}] * 2}, ValueError, "shots replace prompt"),
    ({"shots": [{"prompt": "a", "duration": 3}]}, ValueError, "2 to 6 shots"),
    ({"shots": [{"prompt": "a", "duration": 2}] * 2}, ValueError, r"\['duration'\] must be .* >= 3"),
    ({"shots": [{"prompt": "a", "duration": 8}] * 2}, ValueError, "16 s together"),
    ({"shots": [{"prompt": "a", "seconds": 8}] * 2}, ValueError, "exactly 'prompt' and 'duration'"),
    ({"prompt": "x", "end_frame": CAT}, ValueError, "end_frame needs a start_frame"),
    ({"prompt": "x", "reference_images": [CAT] * 8}, ValueError, "at most 7 images"),
    ({"prompt": "x", "reference_images": CAT}, TypeError, "reference_images must be a list"),
    ({"prompt": "x", "reference_video": "clip.mp4"}, ValueError, "reference_video must be an http"),
    ({"prompt": "x", "keep_original_sound": "yes"}, ValueError, "needs a reference_video"),
    ({"prompt": "x", "reference_video": CLIP, "refer_type": "base", "duration": 5}, ValueError, "own length"),
    ({"prompt": "x", "element_ids": ["42"]}, TypeError, r"element_ids\[0\]"),
    ({"prompt": "x", "element_ids": 42}, TypeError, "element_ids must be a list"),
    ({"prompt": "x", "model_name": "kling-v2-6"}, ValueError, r"omni-video does not take model_name="),
]  # fmt: skip


@pytest.mark.parametrize(("options", "error", "message"), OMNI_REFUSED)
def test_a_wrong_omni_option_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        client.omni_video(**options)
    assert sim.requests() == []


# -- multi-image2video -----------------------------------------------------------------------------


def test_multi_image2video_body_path_and_watch(sim: GatewaySimulator, client: KlingClient) -> None:
    task = client.multi_image2video(
        [CAT, f"data:image/png;base64,{b64(PNG)}"], "they dance", duration=10, negative_prompt="blur"
    )
    assert posted(sim) == [
        (
            "/kling/v1/videos/multi-image2video",
            {
                "model_name": "kling-v1-6",
                "image_list": [{"image": CAT}, {"image": b64(PNG)}],
                "prompt": "they dance",
                "mode": "std",
                "duration": "10",
                "aspect_ratio": "16:9",
                "negative_prompt": "blur",
            },
        )
    ]
    watched_to_success(client, task)
    assert gets(sim, task.task_id) == {f"/kling/v1/videos/multi-image2video/{task.task_id}"}


@pytest.mark.parametrize(
    ("images", "options", "error", "message"),
    [
        ([CAT] * 5, {}, ValueError, "1 to 4 images"),
        ([], {}, ValueError, "1 to 4 images"),
        (CAT, {}, TypeError, "images must be a list"),
        ([CAT], {"model_name": "kling-v2-6"}, ValueError, "takes kling-v1-6"),
        ([CAT], {"duration": 7}, ValueError, "'5', '10'"),
        ([CAT], {"sound": "on"}, TypeError, "'sound'"),
        (["not an image"], {}, ValueError, r"images\[0\]"),
    ],
)
def test_a_wrong_multi_image_option_is_refused_before_sending(
    sim: GatewaySimulator,
    client: KlingClient,
    images: Any,
    options: dict[str, Any],
    error: type,
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        client.multi_image2video(images, "they dance", **options)
    assert sim.requests() == []


# -- video-extend ----------------------------------------------------------------------------------


def test_extend_a_finished_task_body_path_and_watch(sim: GatewaySimulator, client: KlingClient) -> None:
    source = finished(client, sim)
    task = client.extend_video(source, prompt="the sun sets", cfg_scale=0.7)
    assert posted(sim) == [
        (
            "/kling/v1/videos/video-extend",
            {"model_name": "kling-video-extend", "video_id": source.videos[0].id, "prompt": "the sun sets",
             "cfg_scale": 0.7},
        )
    ]  # fmt: skip
    watched_to_success(client, task)
    assert gets(sim, task.task_id) == {f"/kling/v1/videos/video-extend/{task.task_id}"}
    client.extend_video(source.videos[0])
    client.extend_video(str(source.videos[0].id))
    assert [body["video_id"] for _, body in posted(sim)] == [source.videos[0].id] * 3


def test_extend_refuses_what_has_no_video_id_before_sending(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    pending = client.get_task(sim.add_task(Scenario(polls=(5, 5))))
    with pytest.raises(ValueError, match=r"has no video yet \(status NOT_START\)"):
        client.extend_video(pending)
    with pytest.raises(ValueError, match=r"video id.*not a URL"):
        client.extend_video(CLIP)
    with pytest.raises(ValueError, match="cfg_scale"):
        client.extend_video("abc", cfg_scale=2)
    with pytest.raises(TypeError, match="'mode'"):
        client.extend_video("abc", mode="pro")  # type: ignore[call-arg]
    assert [r.method for r in sim.requests()] == ["GET"]


def test_the_gateway_refuses_extending_an_unknown_video(sim: GatewaySimulator, client: KlingClient) -> None:
    with pytest.raises(Exception, match="video_id is invalid") as info:
        client.extend_video("no-such-video")
    assert info.value.status_code == 400  # type: ignore[attr-defined]


# -- lip-sync --------------------------------------------------------------------------------------


def test_lip_sync_identifies_the_face_then_submits(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    source = finished(client, sim)
    audio = tmp_path / "hello.mp3"
    audio.write_bytes(MP3)
    task = client.lip_sync(source, audio=audio, sound_end_time=3000, sound_volume=1.5)
    (identify, (path, body)) = posted(sim)
    assert identify == (
        "/kling/v1/videos/identify-face",
        {"model_name": "kling-identify-face", "video_id": source.videos[0].id},
    )
    assert path == "/kling/v1/videos/advanced-lip-sync"
    assert body == {
        "model_name": "kling-lip-sync",
        "session_id": body["session_id"],
        "face_choose": [
            {
                "face_id": "0",
                "sound_file": b64(MP3),
                "sound_start_time": 0,
                "sound_end_time": 3000,
                "sound_insert_time": 0,
                "sound_volume": 1.5,
            }
        ],
    }
    watched_to_success(client, task)
    assert gets(sim, task.task_id) == {f"/kling/v1/videos/advanced-lip-sync/{task.task_id}"}


def test_identify_face_answers_a_typed_session_and_lip_sync_reuses_it(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    session = client.identify_face(CLIP)
    assert session.session_id
    assert session.faces == (Face("0", sim.clip_url, 0, 5000),)
    client.lip_sync(session, face="0", audio_id="audio-7", sound_end_time=2000, sound_insert_time=1000)
    (identify, (_, body)) = posted(sim)
    assert identify[1] == {"model_name": "kling-identify-face", "video_url": CLIP}
    assert body["session_id"] == session.session_id
    assert body["face_choose"][0]["audio_id"] == "audio-7"
    assert body["face_choose"][0]["sound_insert_time"] == 1000


LIP_SYNC_REFUSED: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"sound_end_time": 3000}, ValueError, "exactly one of audio"),
    ({"sound_end_time": 3000, "audio": CLIP, "audio_id": "a"}, ValueError, "exactly one of audio"),
    ({"sound_end_time": 3000, "audio": "hello.ogg"}, ValueError, "audio must be an http"),
    ({"sound_end_time": 0, "audio_id": "a"}, ValueError, "must be after sound_start_time"),
    ({"sound_end_time": 3000.5, "audio_id": "a"}, TypeError, "sound_end_time must be an int"),
    ({"sound_end_time": 3000, "audio_id": "a", "sound_volume": 3}, ValueError, "sound_volume"),
    ({"sound_end_time": 3000, "audio_id": "a", "voice": "x"}, TypeError, "'voice'"),
]


@pytest.mark.parametrize(("options", "error", "message"), LIP_SYNC_REFUSED)
def test_a_wrong_lip_sync_option_is_refused_before_identifying(
    sim: GatewaySimulator, client: KlingClient, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        client.lip_sync(CLIP, **options)
    assert sim.requests() == []  # not even identify-face, which is billed too


def test_a_face_or_insert_time_that_does_not_fit_is_refused_before_the_task(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    session = FaceSession("s", (Face("0", None, 1000, 4000),))
    with pytest.raises(ValueError, match=r"outside face 0's window, 1000 to 4000 ms"):
        client.lip_sync(session, audio_id="a", sound_end_time=2000, sound_insert_time=5000)
    with pytest.raises(ValueError, match="no face '9'"):
        client.lip_sync(session, audio_id="a", sound_end_time=2000, face="9")
    with pytest.raises(ValueError, match="no face in this video"):
        client.lip_sync(FaceSession("s", ()), audio_id="a", sound_end_time=2000)
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(ValueError, match="up to 5 MB"):
        client.lip_sync(session, audio=big, sound_end_time=2000)
    fake = tmp_path / "fake.mp3"
    fake.write_bytes(b"<html>")
    with pytest.raises(ValueError, match="not an MP3"):
        client.lip_sync(session, audio=fake, sound_end_time=2000)
    assert sim.requests() == []


def test_the_gateway_refuses_an_unknown_session(sim: GatewaySimulator, client: KlingClient) -> None:
    with pytest.raises(Exception, match="session_id is invalid"):
        client.lip_sync(FaceSession("forged", (Face("0", None, 0, 5000),)), audio_id="a", sound_end_time=2000)


# -- motion-control --------------------------------------------------------------------------------


def test_motion_control_body_path_and_watch(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    character = tmp_path / "character.png"
    character.write_bytes(PHOTO)
    task = client.motion_control(
        character,
        CLIP,
        "on a beach at dusk",
        character_orientation="video",
        keep_original_sound="no",
        external_task_id="mc-1",
    )
    assert posted(sim) == [
        (
            "/kling/v1/videos/motion-control",
            {
                "model_name": "kling-v2-6",
                "image_url": b64(PHOTO),  # raw base64: Kling refuses a data: prefix
                "video_url": CLIP,
                "prompt": "on a beach at dusk",
                "character_orientation": "video",
                "mode": "std",
                "keep_original_sound": "no",
                "external_task_id": "mc-1",
            },
        )
    ]
    assert task.endpoint == "motion-control"
    assert client.ledger is not None
    (entry,) = client.ledger.entries()  # recorded like every route, the image as its digest, never base64
    assert (entry.endpoint, entry.task_id) == ("motion-control", task.task_id)
    assert entry.params["image_url"] == {"sha256": hashlib.sha256(PHOTO).hexdigest(), "bytes": len(PHOTO)}
    watched_to_success(client, task)
    assert gets(sim, task.task_id) == {f"/kling/v1/videos/motion-control/{task.task_id}"}


MOTION_REFUSED: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ((CAT, CLIP, "x"), {"character_orientation": "left"}, ValueError, "'image', 'video'"),
    ((CAT, CLIP, "x"), {}, TypeError, "character_orientation"),
    ((CAT, CLIP, "x"), {"character_orientation": "image", "mode": "master"}, ValueError, "'std', 'pro'"),
    ((CAT, CLIP, "x"), {"character_orientation": "image", "keep_original_sound": True}, TypeError, "'yes'"),
    ((CAT, CLIP, "  "), {"character_orientation": "image"}, ValueError, "prompt must be a non-blank"),
    ((CAT, CLIP, "x" * 2501), {"character_orientation": "image"}, ValueError, "at most 2500"),
    ((CAT, "dance.mp4", "x"), {"character_orientation": "image"}, ValueError, "upload a local file"),
    ((CAT, Path("dance.mp4"), "x"), {"character_orientation": "image"}, ValueError, "upload a local file"),
    ((CAT, f"{CLIP}.gif", "x"), {"character_orientation": "image"}, ValueError, "a .gif URL"),
    (("not an image", CLIP, "x"), {"character_orientation": "image"}, ValueError, "image must be"),
    ((CAT, CLIP, "x"), {"character_orientation": "image", "duration": 5}, TypeError, "'duration'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "options", "error", "message"), MOTION_REFUSED)
def test_a_wrong_motion_control_option_is_refused_before_sending(
    sim: GatewaySimulator,
    client: KlingClient,
    args: tuple[Any, ...],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        client.motion_control(*args, **options)
    assert sim.requests() == []


def test_motion_control_takes_a_video_url_without_a_file_type(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    cdn = "https://cdn.example.com/v/8422?sig=abc"
    client.motion_control(CAT, cdn, "x", character_orientation="image", mode="pro")
    ((_, body),) = posted(sim)
    assert (body["video_url"], body["mode"], body["image_url"]) == (cdn, "pro", CAT)
    assert "keep_original_sound" not in body  # Kling's default (yes) applies


# -- avatar ----------------------------------------------------------------------------------------


def test_avatar_body_path_and_watch(sim: GatewaySimulator, client: KlingClient, tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    face.write_bytes(PNG)
    speech = tmp_path / "hello.mp3"
    speech.write_bytes(SPEECH)
    task = client.avatar_image2video(face, audio=speech, prompt="she smiles", mode="pro", callback_url=CAT)
    assert posted(sim) == [
        (
            "/kling/v1/videos/avatar/image2video",
            {
                "model_name": "kling-avatar",
                "image": b64(PNG),
                "sound_file": b64(SPEECH),
                "prompt": "she smiles",
                "mode": "pro",
                "callback_url": CAT,
            },
        )
    ]
    assert task.endpoint == "avatar/image2video"
    assert client.ledger is not None
    (entry,) = client.ledger.entries()
    assert (entry.endpoint, entry.task_id) == ("avatar/image2video", task.task_id)
    assert entry.params["sound_file"] == {"sha256": hashlib.sha256(SPEECH).hexdigest(), "bytes": len(SPEECH)}
    watched_to_success(client, task)
    assert gets(sim, task.task_id) == {f"/kling/v1/videos/avatar/image2video/{task.task_id}"}
    client.avatar_image2video(CAT, audio_id="audio-7")
    (_, (_, body)) = posted(sim)
    assert body == {"model_name": "kling-avatar", "image": CAT, "audio_id": "audio-7", "mode": "std"}


AVATAR_REFUSED: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({}, ValueError, "exactly one of audio"),
    ({"audio": CLIP, "audio_id": "a"}, ValueError, "exactly one of audio"),
    ({"audio": "hello.ogg"}, ValueError, "audio must be an http"),
    ({"audio_id": "a", "mode": "master"}, ValueError, "'std', 'pro'"),
    ({"audio_id": "a", "prompt": "x" * 2501}, ValueError, "at most 2500"),
    ({"audio_id": "a", "prompt": "笑" * 1000}, ValueError, "3000 bytes long in UTF-8"),
    ({"audio_id": "a", "model_name": "kling-v2-6"}, TypeError, "'model_name'"),
]


@pytest.mark.parametrize(("options", "error", "message"), AVATAR_REFUSED)
def test_a_wrong_avatar_option_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        client.avatar_image2video(CAT, **options)
    assert sim.requests() == []


# -- a task knows its route ------------------------------------------------------------------------


def test_a_task_fetched_on_another_route_learns_its_own(sim: GatewaySimulator, client: KlingClient) -> None:
    task_id = sim.add_task(endpoint="omni-video")
    assert client.get_task(task_id).endpoint == "omni-video"  # polled on text2video, as for an id typed in
    assert client.get_task(task_id, "video-extend").endpoint == "omni-video"
    assert [r.body for r in sim.requests(task_id)] == ["", ""]  # only POST bodies are logged
    added = requests.post(
        f"{sim.url}/_simulator/tasks",
        json={"endpoint": "advanced-lip-sync", "polls": [0, 0]},
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=10,
    ).json()["task_id"]
    assert client.get_task(added).endpoint == "advanced-lip-sync"
    with pytest.raises(ValueError, match="unknown endpoint 'tts'"):
        sim.add_task(endpoint="tts")


# -- the gateway's own checks (what a careless client would send) ----------------------------------


def raw_submit(sim: GatewaySimulator, route: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{sim.url}/kling/v1/videos/{route}",
        json=body,
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=10,
    )


GATEWAY_REFUSALS: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("omni-video", {"model_name": "kling-v3-omni", "duration": "16"}, 500, "get_price_scale_failed",
     "kling-v3 supports duration 3-15, got: 16"),
    ("omni-video", {"model_name": "kling-video-o1", "duration": "7"}, 500, "get_price_scale_failed",
     "text2video only supports duration 5 or 10, got: 7"),
    ("omni-video", {"model_name": "kling-video-o1", "duration": "11",
                    "image_list": [{"image_url": CAT, "type": "first_frame"}]}, 500, "get_price_scale_failed",
     "first/end frame mode supports duration 3-10, got: 11"),
    ("omni-video", {"model_name": O1, "video_list": [{"video_url": CLIP, "refer_type": "base"}]}, 500,
     "get_price_scale_failed", "video editing mode (refer_type=base) is only supported by kling-v3"),
    ("omni-video", {"model_name": "kling-v3-omni", "multi_prompt": [{"prompt": "a", "duration": "2"}]}, 500,
     "get_price_scale_failed", "multi_prompt[0].duration must be >= 3, got: 2"),
    ("omni-video", {"model_name": "kling-v3-omni", "duration": 5}, 500, "build_request_failed",
     "cannot unmarshal number"),
    ("multi-image2video", {"model_name": "kling-v1-6", "prompt": "x"}, 500, "build_request_failed",
     "image_list is required for multi-image2video"),
    ("multi-image2video", {"model_name": "kling-v1-6", "image_list": [{"image": CAT}]}, 400,
     "invalid_request", "prompt is required"),
    ("video-extend", {"model_name": "kling-video-extend"}, 500, "build_request_failed",
     "video_id is required for video-extend"),
    ("advanced-lip-sync", {"model_name": "kling-lip-sync", "session_id": "s"}, 500, "build_request_failed",
     "face_choose is required for advanced-lip-sync"),
    ("text2video", {"model_name": "kling-v2-1-master", "prompt": "x", "mode": "pro"}, 500,
     "get_price_scale_failed", "unsupported model for pro mode: kling-v2-1-master"),
    ("identify-face", {"model_name": "kling-identify-face", "video_id": "a", "video_url": CLIP}, 500,
     "build_request_failed", "video_id and video_url cannot be both provided for identify-face"),
    # Kling calls the prompt optional on motion-control; the gateway does not exempt the route.
    ("motion-control", {"model_name": "kling-v2-6", "image_url": CAT, "video_url": CLIP,
                        "character_orientation": "image", "mode": "std"}, 400, "invalid_request",
     "prompt is required"),
    ("motion-control", {"model_name": "kling-v2-6", "prompt": "x", "video_url": CLIP}, 500,
     "build_request_failed", "image_url is required for motion-control"),
    ("motion-control", {"model_name": "kling-v2-6", "prompt": "x", "image_url": CAT}, 500,
     "build_request_failed", "video_url is required for motion-control"),
    ("motion-control", {"model_name": "kling-v2-6", "prompt": "x", "image_url": CAT, "video_url": CLIP}, 500,
     "build_request_failed", "character_orientation is required for motion-control"),
    ("motion-control", {"model_name": "kling-v2-6", "prompt": "x", "image_url": CAT, "video_url": CLIP,
                        "character_orientation": "left"}, 500, "build_request_failed",
     "character_orientation must be 'image' or 'video', got: left"),
    ("motion-control", {"model_name": "kling-v2-6", "prompt": "x", "image_url": CAT, "video_url": CLIP,
                        "character_orientation": "video", "mode": "master"}, 500, "build_request_failed",
     "mode must be 'std' or 'pro', got: master"),
    ("avatar/image2video", {"model_name": "kling-avatar", "sound_file": CLIP}, 500, "build_request_failed",
     "image is required for avatar image2video"),
    ("avatar/image2video", {"model_name": "kling-avatar", "image": CAT}, 500, "build_request_failed",
     "either audio_id or sound_file is required for avatar image2video"),
    ("avatar/image2video", {"model_name": "kling-avatar", "image": CAT, "audio_id": "a", "sound_file": CLIP},
     500, "build_request_failed", "audio_id and sound_file cannot be both provided for avatar image2video"),
    ("avatar/image2video", {"model_name": "kling-avatar", "image": CAT, "audio_id": "a", "mode": "master"},
     500, "build_request_failed", "mode must be 'std' or 'pro', got: master"),
    ("avatar/image2video", {"model_name": "kling-avatar", "image": CAT, "audio_id": "a",
                            "prompt": "笑" * 900}, 500, "build_request_failed",
     "prompt length exceeds maximum 2500 characters, got: 2700"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "status", "code", "message"), GATEWAY_REFUSALS)
def test_the_simulator_refuses_like_the_gateway(
    sim: GatewaySimulator, route: str, body: dict[str, Any], status: int, code: str, message: str
) -> None:
    response = raw_submit(sim, route, {"prompt": "x", **body} if route == "omni-video" else body)
    assert response.status_code == status
    assert response.json() == {"code": code, "message": response.json()["message"], "data": None}
    assert message in response.json()["message"]
    assert sim.unfinished() == 0  # nothing was created


def test_a_body_as_klings_docs_show_it_has_no_model_and_is_refused(sim: GatewaySimulator) -> None:
    # Kling's motion-control and avatar bodies carry no model, but the gateway routes every request by one.
    for route, body in [
        ("motion-control", {"prompt": "x", "image_url": CAT, "video_url": CLIP,
                            "character_orientation": "image", "mode": "std"}),
        ("avatar/image2video", {"image": CAT, "audio_id": "a"}),
    ]:  # fmt: skip
        response = raw_submit(sim, route, body)
        assert response.status_code == 400
        assert "未指定模型名称" in response.json()["error"]["message"]
    assert sim.unfinished() == 0


@pytest.mark.parametrize(
    ("route", "action"),
    [
        ("omni-video", "omniVideo"),
        ("multi-image2video", "multiImage2Video"),
        ("video-extend", "videoExtend"),
        ("motion-control", "motionControl"),
        ("avatar/image2video", "avatarImage2Video"),
    ],
)
def test_each_route_creates_a_task_with_its_action(
    sim: GatewaySimulator, client: KlingClient, route: str, action: str
) -> None:
    submit: dict[str, Callable[[], Task]] = {
        "omni-video": lambda: client.omni_video("x"),
        "multi-image2video": lambda: client.multi_image2video([CAT], "x"),
        "video-extend": lambda: client.extend_video(finished(client, sim)),
        "motion-control": lambda: client.motion_control(CAT, CLIP, "x", character_orientation="image"),
        "avatar/image2video": lambda: client.avatar_image2video(CAT, audio_id="a"),
    }
    task = submit[route]()
    dto = requests.get(
        f"{sim.url}/kling/v1/videos/{route}/{task.task_id}",
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=10,
    ).json()["data"]
    assert dto["action"] == action


def test_ezmodels_omni_status_example_parses_on_its_route() -> None:
    # EZmodel's omni-video status page: the TaskDto without "action", Kling's answer with "HTTP_OK".
    kling = {
        "task_id": "842250903629086785",
        "task_status": "succeed",
        "task_result": {"videos": [{"id": "v1", "url": "https://example.com/a.mp4", "duration": "5.0"}]},
    }
    dto = {"task_id": "842250903629086785", "status": "SUCCESS", "progress": "100%",
           "data": {"code": 0, "message": "HTTP_OK", "request_id": "r", "data": kling}}  # fmt: skip
    payload = {"code": "success", "data": dto}
    task = parse_task(payload, "omni-video")
    assert (task.endpoint, task.status, task.video_url) == (
        "omni-video",
        TaskStatus.SUCCESS,
        "https://example.com/a.mp4",
    )
