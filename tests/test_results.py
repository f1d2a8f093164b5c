"""Results that are not videos: the image and audio routes of Kling's own API (docs/routes.md, "Results that
are not videos"). Parsing (shapes, garbage, hostile strings), the kling simulator's routes, cards watched to
SUCCESS through `TaskStatusWidget`, the shared player cap, and the ledger, `history` and `resume`.
"""

from __future__ import annotations

import html
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import WAIT, run_cli
from kling_widgets import KlingClient, TaskStatusWidget
from kling_widgets._backend import KlingToken, Secret
from kling_widgets._history import history, resume
from kling_widgets._ledger import MIGRATIONS, Ledger
from kling_widgets._models import Audio, Image, Task, TaskStatus, parse_task
from kling_widgets._poller import Update, WatchState
from kling_widgets._view import View, describe, live_html, static_html, static_text
from kling_widgets.simulator import GatewaySimulator, Scenario

FAST = {"poll_interval": 0.02, "max_poll_interval": 0.02}
DONE = Scenario(polls=(1, 1))
PNG = "https://cdn.test/a.png?Expires=1798761600"
MP3 = "https://cdn.test/s.mp3"
WAV = "https://cdn.test/s.wav"
UNSAFE = [
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "//evil.test/x",
]


def kling(result: object, status: str = "succeed") -> dict[str, Any]:
    """Kling's own query answer with ``task_result`` = ``result``."""
    data = {"task_id": "1", "task_status": status, "task_result": result, "created_at": 1784160000000}
    return {"code": 0, "message": "SUCCEED", "data": data}


def gateway(result: object, fail_reason: str) -> dict[str, Any]:
    """EZmodel's fetch envelope around a Kling payload with ``task_result`` = ``result``."""
    inner = {"code": 0, "data": {"task_id": "1", "task_status": "succeed", "task_result": result}}
    dto = {"task_id": "1", "status": "SUCCESS", "progress": "100%", "fail_reason": fail_reason, "data": inner}
    return {"code": "success", "data": dto}


def final_view(task: Task) -> View:
    update = Update(WatchState.SUCCESS, task, None, None, 1.0)
    return describe(update, task, previous=View("x"), generating_for=0, now=datetime.now(timezone.utc))


def rendered(task: Task) -> tuple[str, str]:
    """The task's final card as HTML (the live card and the static fallback) and as text/plain."""
    view, now = final_view(task), datetime.now(timezone.utc)
    return live_html(view, now) + static_html(task.task_id, view, now), static_text(task.task_id, view)


# -- parsing ------------------------------------------------------------------------------------------------


def test_kling_images_parse_with_their_index_and_watermark() -> None:
    result = {
        "images": [
            {"index": 0, "url": PNG, "watermark_url": "https://cdn.test/w.png"},
            {"index": 1, "url": PNG},
        ]
    }
    task = parse_task(kling(result), "images/generations")
    assert task.images == (Image(PNG, 0, "https://cdn.test/w.png"), Image(PNG, 1))
    assert (task.videos, task.audios, task.endpoint) == ((), (), "images/generations")
    assert task.images[0].expires_at == datetime(2027, 1, 1, tzinfo=timezone.utc)


def test_kling_sounds_prefer_the_mp3_and_keep_the_wav() -> None:
    both = {"id": "a1", "url_mp3": MP3, "url_wav": WAV, "duration_mp3": "3.2", "duration_wav": "3.25"}
    wav_only = {"url_wav": WAV, "duration_wav": 4}
    task = parse_task(kling({"audios": [both, wav_only]}), "audio/text-to-audio")
    assert task.audios == (Audio(MP3, 3.2, WAV, "a1"), Audio(WAV, 4.0))
    assert task.videos == task.images == ()


def test_video_to_audio_has_the_video_and_its_sound() -> None:
    result = {
        "videos": [{"id": "v", "url": "https://cdn.test/v.mp4", "duration": "5"}],
        "audios": [{"url_mp3": MP3}],
    }
    task = parse_task(kling(result), "audio/video-to-audio")
    assert [video.url for video in task.videos] == ["https://cdn.test/v.mp4"]
    assert task.audios == (Audio(MP3),)


def test_through_the_gateway_an_image_is_not_mistaken_for_a_video() -> None:
    # EZmodel copies the first result's URL into fail_reason; with images present it is not a video.
    task = parse_task(gateway({"images": [{"index": 0, "url": PNG}]}, fail_reason=PNG))
    assert task.images == (Image(PNG, 0),)
    assert task.videos == ()


