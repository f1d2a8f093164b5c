"""TaskStatusWidget against the real simulator over HTTP, with ipywidgets' comm-less set-up.

Outside a kernel ipywidgets uses a ``DummyComm``; the ``comms`` fixture swaps in a recording comm where a
test needs to see which models were opened and closed (docs/testing.md, "Widget tests without a kernel").
No timing asserts: tests wait for final states with generous bounds and check texts, styles, orderings and
request counts.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ipywidgets
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from helpers import FOREVER, WAIT, FakeShell, RecordingComm, RecordingHandle, assert_no_request_follows
from kling_widgets import (
    AuthenticationError,
    KlingClient,
    KlingError,
    RateLimitError,
    ServerError,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    TaskStatusWidget,
    TaskTimeoutError,
    TransportError,
    Video,
    _base,
    _frontend,
    generate,
)
from kling_widgets._frontend import VSCODE_PLAYBACK_NOTE
from kling_widgets._poller import Update, WatchState
from kling_widgets._view import View, describe, estimate_progress
from kling_widgets.simulator import VIDEO_PATH_PREFIX, Fault, GatewaySimulator, Scenario

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.05}


@pytest.fixture
def watch(sim: GatewaySimulator) -> Iterator[Callable[..., TaskStatusWidget]]:
    """Make widgets polling ``sim`` fast; every one is closed after the test."""
    made: list[TaskStatusWidget] = []

    def make(task: Task | str, **kwargs: Any) -> TaskStatusWidget:
        options: dict[str, Any] = {**FAST, **kwargs}
        if "client" not in options:
            options.update(base_url=sim.url, api_key=sim.api_key)
        made.append(TaskStatusWidget(task, **options))
        return made[-1]

    yield make
    for widget in made:
        widget.close()


def bar(widget: TaskStatusWidget) -> Any:
    """The progress bar (its description is the ``Kling · id`` label)."""
    return widget.children[0]


def text(widget: TaskStatusWidget) -> Any:
    """The one HTML block: status line, then (once final) players and links."""
    return widget.children[1]


def button(widget: TaskStatusWidget) -> Any:
    """The Stop button while watching (it leaves the row once watching has ended)."""
    stop = widget._stop_button
    assert stop is not None
    return stop


def shown_line(value: str) -> str:
    """The status line as a user reads it, from the HTML block's value."""
    match = re.search(r"<div>(.*?)</div>", value)
    assert match, value
    return html.unescape(match[1])


def line(widget: TaskStatusWidget) -> str:
    return shown_line(text(widget).value)


def gets(sim: GatewaySimulator, task_id: str) -> int:
    return sum(1 for r in sim.requests(task_id) if r.method == "GET")


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def owned_models(widget: Any) -> list[Any]:
    """The widget, its descendants, and all their layout and style models."""
    found = []
    for model in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(model, ipywidgets.Widget):
            found.append(model)
    for child in getattr(widget, "children", ()):
        found.extend(owned_models(child))
    return found


# -- the end-to-end paths ------------------------------------------------------------------------------


def test_success_shows_the_clip_in_a_player_with_links(sim: GatewaySimulator, watch: Any) -> None:
    task_id = sim.add_task()
    widget = watch(task_id)

    task = widget.wait(WAIT)

    assert task.status is TaskStatus.SUCCESS
    assert widget.task == task
    assert (widget.task_id, widget.status, widget.progress, widget.error) == (task_id, "SUCCESS", 100, "")
    assert (bar(widget).value, bar(widget).bar_style) == (100, "success")
    assert bar(widget).description == f"Kling · {task_id[:4]}…{task_id[-4:]}"
    assert line(widget).startswith("Done in ")
    assert button(widget).comm is None  # closed: a finished card has fewer parts
    assert widget.children == (bar(widget), text(widget))
    block = text(widget).value
    src = html.escape(task.video_url, quote=True)
    assert block.count("<video ") == 1
    assert f'<video src="{src}" controls width="480"' in block
    assert task.video_url == widget.video_url
    assert task.video_url.startswith(f"{sim.url}{VIDEO_PATH_PREFIX}")
    served = requests.get(task.video_url, timeout=10, headers={"Range": "bytes=0-99"})
    assert served.status_code == 206
    assert served.headers["Content-Type"] == "video/mp4"
    links = block.split("</video>")[1]
    assert links.startswith("<div>5 s · ")
    assert links.count('target="_blank" rel="noreferrer"') == 2
    assert ">Open in new tab</a>" in links
    assert " download>Download</a>" in links
    expires = task.videos[0].expires_at
    assert expires is not None
    assert f"link expires {expires.day} {expires:%b} {expires.year}</div><div>Kept as " in links


