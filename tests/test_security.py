"""Security of the widget path: the key stays in the client, server strings are escaped, only http(s)
videos are embedded, and a task id stays one URL path segment.

Everything runs against the real simulator over HTTP, with a recording comm that captures what would be
sent to the front end (and so what "Save widget state" and nbclient would write into a notebook).
"""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import ipywidgets
import pytest

from helpers import WAIT, RecordingComm
from kling_widgets import KlingClient, KlingError, TaskStatusWidget, TaskTimeoutError, generate
from kling_widgets._models import parse_task
from kling_widgets._poller import Update, WatchState
from kling_widgets._view import View, describe, live_html, static_html
from kling_widgets.simulator import Fault, GatewaySimulator, Scenario

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.05}
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    '"><svg/onload=alert(1)>',
    "' onmouseover='alert(1)' x='",
    "&lt;already escaped&gt; & <b>bold</b>",
]
UNSAFE_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    "java\tscript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:video/mp4;base64,AAAA",
    "file:///etc/passwd",
    "vbscript:msgbox(1)",
    "//evil.test/clip.mp4",
    "https:///no-host.mp4",
]
TEXT2VIDEO = "/kling/v1/videos/text2video/"


@pytest.fixture(autouse=True)
def no_keeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read the request log and the card's HTML: no video download in between."""
    monkeypatch.setenv("KLING_WIDGETS_KEEP", "0")


def watch(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], task_id: str, **kwargs: Any
) -> TaskStatusWidget:
    widgets.append(TaskStatusWidget(task_id, base_url=sim.url, api_key=sim.api_key, **FAST, **kwargs))
    return widgets[-1]


def finish(widget: TaskStatusWidget) -> BaseException | None:
    """Wait for the end; return what wait() raised, if anything."""
    try:
        widget.wait(WAIT)
    except KlingError as exc:
        return exc
    return None


def tree(widget: Any) -> list[Any]:
    """A widget, its descendants, and their layout and style models."""
    found = [
        m for m in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)) if m is not None
    ]
    for child in getattr(widget, "children", ()):
        found.extend(tree(child))
    return found


def html_strings(widget: TaskStatusWidget) -> list[str]:
    """Every string that a browser parses as HTML: HTML widget values and the text/html fallback."""
    values = [m.value for m in tree(widget) if isinstance(m, ipywidgets.HTML)]
    return [*values, widget._repr_mimebundle_()["text/html"]]


def as_text(value: Any) -> str:
    """JSON text of widget state, with binary buffers (the Video URL) decoded."""
    return json.dumps(value, default=lambda b: bytes(b).decode("utf-8", "replace"), ensure_ascii=False)


# -- the key -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario(polls=(1, 1)),
        Scenario(outcome="failure", polls=(0, 1)),
        Scenario(polls=(1, 1), faults=(Fault("rate_limit", retry_after=1),)),
        Scenario(polls=(2, 2), faults=(Fault("revoke_key", at_poll=2),)),
        Scenario(polls=(10**6, 0)),  # ends by timeout
    ],
    ids=["success", "failure", "rate-limited", "key-revoked", "timeout"],
)
def test_the_key_is_nowhere_outside_the_client(
    sim: GatewaySimulator,
    widgets: list[TaskStatusWidget],
    comms: list[RecordingComm],
    caplog: pytest.LogCaptureFixture,
    scenario: Scenario,
) -> None:
    caplog.set_level(logging.DEBUG)
    widget = watch(sim, widgets, sim.add_task(scenario), timeout=3.0)

    raised = finish(widget)

    seen: list[str] = []
    for model in list(ipywidgets.widgets.widget._instances.values()):  # every live model, displayed or not
        seen.append(as_text(model.get_state()))
        seen.append(repr(model))
    for made in comms:  # what would go to the front end: comm_open state and every update
        seen.append(as_text(made.open_data))
        seen.extend(as_text(message) for message in made.sent)
    seen.extend(html_strings(widget))
    seen.extend(str(value) for value in widget._repr_mimebundle_().values())
    seen.extend([repr(widget), str(widget), repr(widget.task), repr(widget._watch)])
    seen.extend(
        str(getattr(widget, name)) for name in ("task_id", "status", "progress", "video_url", "error")
    )
    if raised is not None:
        seen.extend([str(raised), repr(raised), *map(str, raised.args)])
    seen.extend(record.getMessage() for record in caplog.records)
    seen.append(caplog.text)

    everything = "\n".join(seen)
    assert sim.api_key not in everything
    assert sim.api_key.removeprefix("sk-") not in everything
    assert comms, "the recording comm saw nothing: the check would be empty"


