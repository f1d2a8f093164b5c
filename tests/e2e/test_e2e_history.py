"""`history()` plays a kept copy in the browser once the remote link has expired (issue 10, item 7).

On the session's JupyterLab and Notebook 7 servers (tests/e2e/conftest.py), a notebook submits a task whose
video link lives a few seconds, keeps the video while the link works, waits until the link has expired (the
simulator's video host then answers 403), and shows ``history()`` opened on that task. The page must show a
``<video>`` that plays (its clock advances) and whose bytes are the kept file's, SHA-256 for SHA-256.
Voila serves a single notebook per server here (the quickstart), so it is not part of this test; the player
is a core ``ipywidgets.Video``, which Voila renders with the same widget manager.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from e2e_harness import (
    AUTH,
    KERNEL_IDLE_JS,
    RUN_ALL_JS,
    TOKEN,
    VIDEO_LOADED_JS,
    VIDEO_PLAY_JS,
    Server,
    log,
    save_content_screenshot,
    write_notebook,
)
from playwright.sync_api import Browser, Page, Route, expect

from kling_widgets.simulator import GatewaySimulator

pytestmark = pytest.mark.e2e

LINK_LIFETIME = 12.0  # seconds: the task takes 5 s (the session's scenario), then it is kept at once
OFF_MACHINE = re.compile(r"^(https?|wss?)://(?!127\.0\.0\.1[:/])")
# The SHA-256 of the bytes the element plays (fetched again from its blob: URL).
VIDEO_SHA256_JS = """async v => {
  const bytes = await (await fetch(v.currentSrc || v.src)).arrayBuffer();
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('');
}"""
KEEP_CELL = """import hashlib, time, urllib.error, urllib.request
from kling_widgets import KlingClient, history, keep

client = KlingClient(base_url={url!r}, api_key={key!r})  # the test's simulator and its throwaway key
task = client.wait(client.text2video("a corgi surfing").task_id, poll_interval=0.2)
[kept] = keep(task, client=client)
while not all(v.expired for v in client.ledger.get(task.task_id).videos):
    time.sleep(0.2)
try:
    status = urllib.request.urlopen(task.video_url).status
except urllib.error.HTTPError as exc:
    status = exc.code
print("remote", status, "kept", hashlib.sha256(kept.read_bytes()).hexdigest())"""
HISTORY_CELL = "h = history(client)\nh.play(task.task_id)\nh"


@dataclass
class HistoryRun:
    """The page of the notebook (conftest.py screenshots a fixture's ``page`` when a test fails)."""

    page: Page


@pytest.fixture
def history_run(
    frontend: str, jupyter_server: Server, browser: Browser, gateway: GatewaySimulator
) -> Iterator[HistoryRun]:
    name = f"history-{frontend}.ipynb"
    cells = [("code", KEEP_CELL.format(url=gateway.url, key=gateway.api_key)), ("code", HISTORY_CELL)]
    write_notebook(jupyter_server.root / name, cells)
    lifetime, gateway.url_lifetime = gateway.url_lifetime, LINK_LIFETIME
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.set_default_timeout(30_000)
        context.route(OFF_MACHINE, lambda route: _block(route, frontend))
        page = context.new_page()
        # A workspace of its own in JupyterLab: the default one would reopen this notebook next to the
        # one nb_run opens later, and its run-all could land in the wrong tab.
        path = "lab/workspaces/kling-history/tree" if frontend == "lab" else "notebooks"
        page.goto(f"{jupyter_server.url}/{path}/{name}?token={TOKEN}", timeout=60_000)
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000, polling=200)
        page.evaluate(RUN_ALL_JS)
        yield HistoryRun(page)
    finally:
        gateway.url_lifetime = lifetime
        context.close()
        _shut_down_kernels(jupyter_server, name)


def _shut_down_kernels(server: Server, name: str) -> None:
    """End this notebook's session and kernel: the server lives on for the other browser tests."""
    sessions = requests.get(f"{server.url}/api/sessions", headers=AUTH, timeout=10).json()
    for session in sessions:
        if session.get("path") == name:
            requests.delete(f"{server.url}/api/sessions/{session['id']}", headers=AUTH, timeout=30)


def _block(route: Route, label: str) -> None:
    log(f"[{label}-history] blocked off-machine request: {route.request.url[:160]}")
    route.abort()


def test_history_plays_the_kept_copy_after_the_link_expired(history_run: HistoryRun, frontend: str) -> None:
    page = history_run.page
    keep_output = page.locator(".jp-Notebook .jp-CodeCell").nth(0).locator(".jp-Cell-outputArea")
    expect(keep_output).to_contain_text("remote 403 kept", timeout=90_000)
    match = re.search(r"remote 403 kept ([0-9a-f]{64})", keep_output.inner_text())
    assert match, keep_output.inner_text()

    output = page.locator(".jp-Notebook .jp-CodeCell").nth(1).locator(".jp-Cell-outputArea")
    expect(output).to_contain_text("playing the kept copy", timeout=60_000)
    video = output.locator("video")
    expect(video).to_have_count(1)
    output.scroll_into_view_if_needed()
    page.wait_for_function(VIDEO_LOADED_JS, arg=video.element_handle(), timeout=20_000)
    played = video.evaluate(VIDEO_PLAY_JS)
    log(f"[{frontend}] kept copy: {played}")
    assert "error" not in played, played
    assert played["t1"] > played["t0"], f"currentTime did not advance after play(): {played}"
    assert played["src"].startswith("blob:"), played  # the kept bytes, not the (expired) remote link
    assert video.evaluate(VIDEO_SHA256_JS) == match[1]
    assert "expired" in output.locator("table.kling-history").inner_text()
    save_content_screenshot(output, f"{frontend}-history")
