"""The model catalogue, and text2video/image2video checked against it before anything is sent."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kling_widgets import KlingClient
from kling_widgets._catalogue import MODELS, ROUTES, model_spec, models_for
from kling_widgets.simulator import GatewaySimulator

CAT = "https://example.com/cat.png"


def test_every_route_has_models_and_every_model_a_known_route() -> None:
    for route in ROUTES:
        assert models_for(route), route
    assert {spec.route for spec in MODELS} == set(ROUTES)
    pairs = [(spec.model, spec.route) for spec in MODELS]
    assert len(pairs) == len(set(pairs))


def test_the_default_model_of_a_route_comes_first() -> None:
    assert models_for("text2video")[0] == "kling-v2-6"
    assert models_for("omni-video")[0] == "kling-v3-omni"
    assert models_for("multi-image2video") == ("kling-v1-6",)


def test_lookups_name_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"unknown route 'lipsync'.*advanced-lip-sync"):
        models_for("lipsync")
    with pytest.raises(ValueError, match=r"kling-v1-5.*offered on image2video.*takes kling-v2-6"):
        model_spec("kling-v1-5", "text2video")
    with pytest.raises(TypeError, match="model_name"):
        model_spec(None, "text2video")  # type: ignore[arg-type]


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("text2video", {"model_name": "kling-v3", "duration": "7"}, r"text2video.*'5', '10'.*'7' on omni-video"),
    ("text2video", {"model_name": "kling-v9"}, r"kling-v9.*it takes kling-v2-6, kling-v3"),
    ("text2video", {"cfg_scale": 0.5}, r"kling-v2-6 on text2video does not take cfg_scale.*kling-v1-6"),
    ("text2video", {"model_name": "kling-v2-5-turbo", "sound": "on"}, r'sound="on".*kling-v2-6, kling-v3'),
    ("text2video", {"model_name": "kling-v2-1-master", "mode": "pro"}, r"mode='pro'.*accepts 'master'"),
    ("image2video", {"model_name": "kling-v2-master", "image_tail": CAT}, r"does not take image_tail"),
    ("image2video", {"model_name": "kling-v2-1", "mode": "master"}, r"kling-v2-1 .*mode='master'"),
]


@pytest.mark.parametrize(("route", "options", "message"), REFUSED)
def test_an_option_the_model_does_not_take_is_refused_before_sending(
    sim: GatewaySimulator, client: KlingClient, route: str, options: dict[str, Any], message: str
) -> None:
    submit = client.text2video if route == "text2video" else partial(client.image2video, CAT)
    with pytest.raises(ValueError, match=message):
        submit("a corgi", **options)
    assert sim.requests() == []


def test_mode_defaults_to_the_models_own(sim: GatewaySimulator, client: KlingClient) -> None:
    client.text2video("a corgi", model_name="kling-v2-1-master")
    client.text2video("a corgi", model_name="kling-v1", cfg_scale=0.2, sound="off")
    first, second = (json.loads(record.body) for record in sim.requests())
    assert first["mode"] == "master"
    assert (second["mode"], second["cfg_scale"], second["sound"]) == ("std", 0.2, "off")


def test_the_table_in_the_docs_lists_exactly_the_catalogue() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "models.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([a-z0-9/-]+) \| `([a-z0-9-]+)` \|", docs, flags=re.MULTILINE)
    assert rows == [(spec.route, spec.model) for spec in MODELS]
