"""The polling engine, driven by plain Python fetch functions that play scripted outcomes.

No timing asserts: tests wait for final states with generous bounds and check orderings and counts.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import threading
import time
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from helpers import WAIT
from kling_widgets import KlingClient, _poller
from kling_widgets._errors import (
    AuthenticationError,
    KlingError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransportError,
)
from kling_widgets._models import Task, TaskStatus
from kling_widgets._poller import Engine, Update, Watch, WatchState, default_engine, set_default_engine
from kling_widgets._schedule import PollPolicy
from kling_widgets.simulator import Fault, GatewaySimulator, RequestRecord, Scenario

FAST = {"poll_interval": 0.01, "max_poll_interval": 0.01}


def task(status: str, task_id: str = "t-1", **kwargs: object) -> Task:
    return Task(task_id, TaskStatus[status], **kwargs)  # type: ignore[arg-type]


Step = Task | Exception | Callable[[], Task]


class Script:
    """A fetch function playing scripted steps (a Task, an exception to raise, or a callable); the last
    step repeats. Records when each call started."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.times: list[float] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.times)

    def __call__(self) -> Task:
        with self._lock:
            step = self.steps[min(len(self.times), len(self.steps) - 1)]
            self.times.append(time.monotonic())
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step()
        return step


class Recorder:
    """An on_update callback that keeps every Update."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self._lock = threading.Lock()

    def __call__(self, update: Update) -> None:
        with self._lock:
            self.updates.append(update)

    @property
    def states(self) -> list[WatchState]:
        with self._lock:
            return [u.state for u in self.updates]


def assert_final_once(states: list[WatchState], final: WatchState) -> None:
    assert states[-1] is final
    assert sum(s.is_final for s in states) == 1


@pytest.fixture
def make_engine() -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(**kwargs: object) -> Engine:
        engine = Engine(**kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


def settle(engine: Engine) -> None:
    """Let the engine run several more scheduling rounds (a short sentinel watch) before checking that a
    finished watch stayed silent."""
    sentinel = engine.watch(
        Script(task("IN_PROGRESS"), task("IN_PROGRESS"), task("SUCCESS")), task_id="sentinel", **FAST
    )
    assert sentinel.wait(WAIT)


def test_success_reports_every_poll_then_the_final_state_once(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    fetch = Script(task("SUBMITTED"), task("IN_PROGRESS", progress=30), task("SUCCESS", progress=100))
    rec = Recorder()
    watch = engine.watch(fetch, task_id="t-1", on_update=rec, **FAST)

    assert watch.wait(WAIT)
    assert rec.states == [WatchState.WAITING, WatchState.WAITING, WatchState.SUCCESS]
    assert [u.task.status for u in rec.updates if u.task] == [
        TaskStatus.SUBMITTED,
        TaskStatus.IN_PROGRESS,
        TaskStatus.SUCCESS,
    ]
    assert all(u.error is None and u.retry_in is None for u in rec.updates)
    elapsed = [u.elapsed for u in rec.updates]
    assert elapsed == sorted(elapsed)
    assert elapsed[0] >= 0
    assert watch.state is WatchState.SUCCESS
    assert watch.result() is watch.task
    assert watch.result().status is TaskStatus.SUCCESS
    settle(engine)
    assert fetch.calls == 3


def test_failure_raises_task_failed_with_the_reason(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    failed = task("FAILURE", fail_reason="Image pixel is invalid")
    rec = Recorder()
    watch = engine.watch(Script(task("IN_PROGRESS"), failed), task_id="t-1", on_update=rec, **FAST)

    assert watch.wait(WAIT)
    assert_final_once(rec.states, WatchState.FAILURE)
    assert rec.updates[-1].task is failed
    with pytest.raises(TaskFailedError, match="Image pixel is invalid") as info:
        watch.result()
    assert info.value.task is failed


def test_transient_errors_are_retried_not_fatal(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    transport = TransportError("connection reset")
    server = ServerError("bad gateway", status_code=502, code="do_request_failed")
    fetch = Script(transport, server, task("SUCCESS"))
    rec = Recorder()
    watch = engine.watch(fetch, task_id="t-1", on_update=rec, **FAST)

    assert watch.wait(WAIT)
    assert rec.states == [WatchState.RETRYING, WatchState.RETRYING, WatchState.SUCCESS]
    retrying = rec.updates[:2]
    assert [u.error for u in retrying] == [transport, server]
    assert all(u.retry_in is not None and u.retry_in > 0 for u in retrying)
    assert watch.error is None
    assert watch.result().status is TaskStatus.SUCCESS
    assert fetch.calls == 3


def test_rate_limit_holds_back_every_watch_until_retry_after(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(max_workers=4)
    a_done = threading.Event()
    raised_at: list[float] = []
    seen_at: list[float] = []  # when A's RETRYING update was delivered (the engine had the 429 by then)
    a_rec = Recorder()

    def a_first() -> Task:
        raised_at.append(time.monotonic())
        raise RateLimitError("saturated", status_code=429, retry_after=0.3)

    def on_a(update: Update) -> None:
        a_rec(update)
        if update.state is WatchState.RETRYING:
            # A request that a worker picked up just before the 429 was settled may still be entering
            # fetch(); give it ample time, so that every request recorded after `seen_at` was decided
            # by the engine after it knew about the 429.
            time.sleep(0.05)
            seen_at.append(time.monotonic())
        if update.state.is_final:
            a_done.set()

    def others() -> Task:
        return task("SUCCESS") if a_done.is_set() else task("IN_PROGRESS")

    a_fetch = Script(a_first, task("SUCCESS"))
    a = engine.watch(a_fetch, task_id="a", on_update=on_a, **FAST)
    fetches = [Script(others) for _ in range(3)]
    watches = [engine.watch(f, task_id=f"b{i}", **FAST) for i, f in enumerate(fetches)]

    assert a.wait(WAIT)
    assert all(w.wait(WAIT) for w in watches)
    assert a_rec.states == [WatchState.RETRYING, WatchState.SUCCESS]
    assert isinstance(a_rec.updates[0].error, RateLimitError)
    retry_in = a_rec.updates[0].retry_in
    assert retry_in is not None
    assert retry_in >= 0.3
    not_before = raised_at[0] + retry_in
    later = [t for f in fetches for t in f.times if t > seen_at[0]]
    assert later, "the other watches kept polling after the 429"
    # Requests in flight when the 429 arrived may overlap it; none may start after it and before the
    # pause ends, A's own retry included.
    assert all(t >= not_before for t in later)
    assert a_fetch.times[1] >= not_before
    assert a.result().status is TaskStatus.SUCCESS


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("The API key was rejected (401).", status_code=401),
        PermissionDeniedError("quota used up (403)", status_code=403, code="quota_not_enough"),
        TaskNotFoundError("No such task (404)", status_code=404),
        ServerError("bad parameters", status_code=500, code="build_request_failed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_fatal_error_ends_the_watch_after_exactly_that_request(
    make_engine: Callable[..., Engine], error: KlingError
) -> None:
    engine = make_engine()
    fetch = Script(task("IN_PROGRESS"), task("IN_PROGRESS"), error, task("SUCCESS"))
    rec = Recorder()
    watch = engine.watch(fetch, task_id="t-1", on_update=rec, **FAST)

    assert watch.wait(WAIT)
    assert rec.states == [WatchState.WAITING, WatchState.WAITING, WatchState.ERROR]
    assert rec.updates[-1].error is error
    assert watch.error is error
    with pytest.raises(type(error)) as info:
        watch.result()
    assert info.value is error
    settle(engine)
    assert fetch.calls == 3


def test_unexpected_exception_becomes_an_error_and_the_engine_survives(
    make_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(max_workers=1)
    boom = ValueError("boom")
    with caplog.at_level(logging.WARNING, logger="kling_widgets"):
        watch = engine.watch(Script(boom), task_id="t-9", **FAST)
        assert watch.wait(WAIT)
    assert watch.state is WatchState.ERROR
    assert isinstance(watch.error, KlingError)
    assert "unexpected error while polling" in str(watch.error)
    assert "ValueError: boom" in str(watch.error)
    assert watch.error.__cause__ is boom
    assert any("t-9" in r.getMessage() for r in caplog.records)
    # The single worker thread is still there and still works.
    settle(engine)
    assert engine.thread_count == 2
    assert capsys.readouterr() == ("", "")


def test_deadline_ends_in_timeout_and_stops_requests(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    fetch = Script(task("IN_PROGRESS", progress=30))
    rec = Recorder()
    watch = engine.watch(fetch, task_id="t-1", on_update=rec, timeout=0.05, **FAST)

    assert watch.wait(WAIT)
    assert_final_once(rec.states, WatchState.TIMEOUT)
    error = watch.error
    assert isinstance(error, TaskTimeoutError)
    assert isinstance(error, TimeoutError)
    assert (error.task_id, error.timeout) == ("t-1", 0.05)
    assert error.task is watch.task  # the latest snapshot, if a poll succeeded before the deadline
    with pytest.raises(TaskTimeoutError):
        watch.result()
    calls = fetch.calls
    settle(engine)
    assert fetch.calls == calls


def test_zero_timeout_makes_no_request(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    fetch = Script(task("SUCCESS"))
    watch = engine.watch(fetch, task_id="t-1", timeout=0.0, **FAST)

    assert watch.wait(WAIT)
    assert watch.state is WatchState.TIMEOUT
    assert watch.task is None
    settle(engine)
    assert fetch.calls == 0


def test_deadline_passes_while_a_request_hangs(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    release = threading.Event()
    fetch = Script(lambda: (release.wait(WAIT), task("SUCCESS"))[1])
    rec = Recorder()
    watch = engine.watch(fetch, task_id="t-1", on_update=rec, timeout=0.05, **FAST)
    try:
        assert watch.wait(WAIT)  # final although the request has not returned
        assert watch.state is WatchState.TIMEOUT
    finally:
        release.set()
    settle(engine)
    assert rec.states == [WatchState.TIMEOUT]  # the late SUCCESS answer was discarded
    assert fetch.calls == 1


def test_stop_is_immediate_and_discards_the_request_in_flight(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    entered, release = threading.Event(), threading.Event()

    def hanging() -> Task:
        entered.set()
        release.wait(WAIT)
        return task("SUCCESS")

    fetch = Script(hanging)
    rec = Recorder()
    watch = engine.watch(fetch, task_id="t-1", on_update=rec, **FAST)
    try:
        assert entered.wait(WAIT)
        watch.stop()
        assert watch.state is WatchState.STOPPED  # at once, not when the request returns
        assert watch.wait(WAIT)
        watch.stop()  # idempotent
    finally:
        release.set()
    settle(engine)
    assert rec.states == [WatchState.STOPPED]
    assert watch.task is None
    assert fetch.calls == 1
    with pytest.raises(KlingError) as info:
        watch.result()
    assert info.value.code == "stopped"


def test_result_blocks_until_final_and_times_out_with_the_builtin_error(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    watch = engine.watch(Script(task("IN_PROGRESS")), task_id="t-1", **FAST)
    assert not watch.state.is_final
    assert not watch.done()
    for wait in (watch.result, watch.exception):
        with pytest.raises(TimeoutError) as info:
            wait(0.01)
        assert not isinstance(info.value, KlingError)  # not the task's deadline: the watch goes on
    assert not watch.wait(0)
    threading.Timer(0.05, watch.stop).start()
    with pytest.raises(KlingError) as stopped:
        watch.result(WAIT)  # released by stop() on another thread
    assert stopped.value.code == "stopped"
    assert watch.done()
    assert watch.wait(WAIT)


@pytest.mark.parametrize(
    ("steps", "state", "expected"),
    [
        ((task("SUCCESS"),), WatchState.SUCCESS, None),
        ((task("FAILURE", fail_reason="nsfw"),), WatchState.FAILURE, TaskFailedError),
        ((AuthenticationError("rejected (401)", status_code=401),), WatchState.ERROR, AuthenticationError),
        ((task("IN_PROGRESS"),), WatchState.TIMEOUT, TaskTimeoutError),
    ],
    ids=lambda v: v.value if isinstance(v, WatchState) else None,
)
def test_outcome_is_typed_like_a_future(
    make_engine: Callable[..., Engine], steps: tuple[Step, ...], state: WatchState, expected: type | None
) -> None:
    engine = make_engine()
    called: list[Watch] = []
    watch = engine.watch(Script(*steps), task_id="t-1", timeout=0.2, **FAST)
    watch.add_done_callback(called.append)
    error = watch.exception(WAIT)
    assert watch.done()
    assert watch.state is state
    if expected is None:
        assert error is None
        assert watch.result(0) is watch.task
    else:
        assert isinstance(error, expected)
        assert error.task_id == "t-1"
        with pytest.raises(expected) as info:
            watch.result(0)
        assert info.value is error  # the same error every time
    assert watch.wait(WAIT)
    settle(engine)
    assert called == [watch]


def test_done_callbacks_run_once_outside_the_lock_and_their_errors_are_logged(
    make_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine()
    release = threading.Event()
    watch = engine.watch(Script(lambda: (release.wait(WAIT), task("SUCCESS"))[1]), task_id="t-3", **FAST)
    seen: list[tuple[str, WatchState, bool, threading.Thread]] = []

    def reads_the_watch(w: Watch) -> None:
        # Reading the state and the result would deadlock if the engine's lock were held here.
        seen.append(("reads", w.state, w.wait(0), threading.current_thread()))
        assert w.result(0) is w.task

    def broken(w: Watch) -> None:
        raise RuntimeError("callback exploded")

    watch.add_done_callback(broken)
    watch.add_done_callback(reads_the_watch)
    with caplog.at_level(logging.ERROR, logger="kling_widgets"):
        release.set()
        assert watch.wait(WAIT)
        settle(engine)
    assert len(seen) == 1
    name, state, delivered, thread = seen[0]
    assert (name, state, delivered) == ("reads", WatchState.SUCCESS, True)
    assert thread is not threading.current_thread()
    assert [r.exc_info[1] for r in caplog.records if r.exc_info and "t-3" in r.getMessage()] != []

    late: list[threading.Thread] = []
    watch.add_done_callback(lambda w: late.append(threading.current_thread()))
    assert late == [threading.current_thread()]  # already final: at once, on the calling thread


def test_two_hundred_watches_use_a_bounded_number_of_threads(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(max_workers=4)
    before = set(threading.enumerate())
    peak = 0
    lock = threading.Lock()

    def sample(_: Update) -> None:
        nonlocal peak
        count = engine.thread_count
        with lock:
            peak = max(peak, count)

    watches = [
        engine.watch(
            Script(task("SUBMITTED"), task("IN_PROGRESS"), task("SUCCESS", task_id=f"t{i}")),
            task_id=f"t{i}",
            on_update=sample,
            **FAST,
        )
        for i in range(200)
    ]
    assert all(w.wait(WAIT) for w in watches)
    assert all(w.state is WatchState.SUCCESS for w in watches)
    assert peak <= 5
    new_threads = set(threading.enumerate()) - before
    assert len(new_threads) <= 5
    assert all(t.daemon and t.name.startswith("kling-widgets-") for t in new_threads)


def test_a_hung_request_does_not_hold_up_other_watches(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(max_workers=2)
    entered, release = threading.Event(), threading.Event()

    def hanging() -> Task:
        entered.set()
        release.wait(WAIT)
        return task("SUCCESS")

    hung = engine.watch(Script(hanging), task_id="hung", **FAST)
    try:
        assert entered.wait(WAIT)
        others = [
            engine.watch(
                Script(task("IN_PROGRESS"), task("IN_PROGRESS"), task("SUCCESS")), task_id=f"o{i}", **FAST
            )
            for i in range(20)
        ]
        assert all(w.wait(WAIT) for w in others)
        assert hung.state is WatchState.WAITING  # still inside its request
    finally:
        release.set()
    assert hung.wait(WAIT)
    assert hung.state is WatchState.SUCCESS


def test_on_update_exceptions_are_logged_and_polling_goes_on(
    make_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine()
    states: list[WatchState] = []

    def broken(update: Update) -> None:
        states.append(update.state)
        raise RuntimeError("widget exploded")

    with caplog.at_level(logging.ERROR, logger="kling_widgets"):
        watch = engine.watch(
            Script(task("IN_PROGRESS"), task("IN_PROGRESS"), task("SUCCESS")),
            task_id="t-7",
            on_update=broken,
            **FAST,
        )
        assert watch.wait(WAIT)
    assert states == [WatchState.WAITING, WatchState.WAITING, WatchState.SUCCESS]
    logged = [r for r in caplog.records if r.name == "kling_widgets" and "t-7" in r.getMessage()]
    assert len(logged) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in logged)
    assert capsys.readouterr() == ("", "")


def test_on_update_is_serialized_per_watch_and_final_once(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(max_workers=4)
    lock = threading.Lock()
    active: set[str] = set()
    overlaps: list[str] = []
    seen: dict[str, list[WatchState]] = defaultdict(list)
    busy = {f"w{i}": threading.Event() for i in range(8)}

    def callback_for(task_id: str) -> Callable[[Update], None]:
        def callback(update: Update) -> None:
            with lock:
                if task_id in active:
                    overlaps.append(task_id)
                active.add(task_id)
                seen[task_id].append(update.state)
                if len(seen[task_id]) >= 5:
                    busy[task_id].set()
            time.sleep(0.003)  # longer than the poll interval: the next outcome arrives meanwhile
            with lock:
                active.discard(task_id)

        return callback

    watches: list[Watch] = [
        engine.watch(
            Script(task("IN_PROGRESS")),
            task_id=tid,
            on_update=callback_for(tid),
            poll_interval=0.001,
            max_poll_interval=0.001,
        )
        for tid in busy
    ]
    for watch in watches:
        assert busy[watch.task_id].wait(WAIT)
        watch.stop()  # from this thread, racing with deliveries on the engine's threads
    assert all(w.wait(WAIT) for w in watches)
    assert overlaps == []
    for tid in busy:
        assert_final_once(seen[tid], WatchState.STOPPED)


def test_shutdown_stops_every_watch_and_ends_the_threads(make_engine: Callable[..., Engine]) -> None:
    before = set(threading.enumerate())
    engine = make_engine(max_workers=3)
    recorders = [Recorder() for _ in range(6)]
    watches = [
        engine.watch(Script(task("IN_PROGRESS")), task_id=f"t{i}", on_update=rec, **FAST)
        for i, rec in enumerate(recorders)
    ]
    while any(not rec.states for rec in recorders):
        time.sleep(0.005)
    ours = set(threading.enumerate()) - before
    assert ours
    assert engine.thread_count == len(ours)

    engine.shutdown()
    assert all(w.state is WatchState.STOPPED for w in watches)
    assert all(w.wait(0) for w in watches)
    for rec in recorders:
        assert_final_once(rec.states, WatchState.STOPPED)
    assert not ours & set(threading.enumerate())
    assert engine.thread_count == 0
    with pytest.raises(RuntimeError, match="shut down"):
        engine.watch(Script(task("SUCCESS")), task_id="late")


def test_invalid_arguments_are_rejected(make_engine: Callable[..., Engine]) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        Engine(max_workers=0)
    with pytest.raises(ValueError, match="max_threads"):
        Engine(max_threads=0)
    engine = make_engine()
    with pytest.raises(ValueError, match="poll_interval"):
        engine.watch(Script(task("SUCCESS")), task_id="t", poll_interval=0)
    with pytest.raises(ValueError, match="timeout"):
        engine.watch(Script(task("SUCCESS")), task_id="t", timeout=-1)
    assert engine.thread_count == 0  # threads start with the first watch


def test_watch_states() -> None:
    assert [s for s in WatchState if not s.is_final] == [WatchState.WAITING, WatchState.RETRYING]
    assert WatchState.SUCCESS == "success"


def test_default_engine_is_one_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_poller, "_default", None)
    made: list[Engine] = []
    results: list[Engine] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        results.append(default_engine())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = default_engine()
    made.append(first)
    try:
        assert all(e is first for e in results)
        assert default_engine() is first

        first.shutdown()  # a shut-down default is replaced
        second = default_engine()
        made.append(second)
        assert second is not first

        pid = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as in a forked child
        third = default_engine()
        made.append(third)
        assert third is not second
        assert default_engine() is third
    finally:
        for engine in made:
            engine.shutdown()


# --- against the gateway simulator (a real HTTP server on 127.0.0.1) -------------------------------------


def gets(sim: GatewaySimulator, task_id: str) -> list[RequestRecord]:
    return [r for r in sim.requests(task_id) if r.method == "GET"]


def test_watches_a_simulated_task_to_success(
    make_engine: Callable[..., Engine], sim: GatewaySimulator, client: KlingClient
) -> None:
    engine = make_engine()
    submitted = client.text2video("a corgi surfing at sunset")
    rec = Recorder()
    watch = engine.watch(
        lambda: client.get_task(submitted.task_id, retry=False),
        task_id=submitted.task_id,
        on_update=rec,
        **FAST,
    )
    assert watch.wait(WAIT)
    assert rec.states == [WatchState.WAITING, WatchState.WAITING, WatchState.SUCCESS]
    assert watch.result().video_url
    assert len(gets(sim, submitted.task_id)) == 3


def test_simulated_429_pauses_then_recovers_and_401_ends(
    make_engine: Callable[..., Engine], sim: GatewaySimulator, client: KlingClient
) -> None:
    engine = make_engine()
    limited = sim.add_task(Scenario(polls=(1, 1), faults=(Fault("rate_limit", at_poll=2, retry_after=1.0),)))
    revoked = sim.add_task(Scenario(polls=(5, 5), faults=(Fault("revoke_key", at_poll=2),)))
    rec = Recorder()
    watch = engine.watch(
        lambda: client.get_task(limited, retry=False), task_id=limited, on_update=rec, **FAST
    )
    assert watch.wait(WAIT)
    assert rec.states == [WatchState.WAITING, WatchState.RETRYING, WatchState.WAITING, WatchState.SUCCESS]
    retrying = rec.updates[1]
    assert isinstance(retrying.error, RateLimitError)
    assert retrying.error.retry_after == 1.0
    answered = gets(sim, limited)
    assert [r.status for r in answered] == [200, 429, 200, 200]
    assert answered[2].time - answered[1].time >= 1.0  # Retry-After honoured (server-side clock, ordering)

    fatal = engine.watch(lambda: client.get_task(revoked, retry=False), task_id=revoked, **FAST)
    assert fatal.wait(WAIT)
    assert isinstance(fatal.error, AuthenticationError)
    settle(engine)
    assert [r.status for r in gets(sim, revoked)] == [200, 401]


# --- a fault for one watch stays with that watch (issue 8, item 1) ----------------------------------------


def test_an_exception_while_scheduling_one_watch_ends_only_that_watch(
    make_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(max_workers=1)
    # A naive submit_time: the policy's age arithmetic raises TypeError (on main it killed the only worker).
    naive = task("IN_PROGRESS", submit_time=datetime(2026, 1, 1))
    with caplog.at_level(logging.ERROR, logger="kling_widgets"):
        bad = engine.watch(Script(naive), task_id="t-1", **FAST)
        assert bad.wait(WAIT)
    assert bad.state is WatchState.ERROR
    assert isinstance(bad.error, KlingError)
    assert bad.error.code == "internal_error"
    assert "TypeError" in str(bad.error)
    assert bad.error.task_id == "t-1"
    assert any("t-1" in r.getMessage() for r in caplog.records)
    settle(engine)  # the single worker still polls


@dataclass(frozen=True)
class BrokenFor(PollPolicy):
    """The default policy, except for task "bad": its next poll raises or is nonsense."""

    answer: float | Exception = math.nan

    def next_poll(self, task: Task | None, elapsed: float) -> float:
        if task is not None and task.task_id == "bad":
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer
        return super().next_poll(task, elapsed)


@pytest.mark.parametrize("answer", [OverflowError("int too large"), math.nan, math.inf, -1.0], ids=repr)
def test_a_broken_policy_for_one_watch_leaves_the_others_polling(
    make_engine: Callable[..., Engine], answer: float | Exception
) -> None:
    engine = make_engine(policy=BrokenFor(answer=answer))
    bad = engine.watch(Script(task("IN_PROGRESS", task_id="bad")), task_id="bad", **FAST)
    good = engine.watch(
        Script(task("IN_PROGRESS"), task("IN_PROGRESS"), task("SUCCESS")), task_id="t-1", **FAST
    )
    assert bad.exception(WAIT) is bad.error
    assert bad.state is WatchState.ERROR
    assert good.result(WAIT).status is TaskStatus.SUCCESS
    settle(engine)


def test_retry_after_never_waits_past_the_deadline(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    rec = Recorder()
    huge = RateLimitError("busy", status_code=429, retry_after=1e10)
    watch = engine.watch(Script(huge), task_id="t-1", on_update=rec, timeout=0.3, **FAST)
    assert watch.wait(WAIT)
    assert rec.states == [WatchState.RETRYING, WatchState.TIMEOUT]
    retry_in = rec.updates[0].retry_in
    assert retry_in is not None
    assert 0 <= retry_in <= 0.3  # what the widget shows: "retrying in …" never past the deadline


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_default_engine_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = Engine()
    monkeypatch.setattr(_poller, "_default", dead)

    def die_on_the_final_update(update: Update) -> None:
        if update.state.is_final:  # delivered by the scheduler thread after stop()
            raise SystemExit  # a BaseException, which nothing in the engine catches: the thread ends

    watch = dead.watch(Script(task("IN_PROGRESS")), task_id="t-1", on_update=die_on_the_final_update, **FAST)
    watch.stop()
    scheduler = dead._scheduler
    assert scheduler is not None
    scheduler.join(WAIT)
    assert not scheduler.is_alive()
    fresh = default_engine()
    try:
        assert fresh is not dead
        assert fresh.alive
        assert not dead.alive
        with pytest.raises(RuntimeError, match="scheduler died"):
            dead.watch(Script(task("SUCCESS")), task_id="t-3")
        assert fresh.watch(Script(task("SUCCESS")), task_id="t-2", **FAST).wait(WAIT)
    finally:
        fresh.shutdown()
        dead.shutdown()


def test_the_engine_reads_every_instant_from_its_clock(make_engine: Callable[..., Engine]) -> None:
    now = [1000.0]
    engine = make_engine(clock=lambda: now[0])
    rec = Recorder()
    watch = engine.watch(Script(task("IN_PROGRESS")), task_id="t-1", on_update=rec, timeout=100.0)
    while not rec.states:
        time.sleep(0.005)
    now[0] += 250.0  # the deadline has passed on the engine's clock (not on the wall clock)
    engine.watch(Script(task("SUCCESS")), task_id="t-2")  # wakes the scheduler
    assert watch.wait(WAIT)
    assert rec.states == [WatchState.WAITING, WatchState.TIMEOUT]
    assert rec.updates[-1].elapsed == 250.0


def test_polls_due_close_together_go_out_together(make_engine: Callable[..., Engine]) -> None:
    now = [1000.0]
    engine = make_engine(clock=lambda: now[0], policy=PollPolicy(poll_interval=10.0, max_poll_interval=10.0))
    first, second = Script(task("IN_PROGRESS")), Script(task("IN_PROGRESS", "t-2"))
    first_rec, second_rec = Recorder(), Recorder()
    engine.watch(first, task_id="t-1", on_update=first_rec, timeout=None)
    until(lambda: bool(first_rec.states))
    now[0] += 0.5
    engine.watch(second, task_id="t-2", on_update=second_rec, timeout=None)
    until(lambda: bool(second_rec.states))
    # Next polls due at 1010.0 and 1010.5 on the engine's clock; the second may go a tenth of its delay early.
    now[0] = 1010.0
    assert engine.watch(Script(task("SUCCESS", "t-3")), task_id="t-3").wait(WAIT)  # wakes the scheduler
    until(lambda: first.calls == 2 and second.calls == 2)


def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds; fail after `WAIT` seconds."""
    end = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_set_default_engine(monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine]) -> None:
    monkeypatch.setattr(_poller, "_default", None)
    mine = make_engine(policy=PollPolicy(poll_interval=0.5, max_poll_interval=2.0))
    set_default_engine(mine)
    assert default_engine() is mine
    assert mine.policy.max_poll_interval == 2.0


