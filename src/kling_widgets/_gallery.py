"""`TaskGallery`: many Kling tasks at once, as a grid of compact cards on the one shared polling engine.

Each card is a `TaskStatusWidget` with its prompt as caption (or, for a task that could not be submitted,
a small error card); the gallery adds a live summary line, a Stop-all button and a `wait` for the whole
batch. Every card polls through ``default_engine()``: a gallery of 200 tasks runs on the engine's few
threads, not on 200.

The summary counts outcomes, not what the cards display: each card's `Watch` reports its final state
through ``add_done_callback`` (also when the card was closed from outside), so "done", "failed", "error",
"timed out" and "stopped" are what happened. Redraws run on whichever thread reports, one at a time and
with no lock held while traits are written; the Stop-all button only stops watches.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets

from ._base import AsyncWait, KlingWidget, WatchOptions, resolve_client, shared_layout, shared_style
from ._client import KlingClient
from ._errors import KlingError
from ._models import Task
from ._poller import Watch, WatchState
from ._view import clock, error_card_html
from ._widget import WIDGET_OPTIONS, TaskStatusWidget, unwatched_error

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


class TaskGallery(KlingWidget, AsyncWait[list[Task]]):
    """Watch many Kling tasks live: a grid of compact cards, a summary line, Stop-all, and `wait`.

    Parameters
    ----------
    tasks : iterable of Task, str or KlingError
        The tasks to watch, as `Task` objects or task ids. A `KlingError` (for example a submission that
        failed, as `generate_many` passes) shows as an error card and counts as failed.
    labels : sequence of str, optional
        A caption per entry (e.g. the prompts), shown on each card; cleaned and escaped.
    client : KlingClient, optional
        The client every card polls with. By default the gallery builds one from ``api_key`` and
        ``base_url`` (which fall back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``) and closes it in
        `close`.
    api_key, base_url : str, optional
        For the gallery's own client; not allowed together with ``client``.
    owns_client : bool
        Close ``client`` when the gallery closes.
    endpoint : str
        The route the tasks were created on (``"text2video"``, ``"image2video"``, …).
    poll_interval, max_poll_interval : float
        Bounds of each task's polling interval. The schedule polls sparsely while a task is queued or
        young and densely around the time Kling usually finishes; a batch cares more about the load it
        puts on the gateway than about the last second of latency, so the ceiling defaults to 15 s
        (a single `TaskStatusWidget` uses 5 s).
    timeout : float or None
        Give up watching a task after this many seconds (it may still finish on the server).
    autostart : bool
        Start polling at once; otherwise call `start`.

    Notes
    -----
    ``len(gallery.wait()) + len(gallery.failed) == len(gallery)`` once every card has ended: `wait`
    returns the tasks that produced a video, and `failed` explains every other card.
    """

    def __init__(
        self,
        tasks: Iterable[Task | str | KlingError],
        *,
        labels: Sequence[str] | None = None,
        client: KlingClient | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        owns_client: bool = False,
        endpoint: str = "text2video",
        poll_interval: float = 1.0,
        max_poll_interval: float = _MAX_POLL_INTERVAL,
        timeout: float | None = _TIMEOUT,
        autostart: bool = True,
    ) -> None:
        self._cards: list[TaskStatusWidget | KlingError] = []  # before anything can fail: close() reads it
        self._all_ended = threading.Event()
        entries = list(tasks)
        captions = list(labels) if labels is not None else [None] * len(entries)
        if len(captions) != len(entries):
            raise ValueError(f"Got {len(captions)} labels for {len(entries)} tasks; pass one label per task.")
        ids = Counter(entry.task_id if isinstance(entry, Task) else entry for entry in entries)
        repeated = sorted(i for i, n in ids.items() if isinstance(i, str) and n > 1)
        if repeated:
            raise ValueError(f"Each task may appear once in a gallery; repeated: {', '.join(repeated)}")
        options = WatchOptions(endpoint, poll_interval, max_poll_interval, timeout)
        column = shared_layout(**_COLUMN)
        super().__init__(client, api_key, base_url, owns_client, layout=column)
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._counts: Counter[str] = Counter()
        self._dirty = self._drawing = False
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
        try:
            for entry, caption in zip(entries, captions, strict=True):
                self._cards.append(
                    entry if isinstance(entry, KlingError) else self._card(entry, caption, options)
                )
        except BaseException:
            self.close()
            raise
        self._counts["failed"] = sum(isinstance(card, KlingError) for card in self._cards)
        self._grid.children = tuple(map(self._card_view, self._cards))
        self.children = (self._header, self._grid)
        self._redraw()
        self.register()  # re-running the cell closes the whole gallery, not only its cards
        if autostart:
            self.start()

    def _card(self, entry: Task | str, caption: str | None, options: WatchOptions) -> TaskStatusWidget:
        """A card: a `TaskStatusWidget` with the caption, no Stop button of its own, not yet started."""
        return TaskStatusWidget(
            entry,
            client=self._client,
            endpoint=options.endpoint,
            poll_interval=options.poll_interval,
            max_poll_interval=options.max_poll_interval,
            timeout=options.timeout,
            autostart=False,
            caption=caption,
            stop_button=False,
            layout=shared_layout(**_CARD),
        )

    def _card_view(self, card: TaskStatusWidget | KlingError) -> Any:
        """What the grid shows for a card: the widget itself, or an error card for a refused task."""
        if isinstance(card, TaskStatusWidget):
            return card
        view = ipywidgets.HTML(error_card_html(card), layout=shared_layout(**_CARD))
        self.own(view)
        return view

    # -- control (any thread) ---------------------------------------------------------------------------

    def start(self) -> TaskGallery:
        """Start watching every task (only needed with ``autostart=False``); a second call does nothing.

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
            try:
                watch = card.start().watch
            except RuntimeError:  # closed from outside before the gallery started it
                with self._lock:
                    self._counts["stopped"] += 1
                continue
            assert watch is not None  # start() made it
            watch.add_done_callback(self._on_card_done)
            card.observe(self._on_card_tick, names="progress")
        self._redraw()
        return self

    def stop(self) -> None:
        """Stop watching every task at once. The tasks keep running on the server."""
        for card in self._widgets():
            card.stop()

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
                f"{running} of {len(self._cards)} tasks are still being watched after waiting "
                f"{timeout:g} s; the gallery keeps watching them. Call wait() again to wait for the rest."
            )
        return self.succeeded

    def _release(self) -> None:
        for card in self._widgets():
            card.close()
        self._all_ended.set()

    # -- results ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cards)

    @property
    def cards(self) -> tuple[TaskStatusWidget | KlingError, ...]:
        """One entry per task, in order: its `TaskStatusWidget`, or the error that prevented watching it."""
        return tuple(self._cards)

    @property
    def tasks(self) -> list[Task | None]:
        """The latest snapshot of each task, in order (None where nothing was fetched or submitted)."""
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

    def static_bundle(self) -> dict[str, str]:
        """The summary and every card as ``text/plain`` and ``text/html`` (cards in a CSS grid)."""
        cards = [
            card.static_bundle()["text/html"] if isinstance(card, TaskStatusWidget) else error_card_html(card)
            for card in self._cards
        ]
        body = "".join(f'<div style="{_STATIC_CARD}">{card}</div>' for card in cards)
        summary = html.escape(self.summary())
        return {
            "text/plain": repr(self),
            "text/html": f'<div><b>{summary}</b></div><div style="{_STATIC_GRID}">{body}</div>',
        }

    # -- the polling side: done callbacks and ticks run on engine threads -------------------------------

    def _widgets(self) -> list[TaskStatusWidget]:
        return [card for card in self._cards if isinstance(card, TaskStatusWidget)]

    def _on_stop_all_click(self, _button: Any) -> None:
        # May run on the main thread or a kernel subshell thread (jupyter-widgets.md §1.3): only stop.
        self.stop()

    def _on_card_done(self, watch: Watch) -> None:
        with self._lock:
            self._counts[_CATEGORIES[watch.state]] += 1
        self._redraw()

    def _on_card_tick(self, _change: Any) -> None:
        self._redraw()

    def _redraw(self) -> None:
        """Redraw the summary; once every card has ended, end the display and release `wait`.

        Whoever finds no redraw running does it, for every request that comes in meanwhile: one writer at
        a time, and no lock held while traits are written.
        """
        with self._lock:
            self._dirty = True
            if self._drawing:
                return
            self._drawing = True
        while True:
            with self._lock:
                if not self._dirty or self._closed:
                    self._drawing = False
                    return
                self._dirty = False
                now = time.monotonic()
                ended = self._started_at is not None and self._running() == 0
                if ended and self._finished_at is None:
                    self._finished_at = now
                text = self._summary_text(now)
            # The values first, the notifications after wait() is released: an observer may call wait().
            with self._summary.hold_trait_notifications(), self._stop_all.hold_trait_notifications():
                self._summary.value = html.escape(text)
                self._stop_all.disabled = ended
                if ended:
                    self._end_display()
                    self._all_ended.set()

    def _running(self) -> int:
        return len(self._cards) - sum(self._counts.values())

    def _summary_text(self, now: float) -> str:
        total = len(self._cards)
        parts = [f"{total} task{'s' if total != 1 else ''}"]
        parts += [f"{self._counts[name]} {name}" for name in _CATEGORIES.values() if self._counts[name]]
        if self._running():
            parts.append(f"{self._running()} running")
        if self._started_at is not None:
            end = self._finished_at if self._finished_at is not None else now
            parts.append(f"{clock(end - self._started_at, 5 if self._finished_at is None else 1)} elapsed")
        return " · ".join(parts)


