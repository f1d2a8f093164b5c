"""Submissions: every option is checked before the POST, and a task the gateway created is never lost.

Refusals are checked against the simulator (nothing may reach it); bodies on the wire against a loopback
server that records them.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kling_widgets import KlingClient, KlingError, TransportError
from kling_widgets.simulator import GatewaySimulator
from loopback import Exchange, Loopback, loopback

TASK_ID = "842250903629086785"
SUBMITTED = {"id": TASK_ID, "task_id": TASK_ID, "object": "video", "status": ""}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EZMODEL_API_KEY", raising=False)
    monkeypatch.delenv("EZMODEL_BASE_URL", raising=False)


@pytest.fixture
def gateway() -> Iterator[Loopback]:
    """A gateway that accepts every submission and records it."""

    def accept(exchange: Exchange) -> None:
        exchange.reply(200, json.dumps(SUBMITTED).encode())

    with loopback(accept) as server:
        yield server


@pytest.fixture
def wire(gateway: Loopback) -> Iterator[KlingClient]:
    with KlingClient("sk-wire-secret", base_url=gateway.url) as kling:
        yield kling


def sent_body(gateway: Loopback) -> dict[str, Any]:
    (request,) = gateway.seen
    assert request.method == "POST"
    body: dict[str, Any] = json.loads(request.body)
    return body


# -- options on the wire --------------------------------------------------------------------------


def test_every_text2video_option_is_sent_as_kling_wants_it(wire: KlingClient, gateway: Loopback) -> None:
    wire.text2video(
        "a corgi surfing",
        model_name="kling-v1-6",  # a model that takes cfg_scale (kling-v1.x only)
        duration=10,
        aspect_ratio="1:1",
        mode="pro",
        negative_prompt="blur",
        cfg_scale=0.3,
        sound="off",
        camera_control={"type": "simple", "config": {"zoom": -4}},
        callback_url="https://example.com/hook",
        external_task_id="run-7",
    )
    assert sent_body(gateway) == {
        "model_name": "kling-v1-6",
        "prompt": "a corgi surfing",
        "mode": "pro",
        "duration": "10",
        "aspect_ratio": "1:1",
        "negative_prompt": "blur",
        "cfg_scale": 0.3,
        "sound": "off",
        "camera_control": {
            "type": "simple",
            "config": {"horizontal": 0, "vertical": 0, "pan": 0, "tilt": 0, "roll": 0, "zoom": -4},
        },
        "callback_url": "https://example.com/hook",
        "external_task_id": "run-7",
    }


def test_a_camera_preset_is_sent_without_config(wire: KlingClient, gateway: Loopback) -> None:
    wire.text2video("a corgi", camera_control={"type": "forward_up"})
    assert sent_body(gateway)["camera_control"] == {"type": "forward_up"}


def test_an_option_given_as_none_takes_its_default(wire: KlingClient, gateway: Loopback) -> None:
    # The shared options' types allow None wherever leaving the option out has a default.
    wire.text2video("a corgi", duration=None, mode=None, negative_prompt=None, sound=None)
    body = sent_body(gateway)
    assert (body["duration"], body["mode"]) == ("5", "std")
    assert not {"negative_prompt", "sound"} & set(body)


def test_image2video_sends_local_files_as_raw_base64(
    wire: KlingClient, gateway: Loopback, tmp_path: Path
) -> None:
    first, last, mask = tmp_path / "first.PNG", tmp_path / "last.jpg", tmp_path / "mask.png"
    first.write_bytes(PNG)
    last.write_bytes(JPEG)
    mask.write_bytes(PNG)
    trajectory = [{"x": 10, "y": 20}, {"x": 30, "y": 40}]
    wire.image2video(
        first,
        "it blinks",
        image_tail=str(last),
        static_mask=f"data:image/png;base64,{b64(PNG)}",
        dynamic_masks=[{"mask": mask, "trajectories": trajectory}],
    )
    (request,) = gateway.seen
    assert request.path == "/kling/v1/videos/image2video"
    body = sent_body(gateway)
    assert body["image"] == b64(PNG)
    assert body["image_tail"] == b64(JPEG)
    assert body["static_mask"] == b64(PNG)
    assert body["dynamic_masks"] == [{"mask": b64(PNG), "trajectories": trajectory}]
    assert body["prompt"] == "it blinks"


def test_image_urls_and_base64_pass_as_they_are(wire: KlingClient, gateway: Loopback) -> None:
    wire.image2video("https://example.com/cat.png", "it blinks", image_tail=b64(JPEG))
    body = sent_body(gateway)
    assert (body["image"], body["image_tail"]) == ("https://example.com/cat.png", b64(JPEG))


# -- refused before sending -----------------------------------------------------------------------


def test_an_unknown_option_is_refused_naming_the_accepted_ones(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    options: dict[str, Any] = {"sond": "on"}  # a typo the gateway would ignore, billing the task anyway
    with pytest.raises(TypeError, match=r"'sond'.*did you mean sound.*cfg_scale, sound, camera_control"):
        client.text2video("a corgi", **options)
    with pytest.raises(TypeError, match=r"image2video\(\).*'watermark'.*image_tail"):
        client.image2video("https://example.com/cat.png", "it blinks", watermark=True)  # type: ignore[call-arg]
    assert sim.requests() == []


def test_the_signature_names_every_shared_option_with_its_default() -> None:
    # Jupyter's Shift-Tab and IPython's keyword completion read inspect.signature, not the Unpack type.
    text = inspect.signature(KlingClient.text2video).parameters
    assert list(text)[:4] == ["self", "prompt", "model_name", "duration"]
    assert (text["model_name"].default, text["aspect_ratio"].default) == ("kling-v2-6", "16:9")
    assert list(text)[-1] == "source"
    assert inspect.signature(KlingClient.omni_video).parameters["model_name"].default == "kling-v3-omni"
    multi = inspect.signature(KlingClient.multi_image2video).parameters
    assert "mode" in multi
    assert "sound" not in multi


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"duration": "7"}, ValueError, "duration"),
    ({"duration": 5.0}, TypeError, "duration"),
    ({"duration": True}, TypeError, "duration"),
    ({"aspect_ratio": "4:3"}, ValueError, "aspect_ratio"),
    ({"mode": "turbo"}, ValueError, "mode"),
    ({"mode": "master"}, ValueError, "master"),  # only *-master models
    ({"model_name": " "}, ValueError, "model_name"),
    ({"model_name": None}, TypeError, "model_name"),
    ({"cfg_scale": 5}, ValueError, "cfg_scale"),
    ({"cfg_scale": float("nan")}, ValueError, "cfg_scale"),
    ({"cfg_scale": "0.5"}, TypeError, "cfg_scale"),
    ({"negative_prompt": "x" * 2501}, ValueError, "negative_prompt"),
    ({"negative_prompt": 3}, TypeError, "negative_prompt"),
    ({"sound": "yes"}, ValueError, "sound"),
    ({"sound": True}, TypeError, "sound"),
    ({"camera_control": "zoom"}, TypeError, "camera_control"),
    ({"camera_control": {"type": "orbit"}}, ValueError, "camera_control"),
    ({"camera_control": {"type": "simple", "config": {"zoom": 5, "pan": 1}}}, ValueError, "one axis"),
    ({"camera_control": {"type": "simple", "config": {"zoom": 11}}}, ValueError, "between -10 and 10"),
    ({"camera_control": {"type": "simple", "config": {"spin": 1}}}, ValueError, "axes"),
    ({"camera_control": {"type": "simple"}}, TypeError, "config"),
    ({"camera_control": {"type": "down_back", "config": {"zoom": 1}}}, ValueError, "no config"),
    ({"callback_url": "ftp://example.com/hook"}, ValueError, "callback_url"),
    ({"external_task_id": "  "}, ValueError, "external_task_id"),
]


@pytest.mark.parametrize(("options", "error", "names"), BAD_OPTIONS)
def test_a_bad_option_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        client.text2video("a corgi", **options)
    with pytest.raises(error, match=names):
        client.image2video("https://example.com/cat.png", "it blinks", **options)
    assert sim.requests() == []


@pytest.mark.parametrize(
    ("prompt", "error"),
    [("", ValueError), ("   \n", ValueError), ("x" * 2501, ValueError), (None, TypeError)],
)
def test_a_bad_prompt_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, prompt: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="prompt"):
        client.text2video(prompt)
    assert sim.requests() == []


def test_the_longest_prompt_kling_takes_is_sent(wire: KlingClient, gateway: Loopback) -> None:
    wire.text2video("x" * 2500, negative_prompt="")
    assert len(sent_body(gateway)["prompt"]) == 2500


def bad_images(tmp_path: Path) -> list[tuple[Any, type[Exception], str]]:
    gif = tmp_path / "cat.gif"
    gif.write_bytes(b"GIF89a")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as out:
        out.write(PNG)
        out.truncate(10 * 1024 * 1024 + 1)
    return [
        (tmp_path / "missing.png", FileNotFoundError, "missing.png"),
        (str(tmp_path / "missing.jpg"), FileNotFoundError, "missing.jpg"),
        (gif, ValueError, r"not a \.jpg"),
        (text, ValueError, "not a JPEG or PNG"),
        (huge, ValueError, "10 MB"),
        (b64(b"GIF89a" + bytes(30)), ValueError, "not a JPEG or PNG"),
        ("data:image/png;base64,!!!", ValueError, "none of these"),
        ("data:image/svg+xml,<svg/>", ValueError, "base64"),
        ("cat", ValueError, "none of these"),
        (b64(PNG + bytes(10 * 1024 * 1024)), ValueError, "10 MB"),
        (42, TypeError, "image"),
    ]


def test_a_bad_image_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    for image, error, message in bad_images(tmp_path):
        with pytest.raises(error, match=message):
            client.image2video(image, "it blinks")
        with pytest.raises(error, match=message):
            client.image2video("https://example.com/cat.png", "it blinks", image_tail=image)
    assert sim.requests() == []


@pytest.mark.parametrize(
    "masks",
    [
        [],
        [{"mask": "https://example.com/m.png"}],
        [{"mask": "https://example.com/m.png", "trajectories": [{"x": 1, "y": 2}]}],
        [{"mask": "https://example.com/m.png", "trajectories": [{"x": 1, "y": 2}, {"x": "3", "y": 4}]}],
        [{"mask": "https://example.com/m.png", "trajectories": [{"x": 1, "y": 2}] * 2}] * 7,
    ],
)
def test_bad_dynamic_masks_are_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, masks: list[Any]
) -> None:
    with pytest.raises(ValueError, match="dynamic_masks"):
        client.image2video("https://example.com/cat.png", "it blinks", dynamic_masks=masks)
    assert sim.requests() == []


# -- after the POST -------------------------------------------------------------------------------


class BrokenLogFilter(logging.Filter):
    """A log filter that fails on the "Submitted" line, as a broken handler set-up might."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg.startswith("Submitted"):
            raise RuntimeError("log filter exploded")
        return True


def test_a_failure_after_the_post_answered_keeps_the_task_id(
    wire: KlingClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kling_widgets")
    broken = BrokenLogFilter()
    logging.getLogger("kling_widgets").addFilter(broken)
    try:
        with pytest.raises(KlingError, match=TASK_ID) as info:
            wire.text2video("a corgi")
    finally:
        logging.getLogger("kling_widgets").removeFilter(broken)
    assert info.value.task_id == TASK_ID
    assert isinstance(info.value.__cause__, RuntimeError)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert TASK_ID in warning.getMessage()


def test_an_answer_without_an_id_is_logged_as_possibly_billed(
    gateway: Loopback, wire: KlingClient, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.answer = lambda exchange: exchange.reply(200, b'{"object": "video", "status": ""}')
    with pytest.raises(TransportError, match="missing task_id") as info:
        wire.text2video("a corgi")
    assert info.value.task_id is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "may be billed" in warning.getMessage()


def test_a_post_that_got_no_answer_is_never_resent(gateway: Loopback, wire: KlingClient) -> None:
    gateway.answer = Exchange.drop
    with pytest.raises(TransportError):
        wire.text2video("a corgi")
    assert [r.method for r in gateway.seen] == ["POST"]
