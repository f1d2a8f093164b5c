"""The studio in a real JupyterLab 4 and Notebook 7, in headless Chromium, against the simulator.

Each front-end's server (the session's ``nb_run`` server) gets a second notebook that shows a studio; one
pass drives every check of ``studio_steps.drive_studio`` in order. JupyterLab's pass also takes the
screenshot for docs/studio.png (E2E_UPDATE_DOCS=1). The Voila pass is in test_e2e_voila.py, after the
quickstart, whose count of submits it would otherwise change.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import pytest
from e2e_harness import (
    KERNEL_IDLE_JS,
    RUN_ALL_JS,
    TOKEN,
    NotebookRun,
    copy_to_docs,
    save_screenshot,
    write_notebook,
)
from playwright.sync_api import Page
from studio_steps import drive_studio

pytestmark = pytest.mark.e2e


def _open(page: Page, url: str) -> None:
    page.goto(url, timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000, polling=200)
    page.evaluate(RUN_ALL_JS)


def test_studio_in_jupyter(nb_run: NotebookRun, e2e_workdir: Path) -> None:
    gateway, app = nb_run.gateway, nb_run.app
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(nb_run.page.url))
    name = f"studio-{app}.ipynb"
    setup = (
        "from kling_widgets import studio\n\n"
        f"studio(base_url={gateway.url!r}, api_key={gateway.api_key!r}, poll_interval=0.3, "
        "max_poll_interval=0.5)"
    )
    write_notebook(e2e_workdir / f"root-{app}" / name, [("code", setup)])  # the server's root folder
    page = nb_run.page.context.new_page()  # a second tab on the same server
    try:
        path = "lab/tree" if app == "lab" else "notebooks"
        _open(page, f"{origin}/{path}/{name}?token={TOKEN}")
        area = page.locator(".jp-Notebook .jp-CodeCell").first.locator(".jp-Cell-outputArea")

        def screenshot() -> None:
            if app != "lab":
                return
            page.set_viewport_size({"width": 1280, "height": 1800})  # the form and both cards in view
            page.evaluate("() => document.querySelectorAll('video').forEach(v => { v.currentTime = 1.5; })")
            area.scroll_into_view_if_needed()
            time.sleep(0.5)  # let the seek paint a frame
            copy_to_docs(save_screenshot(area, "lab-studio"), "studio.png")
            page.set_viewport_size({"width": 1280, "height": 900})

        drive_studio(page, area, gateway, app, screenshot)
    finally:
        page.close()
