"""The polling engine: one scheduler thread and a few worker threads watch any number of tasks.

Design (see DESIGN.md "Threading rules" and jupyter-widgets.md §0, §4):

- Every thread is a daemon ``threading.Thread``; no asyncio (a task on the kernel loop freezes while a
  cell blocks) and no ``ThreadPoolExecutor`` (its workers are joined at interpreter exit).
- One scheduler thread keeps two heaps: when each watch is due for its next request, and when each
  watch's deadline passes. It sleeps on a `threading.Condition` until the earliest of those instants,
  or until something wakes it (a new watch, ``stop()``, a worker becoming free).
- At most ``max_workers`` worker threads, started lazily, run the ``fetch()`` calls. A watch is in at
  most one worker at a time. A slow or hung request occupies one worker only: the other watches keep
  their schedule as long as a worker is free, so with ``max_workers`` slow requests at once, polling
  waits for the first of them to return (bounded by the HTTP client's timeout).
- Global politeness: an optional token bucket (``max_requests_per_second``), and a 429 from any
  request sets a global "not before" instant that no request starts before.
- ``on_update`` runs on an engine thread and is serialized per watch: updates are queued on the watch
  and drained by one thread at a time (the worker that produced them, or the scheduler for ``stop()``
  and deadlines, so a final update never waits for a busy worker).
"""

from __future__ import annotations

import atexit
import collections
import enum
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import KlingError, RateLimitError, TaskFailedError, TaskTimeoutError
from ._models import Task, TaskStatus
from ._schedule import next_poll_delay, retry_delay, task_age

__all__ = ["Engine", "Update", "Watch", "WatchState", "default_engine"]

logger = logging.getLogger("kling_widgets")

# How long shutdown() waits, in total, for the engine's threads to end (a hung request may keep one).
_JOIN_TIMEOUT = 1.0


class WatchState(str, enum.Enum):
    """Where a watch is: polling, retrying after a transient error, or one of the final states."""

    WAITING = "waiting"
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    TIMEOUT = "timeout"
    STOPPED = "stopped"

    @property
    def is_final(self) -> bool:
        """True for every state after which no request is made and no update follows."""
        return self not in (WatchState.WAITING, WatchState.RETRYING)


@dataclass(frozen=True)
class Update:
    """One poll outcome, as passed to ``on_update``.

    Attributes
    ----------
    state : WatchState
        The watch's state after this outcome.
    task : Task or None
        The latest task snapshot (None before the first successful poll).
    error : KlingError or None
        For RETRYING, ERROR and TIMEOUT: the cause.
    retry_in : float or None
        For RETRYING: seconds until the next attempt.
    elapsed : float
        Seconds since the watch started.
    """

    state: WatchState
    task: Task | None
    error: KlingError | None
    retry_in: float | None
    elapsed: float