def test_garbage_in_the_result_lists_is_skipped() -> None:
    junk: list[Any] = [None, 1, "x", [], {}, {"url": [PNG]}, {"url": "  "}, {"url_mp3": {"a": 1}}]
    result = {
        "images": [
            *junk,
            {"url": PNG, "index": "first"},
            {"url": PNG, "index": -1},
            {"url": PNG, "index": 2.5},
        ],
        "audios": [*junk, {"url_mp3": MP3, "duration_mp3": "NaN", "duration_wav": "-3", "id": True}],
    }
    task = parse_task(kling(result))
    assert task.images == (Image(PNG), Image(PNG), Image(PNG))
    assert task.audios == (Audio(MP3),)
    assert parse_task(kling({"images": "x", "audios": {"url_mp3": MP3}})).images == ()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["url", "url_mp3", "url_wav", "index", "duration_mp3", "id"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(images=json_values, audios=json_values)
def test_any_result_lists_parse_and_render(images: object, audios: object) -> None:
    task = parse_task(kling({"images": images, "audios": audios}))
    assert all(isinstance(image, Image) and image.url for image in task.images)
    assert all(isinstance(audio, Audio) and audio.url for audio in task.audios)
    rendered(task)


def test_hostile_links_are_escaped_and_unsafe_ones_never_embedded() -> None:
    markup = 'https://cdn.test/a.png?x="><svg/onload=alert(1)>'
    result = {
        "images": [{"url": markup}, *({"url": url} for url in UNSAFE)],
        "audios": [
            {"url_mp3": "javascript:alert(2)"},
            {"url_mp3": MP3, "url_wav": "data:audio/wav;base64,AAAA"},
        ],
    }
    page, text = rendered(parse_task(kling(result), "images/generations"))
    assert "<svg" not in page
    assert f'<img src="{html.escape(markup, quote=True)}"' in page
    assert page.count("<img ") == 2  # the one safe image, in the live card and the static fallback
    assert page.count("<audio ") == 2
    assert "WAV</a>" not in page  # the refused WAV link is dropped
    for url in [*UNSAFE, "javascript:alert(2)", "data:audio"]:
        assert html.escape(url) not in page.replace(html.escape(markup), "")
        assert url not in text
    image_note = "Not shown: the gateway's image link is not http(s) (javascript:, data:, file:, a link"
    assert html.escape(image_note) in page
    assert image_note in text
    assert "Not shown: the gateway's sound link is not http(s) (javascript:, data:)" in text


def test_credentials_never_reach_an_image_or_a_sound() -> None:
    result = {
        "images": [{"url": "https://u:s3cret@cdn.test/a.png"}],
        "audios": [
            {"url_mp3": "https://u:s3cret@cdn.test/s.mp3", "url_wav": "https://u:s3cret@cdn.test/s.wav"}
        ],
    }
    page, text = rendered(parse_task(kling(result)))
    assert "s3cret" not in page + text
    assert '<img src="https://cdn.test/a.png"' in page
    assert '<audio src="https://cdn.test/s.mp3" controls>' in page
    assert 'href="https://cdn.test/s.wav"' in page


def test_the_status_line_names_the_results() -> None:
    def line(result: object, endpoint: str) -> str:
        return final_view(parse_task(kling(result), endpoint)).line

    assert line({"images": [{"url": PNG}] * 2}, "images/generations").endswith(" · 2 images")
    assert line({"audios": [{"url_mp3": MP3}]}, "audio/text-to-audio").endswith(" · 1 sound")
    mixed = {"videos": [{"url": "https://cdn.test/v.mp4"}], "audios": [{"url_mp3": MP3}]}
    assert line(mixed, "audio/video-to-audio").endswith(" · 1 video, 1 sound")
    assert line({}, "images/generations").endswith(", but without an image link")
    assert line({}, "audio/text-to-audio").endswith(", but without a sound link")
    assert line({}, "text2video").endswith(", but without a video link")


# -- the simulator's routes ----------------------------------------------------------------------------------


@pytest.fixture
def ksim() -> Iterator[GatewaySimulator]:
    with GatewaySimulator(flavor="kling", speed=50.0, scenario=DONE) as simulator:
        yield simulator


@pytest.fixture
def kclient(ksim: GatewaySimulator) -> Iterator[KlingClient]:
    with KlingClient(access_key=ksim.access_key, secret_key=ksim.secret_key, base_url=ksim.url) as client:
        yield client


@pytest.fixture
def cards() -> Iterator[list[TaskStatusWidget]]:
    made: list[TaskStatusWidget] = []
    yield made
    for card in made:
        card.close()


def post(sim: GatewaySimulator, route: str, body: object) -> requests.Response:
    """A submit to Kling's own route, with a valid token: what a client would send."""
    token = KlingToken(Secret(sim.access_key), Secret(sim.secret_key)).current()
    return requests.post(
        f"{sim.url}/v1/{route}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=WAIT
    )


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("images/generations", {"n": 2}, "prompt is required"),
        ("images/generations", {"prompt": "a cat", "n": 0}, "n must be an integer from 1 to 9"),
        ("images/generations", {"prompt": "a cat", "n": 10}, "n must be an integer from 1 to 9"),
        ("images/generations", {"prompt": "a cat", "n": "2"}, "n must be an integer from 1 to 9"),
        (
            "audio/text-to-audio",
            {"prompt": "rain", "duration": 2.9},
            "duration must be a number from 3 to 10",
        ),
        (
            "audio/text-to-audio",
            {"prompt": "rain", "duration": 10.5},
            "duration must be a number from 3 to 10",
        ),
        ("audio/text-to-audio", {"prompt": "rain"}, "duration must be a number from 3 to 10"),
        ("audio/text-to-audio", {"prompt": " ", "duration": 5}, "prompt is required"),
    ],
)
def test_a_media_submit_is_validated_like_kling(
    ksim: GatewaySimulator, route: str, body: object, message: str
) -> None:
    answer = post(ksim, route, body)
    assert (answer.status_code, answer.json()["code"], answer.json()["message"]) == (400, 1201, message)
    assert ksim.unfinished() == 0