def test_states_progress_and_lines_in_order(sim: GatewaySimulator, watch: Any) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 3)))
    widget = watch(task_id, autostart=False)
    seen: list[tuple[str, Any]] = []
    widget.observe(lambda change: seen.append((change["name"], change["new"])), names=["status", "progress"])
    lines: list[str] = []
    text(widget).observe(lambda change: lines.append(shown_line(change["new"])), names="value")

    widget.start().wait(WAIT)

    statuses = [value for name, value in seen if name == "status"]
    assert statuses == ["NOT_START", "SUBMITTED", "IN_PROGRESS", "SUCCESS"]
    progress = [value for name, value in seen if name == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 100
    assert all(p < 100 for p in progress[:-1])
    assert any(text.startswith("Queued · 0:") for text in lines)
    generating = [text for text in lines if text.startswith("Generating · ")]
    assert generating
    assert all(text.endswith(" left (estimate)") for text in generating)
    assert lines[-1].startswith("Done in ")


@pytest.mark.parametrize("sim", [Scenario(outcome="failure", polls=(0, 1))], indirect=True)
def test_failure_shows_the_real_reason(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task())

    with pytest.raises(TaskFailedError) as failed:
        widget.wait(WAIT)

    assert failed.value.task.fail_reason == "Image pixel is invalid"
    assert line(widget) == "Failed: Image pixel is invalid"
    assert bar(widget).bar_style == "danger"
    assert (widget.status, widget.error, widget.video_url) == ("FAILURE", "Image pixel is invalid", "")
    assert "<video" not in text(widget).value


@pytest.mark.parametrize(
    ("fault", "retrying"),
    [
        (Fault("rate_limit", retry_after=1), "Gateway busy (429) — retrying in 1 s"),
        (Fault("server_error"), "Gateway error (500) — retrying"),
        (Fault("html"), "Gateway error (502) — retrying"),
        (Fault("empty"), "Unreadable answer from the gateway — retrying"),
        (Fault("malformed"), "Unreadable answer from the gateway — retrying"),
    ],
)
def test_transient_faults_show_retrying_then_succeed(
    sim: GatewaySimulator, watch: Any, fault: Fault, retrying: str
) -> None:
    task_id = sim.add_task(Scenario(polls=(1, 1), faults=(fault,)))
    widget = watch(task_id)
    lines: list[str] = []
    text(widget).observe(lambda change: lines.append(shown_line(change["new"])), names="value")

    assert widget.wait(WAIT).status is TaskStatus.SUCCESS

    assert any(text.startswith(retrying) for text in lines), lines
    assert widget.error == ""
    assert bar(widget).bar_style == "success"


def test_slow_answer_is_waited_for(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task(Scenario(polls=(1, 1), faults=(Fault("slow", delay=0.3),))))
    assert widget.wait(WAIT).status is TaskStatus.SUCCESS


def test_revoked_key_stops_with_the_401_cause_and_fix(sim: GatewaySimulator, watch: Any) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 2), faults=(Fault("revoke_key", at_poll=2),)))
    widget = watch(task_id)

    with pytest.raises(AuthenticationError):
        widget.wait(WAIT)

    assert line(widget).startswith(
        "Stopped: the API key was rejected (401). Check EZMODEL_API_KEY or pass api_key=."
    )
    assert bar(widget).bar_style == "danger"
    assert "401" in widget.error
    assert gets(sim, task_id) == 2  # nothing after the 401


@pytest.mark.parametrize("how", ["unknown id", "fault"])
def test_unknown_task_stops(sim: GatewaySimulator, watch: Any, how: str) -> None:
    if how == "unknown id":
        task_id = "842250903629086785"
    else:
        task_id = sim.add_task(Scenario(polls=(2, 2), faults=(Fault("not_found", at_poll=2),)))
    widget = watch(task_id)

    with pytest.raises(TaskNotFoundError):
        widget.wait(WAIT)

    assert line(widget).startswith("Stopped: no such task for this API key")
    assert bar(widget).bar_style == "danger"
    assert sum(1 for r in sim.requests() if r.method == "GET") == (1 if how == "unknown id" else 2)


def test_deadline_gives_up_with_warning(sim: GatewaySimulator, watch: Any) -> None:
    task_id = sim.add_task(FOREVER)
    widget = watch(task_id, timeout=0.3)

    with pytest.raises(TaskTimeoutError) as timed_out:
        widget.wait(WAIT)

    assert timed_out.value.task_id == task_id
    assert line(widget) == "Gave up after 0:00 — the task may still finish; watch it again with its id"
    assert bar(widget).bar_style == "warning"
    assert widget.status == "NOT_START"  # the last answer is still shown


