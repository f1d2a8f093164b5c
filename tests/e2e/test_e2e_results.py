"""An image and a sound card in Chromium: the ``<img>`` decodes and the ``<audio controls>`` loads its sound.

A task of Kling's ``images/generations`` route and one of ``audio/text-to-audio`` are watched to SUCCESS
against the kling simulator (docs/routes.md, "Results that are not videos"); the card's ``text/html``
(the same media HTML as the live card) is opened in the session's Chromium, which fetches the simulator's
generated PNG and WAV from 127.0.0.1. No Jupyter server is needed: what is checked is that a browser shows
what the card embeds.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from helpers import WAIT
from kling_widgets import KlingClient, TaskStatusWidget
from kling_widgets.simulator import GatewaySimulator, Scenario

pytestmark = pytest.mark.e2e

# The picture decoded (the simulator's PNG is 64 pixels wide); the sound's length is known (1 s).
IMAGE_DECODED_JS = "() => document.querySelector('img').naturalWidth === 64"
AUDIO_LOADED_JS = "() => document.querySelector('audio').readyState >= 1"


def card_html(sim: GatewaySimulator, endpoint: str, task_id: str) -> str:
    with KlingClient(access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url) as client:
        card = TaskStatusWidget(task_id, client=client, endpoint=endpoint, poll_interval=0.05, keep=False)
        try:
            card.wait(WAIT)
            return str(card._repr_mimebundle_()["text/html"])
        finally:
            card.close()


def test_an_image_and_a_sound_play_in_chromium(browser: Browser) -> None:
    with GatewaySimulator(flavor="kling", speed=50.0, scenario=Scenario(polls=(0, 0))) as sim:
        image = card_html(sim, "images/generations", sim.add_task(endpoint="images/generations"))
        sound = card_html(sim, "audio/text-to-audio", sim.add_task(endpoint="audio/text-to-audio"))
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_content(f"<html><body>{image}{sound}</body></html>")
            picture = page.locator('img[alt="Generated image 1"]')
            expect(picture).to_have_count(1)
            page.wait_for_function(IMAGE_DECODED_JS, timeout=30_000)
            player = page.locator("audio[controls]")
            expect(player).to_have_count(1)
            expect(player).to_be_visible()
            page.wait_for_function(AUDIO_LOADED_JS, timeout=30_000)
            assert player.evaluate("a => Math.round(a.duration)") == 1
        finally:
            context.close()
