"""The polling engine: one scheduler thread and a few worker threads watch any number of tasks.

Design (see docs/architecture.md, "Threading rules" and "Closing, cell re-runs and kernel shutdown"):

- Every thread is a daemon ``threading.Thread``; no asyncio (a task on the kernel loop freezes while a
  cell blocks) and no ``ThreadPoolExecutor`` (its workers are joined at interpreter exit).
- One scheduler thread keeps, per gateway, when each watch is due for its next request, and for all
  watches when each deadline passes. It sleeps on a `threading.Condition` until the earliest of those
  instants, or until something wakes it (a new watch, ``stop()``, a worker becoming free).
- Worker threads, started lazily, run the ``fetch()`` calls: at most ``max_workers`` at once for one
  gateway and ``max_threads`` in all. A watch is in at most one worker at a time. A slow or hung gateway
  occupies at most ``max_workers`` threads, so the watches of every other gateway keep their schedule.
- A 429 pauses only its own gateway (base URL and key): no request to it starts before the pause ends.
- Polls due close together go out together: a poll may be sent up to a tenth of its delay early (and the
  next one is then due that much later, so going early costs no requests), so a few hundred watches cost
  a few wake-ups a second, not one per request. The scheduler is woken only when
  it would otherwise be late (a new poll due before its wake-up, or a due poll waiting for a worker).
- Every delay comes from one `PollPolicy` (shared with ``KlingClient.wait``). An exception raised for one
  watch, by the policy or by a bug here, ends that watch in ERROR and is logged; the engine goes on.
- A final watch leaves every queue at once, so a stopped watch and its last answer are freed as soon as
  its owner lets go of it.
- ``on_update`` runs on an engine thread and is serialized per watch: updates are queued on the watch
  and drained by one thread at a time (the worker that produced them, or the scheduler for ``stop()``
  and deadlines, so a final update never waits for a busy worker).
- An engine belongs to the process that made it: after ``os.fork`` its threads do not exist in the
  child, so waiting on one of its watches there raises `RuntimeError` instead of hanging.
"""

from __future__ import annotations

import atexit
import collections
import enum
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ._errors import KlingError, RateLimitError, TaskFailedError, TaskTimeoutError
from ._models import Task, TaskStatus
from ._schedule import PollPolicy

__all__ = ["Engine", "Update", "Watch", "WatchState", "default_engine", "set_default_engine"]

logger = logging.getLogger("kling_widgets")