class Watch:
    """A task being watched by an `Engine`. Create it with `Engine.watch`; reads are thread-safe.

    Attributes
    ----------
    task_id : str
        The watched task's id.
    """

    def __init__(
        self,
        engine: Engine,
        fetch: Callable[[], Task],
        *,
        task_id: str,
        on_update: Callable[[Update], None] | None,
        poll_interval: float,
        max_poll_interval: float,
        timeout: float | None,
    ) -> None:
        self.task_id = task_id
        self._engine = engine
        self._fetch = fetch
        self._on_update = on_update
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval
        self._timeout = timeout
        self._started = time.monotonic()
        self._deadline = None if timeout is None else self._started + timeout
        # Everything below is guarded by the engine's lock.
        self._state = WatchState.WAITING
        self._task: Task | None = None
        self._error: KlingError | None = None
        self._attempt = 0  # consecutive transient errors
        self._pending: collections.deque[Update] = collections.deque()
        self._draining = False
        self._outcome: KlingError | None = None  # what result() raises, once final
        self._callbacks: list[Callable[[Watch], None]] = []  # until final; then run by the drain
        self._final = threading.Event()  # set as the watch becomes final
        self._done = threading.Event()  # set once the final update has been delivered

    def __repr__(self) -> str:
        return f"Watch(task_id={self.task_id!r}, state={self.state.value!r})"

    @property
    def state(self) -> WatchState:
        """The current state."""
        with self._engine._lock:
            return self._state

    @property
    def task(self) -> Task | None:
        """The latest task snapshot, or None before the first successful poll."""
        with self._engine._lock:
            return self._task

    @property
    def error(self) -> KlingError | None:
        """The latest error (RETRYING, ERROR, TIMEOUT), else None."""
        with self._engine._lock:
            return self._error

    def stop(self) -> None:
        """Stop watching now: the state becomes STOPPED unless already final, and no request follows.

        A request already in flight is not interrupted, but its answer is discarded. The task itself
        keeps running on the server.
        """
        self._engine._stop_watch(self)

    def done(self) -> bool:
        """True once the watch is final (SUCCESS, FAILURE, ERROR, TIMEOUT or STOPPED)."""
        return self._final.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the watch is final and its final update has been delivered to ``on_update``.

        Do not call it from ``on_update`` (that runs on the thread that would deliver the final update);
        `result` and `exception` may be called from there.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits for ever.

        Returns
        -------
        bool
            True once final and delivered, False if ``timeout`` passed first.
        """
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> Task:
        """Block until the watch is final, then return the task or raise what ended it.

        Like `concurrent.futures.Future.result`. It returns as soon as the watch is final, before
        ``on_update`` gets the final update, so an ``on_update`` that calls it does not block.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits for ever.

        Returns
        -------
        Task
            The final snapshot, on SUCCESS.

        Raises
        ------
        TimeoutError
            The builtin one: ``timeout`` passed before the watch was final (the watch goes on).
        TaskFailedError
            The task ended in FAILURE.
        TaskTimeoutError
            The watch's own deadline passed first.
        KlingError
            The error that stopped polling (ERROR), or code ``"stopped"`` after `stop`. Every error
            raised here carries ``task_id``.
        """
        error = self.exception(timeout)
        if error is not None:
            raise error
        task = self.task
        assert task is not None  # SUCCESS always comes with its snapshot
        return task

    def exception(self, timeout: float | None = None) -> KlingError | None:
        """Block like `result`, then return the error that ended the watch instead of raising it.

        Returns
        -------
        KlingError or None
            None on SUCCESS; otherwise the error `result` would raise.

        Raises
        ------
        TimeoutError
            ``timeout`` passed before the watch was final.
        """
        if not self._final.wait(timeout):
            raise TimeoutError(f"watch of task {self.task_id} is not final after waiting {timeout:g} s")
        with self._engine._lock:
            return self._outcome

    def add_done_callback(self, fn: Callable[[Watch], None]) -> None:
        """Call ``fn(watch)`` once, when the watch becomes final.

        It runs on an engine thread after the final update was delivered to ``on_update``, or at once on
        the calling thread if the watch is already final; never under the engine's lock. Its exceptions
        are logged, not raised.
        """
        with self._engine._lock:
            if not self._state.is_final:
                self._callbacks.append(fn)
                return
        _call_done_callback(self, fn)


def _call_done_callback(watch: Watch, fn: Callable[[Watch], None]) -> None:
    try:
        fn(watch)
    except Exception:
        logger.exception("a done callback for task %s raised", watch.task_id)


class Engine:
    """Polls many tasks with a bounded number of daemon threads.

    Parameters
    ----------
    max_workers : int
        Most requests in flight at once, and most worker threads (the engine adds one scheduler thread).
    max_requests_per_second : float or None
        Global request budget (a token bucket with one second's burst); None means unlimited.
    """

    def __init__(self, *, max_workers: int = 4, max_requests_per_second: float | None = None) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if max_requests_per_second is not None and not max_requests_per_second > 0:
            raise ValueError(
                f"max_requests_per_second must be positive or None, not {max_requests_per_second}"
            )
        self._max_workers = max_workers
        self._rate = max_requests_per_second
        self._capacity = max(1.0, max_requests_per_second or 1.0)
        self._tokens = self._capacity
        self._token_stamp = time.monotonic()
        self._not_before = 0.0  # global: no request starts before this instant (after a 429)

        self._lock = threading.Lock()
        self._sched_cv = threading.Condition(self._lock)
        self._work_cv = threading.Condition(self._lock)
        self._seq = itertools.count()  # heap tie-breaker, so watches are never compared
        self._due: list[tuple[float, int, Watch]] = []
        self._deadlines: list[tuple[float, int, Watch]] = []
        self._jobs: collections.deque[Watch] = collections.deque()
        self._to_drain: collections.deque[Watch] = collections.deque()
        self._live: set[Watch] = set()
        self._busy = 0  # jobs dispatched and not settled; never above max_workers
        self._scheduler: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Engine(max_workers={self._max_workers}, max_requests_per_second={self._rate}, "
            f"watches={len(self._live)}, threads={self.thread_count})"
        )

    @property
    def thread_count(self) -> int:
        """How many of this engine's threads are alive (at most ``max_workers + 1``)."""
        with self._lock:
            threads = [self._scheduler, *self._workers]
        return sum(1 for t in threads if t is not None and t.is_alive())

    def watch(
        self,
        fetch: Callable[[], Task],
        *,
        task_id: str,
        on_update: Callable[[Update], None] | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = 5.0,
        timeout: float | None = 900.0,
    ) -> Watch:
        """Start polling a task; the first request is made at once.

        Parameters
        ----------
        fetch : callable
            Makes exactly one request and returns the `Task` (e.g.
            ``lambda: client.get_task(task_id, retry=False)``). Transient `KlingError` s are retried with
            backoff; any other error ends the watch in ERROR.
        task_id : str
            The task's id (for messages and `TaskTimeoutError`).
        on_update : callable, optional
            Called with an `Update` on an engine thread after every poll outcome and exactly once with the
            final state; never concurrently for the same watch. Its exceptions are logged, not raised.
        poll_interval, max_poll_interval : float
            Bounds of the polling delay (see ``_schedule.next_poll_delay``).
        timeout : float or None
            Seconds from now after which the watch ends in TIMEOUT; None means no deadline.

        Returns
        -------
        Watch
        """
        if not poll_interval > 0 or max_poll_interval < poll_interval:
            raise ValueError("need 0 < poll_interval <= max_poll_interval")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be non-negative or None, not {timeout}")
        w = Watch(
            self,
            fetch,
            task_id=task_id,
            on_update=on_update,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=timeout,
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("this Engine has been shut down")
            self._live.add(w)
            heapq.heappush(self._due, (w._started, next(self._seq), w))
            if w._deadline is not None:
                heapq.heappush(self._deadlines, (w._deadline, next(self._seq), w))
            if self._scheduler is None:
                self._scheduler = threading.Thread(
                    target=self._run_scheduler, name="kling-widgets-scheduler", daemon=True
                )
                self._scheduler.start()
            self._sched_cv.notify()
        return w

    def shutdown(self) -> None:
        """Stop every watch (STOPPED), deliver their final updates, and end the engine's threads.

        Waits about a second at most: a thread stuck in a request is left to end on its own (it is a
        daemon). The engine accepts no new watches afterwards.
        """
        self._shutdown(_JOIN_TIMEOUT)

    def _shutdown(self, join_timeout: float) -> None:
        with self._lock:
            for w in list(self._live):
                self._finish(w, WatchState.STOPPED)
            self._closed = True
            self._sched_cv.notify_all()
            self._work_cv.notify_all()
            threads = [t for t in (self._scheduler, *self._workers) if t is not None]
        end = time.monotonic() + join_timeout
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, end - time.monotonic()))

    # -- state changes (all called with the lock held) -------------------------------------------------

    def _post(self, w: Watch, update: Update, *, inline: bool) -> bool:
        """Queue an update for delivery. Returns True when the caller must drain it (``inline``)."""
        if w._on_update is None and not update.state.is_final:
            return False
        w._pending.append(update)
        if w._draining:
            return False  # the thread draining this watch will deliver it, in order
        w._draining = True
        if inline:
            return True
        self._to_drain.append(w)
        self._sched_cv.notify()
        return False

    def _finish(
        self, w: Watch, state: WatchState, *, error: KlingError | None = None, inline: bool = False
    ) -> bool:
        """Make a watch final (once) and post its final update."""
        if w._state.is_final:
            return False
        w._state, w._error = state, error
        w._outcome = _outcome(w, state, error)
        w._final.set()
        self._live.discard(w)
        update = Update(state, w._task, error, None, time.monotonic() - w._started)
        return self._post(w, update, inline=inline)

    def _expire(self, w: Watch, now: float) -> bool:
        """End a watch in TIMEOUT if its deadline has passed; True if it did."""
        if w._deadline is None or now < w._deadline or w._state.is_final:
            return False
        assert w._timeout is not None  # a deadline implies a timeout
        self._finish(w, WatchState.TIMEOUT, error=TaskTimeoutError(w._task, w.task_id, w._timeout))
        return True

    def _stop_watch(self, w: Watch) -> None:
        with self._lock:
            self._finish(w, WatchState.STOPPED)

    def _settle(self, w: Watch, outcome: Task | KlingError) -> bool:
        """Record a request's outcome; returns True when the calling worker must drain updates."""
        self._busy -= 1
        self._sched_cv.notify()  # a worker is free
        if w._state.is_final:
            return False  # stopped, timed out or shut down meanwhile: the answer is discarded
        now = time.monotonic()
        if isinstance(outcome, Task):
            w._task, w._attempt = outcome, 0
            if outcome.status is TaskStatus.SUCCESS:
                return self._finish(w, WatchState.SUCCESS, inline=True)
            if outcome.status is TaskStatus.FAILURE:
                return self._finish(w, WatchState.FAILURE, inline=True)
            w._state, w._error = WatchState.WAITING, None
            delay = next_poll_delay(
                status=outcome.status,
                age=task_age(outcome, now - w._started),
                poll_interval=w._poll_interval,
                max_poll_interval=w._max_poll_interval,
            )
            retry_in = None
        elif outcome.retryable:
            w._attempt += 1
            retry_after = outcome.retry_after if isinstance(outcome, RateLimitError) else None
            delay = retry_delay(w._attempt, retry_after=retry_after, base=w._poll_interval)
            if isinstance(outcome, RateLimitError):
                # The gateway is saturated for everyone: hold back every watch, not just this one.
                self._not_before = max(self._not_before, now + delay)
            w._state, w._error = WatchState.RETRYING, outcome
            retry_in = delay
        else:
            return self._finish(w, WatchState.ERROR, error=outcome, inline=True)
        heapq.heappush(self._due, (now + delay, next(self._seq), w))
        self._sched_cv.notify()
        update = Update(w._state, w._task, w._error, retry_in, now - w._started)
        return self._post(w, update, inline=True)

    def _take_token(self, now: float) -> float:
        """Take a request token if one is available and return ``now``; else return when one will be."""
        if self._rate is None:
            return now
        self._tokens = min(self._capacity, self._tokens + (now - self._token_stamp) * self._rate)
        self._token_stamp = now
        if self._tokens < 1.0:
            return now + (1.0 - self._tokens) / self._rate
        self._tokens -= 1.0
        return now

    def _tick(self) -> float | None:
        """Expire deadlines and dispatch due requests; return seconds until the next thing to do."""
        now = time.monotonic()
        while self._deadlines and (self._deadlines[0][0] <= now or self._deadlines[0][2]._state.is_final):
            self._expire(heapq.heappop(self._deadlines)[2], now)
        wake: list[float] = [self._deadlines[0][0]] if self._deadlines else []
        while self._due:
            when, _, w = self._due[0]
            if w._state.is_final:
                heapq.heappop(self._due)
                continue
            if when > now:
                wake.append(when)
                break
            if self._busy >= self._max_workers:
                break  # a worker settling a request notifies us
            if self._not_before > now:
                wake.append(self._not_before)
                break
            ready_at = self._take_token(now)
            if ready_at > now:
                wake.append(ready_at)
                break
            heapq.heappop(self._due)
            self._dispatch(w)
        return max(0.0, min(wake) - now) if wake else None

    def _dispatch(self, w: Watch) -> None:
        self._busy += 1
        self._jobs.append(w)
        if len(self._workers) < self._busy:
            t = threading.Thread(
                target=self._run_worker, name=f"kling-widgets-worker-{len(self._workers) + 1}", daemon=True
            )
            self._workers.append(t)
            t.start()  # it blocks on the lock until we release it
        else:
            self._work_cv.notify()

    # -- threads ---------------------------------------------------------------------------------------

    def _drain(self, w: Watch) -> None:
        """Deliver a watch's queued updates in order; only one thread drains a watch at a time.

        After the final update: release `Watch.wait`, then run the done callbacks.
        """
        callback = w._on_update
        while True:
            with self._lock:
                if not w._pending:
                    w._draining = False
                    return
                update = w._pending.popleft()
            if callback is not None:
                try:
                    callback(update)
                except Exception:
                    logger.exception("on_update for task %s raised; the watch goes on", w.task_id)
            if update.state.is_final:
                w._done.set()
                with self._lock:
                    callbacks, w._callbacks = w._callbacks, []
                for fn in callbacks:
                    _call_done_callback(w, fn)

    def _run_scheduler(self) -> None:
        while True:
            with self._lock:
                wait = self._tick()
                drains = list(self._to_drain)
                self._to_drain.clear()
                if not drains:
                    if self._closed:
                        return
                    self._sched_cv.wait(wait)
                    continue
            for w in drains:
                self._drain(w)

    def _call(self, w: Watch) -> Task | KlingError:
        """Run one fetch; every exception becomes a KlingError so that no thread dies."""
        try:
            return w._fetch()
        except KlingError as exc:
            return exc
        except Exception as exc:
            logger.warning("unexpected error while polling task %s", w.task_id, exc_info=True)
            error = KlingError(
                f"unexpected error while polling task {w.task_id}: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            return error

    def _run_worker(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._work_cv.wait()
                if self._closed:
                    return
                w = self._jobs.popleft()
                # A deadline, stop() or a 429 may have come while the job was queued: then no request now.
                now = time.monotonic()
                if w._state.is_final or self._expire(w, now) or self._not_before > now:
                    if not w._state.is_final:
                        heapq.heappush(self._due, (self._not_before, next(self._seq), w))
                    self._busy -= 1
                    self._sched_cv.notify()
                    continue
            outcome = self._call(w)
            with self._lock:
                must_drain = self._settle(w, outcome)
            if must_drain:
                self._drain(w)


def _outcome(w: Watch, state: WatchState, error: KlingError | None) -> KlingError | None:
    """The error `Watch.result` raises for a final state (None on SUCCESS), carrying the task id."""
    if state is WatchState.SUCCESS:
        return None
    if state is WatchState.FAILURE and w._task is not None:
        return TaskFailedError(w._task)
    if state is WatchState.STOPPED:
        return KlingError(
            f"Stopped watching task {w.task_id} before it finished; the task keeps running on the "
            f"server. Watch it again with its id.",
            code="stopped",
            task_id=w.task_id,
        )
    assert error is not None  # ERROR and TIMEOUT always come with their cause
    if error.task_id is None:
        error.task_id = w.task_id
    return error


_default: Engine | None = None
_default_pid: int | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine shared by every widget, created on first use.

    A new one is created after ``os.fork`` (the parent's threads do not exist in the child) and after
    the previous one was shut down. It is shut down at interpreter exit.
    """
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid() or _default._closed:
            _default, _default_pid = Engine(), os.getpid()
        return _default


@atexit.register
def _shutdown_default() -> None:
    # Only the engine of this process: in a forked child, the parent's engine lock may be held for ever.
    if _default is not None and _default_pid == os.getpid():
        # Daemon threads die with the process; only give idle ones a moment to end cleanly.
        _default._shutdown(0.1)