@pytest.mark.parametrize("how", ["stop()", "Stop button"])
def test_stop_warns_and_sends_no_further_request(sim: GatewaySimulator, watch: Any, how: str) -> None:
    task_id = sim.add_task(FOREVER)
    widget = watch(task_id)
    wait_for(lambda: gets(sim, task_id) >= 2)

    if how == "stop()":
        widget.stop()
    else:
        button(widget).click()
    with pytest.raises(KlingError) as stopped:
        widget.wait(WAIT)

    assert stopped.value.code == "stopped"
    assert line(widget).startswith("Stopped watching at 0:0")
    assert line(widget).endswith(" — the task keeps running on the server")
    assert bar(widget).bar_style == "warning"
    assert button(widget).comm is None
    assert_no_request_follows(sim, [task_id])


def test_wait_timeout_is_the_builtin_one_and_watching_goes_on(sim: GatewaySimulator, watch: Any) -> None:
    task_id = sim.add_task(FOREVER)
    widget = watch(task_id)

    with pytest.raises(TimeoutError) as timed_out:
        widget.wait(0.05)

    assert not isinstance(timed_out.value, TaskTimeoutError)
    before = gets(sim, task_id)
    wait_for(lambda: gets(sim, task_id) > before)


def test_wait_async(sim: GatewaySimulator, watch: Any, run_async: Any) -> None:
    widget = watch(sim.add_task())
    task = run_async(widget.wait_async(WAIT))
    assert task.status is TaskStatus.SUCCESS


def test_accepts_a_task_and_starts_on_demand(client: KlingClient, sim: GatewaySimulator, watch: Any) -> None:
    task = client.text2video("a corgi surfing at sunset")
    widget = watch(task, client=client, autostart=False)

    assert line(widget) == "Queued · 0:00"
    assert widget.task is task
    with pytest.raises(RuntimeError, match="start"):
        widget.wait(0)
    assert gets(sim, task.task_id) == 0

    assert widget.start() is widget
    assert widget.wait(WAIT).status is TaskStatus.SUCCESS


def test_generate_submits_and_watches_with_the_same_client(sim: GatewaySimulator) -> None:
    widget = generate("a corgi surfing at sunset", base_url=sim.url, api_key=sim.api_key, duration=5, **FAST)
    try:
        task = widget.wait(WAIT)
    finally:
        widget.close()
    posts = [r for r in sim.requests() if r.method == "POST"]
    assert len(posts) == 1
    assert posts[0].task_id == task.task_id == widget.task_id


def test_generate_with_a_client_leaves_it_open(client: KlingClient, sim: GatewaySimulator) -> None:
    widget = generate("a corgi", client=client, **FAST)
    task = widget.wait(WAIT)
    widget.close()
    assert client.get_task(task.task_id).status is TaskStatus.SUCCESS  # still usable


def test_client_and_key_together_are_refused(client: KlingClient) -> None:
    with pytest.raises(ValueError, match="not both"):
        TaskStatusWidget("123", client=client, api_key="sk-other")


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_refuses_a_missing_task_id(bad: Any) -> None:
    with pytest.raises(ValueError, match="task id"):
        TaskStatusWidget(bad, api_key="sk-unused", autostart=False)


# -- lifecycle -----------------------------------------------------------------------------------------


def test_close_releases_every_model_and_the_watch(sim: GatewaySimulator, comms: list[RecordingComm]) -> None:
    task_id = sim.add_task()
    widget = TaskStatusWidget(task_id, base_url=sim.url, api_key=sim.api_key, **FAST)
    widget.wait(WAIT)
    stop = button(widget)
    models = [*owned_models(widget), stop]
    assert {type(m).__name__ for m in models} >= {"HTML", "IntProgress", "ProgressStyle", "Layout"}
    shared = [m for m in models if _base.is_shared(m)]
    assert {type(m).__name__ for m in shared} >= {"Layout", "ProgressStyle", "HTMLStyle"}

    widget.close()
    widget.close()  # idempotent

    own = [m for m in models if not _base.is_shared(m)]
    assert all(m.comm is None for m in own)
    assert all(m.comm is not None for m in shared)  # shared by every card, never closed by one
    shared_comms = {m.comm for m in shared}
    assert all(c.closed for c in comms if c not in shared_comms)
    live = ipywidgets.widgets.widget._instances.values()
    assert not any(m in live for m in own)
    assert widget._watch is not None
    assert widget._watch.state.is_final


def test_a_card_opens_four_models_and_shares_layouts_and_styles(
    sim: GatewaySimulator, comms: list[RecordingComm]
) -> None:
    """Saved notebooks keep every model a card ever opened (issue 9, item 1): few, and nothing per card
    beyond the row, the bar, the text block and the Stop button."""
    widgets = [
        TaskStatusWidget(sim.add_task(), base_url=sim.url, api_key=sim.api_key, **FAST) for _ in range(3)
    ]
    try:
        for widget in widgets:
            widget.wait(WAIT)
        names = [c.open_data["state"]["_model_name"] for c in comms]
        per_card = [
            n
            for n in names
            if n not in ("LayoutModel", "ProgressStyleModel", "HTMLStyleModel", "ButtonStyleModel")
        ]
        assert sorted(per_card) == sorted(["BoxModel", "IntProgressModel", "HTMLModel", "ButtonModel"] * 3)
        assert len(names) - len(per_card) <= 8  # the shared layouts and styles, opened once for all
    finally:
        for widget in widgets:
            widget.close()


