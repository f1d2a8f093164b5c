"""`TaskHistory` and `resume` against the real simulator and the test's own ledger (comm-less ipywidgets).

Every test has a fresh ledger (``KLING_WIDGETS_HOME``, tests/conftest.py). No timing asserts: waits are
bounded by WAIT and judge states, texts and the simulator's request log.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ipywidgets
import pytest

from helpers import FOREVER, WAIT
from kling_widgets import (
    KlingClient,
    KlingError,
    TaskFailedError,
    TaskStatus,
    TaskStatusWidget,
    TransportError,
    _base,
)
from kling_widgets import _history as history_module
from kling_widgets._gallery import TaskGallery
from kling_widgets._history import TaskHistory, history, resume
from kling_widgets._ledger import Ledger
from kling_widgets._models import Task
from kling_widgets.simulator import GatewaySimulator, Scenario

FAST = {"poll_interval": 0.02, "max_poll_interval": 0.02}
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="alert(1)">'


@pytest.fixture
def history_of(client: KlingClient, widgets: list[Any]) -> Callable[..., TaskHistory]:
    def make(**kwargs: Any) -> TaskHistory:
        widgets.append(history(client, **kwargs))
        return widgets[-1]  # type: ignore[no-any-return]

    return make


def finished(client: KlingClient, prompt: str) -> Task:
    """Submit and wait until the task has ended (the ledger records every state the client fetched)."""
    task = client.text2video(prompt)
    try:
        return client.wait(task.task_id, timeout=WAIT, poll_interval=0.02, max_poll_interval=0.02)
    except TaskFailedError as exc:
        return exc.task


def unanswered(sim: GatewaySimulator, client: KlingClient, prompt: str) -> None:
    sim.drop_next_submits(1)
    with pytest.raises(TransportError):
        client.text2video(prompt)


def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


# -- listing and filtering -------------------------------------------------------------------------------


def test_lists_the_ledger_newest_first(client: KlingClient, history_of: Callable[..., TaskHistory]) -> None:
    ids = [client.text2video(f"take {i}: a corgi surfing").task_id for i in range(3)]
    h = history_of()
    assert [e.task_id for e in h.entries] == ids[::-1]
    table = h.static_bundle()["text/html"]
    positions = [table.index(f"take {i}: a corgi surfing") for i in range(3)]
    assert positions == sorted(positions, reverse=True)
    assert "3 tasks" in repr(h)
    assert [value for _label, value in h._row.options] == [e.local_id for e in h.entries]
    assert h._row.value == h.entries[0].local_id  # the newest is picked
    h.play(ids[0])
    assert h._row.value == h.entries[-1].local_id  # acting on a row picks it
    assert "Nothing to play: SUBMITTED" in h._message.value


def test_filters_by_status_and_by_prompt_or_task_id(
    sim: GatewaySimulator, client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    done = finished(client, "a corgi surfing")
    sim.scenario = Scenario(outcome="failure", polls=(0, 0), fail_message="Image pixel is invalid")
    failed = finished(client, "a cat on the moon")
    unanswered(sim, client, "a dog in the rain")
    sim.scenario = FOREVER
    running = client.text2video("a corgi skiing")
    h = history_of()
    assert len(h.entries) == 4

    h.filter(status="Succeeded")
    assert [e.task_id for e in h.entries] == [done.task_id]
    h.filter(status="Failed")
    assert [e.task_id for e in h.entries] == [failed.task_id]
    assert "FAILURE: Image pixel is invalid" in h._table.value
    h.filter(status="No answer")
    assert [(e.task_id, e.params["prompt"]) for e in h.entries] == [(None, "a dog in the rain")]
    assert "no answer (may have been charged)" in h._table.value
    h.filter(status="Running")
    assert [e.task_id for e in h.entries] == [running.task_id]

    h.filter(status="All", text="CORGI")
    assert [e.task_id for e in h.entries] == [running.task_id, done.task_id]
    h.filter(text=failed.task_id[-6:])
    assert [e.task_id for e in h.entries] == [failed.task_id]
    h.filter(text="nothing like this")
    assert h.entries == []
    assert "No tasks in the ledger match" in h._table.value


def test_only_this_key_and_gateway(client: KlingClient, history_of: Callable[..., TaskHistory]) -> None:
    ledger = client.ledger
    assert ledger is not None
    ledger.begin("text2video", "https://elsewhere.example", "0badcafe", {"prompt": "someone else's"})
    ledger.begin("text2video", client.base_url, "0badcafe", {"prompt": "another key's"})
    mine = client.text2video("mine").task_id
    assert [e.task_id for e in history_of().entries] == [mine]


def test_an_unknown_status_filter_is_refused(client: KlingClient) -> None:
    with pytest.raises(ValueError, match="Unknown status filter 'Done'"):
        TaskHistory(client=client, status="Done")


def test_pages_of_fifty_with_show_more(client: KlingClient, history_of: Callable[..., TaskHistory]) -> None:
    ledger = client.ledger
    assert ledger is not None
    for i in range(55):
        local_id = ledger.begin("text2video", client.base_url, client.key_id, {"prompt": f"p{i}"})
        ledger.submitted(local_id, Task(task_id=str(1000 + i), status=TaskStatus.SUBMITTED))
    h = history_of()
    assert len(h.entries) == 50
    assert "55 tasks · showing the 50 newest" in h._count.value
    assert h._table.value.count("<tr>") == 51
    assert not h._more.disabled
    h.show_more()
    assert len(h.entries) == 55
    assert h._more.disabled
    assert h._count.value == "55 tasks"


def test_hostile_prompts_reasons_and_links_are_escaped(
    sim: GatewaySimulator, client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    sim.scenario = Scenario(outcome="failure", polls=(0, 0), fail_message=HOSTILE)
    finished(client, HOSTILE)
    sim.scenario = Scenario(polls=(0, 0), video_url="javascript:window.pwned=1")
    finished(client, "a javascript link")
    h = history_of()
    shown = h._table.value + h.static_bundle()["text/html"]  # the picker's labels are plain text
    assert "<script" not in shown
    assert "<img" not in shown
    assert html.escape("<script>window.pwned=1</script>") in h._table.value
    assert "javascript:" not in h._table.value.lower()
    h.play(h.entries[0].task_id)  # the javascript: video: nothing is embedded
    assert "javascript:" not in "".join(getattr(m, "value", "") for m in h._detail.children)


# -- actions ---------------------------------------------------------------------------------------------


def test_open_plays_the_remote_link_while_it_works(
    client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    task = finished(client, "a corgi surfing")
    h = history_of()
    h.select(task.task_id)
    h._open_button.click()
    [player] = h._detail.children
    assert f'<video src="{html.escape(task.videos[0].url, quote=True)}"' in player.value
    assert "open</a>" in player.value
    assert "expires" in player.value


def test_watch_again_follows_the_task_below_the_table(
    sim: GatewaySimulator, client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    task = client.text2video("a corgi surfing")
    h = history_of()
    assert h.entries[0].state == TaskStatus.SUBMITTED.value
    h.select(task.task_id)
    h._watch_button.click()
    [card] = h._detail.children
    assert isinstance(card, TaskStatusWidget)
    assert card.task_id == task.task_id
    assert card.wait(WAIT).status is TaskStatus.SUCCESS
    until(lambda: h.entries[0].state == TaskStatus.SUCCESS.value, "the table to show SUCCESS")
    second = h.watch_again(task.task_id)
    assert h._detail.children == (second,)
    assert card._closed


def test_watch_again_of_an_unanswered_post_says_why_not(
    sim: GatewaySimulator, client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    unanswered(sim, client, "a dog in the rain")
    h = history_of()
    h.select(h.entries[0].local_id)
    assert h.watch_again() is None
    assert "got no answer" in h._message.value
    assert "never resubmitted" in h._message.value


def test_keep_runs_in_the_background_and_reports_the_path(
    client: KlingClient, history_of: Callable[..., TaskHistory], private_home: Path
) -> None:
    task = finished(client, "a corgi surfing")
    h = history_of()
    h.select(task.task_id)
    thread = h.keep()
    assert thread is not None
    thread.join(WAIT)
    path = private_home / "kling-videos" / f"{task.task_id}.mp4"
    assert path.is_file()
    until(lambda: str(path) in h._message.value, "the kept path in the message")
    until(lambda: h.entries[0].kept == (path,), "the ledger's kept path in the table")
    assert f"{task.task_id}.mp4" in h._table.value


def test_keep_of_a_running_task_says_there_is_nothing_yet(
    sim: GatewaySimulator, client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    sim.scenario = FOREVER
    task = client.text2video("a corgi surfing")
    h = history_of()
    assert h.keep(task.task_id) is None
    assert "Nothing to keep: SUBMITTED" in h._message.value


def test_open_plays_the_kept_copy_once_the_link_expired(
    sim: GatewaySimulator,
    client: KlingClient,
    history_of: Callable[..., TaskHistory],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim.url_lifetime = 4.0  # long enough to keep it, short enough to wait for
    task = finished(client, "a corgi surfing")
    h = history_of()
    thread = h.keep(task.task_id)
    assert thread is not None
    thread.join(WAIT)
    ledger = client.ledger
    assert ledger is not None
    entry = until(lambda: (e := ledger.get(task.task_id)) and e.kept and e, "the kept copy")
    expires = entry.videos[0].expires_at
    assert expires is not None
    time.sleep(max((expires - datetime.now(timezone.utc)).total_seconds(), 0) + 0.1)
    h.refresh()
    assert "expired" in h._table.value
    assert "open</a>" not in h._table.value
    h.play(task.task_id)
    player, note = h._detail.children
    assert isinstance(player, ipywidgets.Video)
    assert player.value == entry.kept[0].read_bytes()
    assert player.format == "mp4"
    assert not player.autoplay
    assert str(entry.kept[0]) in note.value
    assert "playing the kept copy" in h._message.value

    monkeypatch.setattr(history_module, "MAX_INLINE_BYTES", 10)
    h.play(task.task_id)
    [note] = h._detail.children  # a file too large to send through the comm is named by its path
    assert "too large to send to the browser" in note.value
    assert str(entry.kept[0]) in note.value
    assert player.comm is None  # the previous player was closed


def test_an_expired_link_without_a_kept_copy_says_the_video_is_gone(
    sim: GatewaySimulator, client: KlingClient, history_of: Callable[..., TaskHistory]
) -> None:
    sim.url_lifetime = -60.0  # links widgets expired
    task = finished(client, "a corgi surfing")
    h = history_of()
    h.play(task.task_id)
    assert h._detail.children == ()
    assert "expired" in h._message.value
    assert "no copy was kept" in h._message.value


def test_close_releases_every_model(sim: GatewaySimulator, client: KlingClient, comms: list[Any]) -> None:
    earlier = set(ipywidgets.widgets.widget._instances)  # models another test left open are not ours
    task = finished(client, "a corgi surfing")
    h = TaskHistory(client=client)
    h.play(task.task_id)
    card = h.watch_again(task.task_id)
    assert card is not None
    card.wait(WAIT)
    h.close()
    h.close()  # idempotent
    assert comms
    live = [m for key, m in list(ipywidgets.widgets.widget._instances.items()) if key not in earlier]
    shared = {m.comm for m in live if _base.is_shared(m)}
    assert all(c.closed for c in comms if c not in shared)
    assert not [w for w in live if isinstance(w, (TaskHistory, TaskStatusWidget))]


# -- resume ----------------------------------------------------------------------------------------------


def posts(sim: GatewaySimulator) -> int:
    return sum(1 for r in sim.requests() if r.method == "POST")


def test_resume_brings_every_unfinished_task_to_its_end_and_shows_unanswered_posts(
    sim: GatewaySimulator, client: KlingClient, widgets: list[Any]
) -> None:
    finished(client, "already done")  # final: not resumed
    running = [client.text2video(f"take {i}") for i in range(3)]  # nobody watches them
    unanswered(sim, client, HOSTILE)
    ledger = client.ledger
    assert ledger is not None
    ledger.begin("text2video", "https://elsewhere.example", client.key_id, {"prompt": "another gateway"})
    sent = posts(sim)

    g = resume(client, **FAST)
    widgets.append(g)
    assert isinstance(g, TaskGallery)
    assert len(g) == 4
    succeeded = g.wait(WAIT)
    assert sorted(t.task_id for t in succeeded) == sorted(t.task_id for t in running)
    [error] = g.failed
    assert isinstance(error, KlingError)
    assert error.code == "unanswered"
    assert error.task_id is None
    assert "got no answer" in str(error)
    assert "may have been charged" in str(error)
    assert "never resubmitted automatically" in str(error)
    assert "window.pwned" in str(error)
    shown = g.static_bundle()["text/html"]
    assert "<script" not in shown
    assert "take 2" in shown
    assert posts(sim) == sent  # nothing was sent again
    assert [
        e.state for e in ledger.entries(gateway=client.base_url) if e.task_id in {t.task_id for t in running}
    ] == [TaskStatus.SUCCESS.value] * 3


def test_resume_with_nothing_unfinished_is_an_empty_gallery(client: KlingClient, widgets: list[Any]) -> None:
    finished(client, "already done")
    g = resume(client, **FAST)
    widgets.append(g)
    assert len(g) == 0
    assert g.wait(WAIT) == []


def test_resume_without_a_ledger_says_so(sim: GatewaySimulator) -> None:
    kling = KlingClient(base_url=sim.url, api_key=sim.api_key, ledger=False)
    with kling, pytest.raises(KlingError, match="nothing to resume"):
        resume(kling)


def test_resume_with_its_own_client_closes_it_with_the_gallery(
    sim: GatewaySimulator, client: KlingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.text2video("take 1")
    closed: list[KlingClient] = []
    monkeypatch.setattr(KlingClient, "close", lambda self: closed.append(self))
    g = resume(api_key=sim.api_key, base_url=sim.url, **FAST)
    g.wait(WAIT)
    assert closed == []
    g.close()
    assert closed == [g._client]


def test_resume_reads_the_ledger_of_the_client(
    sim: GatewaySimulator, tmp_path: Path, widgets: list[Any]
) -> None:
    ledger = Ledger(tmp_path / "elsewhere.sqlite3")
    with KlingClient(base_url=sim.url, api_key=sim.api_key, ledger=ledger) as kling:
        task = kling.text2video("recorded elsewhere")
        g = resume(kling, **FAST)
        widgets.append(g)
        assert [t.task_id for t in g.wait(WAIT)] == [task.task_id]


def test_the_key_is_nowhere_in_the_history_or_resume_widgets(
    sim: GatewaySimulator, client: KlingClient, comms: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    task = finished(client, "a corgi surfing")
    unanswered(sim, client, "a dog in the rain")
    h = TaskHistory(client=client)
    h.play(task.task_id)
    card = h.watch_again(task.task_id)
    assert card is not None
    card.wait(WAIT)
    thread = h.keep(task.task_id)
    assert thread is not None
    thread.join(WAIT)
    g = resume(client, **FAST)
    g.wait(WAIT)
    seen = [repr(h), repr(g), *h._repr_mimebundle_().values(), *g.static_bundle().values(), caplog.text]
    for widgets in comms:  # everything that would reach the front end
        seen.append(json.dumps(widgets.open_data, default=lambda b: bytes(b).hex()))
        seen.extend(json.dumps(message, default=lambda b: bytes(b).hex()) for message in widgets.sent)
    seen.extend(str(error) for error in g.failed)
    h.close()
    g.close()
    everything = "\n".join(map(str, seen))
    assert sim.api_key not in everything
    assert sim.api_key.removeprefix("sk-") not in everything


# -- the server's own list (Kling's API) -----------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["kling"])
def test_sync_brings_in_the_tasks_this_ledger_never_saw(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path, widgets: list[Any]
) -> None:
    tasks = [finished(client, f"widgets elsewhere {i}") for i in range(3)]  # recorded in another ledger
    keys = {"access_key": sim.access_key, "secret_key": sim.secret_key}
    other = KlingClient(base_url=sim.url, ledger=tmp_path / "new.sqlite3", **keys)
    widgets.append(before := history(other))
    assert before.entries == []
    widgets.append(widget := history(other, sync=True))
    assert {entry.task_id for entry in widget.entries} == {task.task_id for task in tasks}
    assert {entry.state for entry in widget.entries} == {"SUCCESS"}
    other.close()


def test_sync_on_the_gateway_says_it_has_no_task_list(client: KlingClient) -> None:
    with pytest.raises(KlingError, match="no task list") as info:
        history(client, sync=True)
    assert info.value.code == "not_supported"
