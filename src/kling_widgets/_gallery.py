"""`TaskGallery`: many Kling tasks at once, as a grid of compact cards on the one shared polling engine.

Each card is a `TaskStatusWidget` (or, for a task that could not be submitted, a small error card), so the
cards look and behave like single widgets; the gallery adds a caption per card, a live summary line, a
Stop-all button and a `wait` for the whole batch. Every card polls through ``default_engine()``: a gallery
of 200 tasks runs on the engine's few threads, not on 200.

The summary is written by whichever engine thread delivers a card's update, under the gallery's lock, so
it has one writer at a time (jupyter-widgets.md §1.3); the Stop-all button only stops watches.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets
from IPython.display import display

from ._client import KlingClient
from ._errors import KlingError
from ._models import Task
from ._widget import _REGISTRY, _WIDGET_OPTIONS, TaskStatusWidget, _clock, _close_model, _resolve_client

__all__ = ["TaskGallery", "generate_many"]

_log = logging.getLogger(__name__)

_CARD_WIDTH = "320px"
_CAPTION_CHARS = 90
# Redraw the summary at most this often for elapsed-time ticks (count changes redraw at once): 200 cards
# polled every few seconds would otherwise send dozens of messages a second.
_SUMMARY_REFRESH = 1.0


class TaskGallery(ipywidgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """Watch many Kling tasks live: a grid of compact cards, a summary line, Stop-all, and `wait`.

    Parameters
    ----------
    tasks : iterable of Task, str or KlingError
        The tasks to watch, as `Task` objects or task ids. A `KlingError` (for example a submission that
        failed, as `generate_many` passes) shows as an error card and counts as failed.
    labels : sequence of str, optional
        A caption per entry (e.g. the prompts), shown above each card; HTML-escaped.
    client : KlingClient, optional
        The client every card polls with. By default the gallery builds one from ``api_key`` and
        ``base_url`` (which fall back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``) and closes it in
        `close`.
    api_key, base_url : str, optional
        For the gallery's own client; not allowed together with ``client``.
    endpoint : str
        The endpoint the tasks were created on (``"text2video"`` or ``"image2video"``).
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
        endpoint: str = "text2video",
        poll_interval: float = 1.0,
        max_poll_interval: float = 15.0,
        timeout: float | None = 900.0,
        autostart: bool = True,
    ) -> None:
        # Set first: close() (also run by Widget.__del__) must work on a half-built gallery.
        self._lock = threading.Lock()
        self._closed = False
        self._owned: list[Any] = []
        self._cards: list[TaskStatusWidget | KlingError] = []
        self._handles: list[Any] = []
        self._own_client: KlingClient | None = None

        entries = list(tasks)
        captions = list(labels) if labels is not None else [None] * len(entries)
        if len(captions) != len(entries):
            raise ValueError(f"Got {len(captions)} labels for {len(entries)} tasks; pass one label per task.")
        ids = Counter(entry.task_id if isinstance(entry, Task) else entry for entry in entries)
        duplicates = sorted(i for i, n in ids.items() if isinstance(i, str) and n > 1)
        if duplicates:
            raise ValueError(f"Each task may appear once in a gallery; repeated: {', '.join(duplicates)}")
        kling, owned = _resolve_client(client, api_key, base_url)
        self._own_client = kling if owned else None

        boxes = []
        try:
            for entry, caption in zip(entries, captions, strict=True):
                card: TaskStatusWidget | KlingError
                if isinstance(entry, KlingError):
                    card, body = entry, ipywidgets.HTML(_error_card_html(entry))
                else:
                    card = body = TaskStatusWidget(
                        entry,
                        client=kling,
                        endpoint=endpoint,
                        poll_interval=poll_interval,
                        max_poll_interval=max_poll_interval,
                        timeout=timeout,
                        autostart=False,
                    )
                self._cards.append(card)
                boxes.append(self._card_box(caption, body))
        except BaseException:
            self.close()
            raise

        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._counts = {"done": 0, "failed": 0, "stopped": 0, "running": 0}
        self._drawn_at = 0.0
        self._summary = ipywidgets.HTML()
        self._stop_all = ipywidgets.Button(
            description="Stop all",
            tooltip="Stop watching every task (they keep running on the server)",
            layout=ipywidgets.Layout(width="auto"),
        )
        self._stop_all.on_click(self._on_stop_all_click)
        self._header = ipywidgets.HBox(
            [self._summary, self._stop_all], layout=ipywidgets.Layout(align_items="center", grid_gap="0 12px")
        )
        self._grid = ipywidgets.GridBox(
            boxes,
            layout=ipywidgets.Layout(
                grid_template_columns=f"repeat(auto-fill, minmax({_CARD_WIDTH}, 1fr))", grid_gap="8px"
            ),
        )
        self._owned.extend([self._summary, self._stop_all, self._header, self._grid])
        super().__init__(children=(self._header, self._grid))
        for card in self._cards:
            if isinstance(card, TaskStatusWidget):
                card.observe(self._on_card_change, names=["status", "error"])
                card.observe(self._on_card_tick, names=["progress"])
        self._recount()
        _REGISTRY.track_cell(self)  # re-running the cell closes the whole gallery, not only its cards
        if autostart:
            self.start()

    def _card_box(self, caption: str | None, body: Any) -> Any:
        """A bordered card: the caption (if any) above the task's widget or error message."""
        parts = [body]
        if caption is not None:
            shown = caption if len(caption) <= _CAPTION_CHARS else caption[: _CAPTION_CHARS - 1] + "…"
            title = html.escape(caption, quote=True)
            parts.insert(0, ipywidgets.HTML(f'<div title="{title}"><b>{html.escape(shown)}</b></div>'))
        box = ipywidgets.VBox(
            parts,
            layout=ipywidgets.Layout(border="1px solid var(--jp-border-color2, #e0e0e0)", padding="4px 8px"),
        )
        # Cards close themselves (and their children); the rest is ours to close.
        self._owned.extend([part for part in parts if not isinstance(part, TaskStatusWidget)] + [box])
        return box

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
            card.start()
        self._recount()
        return self

    def stop(self) -> None:
        """Stop watching every task at once. The tasks keep running on the server."""
        for card in self._widgets():
            card.stop()

    def wait(self, timeout: float | None = None) -> list[Task]:
        """Block until every card has ended; never raises for an individual task.

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
        deadline = None if timeout is None else time.monotonic() + timeout
        for card in self._widgets():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                card.wait(left)
            except KlingError:
                pass  # reported by `failed`
            except TimeoutError:
                running = sum(_outcome(c) is None for c in self._cards)
                raise TimeoutError(
                    f"{running} of {len(self._cards)} tasks are still being watched after waiting "
                    f"{timeout:g} s; the gallery keeps watching them. Call wait() again to wait for the rest."
                ) from None
        return self.succeeded

    async def wait_async(self, timeout: float | None = None) -> list[Task]:
        """Awaitable `wait` (runs it in a worker thread, so the kernel's event loop stays free)."""
        return await asyncio.to_thread(self.wait, timeout)

    def close(self) -> None:
        """Stop watching and close every card, this gallery and all their models. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for card in self._widgets():
            card.close()
        for widget in self._owned:
            _close_model(widget)
        if self.comm is not None:  # else __init__ never got as far as opening it
            _close_model(self.layout)
            super().close()
        if self._own_client is not None:
            self._own_client.close()

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
        """The summary line as plain text, e.g. ``50 tasks · 12 done · 1 failed · 37 running · 2:31``."""
        with self._lock:
            return self._summary_text(time.monotonic())

    def __repr__(self) -> str:
        return f"TaskGallery({self.summary()})"

    # -- display and the static fallback ----------------------------------------------------------------

    def _static_html(self) -> str:
        """The ``text/html`` fallback: the summary, then each card's own fallback."""
        parts = [f"<div><b>{html.escape(self.summary())}</b></div>"]
        for card in self._cards:
            if isinstance(card, TaskStatusWidget):
                parts.append(card._static_bundle()["text/html"])
            else:
                parts.append(_error_card_html(card))
        return "\n".join(f'<div style="margin: 4px 0">{part}</div>' for part in parts)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = repr(self)
        data["text/html"] = self._static_html()
        return data

    def _ipython_display_(self) -> None:
        """Display with a display id, so the static fallback can be refreshed when every task has ended."""
        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)  # type: ignore[no-untyped-call]
        if handle is not None:
            with self._lock:
                self._handles.append(handle)

    # -- the polling side: card observers run on engine threads ----------------------------------------

    def _widgets(self) -> list[TaskStatusWidget]:
        return [card for card in self._cards if isinstance(card, TaskStatusWidget)]

    def _on_stop_all_click(self, _button: Any) -> None:
        # May run on the main thread or a kernel subshell thread (jupyter-widgets.md §1.3): only stop.
        self.stop()

    def _on_card_change(self, _change: Any) -> None:
        self._recount()

    def _on_card_tick(self, _change: Any) -> None:
        with self._lock:
            if self._closed or time.monotonic() - self._drawn_at < _SUMMARY_REFRESH:
                return
        self._recount()

    def _recount(self) -> None:
        """Recount the cards by state and redraw the summary; refresh the fallback once all have ended."""
        counts = {"done": 0, "failed": 0, "stopped": 0, "running": 0}
        for card in self._cards:
            counts[_category(card)] += 1
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            all_ended = counts["running"] == 0 and self._started_at is not None
            newly_ended = all_ended and self._finished_at is None
            if newly_ended:
                self._finished_at = now
            self._counts = counts
            self._drawn_at = now
            self._summary.value = html.escape(self._summary_text(now))
            self._stop_all.disabled = all_ended
            handles = list(self._handles) if newly_ended else []
        if handles:
            bundle = self._repr_mimebundle_()
            for handle in handles:
                handle.update(bundle, raw=True)

    def _summary_text(self, now: float) -> str:
        counts = self._counts
        parts = [f"{len(self._cards)} task{'s' if len(self._cards) != 1 else ''}"]
        parts += [
            f"{counts[name]} {name}" for name in ("done", "failed", "stopped", "running") if counts[name]
        ]
        if self._started_at is not None:
            end = self._finished_at if self._finished_at is not None else now
            parts.append(f"{_clock(end - self._started_at)} elapsed")
        return " · ".join(parts)