def test_close_while_polling_stops_requests(sim: GatewaySimulator) -> None:
    task_id = sim.add_task(FOREVER)
    widget = TaskStatusWidget(task_id, base_url=sim.url, api_key=sim.api_key, **FAST)
    wait_for(lambda: gets(sim, task_id) >= 1)

    widget.close()

    assert widget._watch is not None
    assert widget._watch.wait(WAIT)
    assert widget._watch.state is WatchState.STOPPED
    with pytest.raises(KlingError, match="Stopped watching"):
        widget.wait(WAIT)
    assert_no_request_follows(sim, [task_id])
    with pytest.raises(RuntimeError, match="closed"):
        widget.start()


def test_writes_after_close_are_harmless(sim: GatewaySimulator, comms: list[RecordingComm]) -> None:
    widget = TaskStatusWidget(sim.add_task(FOREVER), base_url=sim.url, api_key=sim.api_key, autostart=False)
    widget.close()
    opened = len(comms)
    done = Task("1", TaskStatus.SUCCESS, 100, videos=(Video("https://cdn.test/a.mp4"),))

    widget._on_update(Update(WatchState.SUCCESS, done, None, None, 1.0))
    bar(widget).value = 50
    widget.stop()

    assert len(comms) == opened  # no player was created for a closed widget
    assert widget.status == ""
    assert widget.video_url == ""


def test_a_new_widget_for_the_same_task_closes_the_old_one(sim: GatewaySimulator, watch: Any) -> None:
    task_id = sim.add_task(FOREVER)
    old = watch(task_id)
    new = watch(task_id)
    assert old.comm is None
    assert new.comm is not None
    assert old._watch is not None
    assert old._watch.wait(WAIT)