def test_generate_keeps_the_key_out_too(sim: GatewaySimulator, comms: list[RecordingComm]) -> None:
    widget = generate("a corgi", base_url=sim.url, api_key=sim.api_key, **FAST)
    try:
        widget.wait(WAIT)
        state = "\n".join(as_text(c.open_data) + as_text(c.sent) for c in comms)
        assert sim.api_key.removeprefix("sk-") not in state + repr(widget) + str(widget._repr_mimebundle_())
    finally:
        widget.close()


def test_the_key_from_the_environment_stays_out(
    sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch, comms: list[RecordingComm]
) -> None:
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    widget = TaskStatusWidget(sim.add_task(), base_url=sim.url, **FAST)
    try:
        widget.wait(WAIT)
        state = "\n".join(as_text(c.open_data) + as_text(c.sent) for c in comms)
        assert sim.api_key.removeprefix("sk-") not in state + repr(widget)
    finally:
        widget.close()


# -- hostile server strings ----------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_failure_reason_is_escaped_everywhere(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], hostile: str
) -> None:
    widget = watch(
        sim, widgets, sim.add_task(Scenario(outcome="failure", polls=(0, 1), fail_message=hostile))
    )

    finish(widget)

    assert widget.error == hostile  # the trait holds the plain text; it never becomes HTML as is
    assert f"Failed: {html.escape(hostile)}" in html_strings(widget)[0] + html_strings(widget)[-1]
    for text in html_strings(widget):
        assert hostile not in text


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_task_id_is_escaped_and_stays_one_path_segment(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], hostile: str
) -> None:
    task_id = sim.add_task(task_id=hostile)
    widget = watch(sim, widgets, task_id)

    assert finish(widget) is None  # the simulator found exactly this task
    for text in html_strings(widget):
        assert hostile not in text
    assert html.escape(hostile, quote=True) in html_strings(widget)[-1]  # the label's title attribute
    assert widget.children[0].tooltip == hostile  # the bar's label and tooltip are plain text, never HTML
    assert widget.children[0].description_allow_html is False
    for record in sim.requests():
        assert (record.path, record.task_id) == (TEXT2VIDEO + quote(hostile, safe=""), hostile)


@pytest.mark.parametrize(
    "task_id", ["a/b", "x?y=1#z", "../../text2video/victim", "victim/../victim", "%2e%2e%2fvictim", "victim#"]
)
def test_a_task_id_cannot_reach_another_path(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], task_id: str
) -> None:
    sim.add_task(task_id="victim")
    sim.add_task(task_id=task_id)
    widget = watch(sim, widgets, task_id)

    assert finish(widget) is None
    assert widget.task_id == task_id
    assert {r.task_id for r in sim.requests()} == {task_id}
    assert {r.path for r in sim.requests()} == {TEXT2VIDEO + quote(task_id, safe="")}


@pytest.mark.parametrize("task_id", [".", ".."])
def test_a_dot_segment_task_id_sends_nothing(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], task_id: str
) -> None:
    widget = watch(sim, widgets, task_id)
    assert isinstance(finish(widget), KlingError)
    assert sim.requests() == []
    assert widget.children[0].bar_style == "danger"


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_non_http_video_links_are_never_embedded(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], url: str
) -> None:
    widget = watch(sim, widgets, sim.add_task(Scenario(polls=(0, 0), video_url=url)))

    assert finish(widget) is None
    assert widget.task is not None
    assert widget.task.video_url == url.strip()  # the gateway did send it...
    assert widget.video_url == ""  # ...but it is not offered as playable
    assert not any(isinstance(m, ipywidgets.Video) for m in tree(widget))
    for text in html_strings(widget):
        assert "href" not in text
        assert "<video" not in text
        assert url.strip() not in text
    fallback = widget._repr_mimebundle_()
    assert "not http(s)" in fallback["text/html"]
    assert "not http(s)" in fallback["text/plain"]
    assert url.strip() not in fallback["text/plain"]
    notice = html.escape("Not shown: the gateway's video link is not http(s)")
    assert any(notice in text for text in html_strings(widget))


def test_an_http_link_with_markup_is_escaped_in_attributes(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget]
) -> None:
    url = "https://cdn.test/v.mp4?a=\"><svg/onload=alert(1)>&b='x'"
    widget = watch(sim, widgets, sim.add_task(Scenario(polls=(0, 0), video_url=url)))

    assert finish(widget) is None
    assert widget.video_url == url
    for text in html_strings(widget):
        assert url not in text
        assert "<svg" not in text
    assert f'href="{html.escape(url, quote=True)}"' in html_strings(widget)[-1]
    assert f'<video src="{html.escape(url, quote=True)}"' in html_strings(widget)[-1]