# --- gateways: a 429 or a slow gateway holds back only its own watches (issue 8, items 1, 2, 4) -----------


@pytest.fixture
def other_sim() -> Iterator[GatewaySimulator]:
    """A second simulator: another gateway, with its own key."""
    with GatewaySimulator(speed=50.0, scenario=Scenario(polls=(1, 1))) as simulator:
        yield simulator


def gateway_of(client: KlingClient) -> tuple[str, str | None]:
    return (client.base_url, client.key_id)


def test_a_429_pauses_only_its_own_gateway(
    make_engine: Callable[..., Engine],
    sim: GatewaySimulator,
    client: KlingClient,
    other_sim: GatewaySimulator,
) -> None:
    engine = make_engine()
    # Retry-After: 1e10 on a watch without a deadline: on main this killed the scheduler (OverflowError),
    # then, capped, paused every gateway in the process for 300 s.
    limited = sim.add_task(Scenario(polls=(1, 1), faults=(Fault("rate_limit", retry_after=1e10),)))
    rec = Recorder()
    a = engine.watch(
        lambda: client.get_task(limited, retry=False),
        task_id=limited,
        on_update=rec,
        gateway=gateway_of(client),
        timeout=None,
        **FAST,
    )
    while not rec.states:
        time.sleep(0.005)
    assert rec.states == [WatchState.RETRYING]
    same = sim.add_task(Scenario(polls=(0, 0)))
    a2 = engine.watch(
        lambda: client.get_task(same, retry=False), task_id=same, gateway=gateway_of(client), **FAST
    )
    with KlingClient(base_url=other_sim.url, api_key=other_sim.api_key) as other:
        elsewhere = other.text2video("a corgi").task_id
        b = engine.watch(
            lambda: other.get_task(elsewhere, retry=False),
            task_id=elsewhere,
            gateway=gateway_of(other),
            **FAST,
        )
        assert b.result(WAIT).status is TaskStatus.SUCCESS
    assert engine.alive
    assert a.state is WatchState.RETRYING
    assert a2.state is WatchState.WAITING
    a.stop()
    a2.stop()
    assert [r.status for r in gets(sim, limited)] == [429]
    assert gets(sim, same) == []  # the same gateway stayed paused