def test_rerunning_a_cell_closes_the_widgets_it_made(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = FakeShell()
    monkeypatch.setattr(_base, "get_ipython", lambda: shell)
    monkeypatch.setattr(_base, "REGISTRY", _base.CellRegistry())

    first = shell.run_cell("cell-A", lambda: watch(sim.add_task(FOREVER)))
    other = shell.run_cell("cell-B", lambda: watch(sim.add_task(FOREVER)))
    again = shell.run_cell("cell-A", lambda: watch(sim.add_task(FOREVER)))

    assert first.comm is None
    assert other.comm is not None
    assert again.comm is not None
    assert len(shell.handlers) == 1  # hooked once


def test_a_widget_made_on_another_thread_belongs_to_no_cell(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's card is made on the submitter's thread while a cell runs: re-running that cell keeps it."""
    shell = FakeShell()
    monkeypatch.setattr(_base, "get_ipython", lambda: shell)
    monkeypatch.setattr(_base, "REGISTRY", _base.CellRegistry())
    made: list[TaskStatusWidget] = []

    def make_elsewhere() -> None:
        worker = threading.Thread(target=lambda: made.append(watch(sim.add_task(FOREVER))))
        worker.start()
        worker.join()

    shell.run_cell("cell-A", make_elsewhere)
    shell.run_cell("cell-A", lambda: None)
    assert made[0].comm is not None


def test_observers_run_on_the_polling_thread_only_once_per_change(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task(), autostart=False)
    threads: set[str] = set()
    widget.observe(lambda change: threads.add(threading.current_thread().name), names="status")
    widget.start().wait(WAIT)
    assert threads
    assert threading.main_thread().name not in threads


@pytest.mark.parametrize(
    "sim", [Scenario(polls=(1, 1)), Scenario(outcome="failure", polls=(0, 1))], indirect=True
)
def test_an_observer_may_wait_on_the_final_update(sim: GatewaySimulator, watch: Any) -> None:
    """Issue 8, item 13: wait() is released before observers run, and no lock is held while they do."""
    widget = watch(sim.add_task(), autostart=False)
    seen: list[str] = []

    def on_status(change: dict[str, Any]) -> None:
        if change["new"] in ("SUCCESS", "FAILURE"):
            try:
                seen.append(widget.wait(WAIT).status.value)
            except TaskFailedError as exc:
                seen.append(exc.task.status.value)
            with widget._lock:  # not held by the thread that notifies: acquiring it does not deadlock
                seen.append(widget.static_bundle()["text/plain"].split(": ", 1)[1][:4])

    widget.observe(on_status, names="status")
    widget.start()
    wait_for(lambda: len(seen) == 2)
    assert seen[0] in ("SUCCESS", "FAILURE")
    assert seen[1] in ("Done", "Fail")


def test_a_widget_shows_its_final_state_when_wait_returns(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task())
    task = widget.wait(WAIT)
    assert (widget.status, widget.progress, widget.video_url) == ("SUCCESS", 100, task.video_url)
    assert line(widget).startswith("Done in ")


# -- the static fallback and the display handle --------------------------------------------------------


def test_fallback_bundle_after_success(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task(), keep=False)
    queued = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in queued
    assert "Kling · " in queued["text/html"]
    assert "<video" not in queued["text/html"]

    task = widget.wait(WAIT)

    # Once ended, only plain text and HTML: nothing live is left, and nbconvert prefers a widget view.
    bundle = widget._repr_mimebundle_()
    assert list(bundle) == ["text/plain", "text/html"]
    src = task.video_url.replace("&", "&amp;")
    assert f'<video src="{src}" controls width="480" style="max-width:100%"></video>' in bundle["text/html"]
    assert "Done in " in bundle["text/html"]
    assert 'aria-valuenow="100"' in bundle["text/html"]
    assert "Open in new tab</a>" in bundle["text/html"]
    assert bundle["text/plain"].splitlines() == [f"Kling task {task.task_id}: {line(widget)}", task.video_url]


@pytest.mark.parametrize(
    "sim", [Scenario(outcome="failure", polls=(0, 0), fail_message="Bad & <b>")], indirect=True
)
def test_fallback_bundle_after_failure(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task())
    with pytest.raises(TaskFailedError):
        widget.wait(WAIT)
    bundle = widget._repr_mimebundle_()
    assert "Failed: Bad &amp; &lt;b&gt;" in bundle["text/html"]
    assert "<video" not in bundle["text/html"]
    assert bundle["text/plain"].endswith(": Failed: Bad & <b>")


def test_display_records_a_handle_and_refreshes_it_once_at_the_end(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[dict[str, Any], dict[str, Any]]] = []
    handle = RecordingHandle()

    def fake_display(obj: dict[str, Any], **kwargs: Any) -> RecordingHandle:
        shown.append((obj, kwargs))
        return handle

    monkeypatch.setattr(_base, "display", fake_display)
    widget = watch(sim.add_task(), autostart=False, keep=False)

    widget._ipython_display_()
    widget.start().wait(WAIT)

    ((bundle, kwargs),) = shown
    assert kwargs == {"raw": True, "display_id": True}
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "<video" not in bundle["text/html"]
    # The display becomes plain HTML (issue 9, item 2): no widget view for nbconvert to prefer.
    ((final, update_kwargs),) = handle.updates
    assert update_kwargs == {"raw": True}
    assert list(final) == ["text/plain", "text/html"]
    assert "<video src=" in final["text/html"]
    assert "Done in " in final["text/html"]


def test_a_display_after_the_end_is_static_and_not_refreshed(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = RecordingHandle()
    shown: list[dict[str, Any]] = []

    def fake_display(obj: dict[str, Any], **kwargs: Any) -> RecordingHandle:
        shown.append(obj)
        return handle

    monkeypatch.setattr(_base, "display", fake_display)
    widget = watch(sim.add_task())
    widget.wait(WAIT)
    widget._ipython_display_()
    assert list(shown[0]) == ["text/plain", "text/html"]
    assert handle.updates == []


def test_a_closed_widget_displays_its_static_state(watch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(_base, "display", lambda obj, **kwargs: shown.append(obj))
    widget = watch("123", autostart=False)
    widget.close()
    widget._ipython_display_()
    assert list(shown[0]) == ["text/plain", "text/html"]


def test_repr_is_short() -> None:
    widget = TaskStatusWidget("842250903629086785", api_key="sk-unused", autostart=False)
    try:
        assert repr(widget) == "TaskStatusWidget(task_id='842250903629086785', status='', progress=0)"
    finally:
        widget.close()


# -- the status line table and the estimate (pure) -----------------------------------------------------

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def snapshot(status: TaskStatus, *, submitted: float | None = None, progress: int = 0, **kwargs: Any) -> Task:
    submit_time = NOW - timedelta(seconds=submitted) if submitted is not None else None
    return Task("842250903629086785", status, progress, submit_time=submit_time, **kwargs)


@pytest.mark.parametrize(
    ("update", "generating_for", "expected", "style"),
    [
        (
            Update(WatchState.WAITING, snapshot(TaskStatus.SUBMITTED, progress=10), None, None, 12.4),
            0,
            "Queued · 0:10",  # the running clock moves in 5-second steps
            "info",
        ),
        (
            Update(WatchState.WAITING, snapshot(TaskStatus.IN_PROGRESS, submitted=112), None, None, 3.0),
            70.0,
            "Generating · 1:50 elapsed · about 2 min left (estimate)",
            "info",
        ),
        (
            Update(WatchState.WAITING, snapshot(TaskStatus.IN_PROGRESS), None, None, 400.0),
            400.0,
            "Generating · 6:40 elapsed · taking longer than usual (estimate)",
            "info",
        ),
        (
            Update(WatchState.RETRYING, None, RateLimitError("busy"), 8.2, 1.0),
            0,
            "Gateway busy (429) — retrying in 8 s",
            "info",
        ),
        (
            Update(WatchState.RETRYING, None, TransportError("refused"), 3.0, 1.0),
            0,
            "Network trouble — retrying in 3 s",
            "info",
        ),
        (
            Update(WatchState.RETRYING, None, ServerError("x", status_code=502), None, 1.0),
            0,
            "Gateway error (502) — retrying…",
            "info",
        ),
        (
            Update(
                WatchState.SUCCESS,
                snapshot(
                    TaskStatus.SUCCESS,
                    submitted=200,
                    finish_time=NOW - timedelta(seconds=39),
                    videos=(Video("https://cdn.test/a.mp4"),),
                ),
                None,
                None,
                5.0,
            ),
            0,
            "Done in 2:41",
            "success",
        ),
        (
            Update(
                WatchState.FAILURE,
                snapshot(TaskStatus.FAILURE, fail_reason="Image pixel is invalid"),
                None,
                None,
                1.0,
            ),
            0,
            "Failed: Image pixel is invalid",
            "danger",
        ),
        (
            Update(
                WatchState.ERROR,
                None,
                AuthenticationError("The API key was rejected (401). Set EZMODEL_API_KEY or pass api_key=."),
                None,
                1.0,
            ),
            0,
            "Stopped: the API key was rejected (401). Set EZMODEL_API_KEY or pass api_key=.",
            "danger",
        ),
        (
            Update(WatchState.TIMEOUT, None, TaskTimeoutError(None, "1", 900.0), None, 900.2),
            0,
            "Gave up after 15:00 — the task may still finish; watch it again with its id",
            "warning",
        ),
        (
            Update(WatchState.STOPPED, None, None, None, 80.5),
            0,
            "Stopped watching at 1:20 — the task keeps running on the server",
            "warning",
        ),
    ],
)
def test_status_line_table(update: Update, generating_for: float, expected: str, style: str) -> None:
    view = describe(update, update.task, previous=View(line="before"), generating_for=generating_for, now=NOW)
    assert (view.line, view.bar_style) == (expected, style)
    assert view.final is update.state.is_final


def test_transient_trouble_leaves_the_bar_alone() -> None:
    before = View(line="Generating", progress=57, bar_style="info")
    view = describe(
        Update(WatchState.RETRYING, None, TransportError("x"), 1.0, 9.0),
        None,
        previous=before,
        generating_for=0,
        now=NOW,
    )
    assert (view.progress, view.bar_style) == (57, "info")


def test_progress_never_goes_backwards() -> None:
    before = View(line="Generating", progress=80)
    task = snapshot(TaskStatus.IN_PROGRESS, progress=30)
    view = describe(
        Update(WatchState.WAITING, task, None, None, 1.0), task, previous=before, generating_for=0, now=NOW
    )
    assert view.progress == 80


def test_estimate_shape() -> None:
    assert estimate_progress(0) == 30
    assert estimate_progress(-5) == estimate_progress(float("nan")) == 30
    assert 60 <= estimate_progress(180) <= 75  # one time constant: about two thirds of the way
    assert estimate_progress(float("inf")) == 95


@given(st.floats(min_value=0, max_value=1e9), st.floats(min_value=0, max_value=1e9))
def test_estimate_is_monotonic_and_below_100(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 30 <= estimate_progress(low) <= estimate_progress(high) <= 95


# -- options are checked before anything is sent (issue 8, item 14) -----------------------------------


@pytest.mark.parametrize(
    "option",
    [{"poll_interval": 0}, {"poll_interval": float("nan")}, {"max_poll_interval": 0.5}, {"timeout": -1}],
    ids=["poll_interval=0", "poll_interval=nan", "max<poll", "timeout<0"],
)
def test_generate_refuses_a_bad_widget_option_before_the_post(sim: GatewaySimulator, option: Any) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        generate("a corgi", base_url=sim.url, api_key=sim.api_key, **option)
    assert sim.requests() == []  # nothing was sent, so nothing was billed


def test_a_bad_endpoint_fails_before_any_request(sim: GatewaySimulator) -> None:
    with pytest.raises(ValueError, match="Unknown endpoint 'text-to-video'"):
        TaskStatusWidget(
            "842250903629086785", base_url=sim.url, api_key=sim.api_key, endpoint="text-to-video"
        )
    assert sim.requests() == []


def test_a_failure_after_the_post_carries_the_task_id_and_is_logged(
    sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_start(self: TaskStatusWidget) -> TaskStatusWidget:
        raise RuntimeError("no engine today")

    monkeypatch.setattr(TaskStatusWidget, "start", broken_start)
    with pytest.raises(KlingError) as caught:
        generate("a corgi", base_url=sim.url, api_key=sim.api_key)
    (post,) = [r for r in sim.requests() if r.method == "POST"]
    assert post.task_id is not None
    assert caught.value.task_id == post.task_id
    assert post.task_id in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and post.task_id in r.getMessage()]
    assert warnings
    live = ipywidgets.widgets.widget._instances.values()
    assert not [w for w in live if isinstance(w, TaskStatusWidget) and w.task_id == post.task_id]


# -- updates only when something visible changed (issue 9, item 11) -----------------------------------


def test_a_poll_that_changes_nothing_visible_sends_nothing(comms: list[RecordingComm]) -> None:
    widget = TaskStatusWidget("842250903629086785", api_key="sk-unused", autostart=False)
    try:
        queued = snapshot(TaskStatus.SUBMITTED, progress=10)
        widget._on_update(Update(WatchState.WAITING, queued, None, None, 11.0))
        sent = sum(len(c.sent) for c in comms)
        widget._on_update(Update(WatchState.WAITING, queued, None, None, 12.9))  # the same 5-second step
        widget._on_update(Update(WatchState.WAITING, queued, None, None, 14.2))
        assert sum(len(c.sent) for c in comms) == sent
        widget._on_update(Update(WatchState.WAITING, queued, None, None, 15.1))  # the clock moves on
        assert sum(len(c.sent) for c in comms) == sent + 1
        assert line(widget) == "Queued · 0:15"
    finally:
        widget.close()


# -- kept videos (issue 10, item 4) ----------------------------------------------------------------------


def clip_digest() -> str:
    return hashlib.sha256(
        resources.files("kling_widgets").joinpath("_data/demo.mp4").read_bytes()
    ).hexdigest()


def test_success_keeps_the_video_by_default_and_the_card_says_where(
    sim: GatewaySimulator, watch: Any, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(private_home)  # the kernel's working folder: the notebook's
    monkeypatch.delenv("KLING_WIDGETS_KEEP")
    task_id = sim.add_task()
    widget = watch(task_id)
    widget.wait(WAIT)  # returns once keeping is over
    kept = private_home / "kling-videos" / f"{task_id}.mp4"
    assert widget.kept == (kept,)
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == clip_digest()
    assert (private_home / "kling-videos" / f"{task_id}.json").exists()
    block = text(widget).value
    assert block.count("<video ") == 1  # the player stays
    assert block.endswith(f"<div>Kept as kling-videos/{task_id}.mp4</div>")
    assert f"Kept as kling-videos/{task_id}.mp4" in widget.static_bundle()["text/html"]
    assert f"Kept as kling-videos/{task_id}.mp4" in widget.static_bundle()["text/plain"]


def test_the_kept_line_reaches_the_static_fallback_through_the_display_handle(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = RecordingHandle()
    monkeypatch.setattr(_base, "display", lambda obj, **kwargs: handle)
    widget = watch(sim.add_task(), autostart=False)
    widget._ipython_display_()
    widget.start().wait(WAIT)
    (final, _), (kept, _) = handle.updates  # the end, then the end with the kept file
    assert "Kept as " not in final["text/html"]
    assert f"<div>Kept as {widget.kept[0]}</div>" in kept["text/html"]
    assert "<video src=" in kept["text/html"]


def test_keep_false_a_folder_and_keep_off(
    sim: GatewaySimulator, watch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = watch(sim.add_task(), keep=False)
    off.wait(WAIT)
    assert off.kept == ()
    assert "Kept" not in text(off).value

    folder = watch(sim.add_task(), keep=tmp_path / "mine")
    folder.wait(WAIT)
    assert [p.parent for p in folder.kept] == [tmp_path / "mine"]
    assert f"Kept as {tmp_path / 'mine' / (folder.task_id + '.mp4')}" in text(folder).value

    monkeypatch.setenv("KLING_WIDGETS_KEEP", "0")
    default_off = watch(sim.add_task())
    default_off.wait(WAIT)
    assert default_off.kept == ()
    assert "Kept" not in text(default_off).value
    with pytest.raises(TypeError, match="keep must be"):
        watch(sim.add_task(), keep=3)


@pytest.mark.parametrize("sim", [Scenario(polls=(1, 1), url_lifetime=-60)], indirect=True)
def test_a_video_that_cannot_be_kept_says_why_and_keeps_the_player(sim: GatewaySimulator, watch: Any) -> None:
    widget = watch(sim.add_task())
    widget.wait(WAIT)
    block = text(widget).value
    assert widget.kept == ()
    assert block.count("<video ") == 1
    assert re.search(r"<div>Not kept: Cannot keep \d+: its video link expired on .*</div>$", block), block


def test_keeping_never_holds_up_polling(sim: GatewaySimulator, watch: Any, client: KlingClient) -> None:
    """A keep that hangs (the video host never answers) leaves the engine free: another task finishes."""
    gate = threading.Event()
    real = client.download

    def slow_download(*args: Any, **kwargs: Any) -> Any:
        gate.wait(WAIT)
        return real(*args, **kwargs)

    client.download = slow_download  # type: ignore[method-assign]
    first = watch(sim.add_task(), client=client)
    wait_for(lambda: first.status == "SUCCESS")
    assert not first.done()
    second = watch(sim.add_task(), keep=False)
    assert second.wait(WAIT).status is TaskStatus.SUCCESS
    assert not first.done()
    with pytest.raises(TimeoutError):
        first.wait(0.1)
    gate.set()
    first.wait(WAIT)
    assert len(first.kept) == 1


def test_generate_passes_keep_through(sim: GatewaySimulator, client: KlingClient, tmp_path: Path) -> None:
    widget = generate("a corgi", client=client, keep=tmp_path, **FAST)
    try:
        widget.wait(WAIT)
        assert [p.name for p in widget.kept] == [f"{widget.task_id}.mp4"]
    finally:
        widget.close()
    with pytest.raises(TypeError, match="keep must be"):
        generate("a corgi", client=client, keep=1.5)
    assert sum(1 for r in sim.requests() if r.method == "POST") == 1


# -- front-ends (issue 9, items 9 and 10) ----------------------------------------------------------------


def test_vscode_shows_the_note_beside_the_link_instead_of_a_player(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_WIDGETS_FRONTEND", "vscode")
    widget = watch(sim.add_task(), keep=False)
    task = widget.wait(WAIT)
    note = html.escape(VSCODE_PLAYBACK_NOTE)
    for shown in (text(widget).value, widget.static_bundle()["text/html"]):
        assert "<video" not in shown
        assert ">Open in new tab</a>" in shown
        assert "</span> · link expires" in shown
        assert shown.count(note) == 1
        assert html.escape(task.video_url, quote=True) in shown


def test_colab_hands_every_write_to_the_main_thread_and_wait_does_not_need_it(
    sim: GatewaySimulator, watch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a kernel `deliver` runs at once; a stand-in main-thread queue shows what goes through it."""
    monkeypatch.setenv("KLING_WIDGETS_FRONTEND", "colab")
    queued: list[Callable[[], None]] = []
    monkeypatch.setattr(_frontend, "_main_thread_queue", lambda: SimpleNamespace(put=queued.append))
    widget = watch(sim.add_task())
    assert widget.frontend is _frontend.Frontend.COLAB
    widget.wait(WAIT)  # released by the polling and keeping threads, not by the queued writes
    assert (widget.status, widget.progress, line(widget)) == ("", 0, "Checking the task…")  # nothing applied
    assert queued
    for update in queued:  # what the kernel's main thread would run, in order
        update()
    assert (widget.status, widget.progress) == ("SUCCESS", 100)
    assert line(widget).startswith("Done in ")
    assert "<div>Kept as " in text(widget).value


# -- routes ----------------------------------------------------------------------------------------------

IMAGE_URL = "https://example.com/cat.png"


@pytest.mark.parametrize(
    ("submit", "route"),
    [
        (lambda client: client.text2video("a corgi"), "text2video"),
        (lambda client: client.omni_video("a corgi", duration=7), "omni-video"),
        (lambda client: client.multi_image2video([IMAGE_URL], "a corgi"), "multi-image2video"),
        (
            lambda client: client.motion_control(
                IMAGE_URL, "https://example.com/dance.mp4", "a corgi", character_orientation="image"
            ),
            "motion-control",
        ),
        (lambda client: client.avatar_image2video(IMAGE_URL, audio_id="a"), "avatar/image2video"),
    ],
    ids=["text2video", "omni-video", "multi-image2video", "motion-control", "avatar"],
)
def test_a_task_is_watched_on_its_own_route(
    sim: GatewaySimulator, client: KlingClient, submit: Any, route: str
) -> None:
    task = submit(client)
    widget = TaskStatusWidget(task, client=client, keep=False, **FAST)
    try:
        assert widget.wait(WAIT).status is TaskStatus.SUCCESS
    finally:
        widget.close()
    paths = {r.path for r in sim.requests(task.task_id) if r.method == "GET"}
    assert paths == {f"/kling/v1/videos/{route}/{task.task_id}"}


@pytest.mark.parametrize("route", ["omni-video", "motion-control", "avatar/image2video"])
def test_an_id_typed_by_hand_is_watched_on_the_route_it_is_given(
    sim: GatewaySimulator, client: KlingClient, route: str
) -> None:
    task_id = sim.add_task(endpoint=route)
    widget = TaskStatusWidget(task_id, client=client, endpoint=route, keep=False, **FAST)
    try:
        assert widget.wait(WAIT).endpoint == route
    finally:
        widget.close()
    assert {r.path for r in sim.requests(task_id) if r.method == "GET"} == {
        f"/kling/v1/videos/{route}/{task_id}"
    }
