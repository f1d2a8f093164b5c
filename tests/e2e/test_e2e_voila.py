"""Voila renders a quickstart-style notebook (the bar appears, fills, then the video plays), then the studio
notebook as an app."""

from __future__ import annotations

import re
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
from e2e_harness import (
    FINAL_BAR_JS,
    REPO,
    TOKEN,
    VIDEO_LOADED_JS,
    VIDEO_PLAY_JS,
    VoilaRun,
    log,
    save_screenshot,
    width_percent,
)
from playwright.sync_api import expect
from studio_steps import drive_studio

pytestmark = pytest.mark.e2e


def test_voila_renders_bar_then_plays_video(voila_run: VoilaRun) -> None:
    page, gateway = voila_run.page, voila_run.gateway
    bar = page.locator(".widget-hprogress .progress-bar")
    expect(bar).to_have_count(1, timeout=90_000)  # Voila executes the notebook before showing outputs
    submits = [r for r in gateway.requests() if r.method == "POST"][voila_run.submits_before :]
    assert len(submits) == 1, f"expected the page to submit one task, saw {submits}"
    task_id = submits[0].task_id

    # When watching ends the widget's display becomes the static card, if Voila applies display updates;
    # either way the user sees a full green bar, "Done in …" and a player.
    expect(page.get_by_text(re.compile(r"Done in \d+:\d\d"))).to_have_count(1, timeout=60_000)
    final = page.locator("body").evaluate(FINAL_BAR_JS)
    log(f"[voila] final bar: {final}")
    assert final is not None
    assert (final["style"], final["value"]) == ("success", 100), final
    records = page.evaluate("() => (window.__e2e && window.__e2e.roots[0]) || []")
    widths = [w for w in (width_percent(r["w"]) for r in records) if w is not None]
    log(f"[voila] bar widths sampled: {widths}")
    assert all(b >= a for a, b in pairwise(widths)), f"the bar went backwards: {widths}"

    video = page.locator("video")
    expect(video).to_have_count(1, timeout=30_000)
    src = video.get_attribute("src")
    assert src is not None
    assert src.startswith(gateway.url), src
    video.scroll_into_view_if_needed()
    page.wait_for_function(VIDEO_LOADED_JS, arg=video.element_handle(), timeout=20_000)
    played = video.evaluate(VIDEO_PLAY_JS)
    log(f"[voila] video: {played}")
    assert "error" not in played, played
    assert played["t1"] > played["t0"], f"currentTime did not advance after play(): {played}"
    served = [r for r in gateway.requests(task_id) if not r.path.startswith("/kling/")]
    assert served, "the simulator served no video bytes for the submitted task"
    save_screenshot(page, "voila-final")


def test_voila_renders_the_studio_app(voila_run: VoilaRun, e2e_workdir: Path) -> None:
    """notebooks/studio.ipynb as an app, in the same Voila server (after the quickstart test: its submits
    would count). The server's key points the notebook at the session's gateway."""
    shutil.copy(REPO / "notebooks" / "studio.ipynb", e2e_workdir / "root-voila" / "studio.ipynb")
    page = voila_run.page.context.new_page()
    try:
        origin = re.match(r"https?://[^/]+", voila_run.page.url)
        assert origin is not None
        page.goto(f"{origin.group(0)}/voila/render/studio.ipynb?token={TOKEN}", timeout=90_000)
        drive_studio(page, page.locator("body"), voila_run.gateway, "voila", lambda: None)
        expect(page.locator("body")).not_to_contain_text("import os")  # the studio alone, not the code
    finally:
        page.close()
