"""The studio's form logic without a browser: widget values set and buttons clicked in Python, against the
real simulator. A click runs its handler at once; the POST runs on the studio's thread, so the tests wait
(bounded by WAIT) for the cards and lines it writes."""

from __future__ import annotations

import base64
import html
import json
import struct
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest

from helpers import FOREVER, WAIT, png
from kling_widgets import KlingClient, Studio, TaskStatusWidget, studio
from kling_widgets._base import is_shared
from kling_widgets._catalogue import model_spec, models_for
from kling_widgets._studio import REARM_SECONDS, Image, image_dimensions, image_problem
from kling_widgets.simulator import GatewaySimulator, Scenario

T = TypeVar("T")
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.05}


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG's first segments: SOI, an APP0 (JFIF) and a baseline SOF0 carrying the size."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def wait_for(check: Callable[[], T]) -> T:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def posts(sim: GatewaySimulator) -> list[tuple[str, dict[str, Any]]]:
    return [(r.path, json.loads(r.body)) for r in sim.requests() if r.method == "POST"]


@pytest.fixture
def make(client: KlingClient) -> Iterator[Callable[..., Studio]]:
    made: list[Studio] = []

    def build(**kwargs: Any) -> Studio:
        made.append(studio(client, **{**FAST, **kwargs}))
        return made[-1]

    yield build
    for one in made:
        one.close()


def upload(slot: Any, data: bytes, name: str = "corgi.png") -> None:
    """What the browser's file picker does to a FileUpload (ipywidgets 8's value)."""
    slot.upload.value = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                          "last_modified": datetime.now(timezone.utc)},)  # fmt: skip


def settled(one: Studio) -> bool:
    """The submission has been answered and Generate works again."""
    return not one._generate.disabled


def polled_to_success(card: TaskStatusWidget, sim: GatewaySimulator, route: str) -> None:
    """The card's task reaches SUCCESS, knows its route, and was polled on that route."""
    finished = card.wait(WAIT)
    assert (finished.status.value, finished.endpoint) == ("SUCCESS", route)
    polls = {r.path for r in sim.requests() if r.method == "GET" and r.path.startswith("/kling/")}
    assert f"/kling/v1/videos/{route}/{card.task_id}" in polls


# -- images ------------------------------------------------------------------------------------------


def test_png_and_jpeg_sizes_come_from_their_headers() -> None:
    assert image_dimensions(png(640, 360)) == (640, 360)
    assert image_dimensions(jpeg_header(1280, 720)) == (1280, 720)
    assert image_dimensions(b"GIF89a" + bytes(20)) is None
    assert image_dimensions(b"\xff\xd8\xff\xe0\x00") is None  # cut short


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (png(640, 360), None),
        (jpeg_header(300, 750), None),  # exactly 1:2.5
        (b"GIF89a" + bytes(100), "is not a JPEG or PNG image (Kling accepts only those)"),
        (png(299, 400), "is 299×400 px; Kling needs at least 300 px on each side"),
        (jpeg_header(1000, 300 - 1), "is 1000×299 px; Kling needs at least 300 px on each side"),
        (jpeg_header(1000, 399), "is 1000×399 px; Kling needs an aspect ratio between 1:2.5 and 2.5:1"),
        (png(400, 300)[:20], "has no readable width and height (a damaged file?)"),
        (png(400, 300) + bytes(10 * 2**20), "is 10.0 MB; Kling accepts images up to 10 MB"),
    ],
)
def test_an_image_is_checked_before_sending(data: bytes, problem: str | None) -> None:
    assert image_problem(data) == problem


def test_a_bad_upload_is_refused_at_its_field(make: Callable[..., Studio]) -> None:
    one = make()
    upload(one._start, png(200, 200), "tiny.png")
    assert one._start.image is None
    assert "tiny.png is 200×200 px" in one._start.error.value
    assert one.route == "text2video"
    upload(one._start, png(400, 300))
    assert one._start.image == Image(data=png(400, 300), name="corgi.png")
    assert one._start.error.value == ""
    assert one._start.thumbnail.value == png(400, 300)
    one._start.url.value = "ftp://example.com/a.png"
    assert "http" in one._start.error.value
    one._start.url.value = "https://example.com/a.png"
    assert one._start.image == Image(url="https://example.com/a.png")
    assert one._start.upload.value == ()  # the last choice wins
    one._start.remove.click()
    assert one._start.image is None
    assert one.route == "text2video"


# -- the form follows the catalogue ---------------------------------------------------------------