def test_a_slow_gateway_does_not_starve_another(
    make_engine: Callable[..., Engine],
    sim: GatewaySimulator,
    client: KlingClient,
    other_sim: GatewaySimulator,
) -> None:
    engine = make_engine(max_workers=2, max_threads=8)
    lock = threading.Lock()
    in_flight, peak = 0, 0

    def slow_fetch(task_id: str) -> Task:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return client.get_task(task_id, retry=False)
        finally:
            with lock:
                in_flight -= 1

    hanging = Scenario(faults=(Fault("slow", delay=10 * WAIT, count=10**6),))
    slow_ids = [sim.add_task(hanging) for _ in range(4)]
    slow = [
        engine.watch(lambda t=t: slow_fetch(t), task_id=t, gateway=gateway_of(client), **FAST)
        for t in slow_ids
    ]
    with KlingClient(base_url=other_sim.url, api_key=other_sim.api_key) as other:
        ids = [other.text2video("a corgi").task_id for _ in range(3)]
        healthy = [
            engine.watch(
                lambda t=t: other.get_task(t, retry=False), task_id=t, gateway=gateway_of(other), **FAST
            )
            for t in ids
        ]
        assert all(w.result(WAIT).status is TaskStatus.SUCCESS for w in healthy)
    assert not any(w.done() for w in slow)  # still inside their requests
    assert peak == 2  # at most max_workers requests to the slow gateway at once
    for w in slow:
        w.stop()
    sim.stop()  # ends the hanging answers


