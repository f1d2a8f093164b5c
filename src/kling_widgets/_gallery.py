"""`TaskGallery`: many Kling tasks at once, as a grid of compact cards on the one shared polling engine.

Each card is a `TaskStatusWidget` with its prompt as caption (or, for a task that could not be submitted,
a small error card); the gallery adds a live summary line, a Stop-all button and a `wait` for the whole
batch. Every card polls through ``default_engine()``: a gallery of 200 tasks runs on the engine's few
threads, not on 200.

A gallery may also submit: each `BatchRow` it is given shows at once as a card "waiting to be submitted",
and a `BatchSubmitter` (docs/durable.md, "Batches") sends them with at most ``concurrency`` tasks
unfinished. When a row's POST answers, its card turns live (reusing the waiting card's one model, so a
saved notebook grows by nothing); a refusal becomes an error card, and a POST without an answer an
"unknown" card (it may have created, and billed, a task whose id never came back). Each live card's watch
frees its slot when it ends. Stop all and `close` stop the submitter too: no POST follows.

A finished card whose task made a Kling video can be extended (issue 12): `extend` sends one video-extend
POST on a daemon thread, and its task joins the gallery as a new card, counted like every other. The
control is one "Extend" button and a pick of the done cards, shown in an output of its own under the
gallery: once every card has ended the gallery's output turns into static HTML (docs/architecture.md,
"Comms, display handles and the static fallback"), and a button inside it would go with it; a new card
turns that output live again until it ends. One control, not one per card, also keeps a saved notebook
small (docs/architecture.md, "Saved notebooks").

The summary counts outcomes, not what the cards display: each card's `Watch` reports its final state
through ``add_done_callback`` (also when the card was closed from outside), so "done", "failed", "error",
"timed out" and "stopped" are what happened. Redraws run on whichever thread reports, one at a time and
with no lock held while traits are written; the Stop-all button only stops watches.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import ipywidgets
from IPython.display import display

from ._base import (
    AsyncWait,
    KlingWidget,
    WatchOptions,
    close_model,
    resolve_client,
    shared_layout,
    shared_style,
)
from ._batch import BatchRow, BatchSubmitter, RowOutcome, RowState, rows_from_prompts
from ._client import KlingClient
from ._errors import APIError, KlingError
from ._extend import REARM_SECONDS, Extension, extendable
from ._frontend import Frontend
from ._models import Task
from ._params import VideoOptions, video_body
from ._poller import WatchState
from ._text import clean_text
from ._view import clock, error_card_html, waiting_card_html
from ._widget import WIDGET_OPTIONS, TaskStatusWidget, keep_folder, unwatched_error

__all__ = ["TaskGallery", "generate_many"]

_log = logging.getLogger(__name__)

_MAX_POLL_INTERVAL = 15.0
_TIMEOUT = 900.0
_CARD_WIDTH = "320px"
_COLUMN = {"display": "flex", "flex_flow": "column"}
_HEADER = {"display": "flex", "align_items": "center", "grid_gap": "0 12px"}
_GRID = {"grid_template_columns": f"repeat(auto-fill, minmax({_CARD_WIDTH}, 1fr))", "grid_gap": "8px"}
_CARD = {
    "display": "flex",
    "flex_flow": "row wrap",
    "align_items": "center",
    "align_content": "flex-start",
    "grid_gap": "4px 8px",
    "border": "1px solid var(--jp-border-color2, #e0e0e0)",
    "padding": "4px 8px",
}
_PICK_CHARS = 24  # a pick's label: one line of the dropdown, and few bytes per card in a saved notebook
_STATIC_GRID = f"display:grid;grid-template-columns:repeat(auto-fill,minmax({_CARD_WIDTH},1fr));gap:8px"
_STATIC_CARD = "border:1px solid var(--jp-border-color2,#e0e0e0);padding:4px 8px"
# What each final watch state counts as in the summary, in the order the summary lists them.
_CATEGORIES = {
    WatchState.SUCCESS: "done",
    WatchState.FAILURE: "failed",
    WatchState.ERROR: "error",
    WatchState.TIMEOUT: "timed out",
    WatchState.STOPPED: "stopped",
}
_UNKNOWN = "unknown"  # a POST without an answer: a task may exist, its id never came back
_SUMMARY = (*_CATEGORIES.values(), _UNKNOWN)
# Rows whose task is known, so their card watches it.
_WATCHED = (RowState.SUBMITTED, RowState.RESUMED, RowState.DONE_BEFORE, RowState.UNKNOWN)
_UNKNOWN_HEADING = "Unknown — may have been charged; its id was not returned"
Card = TaskStatusWidget | KlingError | None


class TaskGallery(KlingWidget, AsyncWait[list[Task]]):
    """Watch many Kling tasks live: a grid of compact cards, a summary line, Stop-all, and `wait`.

    Parameters
    ----------
    tasks : iterable of Task, str, KlingError or BatchRow
        The tasks to watch, as `Task` objects or task ids. A `KlingError` (a submission that failed)
        shows as an error card and counts as failed. A `BatchRow` (`kling_widgets._batch`) is a prompt
        to submit: it shows as a waiting card until `start` has submitted it.
    labels : sequence of str, optional
        A caption per entry (e.g. the prompts), shown on each card; cleaned and escaped. A `BatchRow`'s
        caption is its prompt by default.
    client : KlingClient, optional
        The client every card polls with. By default the gallery builds one from ``api_key`` and
        ``base_url`` (which fall back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``) and closes it in
        `close`.
    api_key, base_url : str, optional
        For the gallery's own client; not allowed together with ``client``.
    owns_client : bool
        Close ``client`` when the gallery closes.
    endpoint : str, optional
        The route to poll every task on; by default each task's own (`Task.endpoint`; ``"text2video"`` for
        a bare id).
    poll_interval, max_poll_interval : float
        Bounds of each task's polling interval. The schedule polls sparsely while a task is queued or
        young and densely around the time Kling usually finishes; a batch cares more about the load it
        puts on the gateway than about the last second of latency, so the ceiling defaults to 15 s
        (a single `TaskStatusWidget` uses 5 s).
    timeout : float or None
        Give up watching a task after this many seconds (it may still finish on the server).
    autostart : bool
        Start polling (and submitting) at once; otherwise call `start`.
    keep : bool or path-like
        Keep each task's videos when it succeeds, as `TaskStatusWidget` does (default: into
        ``$KLING_WIDGETS_KEEP``, else ``./kling-videos``).
    concurrency : int, optional
        For `BatchRow` entries: the most of them unfinished at once. None: no limit of our own (every
        row is sent one after another; the gateway's parallel-task 429 still holds the queue).
    frontend : Frontend, optional
        As for `TaskStatusWidget`.

    Notes
    -----
    ``len(gallery.wait()) + len(gallery.failed) == len(gallery)`` once every card has ended: `wait`
    returns the tasks that produced a video, and `failed` explains every other card.

    Displayed, the gallery shows an Extend control under it once a card's task has made a video
    (`extend`); an extension is one more card, from the moment its POST answers.
    """

    def __init__(
        self,
        tasks: Iterable[Task | str | KlingError | BatchRow],
        *,
        labels: Sequence[str] | None = None,
        client: KlingClient | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        owns_client: bool = False,
        endpoint: str | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = _MAX_POLL_INTERVAL,
        timeout: float | None = _TIMEOUT,
        autostart: bool = True,
        keep: bool | str | os.PathLike[str] = True,
        concurrency: int | None = None,
        frontend: Frontend | None = None,
    ) -> None:
        self._cards: list[Card] = []  # before anything can fail: close() reads them
        self._submitter: BatchSubmitter | None = None
        self._all_ended = threading.Event()
        entries = list(tasks)
        captions = list(labels) if labels is not None else [None] * len(entries)
        if len(captions) != len(entries):
            raise ValueError(f"Got {len(captions)} labels for {len(entries)} tasks; pass one label per task.")
        ids = Counter(
            entry.task_id if isinstance(entry, Task) else entry
            for entry in entries
            if isinstance(entry, (Task, str))
        )
        repeated = sorted(i for i, n in ids.items() if isinstance(i, str) and n > 1)
        if repeated:
            raise ValueError(f"Each task may appear once in a gallery; repeated: {', '.join(repeated)}")
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):  # fmt: skip
            raise ValueError(f"concurrency must be a whole number >= 1, or None; not {concurrency!r}.")
        self._options = WatchOptions(endpoint, poll_interval, max_poll_interval, timeout)
        self._keep = keep
        keep_folder(keep)  # checked now, not when the first task succeeds
        column = shared_layout(**_COLUMN)
        super().__init__(client, api_key, base_url, owns_client, frontend, layout=column)
        self._rows = [entry for entry in entries if isinstance(entry, BatchRow)]
        self._concurrency = concurrency or max(len(self._rows), 1)
        self._captions = [
            entry.prompt if caption is None and isinstance(entry, BatchRow) else caption
            for entry, caption in zip(entries, captions, strict=True)
        ]
        self._waiting = deque(i for i, entry in enumerate(entries) if isinstance(entry, BatchRow))
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._counts: Counter[str] = Counter()
        self._halves: Counter[TaskStatusWidget] = Counter()  # see _on_card_end
        self._summary = ipywidgets.HTML(style=shared_style(ipywidgets.widgets.widget_string.HTMLStyle))
        self._stop_all = ipywidgets.Button(
            description="Stop all",
            tooltip="Stop watching every task (they keep running on the server)",
            layout=shared_layout(width="auto"),
            style=shared_style(ipywidgets.widgets.widget_button.ButtonStyle),
        )
        self._stop_all.on_click(self._on_stop_all_click)
        self._header = ipywidgets.Box([self._summary, self._stop_all], layout=shared_layout(**_HEADER))
        self._grid = ipywidgets.GridBox(layout=shared_layout(**_GRID))
        self.own(self._summary, self._stop_all, self._header, self._grid)
        # Extend: hidden until a card can be extended (see the module docstring).
        self._sending = False  # an Extend POST is in flight, or just answered (see REARM_SECONDS)
        self._stops = 0  # how many times stop() ran: an extension sent before a stop is stopped on arrival
        self._choices: tuple[tuple[str, int], ...] = ()
        self._extend_button = ipywidgets.Button(
            description="Extend",
            disabled=True,
            tooltip="4-5 s more of the chosen video (a new task, billed)",
            layout=shared_layout(width="auto"),
            style=shared_style(ipywidgets.widgets.widget_button.ButtonStyle),
        )
        self._extend_pick = ipywidgets.Dropdown(
            layout=shared_layout(width="auto"),
            style=shared_style(ipywidgets.widgets.widget_description.DescriptionStyle),
        )
        self._extend_prompt = ipywidgets.Text(
            placeholder="what happens next (optional)",
            layout=shared_layout(width="auto"),
            style=shared_style(ipywidgets.widgets.widget_string.TextStyle),
        )
        self._extend_button.on_click(self._on_extend_click)
        # Empty (so invisible) until a card can be extended: no extra layout model just to hide it.
        self._extender = ipywidgets.Box(layout=shared_layout(**_HEADER))
        self.own(self._extend_button, self._extend_pick, self._extend_prompt, self._extender)
        self._views: list[Any] = []  # what the grid shows for each card
        try:
            for entry, caption in zip(entries, self._captions, strict=True):
                if isinstance(entry, BatchRow):
                    self._cards.append(None)
                    self._views.append(self._html(waiting_card_html(entry.prompt if caption is None
                                                                    else caption)))  # fmt: skip
                else:
                    card = entry if isinstance(entry, KlingError) else self._card(entry, caption)
                    self._cards.append(card)
                    self._views.append(self._card_view(card))
        except BaseException:
            self.close()
            raise
        self._counts["failed"] = sum(isinstance(card, KlingError) for card in self._cards)
        self._grid.children = tuple(self._views)
        self.children = (self._header, self._grid)
        self.redraw()
        self.register()  # re-running the cell closes the whole gallery, not only its cards
        if autostart:
            self.start()

    def _card(
        self, entry: Task | str, caption: str | None, text_block: Any = None, endpoint: str | None = None
    ) -> TaskStatusWidget:
        """A card: a `TaskStatusWidget` with the caption, no Stop button of its own, not yet started; it
        polls ``endpoint``, by default the gallery's."""
        options = self._options
        return TaskStatusWidget(
            entry,
            client=self._client,
            endpoint=endpoint or options.endpoint_of(entry if isinstance(entry, Task) else None),
            poll_interval=options.poll_interval,
            max_poll_interval=options.max_poll_interval,
            timeout=options.timeout,
            autostart=False,
            caption=caption,
            stop_button=False,
            layout=shared_layout(**_CARD),
            keep=self._keep,
            frontend=self.frontend,
            text_block=text_block,
        )

    def _html(self, value: str) -> Any:
        view = ipywidgets.HTML(
            value,
            layout=shared_layout(**_CARD),
            style=shared_style(ipywidgets.widgets.widget_string.HTMLStyle),
        )
        self.own(view)
        return view

    def _card_view(self, card: TaskStatusWidget | KlingError, heading: str = "Not submitted") -> Any:
        """What the grid shows for a card: the widget itself, or an error card for a refused task."""
        if isinstance(card, TaskStatusWidget):
            return card
        return self._html(error_card_html(card, heading))

    # -- control (any thread) ---------------------------------------------------------------------------

    def start(self) -> TaskGallery:
        """Start watching every task, and submitting every waiting prompt (only needed with
        ``autostart=False``); a second call does nothing.

        Returns
        -------
        TaskGallery
            ``self``.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("This gallery is closed; create a new one to watch the tasks again.")
            if self._started_at is not None:
                return self
            self._started_at = time.monotonic()
        for card in self._widgets():
            self._follow(card)
        if self._rows:
            self._submitter = BatchSubmitter(
                self._client, self._rows, concurrency=self._concurrency, on_outcome=self._on_outcome
            )
            self._submitter.start()
        self.redraw()
        return self

    def _follow(self, card: TaskStatusWidget, on_end: Any = None) -> None:
        """Start a card and count its outcome; ``on_end(watch)`` too when its watch ends."""
        try:
            watch = card.start().watch
        except RuntimeError:  # closed from outside before the gallery started it
            with self._lock:
                self._counts["stopped"] += 1
            return
        assert watch is not None  # start() made it
        if on_end is not None:
            watch.add_done_callback(on_end)
        # A card counts once both its watch has ended and it is settled (final state out, files kept).
        watch.add_done_callback(lambda _watch: self._on_card_end(card))
        card.add_done_callback(self._on_card_end)
        card.observe(self._on_card_tick, names="progress")

    def stop(self) -> None:
        """Stop submitting and watching, at once. The tasks keep running on the server; prompts not sent
        yet become "not submitted" cards, and an extension in flight a stopped card."""
        with self._lock:
            self._stops += 1
        if self._submitter is not None:
            self._submitter.stop()
        for card in self._widgets():
            card.stop()

    def extend(self, card: TaskStatusWidget, prompt: str | None = None) -> None:
        """Extend ``card``'s first video by 4-5 s (what the Extend button does, with the prompt typed
        beside it): one video-extend task, billed, which joins the gallery as a new card.

        The POST runs on a daemon thread; one at a time, so a second call while it is in flight (or just
        after it answered, a double click) does nothing, as does a call for a card whose task did not
        succeed with a Kling video id, or after `close`. A refusal becomes an error card, a POST without
        an answer an "unknown" card; a task the gateway created is always watched.
        """
        task = card.task
        with self._lock:
            mine = any(card is each for each in self._cards)
            if self._closed or self._sending or not mine or task is None or not extendable(card):
                return
            self._sending = True
            stops = self._stops
        self.redraw()  # the button greys out
        # The POST waits on the network: a daemon thread keeps the kernel free meanwhile.
        threading.Thread(
            target=self._send_extension,
            args=(Extension(task, prompt), stops),
            name="kling-gallery-extend",
            daemon=True,
        ).start()

    def wait(self, timeout: float | None = None) -> list[Task]:
        """Block until every card has ended and the gallery shows it; never raises for one task.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait in total; by default until every watch ends (each card's own ``timeout``
            bounds that).

        Returns
        -------
        list of Task
            The final snapshots of the tasks that succeeded, in gallery order. Every other card is
            explained in `failed`.

        Raises
        ------
        TimeoutError
            This call's ``timeout`` passed first; the gallery keeps watching.
        """
        if self._started_at is None:
            raise RuntimeError(
                "Not watching yet: call start() first (the gallery was made with autostart=False)."
            )
        if not self._all_ended.wait(timeout):
            running = sum(_outcome(card) is None for card in self._cards)
            raise TimeoutError(
                f"{running} of {len(self._cards)} tasks are still being watched (or submitted) after waiting "
                f"{timeout:g} s; the gallery keeps watching them. Call wait() again to wait for the rest."
            )
        return self.succeeded

    def _release(self) -> None:
        if self._submitter is not None:
            self._submitter.stop()  # no POST after close (one in flight still completes)
        for card in self._widgets():
            card.close()
        self._all_ended.set()

    # -- results ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cards)

    @property
    def cards(self) -> tuple[TaskStatusWidget | KlingError | None, ...]:
        """One entry per task, in order: its `TaskStatusWidget`, the error that prevented watching it, or
        None while its prompt waits to be submitted."""
        return tuple(self._cards)

    @property
    def tasks(self) -> list[Task | None]:
        """The latest snapshot of each task, in order (None where nothing was fetched or submitted yet)."""
        return [card.task if isinstance(card, TaskStatusWidget) else None for card in self._cards]

    @property
    def succeeded(self) -> list[Task]:
        """The final snapshots of the tasks that produced a video so far, in order."""
        return [outcome for outcome in map(_outcome, self._cards) if isinstance(outcome, Task)]

    @property
    def failed(self) -> list[KlingError]:
        """Why each ended card has no video, in order.

        `TaskFailedError` (``.task`` holds Kling's reason) for a failed task, the submission or polling
        error, `TaskTimeoutError`, or a `KlingError` with code ``"stopped"`` after `stop`.
        """
        return [outcome for outcome in map(_outcome, self._cards) if isinstance(outcome, KlingError)]

    def summary(self) -> str:
        """The summary line as plain text, e.g. ``50 tasks · 12 done · 1 failed · 37 running · 2:30 elapsed``.

        The clock moves in 5-second steps while tasks run and shows the exact time once all have ended.
        """
        with self._lock:
            return self._summary_text(time.monotonic())

    def __repr__(self) -> str:
        return f"TaskGallery({self.summary()})"

    def _ipython_display_(self) -> None:
        super()._ipython_display_()
        if self._closed:  # nothing to extend; ipywidgets has no view of a closed model
            return
        # The Extend control in an output of its own, which stays live when the gallery's turns static.
        view = self._extender._repr_mimebundle_()
        display({**view, "text/plain": ""}, raw=True)  # type: ignore[no-untyped-call]

    def static_bundle(self) -> dict[str, str]:
        """The summary and every card as ``text/plain`` and ``text/html`` (cards in a CSS grid)."""
        cards = [
            card.static_bundle()["text/html"]
            if isinstance(card, TaskStatusWidget)
            else waiting_card_html(caption or "")
            if card is None
            else error_card_html(card, _heading(card))
            for card, caption in zip(self._cards, self._captions, strict=True)
        ]
        body = "".join(f'<div style="{_STATIC_CARD}">{card}</div>' for card in cards)
        summary = html.escape(self.summary())
        return {
            "text/plain": repr(self),
            "text/html": f'<div><b>{summary}</b></div><div style="{_STATIC_GRID}">{body}</div>',
        }

    # -- the polling side: done callbacks and ticks run on engine threads -------------------------------

    def _widgets(self) -> list[TaskStatusWidget]:
        with self._lock:
            return [card for card in self._cards if isinstance(card, TaskStatusWidget)]

    def _on_stop_all_click(self, _button: Any) -> None:
        # May run on the main thread or a kernel subshell thread: only stop (docs/architecture.md,
        # "Threading rules").
        self.stop()

    def _on_extend_click(self, _button: Any) -> None:
        # May run on the main thread or a kernel subshell thread: `extend` only starts a thread.
        index = self._extend_pick.value
        card = self._cards[index] if isinstance(index, int) else None
        if isinstance(card, TaskStatusWidget):
            self.extend(card, self._extend_prompt.value.strip() or None)

    def _send_extension(self, extension: Extension, stops: int) -> None:
        """Send one extension and add what came of it (on its own daemon thread)."""
        if self._closed:  # closed since the click: nothing is sent
            return
        entry: Task | str | None = None
        error: KlingError | None = None
        try:
            entry = extension.send(self._client)
        except KlingError as exc:
            entry, error = exc.task_id, exc if isinstance(exc, APIError) else _unanswered(exc)
        except (ValueError, TypeError) as exc:  # refused before sending
            error = KlingError(f"{exc} (nothing was sent).", code="not_sent")
        except Exception as exc:  # a bug, not an answer: the POST may have gone out, so never resent
            _log.exception("Extending task %s failed unexpectedly", extension.source.task_id)
            error = _unanswered(exc)
        try:
            self._add_extension(extension, entry, error, stops)
        finally:
            if entry is None:
                self._rearm()
            else:  # a double click's second click, after a fast answer, must not bill a second task
                timer = threading.Timer(REARM_SECONDS, self._rearm)
                timer.daemon = True
                timer.start()

    def _add_extension(
        self, extension: Extension, entry: Task | str | None, error: KlingError | None, stops: int
    ) -> None:
        """Add the extension's card: its task watched (a task the gateway created is never lost), or the
        error card for a refusal or a POST without an answer."""
        task_id = entry if isinstance(entry, str) else entry.task_id if entry is not None else None
        card: TaskStatusWidget | KlingError
        with self._lock:
            closed = self._closed
        if closed:
            if task_id is not None:  # it runs and may bill; the ledger has it too
                _log.warning("Task %s was submitted as the gallery closed; it is not watched.", task_id)
            return
        if entry is not None:
            try:
                card = self._card(entry, extension.caption, endpoint=extension.route)
            except Exception as exc:  # e.g. closed meanwhile: say which task runs unwatched
                card = unwatched_error([cast(str, task_id)], exc)
        else:
            assert error is not None  # no task without an error
            card = error
            if card.code != _UNKNOWN:
                _log.warning("Could not extend task %s: %s", extension.source.task_id, card)
        view = card if isinstance(card, TaskStatusWidget) else self._card_view(card, _heading(card))
        with self._lock:
            closed = self._closed  # close() sets it under this lock, then closes the cards it finds
            if not closed:
                self._cards.append(card)
                self._captions.append(extension.caption)
                self._views.append(view)
                self._finished_at = None  # the gallery has work again
                if isinstance(card, KlingError):
                    self._counts[_UNKNOWN if card.code == _UNKNOWN else "failed"] += 1
                stopped = self._stops != stops
            children = tuple(self._views)
        if closed:  # close() ran and did not find this card
            if isinstance(card, TaskStatusWidget):
                card.close()
                _log.warning("Task %s was submitted as the gallery closed; it is not watched.", task_id)
            else:
                close_model(view)
            return
        if isinstance(card, TaskStatusWidget):
            self._follow(card)
            if stopped:  # Stop all ran while it was being sent
                card.stop()
        self.deliver(lambda: setattr(self._grid, "children", children))
        self.redraw()

    def _rearm(self) -> None:
        with self._lock:
            self._sending = False
        self.redraw()

    def _on_card_end(self, card: TaskStatusWidget) -> None:
        with self._lock:
            self._halves[card] += 1
            if self._halves[card] == 2:
                watch = card.watch
                assert watch is not None  # the gallery started it
                self._counts[_CATEGORIES[watch.state]] += 1
        self.redraw()

    def _on_card_tick(self, _change: Any) -> None:
        self.redraw()

    def _on_outcome(self, outcome: RowOutcome) -> None:
        """A row's POST answered, or will not be sent (on the submitter's thread, in row order)."""
        submitter = self._submitter
        assert submitter is not None  # it calls this
        with self._lock:
            index = self._waiting.popleft()
        task_id = outcome.task_id
        caption = self._captions[index]
        waiting = self._views[index]
        card: TaskStatusWidget | KlingError
        if task_id is not None and outcome.state in _WATCHED:
            try:
                card = self._card(task_id, caption, text_block=waiting)
            except Exception:
                if not self._closed:
                    raise
                # close() closed the waiting card under it meanwhile. It runs and may bill; the ledger has it.
                _log.warning("Task %s was submitted as the gallery closed; it is not watched.", task_id)
                return
            view: Any = card
        else:  # the waiting card's model shows the error: no model more
            card = _row_error(outcome)
            unknown = card.code == _UNKNOWN
            if not unknown:
                _log.warning("Could not submit a task: %s", card)
            body = error_card_html(card, _heading(card))
            self.deliver(lambda: setattr(waiting, "value", body))
            view = waiting
        with self._lock:
            closed = self._closed  # close() sets it under this lock, then closes the cards it finds
            if not closed:
                self._cards[index] = card
                self._views[index] = view
                if isinstance(card, KlingError):
                    self._counts[_UNKNOWN if card.code == _UNKNOWN else "failed"] += 1
            children = tuple(self._views)
        if closed:  # close() ran and did not find this card
            if isinstance(card, TaskStatusWidget):
                card.close()
                # It runs and may bill; the ledger has it too.
                _log.warning("Task %s was submitted as the gallery closed; it is not watched.", task_id)
            return
        if isinstance(card, TaskStatusWidget):
            self._follow(card, on_end=lambda _watch: submitter.finished(card.task_id))
        self.deliver(lambda: setattr(self._grid, "children", children))
        self.redraw()

    def _writes(self) -> Callable[[], None]:
        """The summary; once every card has ended, the display ends and `wait` is released."""
        now = time.monotonic()
        ended = self._started_at is not None and self._running() == 0 and not self._waiting
        ending = ended and self._finished_at is None
        if ending:
            self._finished_at = now
        text = self._summary_text(now)
        choices = tuple(
            (f"{i + 1}. {clean_text(self._captions[i] or card.task_id, _PICK_CHARS)}", i)
            for i, card in enumerate(self._cards)
            if isinstance(card, TaskStatusWidget) and extendable(card)
        )
        sending = self._sending

        def write() -> None:
            self.deliver(functools.partial(self._show_summary, text, ended, ending))
            self.deliver(functools.partial(self._show_extender, choices, sending))
            # Here too: in Colab the writes wait for the main thread, and wait() must not. Cleared again
            # when an extension's card gives the gallery work after it had ended.
            self._release_waiters(ended)

        return write

    def _release_waiters(self, ended: bool) -> None:
        if ended or self._closed:  # a write delivered late (Colab) must not hold wait() after close
            self._all_ended.set()
        else:
            self._all_ended.clear()

    def _show_summary(self, text: str, ended: bool, ending: bool) -> None:
        # The values first, the notifications after wait() is released: an observer may call wait().
        with self._summary.hold_trait_notifications(), self._stop_all.hold_trait_notifications():
            self._summary.value = html.escape(text)
            self._stop_all.disabled = ended
            if ending:
                self._end_display()
            elif not ended:
                self._reopen_display()  # an extension's card: live again until it ends
            self._release_waiters(ended)

    def _show_extender(self, choices: tuple[tuple[str, int], ...], sending: bool) -> None:
        """Offer Extend for the done cards that made a video, keeping the one chosen."""
        pick = self._extend_pick
        if choices != self._choices:
            self._choices = choices
            indices = [index for _, index in choices]
            chosen = pick.value if pick.value in indices else next(iter(indices), None)
            with pick.hold_sync():  # new options clear the value: set the kept choice (else the first) again
                pick.options = choices
                pick.value = chosen
        self._extend_button.disabled = sending or not choices
        parts = (self._extend_button, self._extend_pick, self._extend_prompt)
        self._extender.children = parts if choices else ()

    def _running(self) -> int:
        """Cards neither ended nor waiting to be submitted."""
        return len(self._cards) - sum(self._counts.values()) - len(self._waiting)

    def _summary_text(self, now: float) -> str:
        total = len(self._cards)
        parts = [f"{total} task{'s' if total != 1 else ''}"]
        parts += [f"{self._counts[name]} {name}" for name in _SUMMARY if self._counts[name]]
        if self._running():
            parts.append(f"{self._running()} running")
        if self._waiting:
            parts.append(f"{len(self._waiting)} waiting")
        if self._started_at is not None:
            end = self._finished_at if self._finished_at is not None else now
            parts.append(f"{clock(end - self._started_at, 5 if self._finished_at is None else 1)} elapsed")
        return " · ".join(parts)


def _check_together(params: dict[str, Any]) -> None:
    """Check the shared options together, as `KlingClient.text2video` will (e.g. ``mode="master"`` needs a
    master model): an error there, on the submitter's thread, would leave every prompt waiting."""
    options = {name: value for name, value in params.items() if name in VideoOptions.__annotations__}
    video_body("text2video", "a prompt", cast(VideoOptions, options))