# How long shutdown() waits, in total, for the engine's threads to end (a hung request may keep one).
_JOIN_TIMEOUT = 1.0
# The scheduler never sleeps longer than this in one go (Condition.wait overflows on huge timeouts).
_MAX_SLEEP = 60.0
# After an unexpected error in the scheduler itself, wait this long before its next round.
_ERROR_PAUSE = 1.0
# A poll may go out this fraction of its delay early (the policy jitters delays by ±20 % anyway), so that
# one wake-up of the scheduler sends every poll due about then: a burst of requests costs less CPU than
# the same requests one by one (fewer thread wake-ups, warm caches; README "Benchmarks").
_EARLY = 0.1


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
        policy: PollPolicy,
        gateway: _Gateway,
        started: float,
        timeout: float | None,
    ) -> None:
        self.task_id = task_id
        self._engine = engine
        self._fetch = fetch
        self._on_update = on_update
        self._policy = policy
        self._gateway = gateway
        self._timeout = timeout
        self._started = started
        self._deadline = None if timeout is None else started + timeout
        # Everything below is written only under the engine's lock.
        self._state = WatchState.WAITING
        self._task: Task | None = None
        self._error: KlingError | None = None
        self._attempt = 0  # consecutive transient errors
        self._early = 0.0  # how long before its due instant the request in flight was sent
        self._pending: collections.deque[Update] = collections.deque()
        self._draining = False
        self._outcome: KlingError | None = None  # what result() raises, once final
        self._callbacks: list[Callable[[Watch], None]] = []  # until final; then run by the drain
        self._final = threading.Event()  # set as the watch becomes final
        self._done = threading.Event()  # set once the final update has been delivered

    def __repr__(self) -> str:
        return f"Watch(task_id={self.task_id!r}, state={self.state.value!r})"

    # Reading one attribute is atomic, so these take no lock: a forked child may read them too, even if
    # the parent's engine lock was held at the fork.

    @property
    def state(self) -> WatchState:
        """The current state."""
        return self._state

    @property
    def task(self) -> Task | None:
        """The latest task snapshot, or None before the first successful poll."""
        return self._task

    @property
    def error(self) -> KlingError | None:
        """The latest error (RETRYING, ERROR, TIMEOUT), else None."""
        return self._error

    def stop(self) -> None:
        """Stop watching now: the state becomes STOPPED unless already final, and no request follows.

        A request already in flight is not interrupted, but its answer is discarded. The task itself
        keeps running on the server. In a process forked from the one that started the watch, it does
        nothing (nothing polls there).
        """
        if self._engine._pid == os.getpid():
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

        Raises
        ------
        RuntimeError
            The watch was started in another process (this one was forked from it).
        """
        self._check_process()
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> Task:
        """Block until the watch is final, then return the task or raise what ended it.

        Like `concurrent.futures.Future.result`. It returns as soon as the watch is final, before
        ``on_update`` gets the final update, so an ``on_update`` that calls it does not block.

        Parameters
        ----------
        timeout : float or None
            The longest to block, in seconds (None: until the watch is final, which its own deadline
            bounds).

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
        RuntimeError
            The watch was started in another process (this one was forked from it).
        """
        self._check_process()
        if not self._final.wait(timeout):
            raise TimeoutError(f"watch of task {self.task_id} is not final after waiting {timeout:g} s")
        return self._outcome  # written before _final was set

    def add_done_callback(self, fn: Callable[[Watch], None]) -> None:
        """Call ``fn(watch)`` once, when the watch becomes final.

        It runs on an engine thread after the final update was delivered to ``on_update``, or at once on
        the calling thread if the watch is already final; never under the engine's lock. Its exceptions
        are logged, not raised.
        """
        self._check_process()
        with self._engine._lock:
            if not self._state.is_final:
                self._callbacks.append(fn)
                return
        _call_done_callback(self, fn)

    def _check_process(self) -> None:
        if self._engine._pid != os.getpid():
            raise RuntimeError(
                f"The watch of task {self.task_id} was started in another process (pid "
                f"{self._engine._pid}); it is not polled in this one (pid {os.getpid()}), so waiting on it "
                f"would hang. Watch the task again here with its id."
            )


def _call_done_callback(watch: Watch, fn: Callable[[Watch], None]) -> None:
    try:
        fn(watch)
    except Exception:
        logger.exception("a done callback for task %s raised", watch.task_id)


class _Timeline:
    """Watches ordered by an instant (a min-heap), each at most once; an entry may open early.

    `discard` drops the heap's reference to a watch at once: its entry stays behind as an empty tombstone
    until it is popped or the heap is compacted, so a stopped watch and its last answer are not kept
    alive until its instant (a deadline may be 15 minutes away).
    """

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []  # [when, tie-breaker, watch or None, opens]
        self._entries: dict[Watch, list[Any]] = {}
        self._seq = itertools.count()  # so that watches are never compared

    def push(self, when: float, w: Watch, early: float = 0.0) -> None:
        """Add ``w`` at ``when``; it may be taken from ``early`` seconds before (its opening instant)."""
        self.discard(w)
        entry = [when, next(self._seq), w, when - early]
        self._entries[w] = entry
        heapq.heappush(self._heap, entry)

    def discard(self, w: Watch) -> None:
        entry = self._entries.pop(w, None)
        if entry is None:
            return
        entry[2] = None
        if len(self._heap) > 2 * len(self._entries) + 16:  # mostly tombstones: rebuild
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)

    def peek(self) -> tuple[float, float, Watch] | None:
        """The earliest entry's (instant, opening instant, watch), or None when empty."""
        while self._heap and self._heap[0][2] is None:
            heapq.heappop(self._heap)
        return (self._heap[0][0], self._heap[0][3], self._heap[0][2]) if self._heap else None

    def pop(self) -> Watch:
        """Remove and return the earliest watch (the timeline must not be empty)."""
        self.peek()
        w: Watch = heapq.heappop(self._heap)[2]
        del self._entries[w]
        return w