# --- a stopped watch is released at once (issue 8, item 18) ---------------------------------------------


def test_a_stopped_watch_and_its_answer_are_freed_behind_an_older_deadline(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    older = engine.watch(Script(task("IN_PROGRESS")), task_id="older", timeout=900.0, **FAST)

    def big_answer() -> Task:
        return task("IN_PROGRESS", raw={"blob": "x" * 1000})

    watch = engine.watch(big_answer, task_id="t-1", timeout=3600.0, **FAST)
    while watch.task is None:
        time.sleep(0.005)
    watch.stop()
    assert watch.wait(WAIT)
    settle(engine)
    freed_watch, freed_task = weakref.ref(watch), weakref.ref(watch.task)  # type: ignore[arg-type]
    del watch
    gc.collect()
    assert freed_watch() is None
    assert freed_task() is None
    assert older.state is WatchState.WAITING  # the older, live watch is still there
    older.stop()


# --- after os.fork (issue 8, item 17) ----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_waiting_on_a_parents_watch_in_a_forked_child_raises(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    watch = engine.watch(Script(task("IN_PROGRESS")), task_id="t-1", **FAST)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() in a multi-threaded process"
        pid = os.fork()
    if pid == 0:  # the child: report what waiting did, then leave without running the parent's cleanup
        outcome = "no error"
        try:
            watch.wait(2.0)
            watch.result(2.0)
        except RuntimeError as exc:
            outcome = str(exc)
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    assert "started in another process" in outcome
    assert "t-1" in outcome
    assert watch.state is WatchState.WAITING  # the parent's watch goes on
    watch.stop()


# --- one policy for the engine and KlingClient.wait (issue 8, item 15) -----------------------------------


@dataclass(frozen=True)
class Recording(PollPolicy):
    """The default policy, keeping every delay it gives."""

    given: list[tuple[str, float]] = field(default_factory=list, compare=False)

    def next_poll(self, task: Task | None, elapsed: float) -> float:
        delay = super().next_poll(task, elapsed)
        self.given.append(("poll", delay))
        return delay

    def retry(self, attempt: int, error: KlingError) -> float:
        delay = super().retry(attempt, error)
        self.given.append(("retry", delay))
        return delay


def test_the_engine_and_client_wait_share_one_policy(
    make_engine: Callable[..., Engine], sim: GatewaySimulator, client: KlingClient
) -> None:
    def policy() -> Recording:
        return Recording(poll_interval=0.01, max_poll_interval=0.05, retry_base=0.01, retry_cap=0.04,
                         max_retry_after=0.05, rng=random.Random(7))  # fmt: skip

    faults = (Fault("server_error", at_poll=2, count=2), Fault("rate_limit", at_poll=5, retry_after=0.02))
    scenario = Scenario(polls=(2, 2), faults=faults)
    waited, watched = policy(), policy()
    assert client.wait(sim.add_task(scenario), policy=waited).status is TaskStatus.SUCCESS
    engine = make_engine(policy=watched)
    task_id = sim.add_task(scenario)
    assert engine.watch(lambda: client.get_task(task_id, retry=False), task_id=task_id).wait(WAIT)
    assert [kind for kind, _ in waited.given] == ["poll", "retry", "retry", "poll", "retry", "poll", "poll"]
    assert watched.given == waited.given
