"""`TaskStatusWidget`: a compact live view of one Kling task, built from core ipywidgets only (no JavaScript).

One row like a tqdm notebook bar (``Kling · 8422…6785 [bar] status line [Stop]``); when the task ends the
Stop button goes and the status block below the bar shows the final line, then a player and a links line
per video (in VS Code, which cannot play them, a note beside the Open link instead). On SUCCESS the videos
are kept (downloaded, by default into ``./kling-videos``) on a thread of their own, and the final card says
where they went or why they did not. A card is three or four models: the bar (its description is the
label), one HTML block, the Stop button and the row, all on shared layout and style models, so a finished
task adds little to a saved notebook (docs/architecture.md, "Saved notebooks"). What to show comes from
`_view` (pure); this module only applies it. Only the engine's ``on_update`` callback writes widget
values (docs/architecture.md, "Only the polling side writes widget values"), and after the final update
the keeping thread, once; both through `KlingWidget.deliver`. The Stop button only calls ``Watch.stop()``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ipywidgets
from traitlets import Int, Unicode

from ._base import (
    AsyncWait,
    KlingWidget,
    WatchOptions,
    close_model,
    resolve_client,
    shared_layout,
    shared_style,
)
from ._client import KlingClient
from ._errors import KlingError
from ._frontend import Frontend, playback_note
from ._keep import keep_directory, keep_in_background
from ._models import Task, TaskStatus
from ._poller import Update, Watch, WatchState, default_engine
from ._text import clean_text
from ._view import (
    View,
    describe,
    initial_view,
    kept_line,
    label_text,
    live_html,
    seconds_since,
    static_html,
    static_text,
)

__all__ = ["WIDGET_OPTIONS", "TaskStatusWidget", "generate", "keep_folder", "unwatched_error"]

_log = logging.getLogger(__name__)

#: Keyword arguments of `generate` that go to the widget rather than to `KlingClient.text2video`.
WIDGET_OPTIONS = ("poll_interval", "max_poll_interval", "timeout", "autostart", "keep")
_POLL_INTERVAL = 1.0
_MAX_POLL_INTERVAL = 5.0
_TIMEOUT = 900.0

_ROW = {"display": "flex", "flex_flow": "row wrap", "align_items": "center", "grid_gap": "0 8px"}
_BAR = {"flex": "1 1 280px", "min_width": "220px", "max_width": "440px"}
_TEXT_INLINE = {"flex": "0 1 auto"}
_TEXT_BLOCK = {"flex": "1 0 100%"}  # below the bar: a caption above the line, or the players
_BUTTON = {"width": "auto"}


class TaskStatusWidget(KlingWidget, AsyncWait[Task]):
    """Watch one Kling task live: progress bar, status line, Stop button, then the video player.

    Parameters
    ----------
    task_or_id : Task or str
        The task to watch (as returned by `KlingClient.text2video`), or its id.
    client : KlingClient, optional
        The client to poll with. By default the widget builds its own from ``api_key`` and ``base_url``
        (which fall back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``) and closes it in `close`.
    api_key, base_url : str, optional
        For the widget's own client; not allowed together with ``client``. The key stays in the client
        object: it is never a widget trait, never in HTML, a repr or a log line.
    owns_client : bool
        Close ``client`` when the widget closes.
    endpoint : str, optional
        The route to poll (``"text2video"``, ``"omni-video"``, …; `ENDPOINTS`). By default the task's own
        (`Task.endpoint`), and ``"text2video"`` for an id typed by hand:
        ``TaskStatusWidget("8422…", endpoint="omni-video")``.
    poll_interval, max_poll_interval : float
        The shortest and the longest gap between polls. In between, the gap follows the chance that the
        task finishes soon: sparse while it is queued or young, about every 2.6 s around the time Kling
        usually finishes (1-5 minutes), with ±20 % jitter.
    timeout : float or None
        Give up watching after this many seconds (the task may still finish on the server).
    autostart : bool
        Start polling at once; otherwise call `start`.
    caption : str, optional
        A heading shown above the status line (the gallery shows each prompt); cleaned and escaped.
    stop_button : bool
        Show a Stop button while watching (a gallery has one Stop-all button instead).
    layout : ipywidgets.Layout, optional
        The row's layout; by default one shared by every widget (a wrapping flex row).
    keep : bool or path-like
        On SUCCESS, download the videos (``{task_id}.mp4`` and a ``{task_id}.json`` sidecar;
        `kling_widgets.keep`) on a thread of their own, so polling never waits for them. True: into
        ``$KLING_WIDGETS_KEEP``, else ``./kling-videos`` (in Jupyter the notebook's folder), unless
        ``KLING_WIDGETS_KEEP=0``; a path: into that folder; False: keep nothing. The final card says where
        the files went, or why they could not be kept.
    frontend : Frontend, optional
        The front-end to draw for (`kling_widgets._frontend`); detected by default, on the cell's thread.
    text_block : ipywidgets.HTML, optional
        The HTML model to use as the text block (a gallery's waiting card, reused so that a card that
        arrives later costs no extra model in a saved notebook); the widget owns it from then on.

    Attributes
    ----------
    task : Task or None
        The latest snapshot the gateway returned.

    Notes
    -----
    ``task_id``, ``status``, ``progress``, ``video_url`` and ``error`` are traitlets, so ``w.observe(...)``
    works. They are not synced to the front end: the children already show them, and synced copies would
    only add messages and saved notebook state. Observers run on an engine thread, with no lock held;
    on the final update `wait` has already returned by the time they run, so they may call it. Shown text
    is capped and cleaned (`kling_widgets._text.clean_text`); ``task.raw`` keeps the full answer.
    """

    task_id = Unicode("", help="The Kling task id.")
    status = Unicode(
        "", help="The task's status (a TaskStatus value) as last reported; '' before any answer."
    )
    progress = Int(0, help="What the bar shows, 0–100; an elapsed-time estimate while IN_PROGRESS.")
    video_url = Unicode("", help="The first playable (http/https) video URL after SUCCESS, else ''.")
    error = Unicode("", help="Why watching ended without a video (reason, error, timeout or stop), else ''.")

    def __init__(
        self,
        task_or_id: Task | str,
        *,
        client: KlingClient | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        owns_client: bool = False,
        endpoint: str | None = None,
        poll_interval: float = _POLL_INTERVAL,
        max_poll_interval: float = _MAX_POLL_INTERVAL,
        timeout: float | None = _TIMEOUT,
        autostart: bool = True,
        caption: str | None = None,
        stop_button: bool = True,
        layout: Any = None,
        keep: bool | str | os.PathLike[str] = True,
        frontend: Frontend | None = None,
        text_block: ipywidgets.HTML | None = None,
    ) -> None:
        self._watch: Watch | None = None  # before anything can fail: close() reads them
        # What must end before wait() returns: the final writes ("final"), and keeping ("kept") if it runs.
        # Then _shown is set and the done callbacks are None.
        self._unsettled = {"final"}
        self._shown = threading.Event()
        self._done_callbacks: list[Callable[[TaskStatusWidget], None]] | None = []
        self._final_out = False  # the final writes ran (or are running): keeping shows its line itself
        self._kept: tuple[Path, ...] = ()
        task = task_or_id if isinstance(task_or_id, Task) else None
        task_id = task.task_id if task is not None else task_or_id
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError(f"Expected a Task or a non-empty task id string, got {task_or_id!r}.")
        self._options = WatchOptions(endpoint, poll_interval, max_poll_interval, timeout)
        self._endpoint = self._options.endpoint_of(task)
        self._keep_to = keep_folder(keep)
        row = layout if layout is not None else shared_layout(**_ROW)
        super().__init__(client, api_key, base_url, owns_client, frontend, layout=row)
        try:
            self._build(task, task_id, caption, stop_button, text_block)
            self.register(task_id)
            if autostart:
                self.start()
        except BaseException:
            self.close()  # else it stays open (ipywidgets holds every open widget) and is saved
            raise

    def _build(
        self,
        task: Task | None,
        task_id: str,
        caption: str | None,
        stop_button: bool,
        text_block: ipywidgets.HTML | None,
    ) -> None:
        """Make the card's parts (the comm is open by now: `__init__` closes the widget if this fails)."""
        self._playback_note = playback_note(self.frontend)
        self._caption = caption
        self._generating_since: float | None = None  # watch-elapsed seconds when IN_PROGRESS was first seen
        self._view = initial_view(task)
        self.task: Task | None = task
        self._bar = ipywidgets.IntProgress(
            value=self._view.progress,
            min=0,
            max=100,
            bar_style=self._view.bar_style,
            description=label_text(task_id),
            tooltip=clean_text(task_id, 300),
            layout=shared_layout(**_BAR),
            style=shared_style(ipywidgets.widgets.widget_int.ProgressStyle, description_width="initial"),
        )
        text = {
            "value": self._live_html(self._view, datetime.now(timezone.utc)),
            "layout": shared_layout(**(_TEXT_BLOCK if caption is not None else _TEXT_INLINE)),
            "style": shared_style(ipywidgets.widgets.widget_string.HTMLStyle),
        }
        if text_block is None:  # layout and style given when made: a default one would be one more model
            self._text = ipywidgets.HTML(**text)
        else:
            self._text = text_block
            with text_block.hold_sync():
                for name, value in text.items():
                    setattr(text_block, name, value)
        parts = [self._bar, self._text]
        self._stop_button: ipywidgets.Button | None = None
        if stop_button:
            self._stop_button = ipywidgets.Button(
                description="Stop",
                tooltip="Stop watching (the task keeps running on the server)",
                layout=shared_layout(**_BUTTON),
                style=shared_style(ipywidgets.widgets.widget_button.ButtonStyle),
            )
            self._stop_button.on_click(self._on_stop_click)
            parts.append(self._stop_button)
        self.own(*parts)
        self.children = tuple(parts)
        self.task_id = task_id
        self.status = task.status.value if task is not None else ""
        self.progress = self._view.progress

    # -- control (any thread) ---------------------------------------------------------------------------

    @property
    def watch(self) -> Watch | None:
        """The engine's `Watch` of this task (its outcome: ``done()``, ``result()``, ``state``), or None
        before `start`."""
        return self._watch

    def start(self) -> TaskStatusWidget:
        """Start polling (only needed with ``autostart=False``); a second call does nothing.

        Returns
        -------
        TaskStatusWidget
            ``self``, so ``TaskStatusWidget(task, autostart=False).start()`` reads well.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("This widget is closed; create a new one to watch the task again.")
            if self._watch is None:
                client, task_id, options, endpoint = self._client, self.task_id, self._options, self._endpoint
                self._watch = default_engine().watch(
                    lambda: client.get_task(task_id, endpoint, retry=False),
                    task_id=task_id,
                    on_update=self._on_update,
                    poll_interval=options.poll_interval,
                    max_poll_interval=options.max_poll_interval,
                    timeout=options.timeout,
                    gateway=(client.base_url, client.key_id),  # a 429 pauses only this gateway and key
                )
        return self

    def stop(self) -> None:
        """Stop watching at once. The task keeps running on the server; watch it again with its id."""
        watch = self._watch
        if watch is not None:
            watch.stop()

    def wait(self, timeout: float | None = None) -> Task:
        """Block until watching ends, the widget shows its final state and keeping the videos is over.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; by default until the watch ends (which its own ``timeout`` bounds).

        Returns
        -------
        Task
            The task's final snapshot, once it has succeeded.

        Raises
        ------
        TaskFailedError
            The task failed; ``.task.fail_reason`` holds Kling's reason.
        TaskTimeoutError
            The widget's ``timeout`` passed (the task may still finish).
        KlingError
            The error that stopped polling (for example a rejected key), or "stopped" after `stop`.
        TimeoutError
            This call's own ``timeout`` passed; the widget keeps watching.
        """
        watch = self._watch
        if watch is None:
            raise RuntimeError(
                "Not watching yet: call start() first (the widget was made with autostart=False)."
            )
        if not self._shown.wait(timeout):
            raise TimeoutError(
                f"Task {self.task_id} is still being watched after waiting {timeout:g} s; the widget keeps "
                f"watching it. Call wait() again, or wait(timeout=None) to wait until it ends."
            )
        return watch.result()

    def done(self) -> bool:
        """True once watching has ended and keeping the videos is over (`wait` then returns at once)."""
        return self._shown.is_set()

    def add_done_callback(self, fn: Callable[[TaskStatusWidget], None]) -> None:
        """Call ``fn(widget)`` once, when `done` becomes true (at once if it is).

        It runs on the thread that ends the work (an engine thread, the keeping thread, or the one that
        closes the widget), with no lock held; its exceptions are logged, not raised.
        """
        with self._lock:
            if self._done_callbacks is not None:
                self._done_callbacks.append(fn)
                return
        _call(fn, self)

    @property
    def kept(self) -> tuple[Path, ...]:
        """The video files kept for this task (absolute paths), once keeping is over; else empty."""
        return self._kept

    def _release(self) -> None:
        if self._watch is not None:
            self._watch.stop()  # before releasing wait(): result() needs a final watch
        with self._lock:
            parts = tuple(self._unsettled)
        self._finish(*parts)

    def _finish(self, *parts: str) -> None:
        """Mark parts of the end as over ("final": the final writes; "kept": keeping). Once none is left,
        release `wait` and run the done callbacks, once."""
        with self._lock:
            self._unsettled.difference_update(parts)
            if self._unsettled or self._done_callbacks is None:
                return
            callbacks, self._done_callbacks = self._done_callbacks, None
        self._shown.set()
        for fn in callbacks:
            _call(fn, self)

    def __repr__(self) -> str:
        return f"TaskStatusWidget(task_id={self.task_id!r}, status={self.status!r}, progress={self.progress})"

    def static_bundle(self) -> dict[str, str]:
        """The current state as ``text/plain`` and ``text/html`` (a ``<video>`` tag per player)."""
        view, now = self._view, datetime.now(timezone.utc)
        return {
            "text/plain": static_text(self.task_id, view),
            "text/html": static_html(self.task_id, view, now, self._caption, self._playback_note),
        }

    def _live_html(self, view: View, now: datetime) -> str:
        return live_html(view, now, self._caption, self._playback_note)

    # -- the polling side: the only writer of widget values ---------------------------------------------

    def _on_stop_click(self, _button: Any) -> None:
        # May run on the main thread or a kernel subshell thread: only stop (docs/architecture.md,
        # "Threading rules").
        self.stop()

    def _on_update(self, update: Update) -> None:
        now = datetime.now(timezone.utc)
        with self._lock:  # computing only: no trait is written under the lock
            if self._closed:
                return
            task = update.task or self.task
            view = describe(
                update,
                task,
                previous=self._view,
                generating_for=self._generating_for(update, task, now),
                now=now,
            )
            self._view, self.task = view, task
            # Keeping downloads videos; a task of only images or sounds has nothing to keep.
            succeeded = update.state is WatchState.SUCCESS and task is not None and bool(task.videos)
            keep_to = self._keep_to if succeeded else None
            if keep_to is not None:
                self._unsettled.add("kept")
        if keep_to is not None:
            assert task is not None  # checked above
            # Started first: an observer of the final values may wait() for the files.
            keep_in_background(task, keep_to, self._client, self._on_kept)
        self.deliver(lambda: self._apply(view, task, now))
        if view.final:  # here too: in Colab the writes wait for the main thread, and wait() must not
            self._finish("final")

    def _apply(self, view: View, task: Task | None, now: datetime) -> None:
        """Write a view into the children and the traits (the polling side, through `deliver`)."""
        if view.final:
            with self._lock:  # from now on the keeping thread writes what it has itself
                self._final_out = True
                view = self._view  # with the kept line, if keeping was quicker
        self._draw(view, now)
        if view.final:
            _log.debug("task %s: %s", self.task_id, view.line)
            self._end_display()
        # The values first, the observers after wait() is released: an observer may call wait().
        with self.hold_trait_notifications():
            self.status = task.status.value if task is not None else ""
            self.progress = view.progress
            self.video_url = view.videos[0].url if view.videos else ""
            self.error = view.error
            if view.final:
                self._finish("final")

    def _on_kept(self, paths: list[Path], error: BaseException | None) -> None:
        """Keeping is over (on the keeping thread): say where the files went, or why they did not."""
        if error is not None:
            _log.info("task %s: videos not kept: %s", self.task_id, error)
        line = kept_line([_shown_path(path) for path in paths], error)
        with self._lock:
            self._kept = tuple(paths)
            self._view = view = replace(self._view, kept=line)
            show = self._final_out and not self._closed  # else the final writes will show it
        if show:
            self.deliver(lambda: self._show_kept(view))
        self._finish("kept")

    def _show_kept(self, view: View) -> None:
        self._text.value = self._live_html(view, datetime.now(timezone.utc))
        self._end_display()  # the static fallback says it too

    def _generating_for(self, update: Update, task: Task | None, now: datetime) -> float:
        """Seconds the task has been generating: seen by us, or since the gateway's start_time if longer."""
        if task is None or task.status is not TaskStatus.IN_PROGRESS:
            return 0.0
        if self._generating_since is None:
            self._generating_since = update.elapsed
        return max(update.elapsed - self._generating_since, seconds_since(task.start_time, now) or 0.0)

    def _draw(self, view: View, now: datetime) -> None:
        """Apply a view to the children; traitlets sends nothing for a value that did not change."""
        with self._bar.hold_sync():
            self._bar.value = view.progress
            self._bar.bar_style = view.bar_style
        self._text.value = self._live_html(view, now)
        if view.final:  # nothing left to stop: a finished card has fewer parts
            self._text.layout = shared_layout(**_TEXT_BLOCK)
            if self._stop_button is not None:
                self.children = (self._bar, self._text)
                close_model(self._stop_button)


def keep_folder(keep: bool | str | os.PathLike[str]) -> Path | None:
    """The absolute folder a widget keeps its videos in, or None to keep nothing (``keep=`` of a widget).

    Raises
    ------
    TypeError
        ``keep`` is neither a bool nor a path.
    """
    if keep is True:
        folder = keep_directory()  # None when KLING_WIDGETS_KEEP=0
    elif keep is False:
        folder = None
    elif isinstance(keep, (str, os.PathLike)):
        folder = Path(keep).expanduser()
    else:
        raise TypeError(f"keep must be True, False or a folder, not {keep!r}")
    return folder.absolute() if folder is not None else None


def _shown_path(path: Path) -> str:
    """A kept file as the card shows it: relative to the working folder when inside it (the notebook's)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _call(fn: Callable[[TaskStatusWidget], None], widget: TaskStatusWidget) -> None:
    try:
        fn(widget)
    except Exception:
        _log.exception("A done callback of the widget for task %s failed", widget.task_id)


def unwatched_error(task_ids: list[str], exc: BaseException) -> KlingError:
    """The error for tasks the gateway created (and may bill) that could not be watched; logged at WARNING."""
    listed = ", ".join(task_ids)
    _log.warning("Submitted task(s) %s, but could not watch them: %s", listed, exc)
    return KlingError(
        f"Submitted task(s) {listed} (they run, and may be billed), but could not watch them: {exc}. "
        f"Watch them again with their ids.",
        task_id=task_ids[0],
    )


def generate(
    prompt: str,
    *,
    client: KlingClient | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **params: Any,
) -> TaskStatusWidget:
    """Submit a text-to-video task and return a started `TaskStatusWidget` watching it.

    Every widget option is checked before the POST (which may bill); if anything fails after the gateway
    answered, the error carries the task id (``KlingError.task_id``) and is logged at WARNING.

    Parameters
    ----------
    prompt : str
        What the video should show.
    client, api_key, base_url
        As for `TaskStatusWidget`; the widget polls with the same client that submitted (and closes it
        when it built it).
    **params
        `KlingClient.text2video` options (``duration``, ``aspect_ratio``, ``model_name``, ``mode``,
        ``negative_prompt``, …) and the widget options ``poll_interval``, ``max_poll_interval``,
        ``timeout``, ``autostart`` and ``keep``.

    Returns
    -------
    TaskStatusWidget
        Display it (last expression of a cell) to watch the task; ``.wait()`` blocks until it ends.
    """
    options = {name: params.pop(name) for name in WIDGET_OPTIONS if name in params}
    WatchOptions(  # checked now: the POST below may bill
        "text2video",
        options.get("poll_interval", _POLL_INTERVAL),
        options.get("max_poll_interval", _MAX_POLL_INTERVAL),
        options.get("timeout", _TIMEOUT),
    )
    keep_folder(options.get("keep", True))
    kling, owned = resolve_client(client, api_key, base_url)
    try:
        task = kling.text2video(prompt, **params)
    except BaseException:
        if owned:
            kling.close()
        raise
    try:
        return TaskStatusWidget(task, client=kling, owns_client=owned, **options)
    except Exception as exc:
        if owned:
            kling.close()
        raise unwatched_error([task.task_id], exc) from exc