def test_only_the_scripted_media_routes_take_no_post(ksim: GatewaySimulator) -> None:
    answer = post(ksim, "images/omni-image", {"prompt": "a cat"})
    assert (answer.status_code, answer.json()["code"]) == (404, 1202)
    gateway_sim = GatewaySimulator()  # the gateway forwards no image or audio route
    with pytest.raises(ValueError, match="unknown endpoint 'images/generations'"):
        gateway_sim.add_task(endpoint="images/generations")


def test_an_image_task_is_watched_to_success_with_its_images(
    ksim: GatewaySimulator, kclient: KlingClient, cards: list[TaskStatusWidget]
) -> None:
    answer = post(ksim, "images/generations", {"prompt": "a corgi", "n": 2})
    task_id = answer.json()["data"]["task_id"]
    cards.append(TaskStatusWidget(task_id, client=kclient, endpoint="images/generations", **FAST))
    task = cards[0].wait(WAIT)
    assert len(task.images) == 2
    assert task.videos == ()
    bundle = cards[0]._repr_mimebundle_()
    assert bundle["text/html"].count("<img ") == 2
    assert 'alt="Generated image 2"' in bundle["text/html"]
    assert " · 2 images" in bundle["text/plain"]
    assert "video" not in bundle["text/plain"]
    assert {r.path for r in ksim.requests(task_id) if r.method == "GET"} == {
        f"/v1/images/generations/{task_id}"
    }
    image = requests.get(task.images[0].url, timeout=WAIT)
    assert (image.headers["Content-Type"], image.content[:8]) == ("image/png", b"\x89PNG\r\n\x1a\n")


def test_a_sound_task_is_watched_to_success_with_a_player_and_nothing_kept(
    ksim: GatewaySimulator, kclient: KlingClient, cards: list[TaskStatusWidget], private_home: Path
) -> None:
    answer = post(ksim, "audio/text-to-audio", {"prompt": "rain on a tin roof", "duration": 5})
    task_id = answer.json()["data"]["task_id"]
    cards.append(TaskStatusWidget(task_id, client=kclient, endpoint="audio/text-to-audio", **FAST))
    task = cards[0].wait(WAIT)
    [audio] = task.audios
    assert audio.wav_url is not None
    assert audio.duration == 1.0
    page = cards[0]._repr_mimebundle_()["text/html"]
    assert f'<audio src="{html.escape(audio.url, quote=True)}" controls></audio>' in page
    assert f'href="{html.escape(audio.wav_url, quote=True)}"' in page
    assert "WAV</a>" in page
    assert "kept" not in page.lower()  # keeping is for videos: it never started
    assert not (private_home / "kling-videos").exists()
    sound = requests.get(audio.wav_url, timeout=WAIT)
    assert (sound.headers["Content-Type"], sound.content[:4], sound.content[8:12]) == (
        "audio/wav",
        b"RIFF",
        b"WAVE",
    )


