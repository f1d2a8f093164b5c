"""TaskGallery and generate_many against the real simulator over HTTP (comm-less ipywidgets).

No timing asserts: tests wait for final states with generous bounds and check counts, texts, orders and
the simulator's request log.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ipywidgets
import pytest

from helpers import FOREVER, WAIT, FakeShell, RecordingHandle, assert_no_request_follows
from kling_widgets import (
    KlingClient,
    KlingError,
    TaskFailedError,
    TaskStatus,
    TaskStatusWidget,
    _base,
    _gallery,
)
from kling_widgets._gallery import TaskGallery, generate_many
from kling_widgets._poller import default_engine
from kling_widgets.simulator import Fault, GatewaySimulator, RequestRecord, Scenario

T = TypeVar("T")
FAST = {"poll_interval": 0.02, "max_poll_interval": 0.02}


@pytest.fixture
def gallery(client: KlingClient) -> Iterator[Callable[..., TaskGallery]]:
    """Make galleries polling through ``client`` fast; every one is closed after the test."""
    made: list[TaskGallery] = []

    def make(tasks: Any, **kwargs: Any) -> TaskGallery:
        made.append(TaskGallery(tasks, client=client, **{**FAST, **kwargs}))
        return made[-1]

    yield make
    for each in made:
        each.close()


def posts(sim: GatewaySimulator) -> int:
    return sum(1 for r in sim.requests() if r.method == "POST")


def test_generate_many_submits_in_order_and_every_card_finishes(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    prompts = [f"a corgi surfing, take {i}" for i in range(6)]
    g = generate_many(prompts, client=client, duration="5", **FAST)
    try:
        tasks = g.wait(WAIT)
        assert [t.status for t in tasks] == [TaskStatus.SUCCESS] * 6
        assert [t.task_id for t in tasks] == [c.task_id for c in g.cards if isinstance(c, TaskStatusWidget)]
        assert all(t.video_url for t in tasks)
        assert g.failed == []
        assert g.tasks == tasks
        assert len(g) == 6
        assert g.summary().startswith("6 tasks · 6 done · ")
        assert posts(sim) == 6
    finally:
        g.close()


def test_a_refused_submission_becomes_an_error_card_and_the_batch_goes_on(
    sim: GatewaySimulator, client: KlingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = client.text2video

    def text2video(prompt: str, **params: Any) -> Any:
        # A model the gateway has no channel for, sent past the client's own checks: a real 503.
        if prompt == "refused":
            return client._submit("text2video", {"model_name": "kling-v0", "prompt": prompt, "duration": "5"})
        return real(prompt, **params)

    monkeypatch.setattr(client, "text2video", text2video)
    g = generate_many(["first", "refused", "third"], client=client, **FAST)
    try:
        tasks = g.wait(WAIT)
        assert len(tasks) == 2
        (error,) = g.failed
        assert error.status_code == 503
        assert g.cards[1] is error
        assert g.tasks[1] is None
        assert posts(sim) == 3  # the refused POST was not retried
        assert "1 failed" in g.summary()
        assert "Not submitted: " in g._repr_mimebundle_()["text/html"]
    finally:
        g.close()


def test_blank_prompts_are_refused_before_anything_is_sent(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    with pytest.raises(ValueError, match=r"positions \[1\]"):
        generate_many(["fine", "  "], client=client)
    with pytest.raises(TypeError, match="list of prompts"):
        generate_many("one prompt", client=client)
    assert posts(sim) == 0


@pytest.mark.parametrize(
    "sim", [Scenario(outcome="failure", polls=(0, 1), fail_message="Bad & <b>")], indirect=True
)
def test_a_failed_task_is_counted_and_explained(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery([sim.add_task(), sim.add_task(Scenario(polls=(0, 1)))])
    assert [t.task_id for t in g.wait(WAIT)] == [g.tasks[1].task_id]  # type: ignore[union-attr]
    (error,) = g.failed
    assert isinstance(error, TaskFailedError)
    assert error.task.fail_reason == "Bad & <b>"
    assert g.summary().startswith("2 tasks · 1 done · 1 failed · ")
    assert "Failed: Bad &amp; &lt;b&gt;" in g._repr_mimebundle_()["text/html"]


def test_stop_all_stops_every_watch_and_no_request_follows(sim: GatewaySimulator, gallery: Any) -> None:
    ids = [sim.add_task(FOREVER) for _ in range(4)]
    g = gallery(ids)
    g._stop_all.click()
    assert g.wait(WAIT) == []
    assert [e.code for e in g.failed] == ["stopped"] * 4
    assert g.summary().startswith("4 tasks · 4 stopped · ")
    assert g._stop_all.disabled
    assert_no_request_follows(sim, ids)


def test_wait_timeout_raises_the_builtin_and_watching_goes_on(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery([sim.add_task(FOREVER), sim.add_task()])
    with pytest.raises(
        TimeoutError, match=r"1 of 2 tasks are still being watched \(or submitted\)"
    ) as caught:
        g.wait(0.5)
    assert not isinstance(caught.value, KlingError)
    assert "running" in g.summary()
    g.stop()
    assert len(g.wait(WAIT)) == 1


def test_wait_async(sim: GatewaySimulator, gallery: Any, run_async: Any) -> None:
    g = gallery([sim.add_task(), sim.add_task()])
    assert len(run_async(g.wait_async(WAIT))) == 2


def test_cards_share_the_default_engine(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery([sim.add_task() for _ in range(30)])
    assert len(g.wait(WAIT)) == 30
    engine = default_engine()
    assert all(card._watch is not None for card in g.cards)  # type: ignore[union-attr]
    assert engine.thread_count <= engine._max_workers + 1


def test_summary_ticks_while_watching(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery([sim.add_task(FOREVER)], autostart=False)
    assert g.summary() == "1 task · 1 running"  # not started: no clock yet
    with pytest.raises(RuntimeError, match="start"):
        g.wait(0)
    g.start()
    assert g.start() is g
    assert "0:00 elapsed" in g.summary()


def test_labels_and_messages_are_escaped_and_the_key_never_shows(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery(
        [sim.add_task(), KlingError("<img src=x onerror=alert(1)>")], labels=["<script>x</script>", "y"]
    )
    g.wait(WAIT)
    caption = g._grid.children[0].children[1].value
    assert "<script>" not in caption
    assert "&lt;script&gt;x&lt;/script&gt;" in caption
    static = g._repr_mimebundle_()
    assert "<img" not in static["text/html"]
    assert sim.api_key not in repr(g) + str(static)


def test_long_labels_are_shortened_with_more_of_the_text_in_the_title(
    sim: GatewaySimulator, gallery: Any
) -> None:
    label = "a very long prompt " * 20
    g = gallery([sim.add_task()], labels=[label])
    caption = g._grid.children[0].children[1].value
    assert f'title="{label[:299]}…"' in caption  # a 2,500-character prompt is not saved twice
    assert "…</b>" in caption


def test_bad_arguments(client: KlingClient, gallery: Any) -> None:
    with pytest.raises(ValueError, match="repeated: 7"):
        gallery(["7", "8", "7"])
    with pytest.raises(ValueError, match="one label per task"):
        gallery(["7"], labels=["a", "b"])
    with pytest.raises(ValueError, match="either client"):
        TaskGallery(["7"], client=client, api_key="sk-x")


def test_close_releases_every_model(sim: GatewaySimulator, client: KlingClient, comms: list[Any]) -> None:
    g = TaskGallery([sim.add_task(), KlingError("refused")], labels=["a", "b"], client=client, **FAST)
    g.wait(WAIT)
    g.close()
    g.close()  # idempotent
    assert comms
    live = list(ipywidgets.widgets.widget._instances.values())
    shared = {m.comm for m in live if _base.is_shared(m)}  # layouts and styles of every card, never closed
    assert all(c.closed for c in comms if c not in shared)
    assert not [w for w in live if isinstance(w, (TaskGallery, TaskStatusWidget))]


def test_an_own_client_is_closed_with_the_gallery(
    sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[KlingClient] = []
    monkeypatch.setattr(KlingClient, "close", lambda self: closed.append(self))
    g = generate_many(["one"], base_url=sim.url, api_key=sim.api_key, **FAST)
    g.wait(WAIT)
    assert closed == []
    g.close()
    assert closed == [g._client]


def test_display_refreshes_the_static_fallback_once_every_card_has_ended(
    sim: GatewaySimulator, gallery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = RecordingHandle()
    monkeypatch.setattr(_base, "display", lambda obj, **kwargs: handle)
    g = gallery([sim.add_task(), sim.add_task()], autostart=False)
    g._ipython_display_()
    g.start().wait(WAIT)
    ((final, _),) = handle.updates
    assert list(final) == ["text/plain", "text/html"]  # plain HTML from now on: no widget view
    assert final["text/html"].count("<video src=") == 2
    assert "2 done" in final["text/plain"]


def test_rerunning_the_cell_closes_the_gallery_and_its_cards(
    sim: GatewaySimulator, gallery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = FakeShell()
    monkeypatch.setattr(_base, "get_ipython", lambda: shell)
    monkeypatch.setattr(_base, "REGISTRY", _base.CellRegistry())

    first = shell.run_cell("cell-A", lambda: gallery([sim.add_task(FOREVER), sim.add_task(FOREVER)]))
    cards = list(first.cards)
    shell.run_cell("cell-A", lambda: gallery([sim.add_task(FOREVER)]))

    assert first.comm is None
    assert all(card.comm is None for card in cards)


# -- the summary counts outcomes, not display traits (issue 8, item 12) --------------------------------


def test_a_card_closed_from_outside_counts_as_stopped_and_the_gallery_ends(
    sim: GatewaySimulator, gallery: Any, client: KlingClient
) -> None:
    task_id = sim.add_task(FOREVER)
    g = gallery([task_id, sim.add_task()])
    replacement = TaskStatusWidget(task_id, client=client, autostart=False)  # closes the card it replaces
    try:
        assert len(g.wait(WAIT)) == 1
        assert g.summary().startswith("2 tasks · 1 done · 1 stopped · ")
        assert "running" not in g.summary()
        assert g._stop_all.disabled
        assert [e.code for e in g.failed] == ["stopped"]
    finally:
        replacement.close()


def test_errors_and_timeouts_are_counted_as_what_they_are(sim: GatewaySimulator, gallery: Any) -> None:
    lost = sim.add_task(Scenario(polls=(1, 1), faults=(Fault("not_found", at_poll=1),)))
    g = gallery([lost, sim.add_task(FOREVER), sim.add_task()], timeout=1.0)
    assert len(g.wait(WAIT)) == 1
    assert g.summary().startswith("3 tasks · 1 done · 1 error · 1 timed out · ")
    assert g._stop_all.disabled
    assert [type(e).__name__ for e in g.failed] == ["TaskNotFoundError", "TaskTimeoutError"]


def test_an_observer_of_the_summary_may_wait(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery([sim.add_task(), sim.add_task()], autostart=False)
    results: list[int] = []

    def on_summary(change: dict[str, Any]) -> None:
        if "running" not in change["new"] and "done" in change["new"]:
            results.append(len(g.wait(WAIT)))

    g._summary.observe(on_summary, names="value")
    g.start()
    assert len(g.wait(WAIT)) == 2
    deadline = time.monotonic() + WAIT  # the observer runs just after wait() is released
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results == [2]


def test_generate_many_refuses_a_bad_option_before_any_post(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        generate_many(["a", "b"], client=client, poll_interval=0)
    # Options that only fail together: found before the submitter's thread starts (it would strand the batch).
    with pytest.raises(ValueError, match="master"):
        generate_many(["a", "b"], client=client, mode="master")
    with pytest.raises(ValueError, match="concurrency"):
        generate_many(["a", "b"], client=client, concurrency=0)
    with pytest.raises(ValueError, match="unknown column"):
        generate_many(["a"], client=client, duraton="5")
    assert posts(sim) == 0


# -- batches that finish (issue 10, item 5) -------------------------------------------------------------


def test_ten_prompts_at_concurrency_3_over_a_limit_of_3_all_succeed() -> None:
    with (
        GatewaySimulator(scenario=Scenario(polls=(1, 2)), max_parallel=3) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        g = generate_many([f"prompt {i}" for i in range(10)], client=client, concurrency=3, **FAST)
        try:
            assert [card is None for card in g.cards].count(True) >= 7  # shown at once, waiting
            tasks = g.wait(WAIT)
            assert [t.status for t in tasks] == [TaskStatus.SUCCESS] * 10
            assert g.failed == []
            assert sim.peak_unfinished <= 3
            assert [r.status for r in sim.requests() if r.method == "POST"] == [200] * 10
            assert g.summary().startswith("10 tasks · 10 done · ")
            assert all(isinstance(card, TaskStatusWidget) for card in g.cards)
            # wait() also waited for every card's kept file, and the static fallback says where each went
            assert all(len(card.kept) == 1 for card in g.cards)  # type: ignore[union-attr]
            assert g.static_bundle()["text/html"].count("Kept as ") == 10
        finally:
            g.close()


def test_a_429_on_the_post_waits_and_never_fails_a_prompt() -> None:
    with (
        GatewaySimulator(scenario=Scenario(polls=(1, 2)), max_parallel=2) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        g = generate_many([f"prompt {i}" for i in range(5)], client=client, **FAST)  # no limit of our own
        try:
            assert len(g.wait(WAIT)) == 5
            assert g.failed == []
            statuses = [r.status for r in sim.requests() if r.method == "POST"]
            assert statuses.count(200) == 5
            assert 429 in statuses  # the gateway's limit held the queue
        finally:
            g.close()


def test_closing_the_gallery_midway_sends_no_further_post(sim: GatewaySimulator, client: KlingClient) -> None:
    sim.scenario = FOREVER
    g = generate_many([f"prompt {i}" for i in range(10)], client=client, concurrency=2, **FAST)
    deadline = time.monotonic() + WAIT
    while posts(sim) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    g.close()
    assert g._submitter is not None
    assert g._submitter.wait(WAIT)
    time.sleep(0.3)
    assert posts(sim) == 2


def test_stop_all_turns_the_waiting_prompts_into_not_submitted_cards(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    sim.scenario = FOREVER
    g = generate_many(["a", "b", "c"], client=client, concurrency=1, **FAST)
    try:
        deadline = time.monotonic() + WAIT
        while not isinstance(g.cards[0], TaskStatusWidget) and time.monotonic() < deadline:
            time.sleep(0.01)
        g._stop_all.click()
        assert g.wait(WAIT) == []
        assert [e.code for e in g.failed] == ["stopped", "not_sent", "not_sent"]
        assert posts(sim) == 1
        assert "Not submitted: The batch stopped" in g.static_bundle()["text/html"]
    finally:
        g.close()


def test_a_post_without_an_answer_becomes_an_unknown_card(sim: GatewaySimulator, client: KlingClient) -> None:
    sim.drop_next_submits(1)
    g = generate_many(["lost", "fine"], client=client, **FAST)
    try:
        assert len(g.wait(WAIT)) == 1
        (error,) = g.failed
        assert error.code == "unknown"
        assert "may be charged, but its id was not returned" in str(error)
        assert "1 done · 1 unknown" in g.summary()
        assert "Unknown — may have been charged; its id was not returned: " in g.static_bundle()["text/html"]
        assert posts(sim) == 2  # never sent again
    finally:
        g.close()


def test_waiting_cards_turn_live_without_a_model_more(
    sim: GatewaySimulator, client: KlingClient, comms: list[Any]
) -> None:
    g = generate_many(["a", "b"], client=client, keep=False, **FAST)
    try:
        g.wait(WAIT)
        html_models = [
            c for c in comms if (c.open_data or {}).get("state", {}).get("_model_name") == "HTMLModel"
        ]
        assert len(html_models) == 3  # the summary, and one per card: the waiting card's, reused
    finally:
        g.close()


# -- Extend on a done card (issue 12, item 4) -----------------------------------------------------------


def wait_for(check: Callable[[], T]) -> T:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def extend_posts(sim: GatewaySimulator) -> list[RequestRecord]:
    return [r for r in sim.requests() if r.method == "POST" and r.path.endswith("/video-extend")]


def offered(g: TaskGallery) -> list[int]:
    """The cards the Extend pick offers, once the button works."""
    return [] if g._extend_button.disabled else [index for _, index in g._extend_pick.options]


def test_extend_on_a_done_card_posts_one_video_extend_task_that_joins_the_gallery(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    g = generate_many(["a corgi", "a cat"], client=client, **FAST)
    try:
        first, second = g.wait(WAIT)
        assert g._extender.children  # shown
        wait_for(lambda: offered(g) == [0, 1])
        g._extend_pick.value = 1
        g._extend_prompt.value = "  the sun goes down "
        g._extend_button.click()
        g._extend_button.click()  # a double click: one task, one bill
        assert g._extend_button.disabled
        wait_for(lambda: len(g) == 3)
        (post,) = extend_posts(sim)
        assert post.path == "/kling/v1/videos/video-extend"
        assert json.loads(post.body) == {
            "model_name": "kling-video-extend", "video_id": second.videos[0].id, "prompt": "the sun goes down"
        }  # fmt: skip
        card = g.cards[2]
        assert isinstance(card, TaskStatusWidget)
        assert card.task_id == post.task_id
        assert [t.task_id for t in g.wait(WAIT)] == [first.task_id, second.task_id, card.task_id]
        assert card.status == TaskStatus.SUCCESS.value
        polls = {r.path for r in sim.requests(card.task_id) if r.method == "GET"}
        assert f"/kling/v1/videos/video-extend/{card.task_id}" in polls
        assert g.summary().startswith("3 tasks · 3 done · ")
        assert f"Extends {second.task_id}: the sun goes down" in g.static_bundle()["text/html"]
        wait_for(lambda: offered(g) == [0, 1, 2])  # an extension can be extended again
        assert g._extend_pick.value == 1  # the choice is kept
        assert len(extend_posts(sim)) == 1
    finally:
        g.close()


@pytest.mark.parametrize("sim", [Scenario(outcome="failure", polls=(0, 1))], indirect=True)
def test_a_failed_card_offers_no_extend(sim: GatewaySimulator, gallery: Any) -> None:
    g = gallery([sim.add_task(), sim.add_task(Scenario(polls=(0, 1)))])
    g.wait(WAIT)
    failed, done = g.cards
    wait_for(lambda: offered(g) == [1])
    g.extend(failed)
    assert not g._extend_button.disabled  # nothing was started
    assert extend_posts(sim) == []
    assert done.task.videos[0].id


def test_an_extension_without_an_answer_becomes_an_unknown_card_and_is_not_resent(
    sim: GatewaySimulator, gallery: Any
) -> None:
    g = gallery([sim.add_task()])
    g.wait(WAIT)
    wait_for(lambda: offered(g) == [0])
    sim.drop_next_submits(1)
    g._extend_button.click()
    wait_for(lambda: len(g) == 2)
    assert len(g.wait(WAIT)) == 1
    (error,) = g.failed
    assert error.code == "unknown"
    assert "1 done · 1 unknown" in g.summary()
    assert "Unknown — may have been charged" in g.static_bundle()["text/html"]
    wait_for(lambda: offered(g) == [0])  # re-armed: a new click is a new task, but nothing is resent
    assert len(extend_posts(sim)) == 1


def test_a_bug_while_extending_is_an_unknown_card_not_a_dead_thread(
    sim: GatewaySimulator, gallery: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    g = gallery([sim.add_task()])
    g.wait(WAIT)
    wait_for(lambda: offered(g) == [0])

    def broken(*args: Any, **kwargs: Any) -> Any:  # a bug cannot be made real: it is simulated here
        raise RuntimeError("boom")

    monkeypatch.setattr(KlingClient, "extend_video", broken)
    g._extend_button.click()
    wait_for(lambda: len(g) == 2)
    (error,) = g.failed
    assert (error.code, "boom" in str(error)) == ("unknown", True)  # it may have been sent: never resent
    assert "failed unexpectedly" in caplog.text  # logged, not printed into a cell by a dying thread
    wait_for(lambda: offered(g) == [0])  # and Extend works again


def gate_extensions(client: KlingClient, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Hold each extension's answer after the gateway gave it: (answered, release) events."""
    answered, release = threading.Event(), threading.Event()
    real = client.extend_video

    def extend_video(video: Any, **options: Any) -> Any:
        task = real(video, **options)
        answered.set()
        release.wait(WAIT)
        return task

    monkeypatch.setattr(client, "extend_video", extend_video)
    return answered, release


