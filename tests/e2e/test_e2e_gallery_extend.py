"""Extend on a finished gallery card, in a real JupyterLab 4 and Notebook 7, in headless Chromium.

Each front-end's server (the session's ``nb_run`` server) gets a notebook whose one cell shows a
``generate_many`` of two prompts on the session's simulator. Once both cards are done the gallery's output is
static HTML; in the Extend control, in its own output below it, the first card is picked and Extend
double-clicked: exactly one POST to video-extend naming that card's video, the gallery's output turns live
again with a third card, and ends static with three players (judged from the DOM and the simulator's request
log).
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
from e2e_harness import (
    KERNEL_IDLE_JS,
    RUN_ALL_JS,
    TOKEN,
    NotebookRun,
    log,
    save_screenshot,
    write_notebook,
)
from playwright.sync_api import expect

from kling_widgets import KlingClient
from kling_widgets.simulator import GatewaySimulator, RequestRecord

pytestmark = pytest.mark.e2e

PROMPTS = ["a corgi surfing, for extending", "a cat surfing, for extending"]
DONE = 60_000  # ms: a task takes ~5 s on this gateway


def _posts(gateway: GatewaySimulator, since: int, route: str) -> list[RequestRecord]:
    return [r for r in gateway.requests()[since:] if r.method == "POST" and r.path.endswith(f"/{route}")]


def test_extend_a_done_gallery_card(nb_run: NotebookRun, e2e_workdir: Path) -> None:
    gateway, app = nb_run.gateway, nb_run.app
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(nb_run.page.url))
    name = f"gallery-extend-{app}.ipynb"
    setup = (
        "from kling_widgets import generate_many\n\n"
        f"generate_many({PROMPTS!r}, base_url={gateway.url!r}, api_key={gateway.api_key!r}, "
        "poll_interval=0.3, max_poll_interval=0.5, keep=False)"
    )
    write_notebook(e2e_workdir / f"root-{app}" / name, [("code", setup)])  # the server's root folder
    before = len(gateway.requests())
    page = nb_run.page.context.new_page()  # a second tab on the same server
    try:
        path = "lab/tree" if app == "lab" else "notebooks"
        page.goto(f"{origin}/{path}/{name}?token={TOKEN}", timeout=60_000)
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000, polling=200)
        page.evaluate(RUN_ALL_JS)
        area = page.locator(".jp-Notebook .jp-CodeCell").first.locator(".jp-Cell-outputArea")

        # Both done: the gallery's output is static HTML; the Extend control below it is live.
        expect(area).to_contain_text("2 tasks · 2 done", timeout=DONE)
        expect(area.locator("video")).to_have_count(2)
        extend = area.get_by_role("button", name="Extend")
        expect(extend).to_be_enabled(timeout=30_000)
        log(f"[{app}] the gallery ended static; Extend is offered")

        pick = area.locator("select")
        expect(pick.locator("option")).to_have_count(2)
        pick.select_option(index=0)  # the first prompt's card (the pick starts at whichever ended first)
        extend.dblclick()
        expect(area).to_contain_text("3 tasks", timeout=30_000)
        expect(area).to_contain_text("1 running", timeout=30_000)  # the gallery's output is live again
        expect(area).to_contain_text("3 tasks · 3 done", timeout=DONE)
        expect(area.locator("video")).to_have_count(3)

        (extended,) = _posts(gateway, before, "video-extend")  # a double click: one POST
        (first,) = [r for r in _posts(gateway, before, "text2video") if PROMPTS[0] in r.body]
        with KlingClient(base_url=gateway.url, api_key=gateway.api_key, ledger=False) as client:
            [source] = client.get_task(str(first.task_id)).videos
        assert json.loads(extended.body) == {"model_name": "kling-video-extend", "video_id": source.id}
        assert f"Extends {first.task_id}" in area.inner_text()
        save_screenshot(area, f"{app}-gallery-extend")
        log(f"[{app}] Extend sent one video-extend POST; its card ended done with a player")
    finally:
        page.close()