def test_nine_images_show_four_and_a_count(
    ksim: GatewaySimulator, kclient: KlingClient, cards: list[TaskStatusWidget]
) -> None:
    task_id = post(ksim, "images/generations", {"prompt": "nine corgis", "n": 9}).json()["data"]["task_id"]
    cards.append(TaskStatusWidget(task_id, client=kclient, endpoint="images/generations", **FAST))
    assert len(cards[0].wait(WAIT).images) == 9
    bundle = cards[0]._repr_mimebundle_()
    assert bundle["text/html"].count("<img ") == 4
    assert "and 5 more images (all are in task.images)" in bundle["text/html"]
    assert "and 5 more images (all are in task.images)" in bundle["text/plain"]


def test_the_cap_is_shared_by_videos_and_sounds(
    ksim: GatewaySimulator, kclient: KlingClient, cards: list[TaskStatusWidget]
) -> None:
    task_id = ksim.add_task(Scenario(polls=(0, 0), videos=3), endpoint="audio/video-to-audio")
    cards.append(
        TaskStatusWidget(task_id, client=kclient, endpoint="audio/video-to-audio", keep=False, **FAST)
    )
    cards[0].wait(WAIT)
    page = cards[0]._repr_mimebundle_()["text/html"]
    assert (page.count("<video "), page.count("<audio ")) == (3, 1)
    assert "and 2 more sounds (all are in task.audios)" in page


def test_the_cli_watches_a_media_route(
    ksim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ksim.environment().items():
        monkeypatch.setenv(name, value)
    task_id = ksim.add_task(Scenario(polls=(0, 0)), endpoint="audio/text-to-audio")
    code, out, _ = run_cli(capsys, "status", task_id, "--endpoint", "audio/text-to-audio", "--json")
    shown = json.loads(out)
    assert (code, shown["status"], shown["video_url"], len(shown["audio_urls"])) == (0, "SUCCESS", None, 1)


# -- the ledger, history and resume -------------------------------------------------------------------------


def test_images_and_sounds_survive_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    local_id = ledger.begin("audio/video-to-audio", "https://api.test", None, {"video_id": "v"})
    ledger.submitted(local_id, Task("7", TaskStatus.SUBMITTED, endpoint="audio/video-to-audio"))
    images, audios = (Image(PNG, 0, "https://cdn.test/w.png"),), (Audio(MP3, 3.5, WAV, "a1"), Audio(WAV))
    ledger.observe(Task("7", TaskStatus.SUCCESS, images=images, audios=audios))
    entry = Ledger(tmp_path / "ledger.sqlite3").get("7")
    assert entry is not None
    assert (entry.images, entry.audios, entry.videos) == (images, audios, ())


def test_a_schema_2_ledger_is_upgraded_with_no_media(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    for migrate in MIGRATIONS[:2]:
        migrate(db)
    db.execute(
        "INSERT INTO tasks (task_id, endpoint, gateway, key_id, params, state, created_at, updated_at)"
        " VALUES ('1', 'text2video', 'h', NULL, '{}', 'SUCCESS', 1, 1)"
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    [entry] = Ledger(path).entries()
    assert (entry.task_id, entry.images, entry.audios) == ("1", (), ())


def test_resume_and_history_bring_back_an_image_task(ksim: GatewaySimulator, kclient: KlingClient) -> None:
    ledger = kclient.ledger
    assert ledger is not None
    task_id = ksim.add_task(Scenario(polls=(1, 1), videos=2), endpoint="images/generations")
    local_id = ledger.begin("images/generations", kclient.base_url, kclient.key_id, {"prompt": "two corgis"})
    ledger.submitted(local_id, Task(task_id, TaskStatus.SUBMITTED, endpoint="images/generations"))

    gallery = resume(kclient, **FAST)
    try:
        [done] = gallery.wait(WAIT)
    finally:
        gallery.close()
    assert len(done.images) == 2
    assert {r.path for r in ksim.requests(task_id) if r.method == "GET"} == {
        f"/v1/images/generations/{task_id}"
    }
    entry = ledger.get(task_id)
    assert entry is not None
    assert entry.images == done.images

    table = history(kclient)
    try:
        assert "open</a>" in table._table.value
        table.play(task_id)
        [shown] = table._detail.children
        assert shown.value.count("<img ") == 2
        assert f'<img src="{html.escape(done.images[0].url, quote=True)}"' in shown.value
    finally:
        table.close()