def _category(card: TaskStatusWidget | KlingError) -> str:
    """``done``, ``failed`` (the task failed or could not be submitted), ``stopped`` or ``running``."""
    if isinstance(card, KlingError):
        return "failed"
    if card.status == "SUCCESS":
        return "done"
    if card.status == "FAILURE":
        return "failed"
    # The widget sets `error` when watching ends without an outcome (fatal error, deadline, stop).
    return "stopped" if card.error else "running"


def _outcome(card: TaskStatusWidget | KlingError) -> Task | KlingError | None:
    """The card's result once it has ended: the successful Task or the error; None while running."""
    if isinstance(card, KlingError):
        return card
    try:
        return card.wait(0)
    except KlingError as exc:
        return exc
    except (TimeoutError, RuntimeError):  # still watching, or never started
        return None


def _error_card_html(error: KlingError) -> str:
    """An error card's body: why the task is not being watched (escaped: messages quote the gateway)."""
    return (
        '<span style="color: var(--jp-error-color1, #d32f2f)">Not submitted: '
        f"{html.escape(str(error))}</span>"
    )


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

    Parameters
    ----------
    prompts : iterable of str
        One prompt per task (each non-blank; all are checked before anything is sent).
    client, api_key, base_url
        As for `TaskGallery`; the gallery polls with the client that submitted.
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
        A prompt is blank or not a string (nothing is sent).
    """
    if isinstance(prompts, str):
        raise TypeError("generate_many() takes a list of prompts; for a single prompt use generate().")
    batch = list(prompts)
    blank = [i for i, prompt in enumerate(batch) if not isinstance(prompt, str) or not prompt.strip()]
    if blank:
        raise ValueError(
            f"Prompts must be non-blank strings; not so at positions {blank} (nothing was sent)."
        )
    options = {name: params.pop(name) for name in _WIDGET_OPTIONS if name in params}
    kling, owned = _resolve_client(client, api_key, base_url)
    submitted: list[Task | KlingError] = []
    try:
        for prompt in batch:
            try:
                submitted.append(kling.text2video(prompt, **params))
            except KlingError as exc:
                _log.warning("Could not submit a task: %s", exc)
                submitted.append(exc)
        gallery = TaskGallery(submitted, labels=batch, client=kling, **options)
    except BaseException:
        ids = [entry.task_id for entry in submitted if isinstance(entry, Task)]
        if ids:  # they run (and are billed) whatever happens here: say how to find them again
            _log.warning("Stopped after submitting %d task(s): %s", len(ids), ", ".join(ids))
        if owned:
            kling.close()
        raise
    if owned:
        gallery._own_client = kling
    return gallery
