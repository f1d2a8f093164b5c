"""TaskStatusWidget in a real JupyterLab 4 and Notebook 7, in headless Chromium, against the simulator.

One generated notebook per front-end watches six simulated tasks at once (see ``SCENARIOS`` in
conftest.py); each test judges one cell, from the DOM and from the simulator's request log. While a task
is watched its output is the live widget (``.widget-hprogress`` bar); when watching ends the output is
replaced by the static card (``.kling-bar``, the final line, plain ``<video>`` players), which is also what
a saved notebook, nbconvert and GitHub show. The DOM recorder samples both.
"""

from __future__ import annotations

import re
import time
from itertools import pairwise

import pytest
from e2e_harness import (
    FINAL_BAR_JS,
    HOSTILE_IMG,
    HOSTILE_SCRIPT,
    JS_URL_ATTRS_JS,
    KERNEL_IDLE_JS,
    VIDEO_LOADED_JS,
    VIDEO_PLAY_JS,
    NotebookRun,
    copy_to_docs,
    log,
    save_content_screenshot,
    save_screenshot,
    wait_until,
    width_percent,
)
from playwright.sync_api import expect

from kling_widgets import KlingClient

pytestmark = pytest.mark.e2e

TERMINAL_TIMEOUT = 60_000  # ms: the longest scripted task finishes in ~15 polls of <= 0.5 s


def _widths(records: list[dict[str, object]]) -> list[float]:
    return [w for w in (width_percent(r["w"]) for r in records) if w is not None]  # type: ignore[arg-type]


def _first(records: list[dict[str, object]], pattern: str, start: int = 0) -> int | None:
    regex = re.compile(pattern, re.IGNORECASE)
    return next((i for i in range(start, len(records)) if regex.search(str(records[i]["text"]))), None)


def test_success_bar_only_grows_and_ends_green(nb_run: NotebookRun) -> None:
    expect(nb_run.final_bar("success", "success")).to_have_count(1, timeout=TERMINAL_TIMEOUT)
    final = nb_run.output("success").evaluate(FINAL_BAR_JS)
    assert final["value"] == 100, final
    assert final["fill"] not in ("", "rgba(0, 0, 0, 0)"), f"the full bar is not coloured: {final}"
    expect(nb_run.bar("success")).to_have_count(0)  # the live widget gave way to the static card
    widths = _widths(nb_run.records("success"))
    log(f"[{nb_run.app}] success bar widths sampled: {widths}")
    decreases = [(a, b) for a, b in pairwise(widths) if b < a]
    assert not decreases, f"the bar went backwards: {decreases} in {widths}"
    assert widths[-1] == 100
    assert len({w for w in widths if 0 < w < 100}) >= 2, f"the bar did not move through the run: {widths}"


def test_status_text_passes_queued_generating_done(nb_run: NotebookRun) -> None:
    expect(nb_run.final_bar("success", "success")).to_have_count(1, timeout=TERMINAL_TIMEOUT)
    expect(nb_run.output("success")).to_contain_text(re.compile("done", re.IGNORECASE))
    records = nb_run.records("success")
    texts = [str(r["text"]) for r in records]
    queued = _first(records, r"queued")
    generating = _first(records, r"generating", (queued or 0) + 1) if queued is not None else None
    done = _first(records, r"\bdone\b", generating + 1) if generating is not None else None
    seen = f"distinct texts seen: {list(dict.fromkeys(texts))}"
    assert queued is not None, f"never showed 'queued'; {seen}"
    assert generating is not None, f"never showed 'generating' after 'queued'; {seen}"
    assert done is not None, f"never showed 'done' after 'generating'; {seen}"


def test_success_plays_the_video_and_screenshots(nb_run: NotebookRun) -> None:
    task_id = nb_run.task_ids["success"]
    video = nb_run.output("success").locator("video")
    expect(video).to_have_count(1, timeout=TERMINAL_TIMEOUT)
    with KlingClient(api_key=nb_run.gateway.api_key, base_url=nb_run.gateway.url) as client:
        clip_url = client.get_task(task_id).video_url
    assert clip_url is not None
    assert clip_url.startswith(nb_run.gateway.url)
    assert video.get_attribute("src") == clip_url

    nb_run.cell("success").scroll_into_view_if_needed()
    nb_run.page.wait_for_function(VIDEO_LOADED_JS, arg=video.element_handle(), timeout=20_000)
    played = video.evaluate(VIDEO_PLAY_JS)
    log(f"[{nb_run.app}] video: {played}")
    assert "error" not in played, played
    assert played["rs"] >= 2, played
    assert played["duration"] > 0, played
    assert played["width"] > 0, played
    assert played["t1"] > played["t0"], f"currentTime did not advance after play(): {played}"
    assert played["err"] is None
    # The browser fetched the clip from the simulator's signed path, not from anywhere else.
    downloads = [r for r in nb_run.gateway.requests(task_id) if not r.path.startswith("/kling/")]
    assert downloads, "the simulator served no video bytes for this task"
    assert all(r.status in (200, 206) for r in downloads), downloads

    nb_run.page.evaluate("() => document.querySelectorAll('video').forEach(v => { v.currentTime = 1.5; })")
    time.sleep(0.5)  # let the seek paint a frame for the screenshot
    save_screenshot(nb_run.page, f"{nb_run.app}-final")
    widget_shot = save_content_screenshot(nb_run.output("success"), f"{nb_run.app}-widget")
    if nb_run.app == "lab":
        copy_to_docs(widget_shot, "widget.png")