def _outcome(card: TaskStatusWidget | KlingError) -> Task | KlingError | None:
    """The card's result once it has ended: the successful Task or the error; None while running."""
    if isinstance(card, KlingError):
        return card
    watch = card.watch
    if watch is None or not watch.done():
        return None
    return watch.exception(0) or watch.result(0)


def generate_many(
    prompts: Iterable[str],
    *,
    client: KlingClient | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **params: Any,
) -> TaskGallery:
    """Submit a batch of text-to-video tasks and return a started `TaskGallery` watching them.

    Submissions are sent one after another, each POST once (never retried: a retried POST could create,
    and bill, a second task). A submission the gateway refuses becomes an error card; the batch goes on.
    Every prompt and every gallery option is checked before the first POST; if anything fails after the
    gateway answered, the error carries the first task id and every id is logged at WARNING.

    Parameters
    ----------
    prompts : iterable of str
        One prompt per task (each non-blank; all are checked before anything is sent).
    client, api_key, base_url
        As for `TaskGallery`; the gallery polls with the client that submitted (and closes it when it
        built it).
    **params
        `KlingClient.text2video` options shared by every task (``duration``, ``aspect_ratio``,
        ``model_name``, ``mode``, …) and the gallery options ``poll_interval``, ``max_poll_interval``,
        ``timeout`` and ``autostart``.

    Returns
    -------
    TaskGallery
        Display it (last expression of a cell); ``.wait()`` blocks until every task has ended.

    Raises
    ------
    ValueError
        A prompt is blank or not a string, or an option is out of range (nothing is sent).
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
    WatchOptions(  # checked now: the POSTs below may bill
        "text2video",
        options.get("poll_interval", 1.0),
        options.get("max_poll_interval", _MAX_POLL_INTERVAL),
        options.get("timeout", _TIMEOUT),
    )
    kling, owned = resolve_client(client, api_key, base_url)
    submitted: list[Task | KlingError] = []
    try:
        for prompt in batch:
            try:
                submitted.append(kling.text2video(prompt, **params))
            except KlingError as exc:
                _log.warning("Could not submit a task: %s", exc)
                submitted.append(exc)
        return TaskGallery(submitted, labels=batch, client=kling, owns_client=owned, **options)
    except BaseException as exc:
        if owned:
            kling.close()
        ids = [entry.task_id for entry in submitted if isinstance(entry, Task)]
        if ids:  # they run (and are billed) whatever happens here: say how to find them again
            error = unwatched_error(ids, exc)
            if isinstance(exc, Exception):
                raise error from exc
        raise