def test_the_choices_are_the_catalogues(make: Callable[..., Studio]) -> None:
    one = make()
    assert one._model.options == models_for("text2video")
    for model in models_for("text2video"):
        one._model.value = model
        spec = model_spec(model, "text2video")
        assert (one._duration.options, one._aspect.options, one._mode.options) == (
            spec.durations, spec.aspect_ratios, spec.modes
        )  # fmt: skip
        assert (one._sound.layout.display != "none") is spec.sound
        assert (one._cfg.layout.display != "none") is spec.cfg_scale
    upload(one._start, png(400, 300))
    assert one._model.options == models_for("image2video")
    for model in models_for("image2video"):
        one._model.value = model
        assert (one._end.row.layout.display != "none") is model_spec(model, "image2video").end_frame


def test_the_form_starts_on_the_catalogues_defaults(make: Callable[..., Studio]) -> None:
    one = make()
    spec = model_spec(models_for("text2video")[0], "text2video")
    assert (one._model.value, one._duration.value, one._aspect.value, one._mode.value) == (
        spec.model, spec.durations[0], spec.aspect_ratios[0], spec.modes[0]
    )  # fmt: skip


def test_changing_the_model_keeps_what_still_fits(make: Callable[..., Studio]) -> None:
    one = make()
    one._model.value = "kling-v2-6"
    one._duration.value, one._aspect.value, one._mode.value = "10", "9:16", "pro"
    one._sound.value = True
    one._model.value = "kling-v2-1-master"  # takes master mode only, and no sound
    assert (one._duration.value, one._aspect.value, one._mode.value) == ("10", "9:16", "master")
    assert one.submission().sound is None  # hidden, so not sent
    one._model.value = "kling-v2-6"
    assert (one._duration.value, one._aspect.value, one._mode.value) == ("10", "9:16", "std")
    assert one.submission().sound == "on"  # kept while hidden
    one._model.value = "kling-v2-5-turbo"
    one._mode.value = "pro"
    upload(one._start, png(400, 300))  # image-to-video takes this model too: everything stays
    assert (one._model.value, one._duration.value, one._aspect.value, one._mode.value) == (
        "kling-v2-5-turbo", "10", "9:16", "pro"
    )  # fmt: skip
    one._model.value = "kling-v1-5"  # image-to-video only
    one._start.remove.click()
    assert one._model.value == models_for("text2video")[0]


def test_the_prompt_count_is_live(make: Callable[..., Studio]) -> None:
    one = make()
    assert "0 / 2,500" in one._count.value
    one._prompt.value = "a corgi"
    assert "7 / 2,500" in one._count.value
    one._prompt.value = "x" * 2501
    assert "2,501 / 2,500" in one._count.value
    assert "color" in one._count.value


# -- Generate --------------------------------------------------------------------------------------