def _unanswered(cause: BaseException | None) -> KlingError:
    """The error card's error for a POST without an answer."""
    said = f" ({cause})" if cause is not None else ""
    return KlingError(
        f"The submission got no answer{said}; it may have created a task, which may be charged, but its id "
        "was not returned. It is not sent again: look for it with `kling-widgets history --status unknown` "
        "or in your account.",
        code=_UNKNOWN,
    )


def _heading(error: KlingError) -> str:
    """An error card's heading."""
    return _UNKNOWN_HEADING if error.code == _UNKNOWN else "Not submitted"


def _row_error(outcome: RowOutcome) -> KlingError:
    """The error card's error for a row that will not be watched: refused, unanswered, or not sent."""
    if outcome.state is RowState.UNKNOWN:
        return _unanswered(outcome.error)
    if outcome.error is not None:
        return outcome.error
    return KlingError("The batch stopped before this prompt was sent; nothing was created.", code="not_sent")


def _outcome(card: Card) -> Task | KlingError | None:
    """The card's result once it has ended: the successful Task or the error; None while running."""
    if card is None:
        return None
    if isinstance(card, KlingError):
        return card
    watch = card.watch
    if watch is None or not watch.done():
        return None
    return watch.exception(0) or watch.result(0)


def generate_many(
    prompts: Iterable[str],
    *,
    concurrency: int | None = None,
    client: KlingClient | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **params: Any,
) -> TaskGallery:
    """Submit a batch of text-to-video tasks and return a started `TaskGallery` watching them.

    Every prompt shows at once as a card waiting to be submitted; a `BatchSubmitter` sends them in order
    on a thread of its own, each POST once, and each card turns live when its POST answers. A 429 on a POST
    (the account's parallel-task limit) created nothing: the queue holds until a task ends or the backoff
    passes, then the same prompt is sent again, so a 429 never fails a prompt. A refusal becomes an error
    card and the batch goes on; a POST without an answer becomes an "unknown" card and is never sent
    again (docs/durable.md, "Batches"). Every prompt and option is checked before the first POST.

    Parameters
    ----------
    prompts : iterable of str
        One prompt per task (each non-blank; all are checked before anything is sent).
    concurrency : int, optional
        The most tasks of this batch unfinished at once: the next prompt is sent when a card's task
        ends. None (the default): no limit of our own, every prompt is sent one after another at once,
        as before; the gateway's 429 then paces the batch.
    client, api_key, base_url
        As for `TaskGallery`; the gallery polls with the client that submits (and closes it when it
        built it).
    **params
        Options shared by every task (``duration``, ``aspect_ratio``, ``model_name``, ``mode``,
        ``negative_prompt``, ``cfg_scale``, ``sound``: the columns of a batch file, `COLUMNS`) and the
        gallery options ``poll_interval``, ``max_poll_interval``, ``timeout``, ``autostart`` and ``keep``.

    Returns
    -------
    TaskGallery
        Display it (last expression of a cell); ``.wait()`` blocks until every prompt's card has ended.

    Raises
    ------
    ValueError
        A prompt is blank, too long or not a string, or an option is out of range (nothing is sent).
    """
    if isinstance(prompts, str):
        raise TypeError("generate_many() takes a list of prompts; for a single prompt use generate().")
    batch = list(prompts)
    blank = [i for i, prompt in enumerate(batch) if not isinstance(prompt, str) or not prompt.strip()]
    if blank:
        raise ValueError(
            f"Prompts must be non-blank strings; not so at positions {blank} (nothing was sent)."
        )
    options = {name: params.pop(name) for name in WIDGET_OPTIONS if name in params}
    rows = rows_from_prompts(batch, **params)  # every prompt and option checked: the POSTs may bill
    _check_together(params)
    kling, owned = resolve_client(client, api_key, base_url)
    try:
        return TaskGallery(rows, client=kling, owns_client=owned, concurrency=concurrency, **options)
    except BaseException:  # nothing was sent: the submitter starts last
        if owned:
            kling.close()
        raise