def test_every_server_field_is_escaped_by_the_renderers() -> None:
    hostile = HOSTILE[0]
    payload = {
        "code": "success",
        "data": {
            "task_id": hostile,
            "status": "SUCCESS",
            "progress": "100%",
            "data": {
                "data": {
                    "task_status": "succeed",
                    "task_result": {
                        "videos": [{"url": f"https://cdn.test/a.mp4?x={hostile}", "duration": hostile}]
                    },
                }
            },
        },
    }
    task = parse_task(payload)
    assert task.videos[0].duration is None  # a hostile duration never reaches a renderer as text
    now = datetime.now(timezone.utc)
    view = describe(
        Update(WatchState.SUCCESS, task, None, None, 1.0),
        task,
        previous=View("x"),
        generating_for=0,
        now=now,
    )
    rendered = static_html(task.task_id, view, now, hostile) + live_html(view, now, hostile)
    assert "<img" not in rendered
    assert "onerror=alert(1)&gt;" in rendered


def test_timeout_error_message_is_plain(sim: GatewaySimulator, widgets: list[TaskStatusWidget]) -> None:
    widget = watch(
        sim, widgets, sim.add_task(task_id=HOSTILE[0], scenario=Scenario(polls=(10**6, 0))), timeout=0.2
    )
    raised = finish(widget)
    assert isinstance(raised, TaskTimeoutError)
    assert HOSTILE[0] not in html_strings(widget)[0]
    assert sim.api_key not in str(raised)


def test_repr_of_client_and_widget_is_keyless(sim: GatewaySimulator) -> None:
    widget = TaskStatusWidget("123", base_url=sim.url, api_key=sim.api_key, autostart=False)
    try:
        assert sim.api_key.removeprefix("sk-") not in repr(widget) + repr(widget._client) + repr(vars(widget))
    finally:
        widget.close()
    client = KlingClient(api_key=sim.api_key, base_url=sim.url)
    assert sim.api_key.removeprefix("sk-") not in repr(client)


# -- server text is capped and cleaned before it is shown (issue 8, item 9) ---------------------------

HUGE = 10 * 1024 * 1024


def test_a_10_mb_failure_reason_stays_small_everywhere(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], comms: list[RecordingComm]
) -> None:
    reason = "Bad prompt. " + "x" * HUGE
    widget = watch(sim, widgets, sim.add_task(Scenario(outcome="failure", polls=(0, 0), fail_message=reason)))

    raised = finish(widget)

    assert raised is not None
    assert widget.task is not None
    assert widget.task.fail_reason == reason  # the full text stays on the task
    assert len(widget.error) <= 2000
    assert widget.error.startswith("Bad prompt. xxx")
    assert widget.error.endswith("…")
    limit = 10_000
    assert len(repr(widget)) < limit
    for value in widget._repr_mimebundle_().values():
        assert len(str(value)) < limit
    for made in comms:
        assert len(as_text(made.open_data)) < limit
        assert all(len(as_text(message)) < limit for message in made.sent)
    for model in tree(widget):
        assert len(as_text(model.get_state())) < limit


def test_invisible_and_reordering_characters_are_removed_from_shown_text(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget]
) -> None:
    hidden = "\u202eevil\u202c \u200bzero\u200d width\u2066 \x07bell"
    widget = watch(sim, widgets, sim.add_task(Scenario(outcome="failure", polls=(0, 0), fail_message=hidden)))
    finish(widget)
    shown = [widget.error, *html_strings(widget), widget._repr_mimebundle_()["text/plain"]]
    for text in shown:
        assert not any(ch in text for ch in "\u202e\u202c\u200b\u200d\u2066\x07"), text
    assert widget.error == "evil zero width bell"


def test_credentials_in_a_video_link_are_never_shown_or_embedded(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], comms: list[RecordingComm]
) -> None:
    url = "https://user:s3cret@cdn.test/clip.mp4?Expires=1798761600"
    widget = watch(sim, widgets, sim.add_task(Scenario(polls=(0, 0), video_url=url)))
    assert finish(widget) is None
    stripped = "https://cdn.test/clip.mp4?Expires=1798761600"
    assert widget.video_url == stripped
    everything = "\n".join(
        [*html_strings(widget), *map(str, widget._repr_mimebundle_().values()), repr(widget)]
        + [as_text(c.open_data) + as_text(c.sent) for c in comms]
    )
    assert "s3cret" not in everything
    assert f'<video src="{stripped}"' in html_strings(widget)[-1]


def test_a_thousand_videos_show_four_players_and_a_count(
    sim: GatewaySimulator, widgets: list[TaskStatusWidget], comms: list[RecordingComm]
) -> None:
    widget = watch(sim, widgets, sim.add_task(Scenario(polls=(0, 0), videos=1000)))
    assert finish(widget) is None
    assert widget.task is not None
    assert len(widget.task.videos) == 1000
    for text in html_strings(widget):
        assert text.count("<video ") == 4
        assert "and 996 more videos" in text
    assert len(comms) < 20  # 1,000 videos made 5,016 widget models before
    assert "and 996 more videos" in widget._repr_mimebundle_()["text/plain"]