def test_close_while_the_extension_is_answered_sends_nothing_more_and_logs_its_id(
    sim: GatewaySimulator, client: KlingClient, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    g = TaskGallery([sim.add_task()], client=client, **FAST)
    g.wait(WAIT)
    wait_for(lambda: offered(g) == [0])
    answered, release = gate_extensions(client, monkeypatch)
    g._extend_button.click()
    assert answered.wait(WAIT)
    g.close()
    g.extend(g.cards[0])  # type: ignore[arg-type]  # after close: nothing
    release.set()
    (post,) = extend_posts(sim)
    wait_for(lambda: post.task_id in caplog.text)
    assert f"Task {post.task_id} was submitted as the gallery closed; it is not watched." in caplog.text
    assert len(g) == 1
    assert_no_request_follows(sim, [post.task_id])
    assert not [r for r in sim.requests(post.task_id) if r.method == "GET"]
    assert len(extend_posts(sim)) == 1


def test_stop_all_while_an_extension_is_in_flight_stops_its_card(
    sim: GatewaySimulator, client: KlingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.scenario = FOREVER
    g = TaskGallery([sim.add_task(Scenario(polls=(0, 1)))], client=client, **FAST)
    try:
        g.wait(WAIT)
        wait_for(lambda: offered(g) == [0])
        answered, release = gate_extensions(client, monkeypatch)
        g._extend_button.click()
        assert answered.wait(WAIT)
        g._stop_all.click()
        release.set()
        wait_for(lambda: len(g) == 2)
        assert len(g.wait(WAIT)) == 1
        (error,) = g.failed
        assert error.code == "stopped"
        assert g.cards[1].task_id == extend_posts(sim)[0].task_id  # type: ignore[union-attr]
        assert g.summary().startswith("2 tasks · 1 done · 1 stopped · ")
    finally:
        g.close()


def test_an_ended_display_turns_live_again_for_an_extension_then_static(
    sim: GatewaySimulator, gallery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = RecordingHandle()
    monkeypatch.setattr(_base, "display", lambda obj, **kwargs: handle)
    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(_gallery, "display", lambda obj, **kwargs: shown.append(obj))
    g = gallery([sim.add_task()], autostart=False)
    g._ipython_display_()
    (extender,) = shown  # an output of its own, below the gallery
    assert extender["application/vnd.jupyter.widget-view+json"]["model_id"] == g._extender.model_id
    g.start().wait(WAIT)
    wait_for(lambda: offered(g) == [0])
    g._extend_button.click()
    wait_for(lambda: len(handle.updates) == 3)
    ended, live, final = (bundle for bundle, _ in handle.updates)
    assert list(ended) == list(final) == ["text/plain", "text/html"]
    assert "application/vnd.jupyter.widget-view+json" in live
    assert final["text/html"].count("<video src=") == 2
    assert "2 done" in final["text/plain"]