def test_failure_shows_reason_in_danger_style_without_player(nb_run: NotebookRun) -> None:
    output = nb_run.output("failure")
    expect(nb_run.final_bar("failure", "danger")).to_have_count(1, timeout=TERMINAL_TIMEOUT)
    expect(output).to_contain_text("Image pixel is invalid")
    expect(output).to_contain_text(re.compile("failed", re.IGNORECASE))
    expect(output.locator("video")).to_have_count(0)


def test_hostile_failure_reason_renders_as_text(nb_run: NotebookRun) -> None:
    output = nb_run.output("hostile")
    expect(nb_run.final_bar("hostile", "danger")).to_have_count(1, timeout=TERMINAL_TIMEOUT)
    time.sleep(1.0)  # an injected <img src=x> needs a moment to fail to load and fire onerror
    # Collect every symptom, so a red run says exactly what went wrong.
    problems = []
    if nb_run.flag("__pwned") is not None:
        problems.append("window.__pwned was set: the fail_message executed")
    text = output.text_content() or ""
    problems += [f"not shown as literal text: {s}" for s in (HOSTILE_IMG, HOSTILE_SCRIPT) if s not in text]
    for tag in ("img", "script"):
        if count := output.locator(tag).count():
            problems.append(f"{count} <{tag}> element(s) injected into the output")
    assert not problems, problems
    expect(output.locator("video")).to_have_count(0)


def test_javascript_video_url_is_never_embedded(nb_run: NotebookRun) -> None:
    output = nb_run.output("js_url")
    # The gateway answers SUCCESS with a javascript: URL; the widget must reach a terminal look regardless.
    expect(nb_run.final_bar("js_url")).to_have_count(1, timeout=TERMINAL_TIMEOUT)
    time.sleep(1.0)
    problems = []
    videos = output.locator("video")
    if count := videos.count():
        problems.append(
            f"{count} <video> element(s), src {[videos.nth(i).get_attribute('src') for i in range(count)]}"
        )
    problems += [f"javascript: URL in an attribute: {a}" for a in output.evaluate(JS_URL_ATTRS_JS)]
    if nb_run.flag("__pwned_by_url") is not None:
        problems.append("window.__pwned_by_url was set: the URL executed")
    assert not problems, problems


def test_bar_updates_while_another_cell_sleeps(nb_run: NotebookRun) -> None:
    sleep_out = nb_run.output("sleep")
    expect(sleep_out).to_contain_text("sleep-end", timeout=60_000)
    sleep_records = nb_run.records("sleep")
    started = next(r["t"] for r in sleep_records if "sleep-start" in str(r["text"]))
    ended = next(r["t"] for r in sleep_records if "sleep-end" in str(r["text"]))
    assert ended - started > 4.0, f"the sleep cell did not block ({ended - started:.1f}s)"
    during = [r for r in nb_run.records("busy") if started < r["t"] < ended]
    widths = _widths(during)
    texts = {str(r["text"]) for r in during}
    log(f"[{nb_run.app}] during the {ended - started:.1f}s sleep: {len(during)} DOM changes, widths {widths}")
    assert len(set(widths)) >= 3, f"the bar hardly moved while the kernel was busy: {widths}"
    assert len(texts) >= 3, f"the status text hardly changed while the kernel was busy: {texts}"


def test_stop_button_stops_polling(nb_run: NotebookRun) -> None:
    # Button clicks reach the kernel's main thread only between cells, so wait for the run to finish.
    expect(nb_run.output("sleep")).to_contain_text("sleep-end", timeout=60_000)
    nb_run.page.wait_for_function(KERNEL_IDLE_JS, timeout=30_000, polling=200)
    expect(nb_run.output("stop")).to_contain_text(re.compile("generating", re.IGNORECASE), timeout=30_000)
    wait_until(lambda: len(nb_run.status_gets("stop")) >= 3, timeout=30, what="the stop task being polled")

    nb_run.output("stop").get_by_role("button", name=re.compile("stop", re.IGNORECASE)).click()
    expect(nb_run.output("stop")).to_contain_text(re.compile("stopped", re.IGNORECASE), timeout=15_000)
    at_stopped = len(nb_run.status_gets("stop"))
    time.sleep(1.0)  # grace for a request that was already in flight
    after_grace = len(nb_run.status_gets("stop"))
    time.sleep(2.5)  # five of the widget's maximum poll intervals
    gets = nb_run.status_gets("stop")
    log(f"[{nb_run.app}] stop task GETs: {at_stopped} when 'stopped' showed, {len(gets)} 3.5 s later")
    assert after_grace - at_stopped <= 1, "more than one request went out after the widget showed 'stopped'"
    assert len(gets) == after_grace, f"polling went on after Stop: {len(gets) - after_grace} more GETs"