def test_generate_sends_the_form_once_and_adds_a_card(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "a corgi surfing"
    one._negative.value = "blur"
    one._model.value = "kling-v2-6"
    one._aspect.value, one._duration.value, one._mode.value = "9:16", "10", "pro"
    one._sound.value = True
    one._generate.click()
    assert one._generate.disabled  # at once, before the answer
    one._generate.click()  # the second click of a double click
    wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/text2video"
    assert body == {
        "model_name": "kling-v2-6", "prompt": "a corgi surfing", "negative_prompt": "blur", "mode": "pro",
        "duration": "10", "aspect_ratio": "9:16", "sound": "on",
    }  # fmt: skip
    [card] = one.cards
    assert isinstance(card, TaskStatusWidget)
    assert card.task_id == next(r.task_id for r in sim.requests() if r.method == "POST")
    assert card.wait(WAIT).video_url
    wait_for(lambda: settled(one))
    assert len(posts(sim)) == 1


def test_a_click_while_the_post_is_in_flight_sends_nothing(sim: GatewaySimulator) -> None:
    sim.drop_next_submits(1, hang=True)  # the POST stays in flight until the client gives up (1 s)
    with KlingClient(base_url=sim.url, api_key=sim.api_key, timeout=1.0) as slow:
        one = studio(slow)
        try:
            one._prompt.value = "a corgi"
            for _ in range(5):
                one._generate.click()
            wait_for(lambda: settled(one))
            assert len(posts(sim)) == 1
            assert one._generate_error.value  # no answer: said next to Generate
            assert one.cards == ()
        finally:
            one.close()


def test_a_fast_answer_keeps_generate_disabled_a_moment(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    wait_for(lambda: one.cards)
    one._generate.click()  # a double click's second click, after the answer came back
    assert one._generate.disabled
    assert len(posts(sim)) == 1
    time.sleep(REARM_SECONDS)
    wait_for(lambda: settled(one))


def test_a_blank_prompt_is_refused_inline_and_sends_nothing(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "   "
    one._generate.click()
    assert "Write a prompt" in one._prompt_error.value
    assert one._prompt_error.layout.display != "none"
    assert not one._generate.disabled
    one._prompt.value = "x" * 2501
    one._generate.click()
    assert "at most 2,500" in one._prompt_error.value
    one._prompt.value = "a corgi"
    assert one._prompt_error.value == ""  # typing a prompt clears it
    assert posts(sim) == []
    assert one.cards == ()


def test_an_upload_makes_an_image_to_video_task(sim: GatewaySimulator, make: Callable[..., Studio]) -> None:
    one = make()
    one._prompt.value = "the corgi jumps"
    upload(one._start, png(400, 300))
    one._model.value = "kling-v2-6"
    upload(one._end, png(300, 400), "last.png")
    one._generate.click()
    wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/image2video"
    assert body["image"] == Image(data=png(400, 300)).field()
    assert body["image_tail"] == Image(data=png(300, 400)).field()
    assert one.cards[0].wait(WAIT).video_url


def test_text2video_picked_again_over_a_start_image_is_polled_as_the_image2video_it_is(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "the corgi jumps"
    upload(one._start, png(400, 300))
    one._route.value = "text2video"  # the image stays: the client sends image-to-video
    one._generate.click()
    wait_for(lambda: one.cards)
    [(path, _body)] = posts(sim)
    assert path == "/kling/v1/videos/image2video"
    card = one.cards[0]
    card.wait(WAIT)
    polls = {r.path for r in sim.requests(card.task_id) if r.method == "GET" and "/videos/" in r.path}
    assert polls == {f"/kling/v1/videos/image2video/{card.task_id}"}


def test_a_bug_while_submitting_is_said_inline_and_generate_works_again(
    sim: GatewaySimulator,
    make: Callable[..., Studio],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:  # a bug cannot be made real: it is simulated here
        raise RuntimeError("boom")

    monkeypatch.setattr(KlingClient, "text2video", broken)
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    wait_for(lambda: settled(one))
    assert "Unexpected error (boom)" in one._generate_error.value
    assert "history --status unknown" in one._generate_error.value  # it may have been sent
    assert one.cards == ()
    assert "failed unexpectedly" in caplog.text


def test_the_parallel_limit_shows_inline_and_adds_no_card(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    sim.max_parallel = 1
    sim.add_task(FOREVER)
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    wait_for(lambda: settled(one))
    assert "parallel-task limit" in one._generate_error.value
    assert one.cards == ()
    assert [r.status for r in sim.requests() if r.method == "POST"] == [429]


def test_no_quota_shows_inline_and_the_balance_says_why(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    sim.balance = 0.1
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    wait_for(lambda: settled(one))
    assert "No quota left" in one._generate_error.value
    assert one.cards == ()
    assert "Balance: 0.10 left of 0.10" in one._balance.value


def test_the_balance_line_follows_each_submission(sim: GatewaySimulator, make: Callable[..., Studio]) -> None:
    sim.balance, sim.task_price = 10.0, 1.25
    one = make()
    wait_for(lambda: "10.00 left" in one._balance.value)
    one._prompt.value = "a corgi"
    one._generate.click()
    wait_for(lambda: "8.75 left of 10.00 (1.25 used)" in one._balance.value)


def test_no_billing_endpoints_hide_the_balance_line(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    sim.balance = None
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    wait_for(lambda: one.cards)
    wait_for(lambda: [r for r in sim.requests() if r.path.endswith("/subscription")][1:])  # asked twice
    assert one._balance.layout.display == "none"
    assert one._balance.value == ""


# -- the cards -------------------------------------------------------------------------------------


def test_again_sends_the_same_parameters_as_a_new_task(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "a corgi"
    one._aspect.value = "1:1"
    one._generate.click()
    wait_for(lambda: settled(one))
    one._prompt.value = "something else"  # the form moved on; Again repeats the card's task
    again = one._list.children[0].children[1].children[0]
    assert again.description == "Again"
    again.click()
    wait_for(lambda: len(one.cards) == 2)
    first, second = posts(sim)
    assert first == second
    assert one.cards[0].task_id != one.cards[1].task_id  # the new one on top
    assert one.cards[0].task_id == [r.task_id for r in sim.requests() if r.method == "POST"][1]


def run_shown_code(one: Studio, sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Click Show code, run the code it shows (KlingClient reads the simulator from the environment)."""
    show = one._list.children[0].children[1].children[1]
    show.click()
    shown = one._list.children[0].children[2].value
    assert show.description == "Hide code"
    assert shown.startswith("<pre>")
    code = html.unescape(shown.removeprefix("<pre>").removesuffix("</pre>"))
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    scope: dict[str, Any] = {}
    *calls, last = code.rstrip().split("\n")
    exec("\n".join(calls), scope)
    eval(last, scope).close()  # the code ends with the widget: closed, so no model outlives the test
    scope["client"].close()
    return code


def test_show_code_makes_the_same_task(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = make()
    one._prompt.value = 'a "quoted" corgi'
    one._model.value = "kling-v1-6"
    one._cfg.value = 0.7
    one._generate.click()
    wait_for(lambda: one.cards)
    code = run_shown_code(one, sim, monkeypatch)
    first, again = posts(sim)
    assert first == again
    assert "cfg_scale=0.7" in code


def test_show_code_names_an_upload_by_a_path_never_its_bytes(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    one = make()
    one._prompt.value = "the corgi jumps"
    upload(one._start, png(400, 300), "my corgi.png")
    one._generate.click()
    wait_for(lambda: one.cards)
    (tmp_path / "my corgi.png").write_bytes(png(400, 300))
    monkeypatch.chdir(tmp_path)
    code = run_shown_code(one, sim, monkeypatch)
    assert "'my corgi.png'," in code
    assert Image(data=png(400, 300)).field()[:40] not in code
    first, again = posts(sim)
    assert first == again


def test_closing_the_studio_closes_its_cards_and_its_own_client(
    sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = studio(base_url=sim.url, api_key=sim.api_key, **FAST)
    one._prompt.value = "a corgi"
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    closed: list[bool] = []
    monkeypatch.setattr(one._client, "close", lambda: closed.append(True))
    one.close()
    assert (card.comm, one.comm, closed) == (None, None, [True])
    one.close()  # idempotent
    assert closed == [True]


def test_the_static_bundle_shows_the_cards(sim: GatewaySimulator, make: Callable[..., Studio]) -> None:
    one = make()
    assert one.static_bundle()["text/plain"] == "Kling studio: 0 tasks"
    one._prompt.value = "a corgi"
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    card.wait(WAIT)
    bundle = one.static_bundle()
    assert bundle["text/plain"].startswith("Kling studio: 1 task\n")
    assert "<video" in bundle["text/html"]
    assert sim.api_key not in repr(one) + str(bundle)


# -- Extend ----------------------------------------------------------------------------------------


def card_button(one: Studio, name: str, index: int = 0) -> Any:
    """The button called ``name`` on the card at ``index`` (newest first)."""
    [button] = [b for b in one._list.children[index].children[1].children if b.description == name]
    return button


def extend_button(one: Studio, index: int = 0) -> Any:
    return card_button(one, "Extend", index)


def test_extend_on_a_finished_card_submits_one_video_extend_task(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    [first] = wait_for(lambda: one.cards)
    finished = first.wait(WAIT)
    extend = extend_button(one)
    wait_for(lambda: not extend.disabled)  # written after the card is done, through deliver
    one._prompt.value = "the corgi dives"
    extend.click()
    assert (extend.disabled, one._generate.disabled) == (True, True)  # one POST at a time
    extend.click()
    wait_for(lambda: len(one.cards) == 2)
    [_, (path, body)] = posts(sim)
    assert path == "/kling/v1/videos/video-extend"
    assert body == {"model_name": "kling-video-extend", "video_id": finished.videos[0].id,
                    "prompt": "the corgi dives"}  # fmt: skip
    card = one.cards[0]  # the new one on top
    polled_to_success(card, sim, "video-extend")
    wait_for(lambda: settled(one))
    assert len(posts(sim)) == 2
    code = run_shown_code(one, sim, monkeypatch)  # the extension's card: the same POST again
    assert f"client.extend_video(\n    {finished.videos[0].id!r},\n    prompt='the corgi dives'," in code
    assert posts(sim)[2] == posts(sim)[1]


@pytest.mark.parametrize("sim", [FOREVER, Scenario(outcome="failure", polls=(0, 0))], indirect=True)
def test_extend_stays_disabled_until_a_task_succeeded(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "a corgi"
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    if sim.scenario.outcome == "failure":
        wait_for(card.done)
    wait_for(lambda: settled(one))
    extend, lip_sync = extend_button(one), card_button(one, "Lip-sync")
    assert extend.disabled
    assert lip_sync.disabled
    one._audio.value = "https://example.com/hello.mp3"
    extend.click()
    one.extend(card)
    lip_sync.click()
    one.lip_sync(card)
    assert len(posts(sim)) == 1


# -- the route ------------------------------------------------------------------------------------


def test_the_routes_and_omni_choices_are_the_catalogues(make: Callable[..., Studio]) -> None:
    one = make()
    assert one._route.options == (
        "text2video", "image2video", "omni-video", "multi-image2video", "motion-control", "avatar/image2video"
    )  # fmt: skip
    one._route.value = "omni-video"
    assert one._model.options == models_for("omni-video")
    for model in models_for("omni-video"):
        one._model.value = model
        spec = model_spec(model, "omni-video")
        assert (one._duration.options, one._aspect.options, one._mode.options) == (
            spec.plain_durations or spec.durations, spec.aspect_ratios, spec.modes
        )  # fmt: skip
        assert (one._sound.layout.display != "none") is spec.sound
        assert one._cfg.layout.display == "none"
        assert one._references.layout.display != "none"
    upload(one._start, png(400, 300))  # the first frame: kling-video-o1 then takes 3-10 s
    assert one.route == "omni-video"
    assert one._duration.options == model_spec("kling-video-o1", "omni-video").durations
    one._route.value = "text2video"
    assert one._references.layout.display == "none"


def test_omni_video_sends_the_form_once(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    one = make()
    one._route.value = "omni-video"
    one._prompt.value = "a corgi like <<<image_2>>>"
    one._model.value = "kling-v3-omni"
    one._duration.value, one._aspect.value, one._mode.value = "12", "1:1", "pro"
    one._sound.value = True
    upload(one._start, png(400, 300))
    one._references.value = "https://example.com/ref.png"
    one._generate.click()
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/omni-video"
    assert body == {
        "model_name": "kling-v3-omni", "prompt": "a corgi like <<<image_2>>>", "mode": "pro",
        "duration": "12", "aspect_ratio": "1:1", "sound": "on",
        "image_list": [{"image_url": Image(data=png(400, 300)).field(), "type": "first_frame"},
                       {"image_url": "https://example.com/ref.png"}],
    }  # fmt: skip
    assert card.wait(WAIT).endpoint == "omni-video"
    wait_for(lambda: settled(one))
    (tmp_path / "corgi.png").write_bytes(png(400, 300))
    monkeypatch.chdir(tmp_path)
    code = run_shown_code(one, sim, monkeypatch)
    assert "client.omni_video(" in code
    assert posts(sim)[1] == posts(sim)[0]


def test_route_refusals_are_inline_and_send_nothing(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._prompt.value = "a corgi"
    one._route.value = "image2video"
    one._generate.click()
    assert "needs a start image" in one._start.error.value
    one._route.value = "omni-video"
    one._references.value = "ref.png"
    one._generate.click()
    assert "is not an http(s) URL" in one._omni_error.value
    assert posts(sim) == []
    assert one.cards == ()
    one._references.value = "https://example.com/ref.png"
    one._generate.click()
    assert one._omni_error.value == ""  # a submission clears it
    wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert (path, body["image_list"]) == (
        "/kling/v1/videos/omni-video",
        [{"image_url": "https://example.com/ref.png"}],
    )


def test_multi_shot_replaces_the_prompt_and_duration(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = make()
    one._route.value = "omni-video"
    assert one._shots.layout.display != "none"
    one._model.value = "kling-video-o1"  # no multi-shot
    assert one._shots.layout.display == "none"
    one._model.value = "kling-v3"
    one._shots.value = "4 a door opens"
    one._generate.click()
    assert "line 1 is not &#x27;seconds | prompt&#x27;" in one._omni_error.value
    one._shots.value = "4 | a door opens\n\n5 | a cat walks in\n"
    one._generate.click()  # no prompt needed: the shots carry theirs
    [card] = wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/omni-video"
    assert body["multi_prompt"] == [{"prompt": "a door opens", "duration": "4"},
                                    {"prompt": "a cat walks in", "duration": "5"}]  # fmt: skip
    assert "prompt" not in body
    assert "duration" not in body
    assert card.wait(WAIT).endpoint == "omni-video"
    wait_for(lambda: settled(one))
    code = run_shown_code(one, sim, monkeypatch)
    assert "shots=[{'prompt': 'a door opens', 'duration': '4'}" in code
    assert posts(sim)[1] == posts(sim)[0]


def test_multi_image_choices_are_the_catalogues(make: Callable[..., Studio]) -> None:
    one = make()
    one._route.value = "multi-image2video"
    assert one._model.options == models_for("multi-image2video")
    for model in models_for("multi-image2video"):
        one._model.value = model
        spec = model_spec(model, "multi-image2video")
        assert (one._duration.options, one._aspect.options, one._mode.options) == (
            spec.durations, spec.aspect_ratios, spec.modes
        )  # fmt: skip
        shown = {
            name: getattr(one, name).layout.display != "none"
            for name in ("_sound", "_cfg", "_references", "_shots")
        }
        assert shown == {"_sound": spec.sound, "_cfg": spec.cfg_scale, "_references": True, "_shots": False}
        assert (one._end.row.layout.display != "none") is spec.end_frame
        assert f"1 to {spec.reference_images} images" in one._references.placeholder
    upload(one._start, png(400, 300))
    assert one.route == "multi-image2video"  # the start image is one of the images


def test_multi_image_sends_the_form_once(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    one = make()
    one._route.value = "multi-image2video"
    one._prompt.value = "the corgi plays on this beach"
    one._negative.value = "blur"
    one._duration.value, one._aspect.value, one._mode.value = "10", "1:1", "pro"
    upload(one._start, png(400, 300))
    one._references.value = "https://example.com/beach.jpg, https://example.com/ball.png"
    one._generate.click()
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/multi-image2video"
    assert body == {
        "model_name": "kling-v1-6", "prompt": "the corgi plays on this beach", "negative_prompt": "blur",
        "mode": "pro", "duration": "10", "aspect_ratio": "1:1",
        "image_list": [{"image": Image(data=png(400, 300)).field()},
                       {"image": "https://example.com/beach.jpg"}, {"image": "https://example.com/ball.png"}],
    }  # fmt: skip
    polled_to_success(card, sim, "multi-image2video")
    wait_for(lambda: settled(one))
    (tmp_path / "corgi.png").write_bytes(png(400, 300))
    monkeypatch.chdir(tmp_path)
    code = run_shown_code(one, sim, monkeypatch)
    assert "client.multi_image2video(\n    ['corgi.png', 'https://example.com/beach.jpg', " in code
    assert "reference_images" not in code
    assert posts(sim)[1] == posts(sim)[0]


def test_multi_image_refusals_are_inline_and_send_nothing(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._route.value = "multi-image2video"
    one._prompt.value = "a corgi"
    one._generate.click()  # no image at all
    assert "takes 1 to 4 images (the start image and these URLs), got 0" in one._omni_error.value
    upload(one._start, png(400, 300))
    one._references.value = " ".join(f"https://example.com/{n}.png" for n in range(4))
    one._generate.click()
    assert "got 5" in one._omni_error.value
    one._references.value = "beach.jpg"
    one._generate.click()
    assert "is not an http(s) URL" in one._omni_error.value
    one._references.value = ""
    one._prompt.value = " "
    one._generate.click()
    assert "Write a prompt" in one._prompt_error.value
    assert posts(sim) == []
    assert one.cards == ()
    assert not one._generate.disabled


# -- motion-control and avatar -------------------------------------------------------------------

FACE, DANCE = "https://example.com/face.png", "https://example.com/dance.mp4"
VOICE = "https://example.com/hello.mp3"


@pytest.mark.parametrize("route", ["motion-control", "avatar/image2video"])
def test_the_image_routes_offer_only_what_they_take(make: Callable[..., Studio], route: str) -> None:
    one = make()
    one._duration.value, one._aspect.value = "10", "9:16"
    one._route.value = route
    [model] = models_for(route)
    assert (one._model.options, one._mode.options) == ((model,), model_spec(model, route).modes)
    fields = ("_duration", "_aspect", "_negative", "_sound", "_cfg", "_references", "_shots", "_motion")
    shown = {name: getattr(one, name).layout.display != "none" for name in fields}
    assert shown == {name: name == "_motion" and route == "motion-control" for name in fields}
    assert (one._start.row.layout.display != "none", one._end.row.layout.display) == (True, "none")
    assert ("optional" in one._prompt.placeholder) is (route == "avatar/image2video")
    assert ("avatar's voice" in one._audio.placeholder) is (route == "avatar/image2video")
    new = (one._motion, one._motion_video, one._facing, one._keep_sound, one._motion_error)
    assert all(is_shared(widget.layout) for widget in new)  # the form's own models, on shared layouts
    assert set(new) <= set(one._owned)
    upload(one._start, png(400, 300))
    assert one.route == route  # the start image is the character or the face
    one._route.value = "text2video"
    back = ("_duration", "_aspect", "_negative")
    assert all(getattr(one, name).layout.display != "none" for name in back)
    assert (one._duration.value, one._aspect.value) == ("10", "9:16")  # kept while hidden
    assert one._motion.layout.display == "none"


def test_avatar_sends_the_form_once(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = make()
    one._route.value = "avatar/image2video"
    one._start.url.value = FACE
    one._audio.value = VOICE
    one._prompt.value = "she smiles"
    one._mode.value = "pro"
    one._generate.click()
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/avatar/image2video"
    assert body == {
        "model_name": "kling-avatar", "image": FACE, "sound_file": VOICE, "prompt": "she smiles",
        "mode": "pro",
    }  # fmt: skip
    polled_to_success(card, sim, "avatar/image2video")
    wait_for(lambda: settled(one))
    code = run_shown_code(one, sim, monkeypatch)
    assert f"client.avatar_image2video(\n    {FACE!r},\n    audio={VOICE!r}," in code
    assert posts(sim)[1] == posts(sim)[0]


def test_avatar_refusals_are_inline_and_its_prompt_optional(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    one = make()
    one._route.value = "avatar/image2video"
    one._audio.value = VOICE
    one._generate.click()  # no face
    assert "avatar/image2video needs a start image (the face" in one._start.error.value
    one._start.url.value = FACE
    one._audio.value = " "
    one._generate.click()
    assert "avatar/image2video needs an audio" in one._audio_error.value
    one._audio.value = "hello.ogg"  # the client's refusals go to the Audio field too
    one._generate.click()
    wait_for(lambda: "audio must be an http(s) URL or a path" in one._audio_error.value)
    wait_for(lambda: settled(one))
    one._audio.value = "missing.mp3"
    one._generate.click()
    wait_for(lambda: "missing.mp3" in one._audio_error.value)
    wait_for(lambda: settled(one))
    assert (posts(sim), one.cards, one._generate_error.value) == ([], (), "")
    (tmp_path / "hello.mp3").write_bytes(MP3)
    one._audio.value = "hello.mp3"
    one._generate.click()  # no prompt: the avatar route takes none
    [card] = wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert (path, body) == (
        "/kling/v1/videos/avatar/image2video",
        {"model_name": "kling-avatar", "image": FACE, "sound_file": base64.b64encode(MP3).decode(),
         "mode": "std"},
    )  # fmt: skip
    assert one._audio_error.value == ""
    assert card.wait(WAIT).status.value == "SUCCESS"


def test_motion_control_sends_the_form_once(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = make()
    one._route.value = "motion-control"
    one._start.url.value = FACE
    one._motion_video.value = DANCE
    one._facing.value = "video"
    one._keep_sound.value = False
    one._prompt.value = "on a beach at dawn"
    one._mode.value = "pro"
    one._generate.click()
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    [(path, body)] = posts(sim)
    assert path == "/kling/v1/videos/motion-control"
    assert body == {
        "model_name": "kling-v2-6", "image_url": FACE, "video_url": DANCE, "prompt": "on a beach at dawn",
        "character_orientation": "video", "mode": "pro", "keep_original_sound": "no",
    }  # fmt: skip
    polled_to_success(card, sim, "motion-control")
    wait_for(lambda: settled(one))
    code = run_shown_code(one, sim, monkeypatch)
    assert f"client.motion_control(\n    {FACE!r},\n    {DANCE!r},\n    'on a beach at dawn'," in code
    assert "keep_original_sound='no'" in code
    assert posts(sim)[1] == posts(sim)[0]


def test_motion_control_refusals_are_inline_and_send_nothing(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    one._route.value = "motion-control"
    one._prompt.value = "on a beach"
    one._motion_video.value = DANCE
    one._generate.click()  # no character
    assert "motion-control needs a start image (the character" in one._start.error.value
    one._start.url.value = FACE
    for video in ("", "dance.mp4"):
        one._motion_video.value = video
        one._generate.click()
        assert "needs the motion video as an http(s) URL" in one._motion_error.value
    one._motion_video.value = DANCE
    one._prompt.value = " "  # the gateway refuses a motion-control task without a prompt
    one._generate.click()
    assert "Write a prompt" in one._prompt_error.value
    one._prompt.value = "on a beach"
    one._motion_video.value = "https://example.com/dance.avi"  # the client's refusal, at the same field
    one._generate.click()
    wait_for(lambda: "video must be an .mp4 or .mov file" in one._motion_error.value)
    wait_for(lambda: settled(one))
    assert (posts(sim), one.cards, one._generate_error.value) == ([], (), "")


# -- Lip-sync --------------------------------------------------------------------------------------


def finished_card(one: Studio) -> tuple[TaskStatusWidget, Any]:
    """Generate a text2video task and wait until it succeeded and its Lip-sync button is enabled."""
    one._prompt.value = "a corgi talks"
    one._generate.click()
    [card] = wait_for(lambda: one.cards)
    card.wait(WAIT)
    lip_sync = card_button(one, "Lip-sync")
    wait_for(lambda: not lip_sync.disabled)  # written after the card is done, through deliver
    return card, lip_sync


MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(64)


def test_lip_sync_on_a_finished_card_identifies_the_face_then_submits_once(
    sim: GatewaySimulator, make: Callable[..., Studio], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "hello.mp3").write_bytes(MP3)
    monkeypatch.chdir(tmp_path)  # the Audio field's path is the kernel's, like the shown code's
    one = make()
    source, lip_sync = finished_card(one)
    assert is_shared(lip_sync.layout)  # per card, the button is the only new model it brings
    assert is_shared(lip_sync.style)
    lip_sync.click()  # no audio yet: refused at its field
    assert "Lip-sync needs an audio" in one._audio_error.value
    assert len(posts(sim)) == 1
    one._audio.value = "hello.mp3"
    one._audio_from.value, one._audio_to.value = 0.5, 3.25
    lip_sync.click()
    assert (lip_sync.disabled, one._generate.disabled) == (True, True)  # one submission at a time
    lip_sync.click()
    wait_for(lambda: len(one.cards) == 2)
    [_, (face_path, face_body), (path, body)] = posts(sim)
    video_id = source.task.videos[0].id if source.task else None
    assert (face_path, face_body) == (
        "/kling/v1/videos/identify-face", {"model_name": "kling-identify-face", "video_id": video_id}
    )  # fmt: skip
    assert path == "/kling/v1/videos/advanced-lip-sync"
    session = body.pop("session_id")
    assert isinstance(session, str)
    assert body == {
        "model_name": "kling-lip-sync",
        "face_choose": [{"face_id": "0", "sound_file": base64.b64encode(MP3).decode(),
                         "sound_start_time": 500, "sound_end_time": 3250, "sound_insert_time": 0}],
    }  # fmt: skip
    card = one.cards[0]  # the new one on top
    polled_to_success(card, sim, "advanced-lip-sync")
    assert one._audio_error.value == ""
    wait_for(lambda: settled(one))
    assert len(posts(sim)) == 3
    code = run_shown_code(one, sim, monkeypatch)  # the lip-sync's card: the same two POSTs again
    assert f"client.lip_sync(\n    {video_id!r},\n    audio='hello.mp3',\n    sound_start_time=500," in code
    [*_, (again_face, again_face_body), (again_path, again_body)] = posts(sim)
    assert (again_face, again_face_body, again_path) == (face_path, face_body, path)
    assert again_body.pop("session_id") != session  # a new identify-face, a new session
    assert again_body == body


def test_lip_sync_refusals_show_at_the_audio_field(
    sim: GatewaySimulator, make: Callable[..., Studio]
) -> None:
    one = make()
    _, lip_sync = finished_card(one)
    one._audio.value = "hello.ogg"  # the client refuses it before identify-face
    lip_sync.click()
    wait_for(lambda: one._audio_error.value)
    assert "audio must be an http(s) URL or a path to a .mp3/.wav/.m4a/.aac file" in one._audio_error.value
    wait_for(lambda: settled(one))
    one._audio.value = "https://example.com/hello.mp3"
    one._audio_from.value, one._audio_to.value = 3.0, 2.0
    lip_sync.click()
    wait_for(lambda: "must be after sound_start_time" in one._audio_error.value)
    wait_for(lambda: settled(one))
    assert len(posts(sim)) == 1  # nothing sent, not even identify-face
    sim.max_parallel = sim.unfinished()  # the lip-sync POST itself is refused (429), after identify-face
    one._audio_from.value = 0.0
    lip_sync.click()
    wait_for(lambda: "parallel-task limit" in one._audio_error.value)
    assert [(r.path.rsplit("/", 1)[-1], r.status) for r in sim.requests() if r.method == "POST"][1:] == [
        ("identify-face", 200), ("advanced-lip-sync", 429)
    ]  # fmt: skip
    assert len(one.cards) == 1
    assert one._generate_error.value == ""