class _Gateway:
    """One gateway's share of the engine: its watches' next requests, requests in flight, 429 pause."""

    def __init__(self) -> None:
        self.due = _Timeline()
        self.busy = 0  # requests dispatched and not settled; never above the engine's max_workers
        self.not_before = -math.inf  # after a 429: no request to this gateway starts before this instant
        self.watches = 0  # live watches


class Engine:
    """Polls many tasks with a bounded number of daemon threads.

    Parameters
    ----------
    max_workers : int
        Most requests in flight at once to one gateway.
    max_threads : int
        Most worker threads in all (the engine adds one scheduler thread). With ``max_workers`` 4 and
        ``max_threads`` 16, three hung gateways leave a fourth its full share.
    policy : PollPolicy or None
        The polling and backoff policy (None: the defaults); `watch` may override its intervals.
    clock : callable
        Seconds on a monotonic clock (``time.monotonic``); every schedule and deadline is read from it.
    """

    def __init__(
        self,
        *,
        max_workers: int = 4,
        max_threads: int = 16,
        policy: PollPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}")
        self._max_workers = max_workers
        self._max_threads = max_threads
        self._policy = PollPolicy() if policy is None else policy
        self._clock = clock
        self._pid = os.getpid()

        self._lock = threading.Lock()
        self._sched_cv = threading.Condition(self._lock)
        self._work_cv = threading.Condition(self._lock)
        self._gateways: dict[Hashable, _Gateway] = {}
        self._deadlines = _Timeline()
        self._jobs: collections.deque[Watch] = collections.deque()
        self._to_drain: collections.deque[Watch] = collections.deque()
        self._live: set[Watch] = set()
        self._busy = 0  # jobs dispatched and not settled; never above max_threads
        # Waking the scheduler costs two thread switches, so it is woken only when it would otherwise be
        # late: when it sleeps past a newly scheduled request, or when a due request waits for a worker.
        self._wake_at = -math.inf  # when the sleeping scheduler wakes by itself; -inf while it is awake
        self._starved = False  # a due request waits for a free worker
        self._scheduler: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Engine(max_workers={self._max_workers}, max_threads={self._max_threads}, "
            f"watches={len(self._live)}, threads={self.thread_count})"
        )

    @property
    def policy(self) -> PollPolicy:
        """The engine's default polling and backoff policy."""
        return self._policy

    @property
    def thread_count(self) -> int:
        """How many of this engine's threads are alive (at most ``max_threads + 1``)."""
        with self._lock:
            threads = [self._scheduler, *self._workers]
        return sum(1 for t in threads if t is not None and t.is_alive())

    @property
    def alive(self) -> bool:
        """False once shut down, in a process forked from the one that made it, or if its scheduler died."""
        scheduler = self._scheduler
        return not self._closed and self._pid == os.getpid() and (scheduler is None or scheduler.is_alive())

    def watch(
        self,
        fetch: Callable[[], Task],
        *,
        task_id: str,
        on_update: Callable[[Update], None] | None = None,
        gateway: Hashable | None = None,
        poll_interval: float | None = None,
        max_poll_interval: float | None = None,
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
        gateway : hashable, optional
            Which gateway ``fetch`` talks to, e.g. ``(client.base_url, client.key_id)``: a 429 pauses
            the watches of that gateway only, and in-flight requests are bounded per gateway. Watches
            without one share a gateway.
        poll_interval, max_poll_interval : float, optional
            Bounds of the polling delay; by default the engine policy's (`PollPolicy`).
        timeout : float or None
            Seconds from now after which the watch ends in TIMEOUT; None means no deadline.

        Returns
        -------
        Watch

        Raises
        ------
        ValueError
            Bad intervals or timeout.
        RuntimeError
            The engine is not `alive`: shut down, made in another process, or its scheduler died.
        """
        policy = self._policy.with_intervals(poll_interval, max_poll_interval)
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be non-negative or None, not {timeout}")
        if self._pid != os.getpid():
            raise RuntimeError("this Engine was made in another process; use default_engine() here")
        with self._lock:
            if self._closed:
                raise RuntimeError("this Engine has been shut down")
            if not self.alive:
                raise RuntimeError("this Engine's scheduler died; use default_engine() or a new Engine")
            gw = self._gateways.get(gateway)
            if gw is None:
                gw = self._gateways[gateway] = _Gateway()
            started = self._clock()
            w = Watch(
                self,
                fetch,
                task_id=task_id,
                on_update=on_update,
                policy=policy,
                gateway=gw,
                started=started,
                timeout=timeout,
            )
            self._live.add(w)
            gw.watches += 1
            gw.due.push(started, w)
            if w._deadline is not None:
                self._deadlines.push(w._deadline, w)
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
        """Make a watch final (once), take it out of every queue, and post its final update."""
        if w._state.is_final:
            return False
        w._state, w._error = state, error
        w._outcome = _outcome(w, state, error)
        w._final.set()
        self._live.discard(w)
        self._deadlines.discard(w)
        w._gateway.due.discard(w)
        w._gateway.watches -= 1
        update = Update(state, w._task, error, None, self._clock() - w._started)
        return self._post(w, update, inline=inline)

    def _fail(self, w: Watch, exc: Exception, *, inline: bool) -> bool:
        """End one watch in ERROR after an unexpected exception in its scheduling; the engine goes on."""
        logger.error("internal error while watching task %s; that watch ends", w.task_id, exc_info=exc)
        error = KlingError(
            f"Internal error while watching task {w.task_id} ({type(exc).__name__}: {exc}); polling stopped, "
            f"the task keeps running on the server. Watch it again with its id.",
            code="internal_error",
            task_id=w.task_id,
        )
        error.__cause__ = exc
        return self._finish(w, WatchState.ERROR, error=error, inline=inline)

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
        w._gateway.busy -= 1
        if self._starved:  # a due request waits for the worker this one frees
            self._sched_cv.notify()
        if w._state.is_final:
            return False  # stopped, timed out or shut down meanwhile: the answer is discarded
        try:
            return self._schedule_next(w, outcome, self._clock())
        except Exception as exc:  # a bug in the policy must not take the worker down
            return self._fail(w, exc, inline=True)

    def _schedule_next(self, w: Watch, outcome: Task | KlingError, now: float) -> bool:
        retry_in: float | None = None
        if isinstance(outcome, Task):
            w._task, w._attempt = outcome, 0
            if outcome.status is TaskStatus.SUCCESS:
                return self._finish(w, WatchState.SUCCESS, inline=True)
            if outcome.status is TaskStatus.FAILURE:
                return self._finish(w, WatchState.FAILURE, inline=True)
            # Sent early, this poll must not make the next one earlier too: that would cost requests.
            delay = _checked(w._policy.next_poll(outcome, now - w._started)) + w._early
            w._state, w._error = WatchState.WAITING, None
        elif outcome.retryable:
            w._attempt += 1
            delay = _checked(w._policy.retry(w._attempt, outcome))
            if isinstance(outcome, RateLimitError):
                # The gateway is saturated for every watch on it: hold them all back, not just this one.
                w._gateway.not_before = max(w._gateway.not_before, now + delay)
            w._state, w._error = WatchState.RETRYING, outcome
            retry_in = delay
        else:
            return self._finish(w, WatchState.ERROR, error=outcome, inline=True)
        if w._deadline is not None:  # never wait past the deadline: it ends the watch on time
            delay = min(delay, max(0.0, w._deadline - now))
            retry_in = None if retry_in is None else delay
        # A poll may go out a little early, with others due about then (not a retry: Retry-After is a floor).
        w._gateway.due.push(now + delay, w, early=0.0 if retry_in is not None else _EARLY * delay)
        if now + delay < self._wake_at:
            self._sched_cv.notify()
        update = Update(w._state, w._task, w._error, retry_in, now - w._started)
        return self._post(w, update, inline=True)

    def _tick(self) -> float | None:
        """Expire deadlines and dispatch due requests; return seconds until the next thing to do."""
        now = self._clock()
        self._starved = False  # set again below if a due request still waits for a worker
        while (head := self._deadlines.peek()) is not None and head[0] <= now:
            w = self._deadlines.pop()
            try:
                self._expire(w, now)
            except Exception as exc:
                self._fail(w, exc, inline=False)
        wake = [head[0]] if head is not None else []
        for key, gw in list(self._gateways.items()):
            when = self._dispatch_due(gw, now)
            if when is not None:
                wake.append(when)
            if not gw.watches and not gw.busy and gw.not_before <= now:
                del self._gateways[key]
        return max(0.0, min(wake) - now) if wake else None

    def _dispatch_due(self, gw: _Gateway, now: float) -> float | None:
        """Dispatch a gateway's open requests as far as its share allows; return when to look again.

        Taken in order of due instants while they are open (`_EARLY`): a wake-up for one request takes
        the next ones along, so requests go out in bursts rather than one per wake-up.
        """
        while (head := gw.due.peek()) is not None:
            if head[1] > now:
                return head[0]
            if gw.not_before > now:
                return gw.not_before
            if gw.busy >= self._max_workers or self._busy >= self._max_threads:
                self._starved = True  # a worker settling a request notifies the scheduler
                return None
            w = gw.due.pop()
            w._early = max(0.0, head[0] - now)
            self._dispatch(w)
        return None

    def _dispatch(self, w: Watch) -> None:
        self._busy += 1
        w._gateway.busy += 1
        self._jobs.append(w)
        if len(self._workers) < self._busy:
            t = threading.Thread(
                target=self._run_worker, name=f"kling-widgets-worker-{len(self._workers) + 1}", daemon=True
            )
            t.start()  # it blocks on the lock until we release it
            self._workers.append(t)
        else:
            self._work_cv.notify()

    # -- threads ---------------------------------------------------------------------------------------
    # Each round of a thread's loop is a method of its own, so that no watch or answer stays referenced
    # from an idle thread's frame.

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
        while self._schedule_round():
            pass

    def _schedule_round(self) -> bool:
        """Tick, then deliver queued updates or sleep; False once the engine is shut down."""
        with self._lock:
            try:
                wait = self._tick()
            except Exception:  # a bug here must not end polling for every watch in the process
                logger.exception("the polling engine's scheduler failed; it goes on")
                wait = _ERROR_PAUSE
            drains = list(self._to_drain)
            self._to_drain.clear()
            if not drains:
                if self._closed:
                    return False
                sleep = None if wait is None else min(wait, _MAX_SLEEP)
                self._wake_at = math.inf if sleep is None else self._clock() + sleep
                self._sched_cv.wait(sleep)
                self._wake_at = -math.inf
                return True
        for w in drains:
            self._drain(w)
        return True

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
        while self._work_round():
            pass

    def _work_round(self) -> bool:
        """Run one queued request; False once the engine is shut down."""
        with self._lock:
            while not self._jobs and not self._closed:
                self._work_cv.wait()
            if self._closed:
                return False
            w = self._jobs.popleft()
            gw = w._gateway
            # A deadline, stop() or a 429 may have come while the job was queued: then no request now.
            now = self._clock()
            if w._state.is_final or self._expire(w, now) or gw.not_before > now:
                if not w._state.is_final:
                    gw.due.push(gw.not_before, w)
                self._busy -= 1
                gw.busy -= 1
                self._sched_cv.notify()
                return True
        outcome = self._call(w)
        with self._lock:
            must_drain = self._settle(w, outcome)
        if must_drain:
            self._drain(w)
        return True


def _checked(delay: float) -> float:
    """A policy's delay, refused unless it is a finite number of seconds, not negative."""
    if not (delay >= 0 and math.isfinite(delay)):
        raise ValueError(f"the poll policy returned a delay of {delay!r} s")
    return float(delay)


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
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine shared by every widget, created on first use.

    A new one replaces it when it is no longer `Engine.alive`: after ``os.fork`` (the parent's threads do
    not exist in the child), after it was shut down, or if its scheduler thread died. It is shut down at
    interpreter exit.
    """
    global _default
    with _default_lock:
        if _default is None or not _default.alive:
            _default = Engine()
        return _default


def set_default_engine(engine: Engine) -> None:
    """Make ``engine`` the one `default_engine` returns, e.g. one with another `PollPolicy`.

    The previous default is not shut down: its watches go on until they end.
    """
    global _default
    with _default_lock:
        _default = engine


@atexit.register
def _shutdown_default() -> None:
    # Only the engine of this process: in a forked child, the parent's engine lock may be held for ever.
    if _default is not None and _default._pid == os.getpid():
        # Daemon threads die with the process; only give idle ones a moment to end cleanly.
        _default._shutdown(0.1)
