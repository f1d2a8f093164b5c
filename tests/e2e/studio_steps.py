"""The studio's browser checks, one pass per front-end (tests/e2e/test_e2e_studio.py for JupyterLab 4 and
Notebook 7, tests/e2e/test_e2e_voila.py for Voila), judged from the DOM and from the simulator's request log:

1. Generate with a blank prompt shows the error at the prompt and sends nothing;
2. a typed prompt (with its live count), a model and an aspect ratio picked, Generate double-clicked:
   exactly one POST, whose body carries those values, and one card;
3. that card plays the video;
4. an uploaded PNG (with its thumbnail) makes the next task an image2video POST carrying the image;
5. at the account's parallel limit the gateway's 429 shows inline and no card is added;
6. Extend on the first card (it succeeded): exactly one POST to video-extend naming that card's video, and a
   new card on top that plays;
7. Lip-sync on the first card, with an audio URL typed in the Audio field: identify-face naming that card's
   video, then exactly one POST to advanced-lip-sync with the audio, and a new card on top that reaches done;
8. multi-image2video picked in the Route dropdown, with a reference URL: exactly one POST to
   multi-image2video carrying the uploaded start image and the URL, and a new card that reaches done;
9. motion-control picked in the Route dropdown (Seconds hidden, its own row shown), a motion video URL typed
   and "video" picked as Facing: exactly one POST to motion-control carrying the uploaded image as the
   character, the URL and the facing, and a new card that reaches done.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

from e2e_harness import VIDEO_LOADED_JS, VIDEO_PLAY_JS, log, wait_until
from playwright.sync_api import Locator, Page, expect

from helpers import png
from kling_widgets import KlingClient
from kling_widgets.simulator import GatewaySimulator, RequestRecord

PROMPT = "a corgi surfing at sunset, cinematic"
MODEL, ASPECT = "kling-v2-5-turbo", "9:16"
IMAGE = png(480, 320)
AUDIO = "https://example.com/hello.mp3"
BEACH = "https://example.com/beach.jpg"
DANCE = "https://example.com/dance.mp4"
DONE = 90_000  # ms: Voila runs the notebook before it shows anything; a task takes ~5 s on this gateway


def _posts(gateway: GatewaySimulator) -> list[RequestRecord]:
    return [r for r in gateway.requests() if r.method == "POST"]


def _new_posts(gateway: GatewaySimulator, before: int, count: int) -> list[RequestRecord]:
    wait_until(lambda: len(_posts(gateway)) >= before + count, timeout=30, what=f"{count} new POST(s)")
    return _posts(gateway)[before:]


def _pick(area: Locator, label: str, value: str) -> None:
    area.locator(".widget-dropdown", has_text=label).locator("select").select_option(value)


def drive_studio(
    page: Page, area: Locator, gateway: GatewaySimulator, label: str, before_refusal: Callable[[], None]
) -> None:
    """Every check of the module docstring, in order, on the studio shown in ``area``; ``before_refusal``
    runs between the fourth and the fifth (a screenshot of the studio with two cards)."""
    generate = area.get_by_role("button", name="Generate")
    expect(generate).to_be_visible(timeout=DONE)
    expect(area).to_contain_text("Balance:", timeout=30_000)  # the simulator answers the billing endpoints
    cards = area.locator(".widget-hprogress")
    before = len(_posts(gateway))

    # 1. A blank prompt: the error at the prompt, nothing sent.
    generate.click()
    expect(area).to_contain_text("Write a prompt first")
    assert len(_posts(gateway)) == before, "a blank prompt was sent"
    log(f"[{label}] blank prompt refused inline")

    # 2. Prompt, model, aspect ratio; a double click sends one POST with those values.
    area.locator("textarea").first.fill(PROMPT)
    expect(area).to_contain_text(f"{len(PROMPT)} / 2,500 characters")
    expect(area).not_to_contain_text("Write a prompt first")  # typing cleared it
    _pick(area, "Model", MODEL)
    _pick(area, "Aspect ratio", ASPECT)
    generate.dblclick()
    expect(cards).to_have_count(1, timeout=30_000)
    [post] = _new_posts(gateway, before, 1)
    body = json.loads(post.body)
    assert post.path == "/kling/v1/videos/text2video"
    assert (body["prompt"], body["model_name"], body["aspect_ratio"]) == (PROMPT, MODEL, ASPECT), body
    assert (body["duration"], body["mode"]) == ("5", "std"), body  # the model's defaults, as shown

    # 3. The card plays the video.
    video = area.locator("video")
    expect(video).to_have_count(1, timeout=60_000)
    video.scroll_into_view_if_needed()
    page.wait_for_function(VIDEO_LOADED_JS, arg=video.element_handle(), timeout=20_000)
    played = video.evaluate(VIDEO_PLAY_JS)
    log(f"[{label}] studio card video: {played}")
    assert "error" not in played, played
    assert played["t1"] > played["t0"], f"currentTime did not advance after play(): {played}"
    assert len(_posts(gateway)) == before + 1, "the double click sent more than one POST"
    log(f"[{label}] one POST for a double click, and its card plays the video")

    # 4. An uploaded image makes an image-to-video task.
    with page.expect_file_chooser() as chooser:  # ipywidgets' file input is not in the document
        area.locator(".widget-upload").first.click()
    chooser.value.set_files(files=[{"name": "corgi.png", "mimeType": "image/png", "buffer": IMAGE}])
    expect(area.locator("img:visible")).to_have_count(1)  # the thumbnail
    expect(generate).to_be_enabled()
    generate.click()
    expect(cards).to_have_count(2, timeout=30_000)
    [_, post] = _new_posts(gateway, before, 2)
    body = json.loads(post.body)
    assert post.path == "/kling/v1/videos/image2video"
    assert body["image"] == base64.b64encode(IMAGE).decode()
    assert (body["model_name"], body["aspect_ratio"]) == (MODEL, ASPECT), body  # kept: they still fit
    expect(video).to_have_count(2, timeout=60_000)
    log(f"[{label}] the upload made an image2video task")
    before_refusal()

    # 5. The parallel limit: the 429 inline, no card.
    gateway.max_parallel = gateway.unfinished()  # every slot taken: the next POST is refused
    try:
        expect(generate).to_be_enabled()
        generate.click()
        expect(area).to_contain_text("parallel-task limit", timeout=30_000)
        [*_, refused] = _new_posts(gateway, before, 3)
        assert refused.status == 429, refused
    finally:
        gateway.max_parallel = None
    expect(cards).to_have_count(2)
    log(f"[{label}] the 429 shows inline and adds no card")

    # 6. Extend the first card (the bottom one: newest first): one POST to video-extend, a new card on top.
    extend = area.get_by_role("button", name="Extend").last
    expect(extend).to_be_enabled(timeout=30_000)
    extend.click()
    expect(cards).to_have_count(3, timeout=30_000)
    [*_, extended] = _new_posts(gateway, before, 4)
    first = _posts(gateway)[before]
    assert extended.path == "/kling/v1/videos/video-extend", extended.path
    body = json.loads(extended.body)
    with KlingClient(base_url=gateway.url, api_key=gateway.api_key, ledger=False) as client:
        [source] = client.get_task(str(first.task_id)).videos
    assert (body["video_id"], body["prompt"]) == (source.id, PROMPT), body  # the form's prompt
    expect(video).to_have_count(3, timeout=60_000)
    assert len(_posts(gateway)) == before + 4, "Extend sent more than one POST"
    log(f"[{label}] Extend sent one video-extend POST and its card shows the video")

    # 7. Lip-sync the first card with the Audio field's URL: identify-face, one POST, a new card done.
    area.locator(".widget-text", has_text="Audio").locator("input").fill(AUDIO)
    lip_sync = area.get_by_role("button", name="Lip-sync").last
    expect(lip_sync).to_be_enabled(timeout=30_000)
    lip_sync.click()
    expect(cards).to_have_count(4, timeout=30_000)
    [*_, face, synced] = _new_posts(gateway, before, 6)
    assert [r.path.rsplit("/", 1)[1] for r in (face, synced)] == ["identify-face", "advanced-lip-sync"]
    assert json.loads(face.body)["video_id"] == source.id, face.body
    [choice] = json.loads(synced.body)["face_choose"]
    assert (choice["sound_file"], choice["sound_end_time"]) == (AUDIO, 5000), choice  # the form's defaults
    expect(video).to_have_count(4, timeout=60_000)  # the new card reached done and shows its video
    assert len(_posts(gateway)) == before + 6, "Lip-sync sent more than identify-face and one POST"
    log(f"[{label}] Lip-sync sent identify-face and one advanced-lip-sync POST; its card is done")

    # 8. multi-image2video from the Route dropdown: the start image and a reference URL, one POST.
    _pick(area, "Route", "multi-image2video")
    references = area.get_by_placeholder(re.compile("More image URLs"))
    expect(references).to_be_visible()
    references.fill(BEACH)
    expect(generate).to_be_enabled()
    generate.click()
    expect(cards).to_have_count(5, timeout=30_000)
    [*_, multi] = _new_posts(gateway, before, 7)
    body = json.loads(multi.body)
    assert multi.path == "/kling/v1/videos/multi-image2video", multi.path
    assert body["image_list"] == [{"image": base64.b64encode(IMAGE).decode()}, {"image": BEACH}], body
    assert (body["model_name"], body["prompt"]) == ("kling-v1-6", PROMPT), body
    expect(video).to_have_count(5, timeout=60_000)
    assert len(_posts(gateway)) == before + 7, "multi-image2video sent more than one POST"
    log(f"[{label}] multi-image2video sent one POST with both images; its card is done")

    # 9. motion-control from the Route dropdown: the uploaded image moves as the video does, one POST.
    _pick(area, "Route", "motion-control")
    expect(area.locator(".widget-dropdown", has_text="Seconds")).to_be_hidden()
    area.locator(".widget-text", has_text="Motion video").locator("input").fill(DANCE)
    _pick(area, "Facing", "video")
    expect(generate).to_be_enabled()
    generate.click()
    expect(cards).to_have_count(6, timeout=30_000)
    [*_, motion] = _new_posts(gateway, before, 8)
    body = json.loads(motion.body)
    assert motion.path == "/kling/v1/videos/motion-control", motion.path
    assert body == {
        "model_name": "kling-v2-6", "image_url": base64.b64encode(IMAGE).decode(), "video_url": DANCE,
        "prompt": PROMPT, "character_orientation": "video", "mode": "std", "keep_original_sound": "yes",
    }, body  # fmt: skip
    expect(video).to_have_count(6, timeout=60_000)
    assert len(_posts(gateway)) == before + 8, "motion-control sent more than one POST"
    log(f"[{label}] motion-control sent one POST with the image, the video and the facing; its card is done")
