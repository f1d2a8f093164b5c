"""`TaskStatusWidget`: a compact live view of one Kling task, built from core ipywidgets only (no JavaScript).

One row like a tqdm notebook bar (``Kling · 8422…6785 [bar] status line [Stop]``), then, on SUCCESS, an
inline player and a links line per video. Rendering is split in two: pure functions turn a poller `Update`
into a `_View` (text, bar value and style, playable videos), and the widget applies that view to its
children. Only the engine's ``on_update`` callback writes widget values (jupyter-widgets.md §0, §1.3); the
Stop button only calls ``Watch.stop()``. Every server string is ``html.escape``d at the point it becomes HTML,
and a video link is embedded only when it is http(s).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import math
import threading
import weakref
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import ipywidgets
from IPython import get_ipython
from IPython.display import display
from traitlets import Int, Unicode

from ._client import KlingClient
from ._errors import KlingError, RateLimitError, TaskTimeoutError, TransportError
from ._models import Task, TaskStatus, Video
from ._poller import Update, Watch, WatchState, default_engine

__all__ = ["TaskStatusWidget", "estimate_progress", "generate"]

_log = logging.getLogger(__name__)

# The gateway's progress for Kling is fixed steps (0/10/20/30/100, gateway-api.md §6.4): it shows 30 for the
# whole generation. While IN_PROGRESS the bar follows an elapsed-time curve instead, from 30 toward 95 with a
# 3-minute time constant (Kling takes about 1–5 minutes), so it moves, slows down, and never claims 100.
_ESTIMATE_FLOOR = 30
_ESTIMATE_CEILING = 95
_ESTIMATE_TIME_CONSTANT = 180.0
_TYPICAL_SECONDS = 180.0  # "about N min left" counts down toward this...
_LONG_SECONDS = 300.0  # ...and past this the line says "taking longer than usual"
# Clock readings from the gateway further away than this are treated as skew and ignored.
_PLAUSIBLE_SECONDS = 86_400.0

_VIDEO_WIDTH = "480"
# Widget HTML inherits plain text colour in JupyterLab; make links look like links (theme-aware).
_LINK_STYLE = "color: var(--jp-content-link-color, #1976d2); text-decoration: underline"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WIDGET_OPTIONS = ("poll_interval", "max_poll_interval", "timeout", "autostart")


def estimate_progress(seconds_generating: float) -> int:
    """Estimate the bar value (30–95) for a task that has been generating for ``seconds_generating`` seconds.

    Monotonic non-decreasing in its argument and always below 100: only SUCCESS shows 100.
    """
    t = seconds_generating if seconds_generating > 0 else 0.0  # also maps NaN to 0
    share = 1.0 - math.exp(-t / _ESTIMATE_TIME_CONSTANT)
    return _ESTIMATE_FLOOR + int((_ESTIMATE_CEILING - _ESTIMATE_FLOOR) * share)


def _time_left(seconds_generating: float) -> str:
    """A rough, honest remaining-time phrase for the status line."""
    if seconds_generating >= _LONG_SECONDS:
        return "taking longer than usual"
    left = max(_TYPICAL_SECONDS - max(seconds_generating, 0.0), 60.0)
    return f"about {math.ceil(left / 60)} min left"


def _clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration in seconds."""
    whole = int(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _short_id(task_id: str) -> str:
    """``8422…6785`` for a long id, the id itself when it is short."""
    return task_id if len(task_id) <= 13 else f"{task_id[:4]}…{task_id[-4:]}"


def _is_embeddable(url: str) -> bool:
    """True for an absolute http(s) URL with no whitespace or control characters (browsers strip those)."""
    if not url or any(ch <= " " or ch == "\x7f" for ch in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _scheme(url: str) -> str:
    """What a refused link starts with, for the message (escaped later like every server string)."""
    head, colon, _ = url.partition(":")
    return f"{head[:24]}:" if colon else "a link without a scheme"


def _seconds_since(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from a gateway timestamp to ``now``; None when unknown or implausible (clock skew)."""
    if moment is None:
        return None
    seconds = (now - moment).total_seconds()
    return seconds if 0 <= seconds < _PLAUSIBLE_SECONDS else None


def _sentence(text: str) -> str:
    """Lower-case a leading capital so a message reads on after "Stopped: " ("The API…" → "the API…")."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _retry_line(error: KlingError | None, retry_in: float | None) -> str:
    """The status line while the poller backs off after a transient error."""
    status = error.status_code if error is not None else None
    if isinstance(error, RateLimitError):
        cause = "Gateway busy (429)"
    elif status is not None and status >= 500:
        cause = f"Gateway error ({status})"
    elif status is not None:  # an answer that was not the JSON it should be (empty, truncated)
        cause = "Unreadable answer from the gateway"
    elif isinstance(error, TransportError):
        cause = "Network trouble"
    else:
        cause = "Temporary trouble"
    seconds = round(retry_in) if retry_in is not None and math.isfinite(retry_in) else 0
    return f"{cause} — retrying in {seconds} s" if seconds >= 1 else f"{cause} — retrying…"


def _expiry(video: Video, now: datetime) -> str | None:
    """``link expires 29 Dec 2026`` from the signed URL's ``Expires`` parameter, if it has one."""
    expires = video.expires_at
    if expires is None:
        return None
    verb = "expired" if expires <= now else "expires"
    return f"link {verb} {expires.day} {_MONTHS[expires.month - 1]} {expires.year}"


def _links_html(video: Video, now: datetime) -> str:
    """``5.1 s · Open in new tab · Download · link expires 29 Dec 2026``; the URL must be embeddable."""
    href = html.escape(video.url, quote=True)
    parts = []
    if video.duration is not None and math.isfinite(video.duration):
        parts.append(f"{video.duration:g} s")
    # target=_blank on Download too: browsers ignore `download` for cross-origin links and would otherwise
    # navigate the notebook tab away.
    link = f'href="{href}" target="_blank" rel="noopener noreferrer" style="{_LINK_STYLE}"'
    parts.append(f"<a {link}>Open in new tab</a>")
    parts.append(f"<a {link} download>Download</a>")
    expiry = _expiry(video, now)
    if expiry:
        parts.append(expiry)
    return " · ".join(parts)


def _blocked_text(schemes: tuple[str, ...]) -> str:
    """Why a returned video is not shown."""
    listed = ", ".join(schemes)
    return f"Not shown: the gateway's video link is not http(s) ({listed}), so it was not embedded."


@dataclass(frozen=True)
class _View:
    """Everything the widget shows, as plain values: computed by `_describe`, applied by the widget."""

    line: str  # the status line, plain text; escaped where it becomes HTML
    progress: int = 0
    bar_style: str = "info"
    error: str = ""
    videos: tuple[Video, ...] = ()  # http(s) links only
    blocked: tuple[str, ...] = ()  # schemes of the links that were refused
    final: bool = False


def _initial_view(task: Task | None) -> _View:
    """What shows before the first poll answers."""
    if task is not None and task.status.is_queued:
        return _View(line=f"Queued · {_clock(0)}", progress=min(task.progress, 99))
    return _View(line="Checking the task…")


def _describe(
    update: Update, task: Task | None, *, previous: _View, generating_for: float, now: datetime
) -> _View:
    """Turn one poller update into what the widget should show (the table in DESIGN.md)."""
    state = update.state
    if state is WatchState.RETRYING:  # transient: the bar stays as it was
        return replace(previous, line=_retry_line(update.error, update.retry_in))
    if state is WatchState.ERROR:
        message = str(update.error) if update.error is not None else "polling stopped"
        return replace(
            previous, line=f"Stopped: {_sentence(message)}", bar_style="danger", error=message, final=True
        )
    if state is WatchState.TIMEOUT:
        limit = update.error.timeout if isinstance(update.error, TaskTimeoutError) else update.elapsed
        line = f"Gave up after {_clock(limit)} — the task may still finish; watch it again with its id"
        message = str(update.error) if update.error is not None else line
        return replace(previous, line=line, bar_style="warning", error=message, final=True)
    if state is WatchState.STOPPED:
        line = f"Stopped watching at {_clock(update.elapsed)} — the task keeps running on the server"
        return replace(previous, line=line, bar_style="warning", error=line, final=True)
    if task is None:
        return previous
    age = max(update.elapsed, _seconds_since(task.submit_time, now) or 0.0)
    if state is WatchState.SUCCESS:
        took = age
        if task.submit_time is not None and task.finish_time is not None:
            span = (task.finish_time - task.submit_time).total_seconds()
            took = span if 0 <= span < _PLAUSIBLE_SECONDS else age
        videos = tuple(video for video in task.videos if _is_embeddable(video.url))
        blocked = tuple(_scheme(video.url) for video in task.videos if not _is_embeddable(video.url))
        line = (
            f"Done in {_clock(took)}" if task.videos else f"Done in {_clock(took)}, but without a video link"
        )
        return _View(line=line, progress=100, bar_style="success", videos=videos, blocked=blocked, final=True)
    if state is WatchState.FAILURE:
        reason = task.fail_reason or "the gateway gave no reason"
        # The bar stays where the task got to: a full red bar would read as "finished".
        return _View(
            line=f"Failed: {reason}", progress=previous.progress, bar_style="danger", error=reason, final=True
        )
    if task.status is TaskStatus.IN_PROGRESS:
        estimate = max(estimate_progress(generating_for), task.progress)
        line = f"Generating · {_clock(age)} elapsed · {_time_left(generating_for)} (estimate)"
    else:
        estimate = task.progress
        line = f"{'Queued' if task.status.is_queued else 'Waiting'} · {_clock(age)}"
    return _View(line=line, progress=max(previous.progress, min(estimate, 99)))


def _label_html(task_id: str) -> str:
    """``Kling · 8422…6785``, the full id in the title attribute."""
    return (
        f'<span title="{html.escape(task_id, quote=True)}">Kling · {html.escape(_short_id(task_id))}</span>'
    )


def _static_html(task_id: str, view: _View, now: datetime) -> str:
    """The ``text/html`` fallback: the same state as the widget, as plain HTML with a ``<video>`` tag."""
    shown = f"{view.progress}% · {view.line}" if not view.final else view.line
    parts = [f"<div>{_label_html(task_id)} · {html.escape(shown)}</div>"]
    for video in view.videos:
        src = html.escape(video.url, quote=True)
        parts.append(f'<video src="{src}" controls width="{_VIDEO_WIDTH}"></video>')
        parts.append(f"<div>{_links_html(video, now)}</div>")
    if view.blocked:
        parts.append(f"<div>{html.escape(_blocked_text(view.blocked))}</div>")
    return "\n".join(parts)


def _static_text(task_id: str, view: _View) -> str:
    """The ``text/plain`` fallback."""
    lines = [f"Kling task {task_id}: {view.line}"]
    lines.extend(video.url for video in view.videos)
    if view.blocked:
        lines.append(_blocked_text(view.blocked))
    return "\n".join(lines)


def _close_model(widget: Any) -> None:
    """Close a widget and its layout and style models (`Widget.close` closes neither; ipywidgets#2308)."""
    for model in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(model, ipywidgets.Widget) and model.comm is not None:
            model.close()


def _resolve_client(
    client: KlingClient | None, api_key: str | None, base_url: str | None
) -> tuple[KlingClient, bool]:
    """The client to use, and whether we built it (and so must close it)."""
    if client is None:
        return KlingClient(api_key, base_url=base_url), True
    if api_key is not None or base_url is not None:
        raise ValueError("Pass either client= or api_key=/base_url=, not both: the client already has them.")
    return client, False


class _Registry:
    """Live widgets by task id and by the notebook cell that made them.

    A new widget for the same task closes the previous one, and re-running a cell closes the widgets that
    cell made before (IPython's ``pre_run_cell`` carries JupyterLab's and VS Code's cell id;
    jupyter-widgets.md §4), so stale watchers do not pile up or get saved with the notebook.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_task: weakref.WeakValueDictionary[str, TaskStatusWidget] = weakref.WeakValueDictionary()
        self._by_cell: dict[str, list[weakref.ref[ipywidgets.Widget]]] = {}
        self._shell: object = None

    def adopt(self, widget: TaskStatusWidget) -> None:
        """Register a new widget; close the one it replaces."""
        with self._lock:
            previous = self._by_task.get(widget.task_id)
            self._by_task[widget.task_id] = widget
        self.track_cell(widget)
        if previous is not None and previous is not widget:
            previous.close()

    def track_cell(self, widget: ipywidgets.Widget) -> None:
        """Close ``widget`` when the notebook cell that made it runs again (also used by the gallery)."""
        shell = get_ipython()
        if shell is not None and shell is not self._shell:
            self._shell = shell
            shell.events.register("pre_run_cell", self._pre_run_cell)
        # The running cell's id, as IPython hands it to the displayhook (None outside a notebook cell).
        cell = getattr(getattr(getattr(shell, "displayhook", None), "exec_result", None), "info", None)
        cell_id = getattr(cell, "cell_id", None)
        if isinstance(cell_id, str) and cell_id:
            with self._lock:
                self._by_cell.setdefault(cell_id, []).append(weakref.ref(widget))

    def forget(self, widget: TaskStatusWidget) -> None:
        """Drop a closed widget from the task index."""
        with self._lock:
            if self._by_task.get(widget.task_id) is widget:
                del self._by_task[widget.task_id]

    def _pre_run_cell(self, info: Any) -> None:
        cell_id = getattr(info, "cell_id", None)
        with self._lock:
            stale = self._by_cell.pop(cell_id, []) if cell_id else []
        for ref in stale:
            widget = ref()
            if widget is not None:
                widget.close()


_REGISTRY = _Registry()


class TaskStatusWidget(ipywidgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """Watch one Kling task live: progress bar, status line, Stop button, then the video player.

    Parameters
    ----------
    task_or_id : Task or str
        The task to watch (as returned by `KlingClient.text2video`), or its id.
    client : KlingClient, optional
        The client to poll with. By default the widget builds its own from ``api_key`` and ``base_url``
        (which fall back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``).
    api_key, base_url : str, optional
        For the widget's own client; not allowed together with ``client``. The key stays in the client
        object: it is never a widget trait, never in HTML, a repr or a log line.
    endpoint : str
        ``"text2video"`` or ``"image2video"``, the path the task was created on.
    poll_interval, max_poll_interval : float
        The shortest and the longest gap between polls. In between, the gap follows the chance that the
        task finishes soon: sparse while it is queued or young, about every 2.6 s around the time Kling
        usually finishes (1-5 minutes), with ±20 % jitter.
    timeout : float or None
        Give up watching after this many seconds (the task may still finish on the server).
    autostart : bool
        Start polling at once; otherwise call `start`.

    Attributes
    ----------
    task : Task or None
        The latest snapshot the gateway returned.

    Notes
    -----
    ``task_id``, ``status``, ``progress``, ``video_url`` and ``error`` are traitlets, so ``w.observe(...)``
    works. They are not synced to the front end: the children already show them, and synced copies would
    only add messages and saved notebook state. Observers run on the polling thread.
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
        endpoint: str = "text2video",
        poll_interval: float = 1.0,
        max_poll_interval: float = 5.0,
        timeout: float | None = 900.0,
        autostart: bool = True,
    ) -> None:
        # Set first: close() (also run by Widget.__del__) must work on a half-built widget.
        self._lock = threading.RLock()
        self._closed = False
        self._done = threading.Event()
        self._watch: Watch | None = None
        self._owned: list[Any] = []
        self._handles: list[Any] = []
        self._own_client: KlingClient | None = None

        task = task_or_id if isinstance(task_or_id, Task) else None
        task_id = task.task_id if task is not None else task_or_id
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError(f"Expected a Task or a non-empty task id string, got {task_or_id!r}.")
        self._client, owned = _resolve_client(client, api_key, base_url)
        self._own_client = self._client if owned else None
        self._endpoint = endpoint
        self._intervals = (poll_interval, max_poll_interval)
        self._timeout = timeout
        self._generating_since: float | None = None  # watch-elapsed seconds when IN_PROGRESS was first seen
        self._view = _initial_view(task)
        self.task: Task | None = task

        Layout = ipywidgets.Layout
        self._label = ipywidgets.HTML(_label_html(task_id))
        self._bar = ipywidgets.IntProgress(
            value=self._view.progress,
            min=0,
            max=100,
            bar_style=self._view.bar_style,
            layout=Layout(flex="1 1 160px", min_width="120px", max_width="320px"),
        )
        self._line = ipywidgets.HTML(html.escape(self._view.line))
        self._stop_button = ipywidgets.Button(
            description="Stop",
            tooltip="Stop watching (the task keeps running on the server)",
            layout=Layout(width="auto"),
        )
        self._stop_button.on_click(self._on_stop_click)
        self._row = ipywidgets.HBox(
            [self._label, self._bar, self._line, self._stop_button],
            layout=Layout(align_items="center", flex_flow="row wrap", grid_gap="0 8px"),
        )
        self._owned = [self._label, self._bar, self._line, self._stop_button, self._row]
        super().__init__(children=(self._row,))
        self.task_id = task_id
        self.status = task.status.value if task is not None else ""
        self.progress = self._view.progress
        _REGISTRY.adopt(self)
        if autostart:
            self.start()

    # -- control (any thread) ---------------------------------------------------------------------------

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
                client, task_id, endpoint = self._client, self.task_id, self._endpoint
                poll_interval, max_poll_interval = self._intervals
                self._watch = default_engine().watch(
                    lambda: client.get_task(task_id, endpoint, retry=False),
                    task_id=task_id,
                    on_update=self._on_update,
                    poll_interval=poll_interval,
                    max_poll_interval=max_poll_interval,
                    timeout=self._timeout,
                )
        return self

    def stop(self) -> None:
        """Stop watching at once. The task keeps running on the server; watch it again with its id."""
        watch = self._watch
        if watch is not None:
            watch.stop()

    def wait(self, timeout: float | None = None) -> Task:
        """Block until watching ends and the widget shows its final state.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; by default until the watch ends (which its own ``timeout`` bounds).

        Returns
        -------
        Task
            The final snapshot, on SUCCESS.

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
        if not self._done.wait(timeout):
            raise TimeoutError(
                f"Task {self.task_id} is still being watched after waiting {timeout:g} s; the widget keeps "
                f"watching it. Call wait() again, or wait(timeout=None) to wait until it ends."
            )
        return watch.result()

    async def wait_async(self, timeout: float | None = None) -> Task:
        """Awaitable `wait` (runs it in a worker thread, so the kernel's event loop stays free)."""
        return await asyncio.to_thread(self.wait, timeout)

    def close(self) -> None:
        """Stop watching and close this widget, every child and their layout and style models. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._watch is not None:
            self._watch.stop()  # before releasing wait(): result() needs a final watch
        self._done.set()
        for widget in self._owned:
            _close_model(widget)
        _REGISTRY.forget(self)
        if self.comm is not None:  # else __init__ never got as far as opening it (or close_all() ran)
            _close_model(self.layout)
            super().close()
        if self._own_client is not None:
            self._own_client.close()

    def __repr__(self) -> str:
        return f"TaskStatusWidget(task_id={self.task_id!r}, status={self.status!r}, progress={self.progress})"

    # -- display and the static fallback ----------------------------------------------------------------

    def _static_bundle(self) -> dict[str, str]:
        view, now = self._view, datetime.now(timezone.utc)
        return {
            "text/plain": _static_text(self.task_id, view),
            "text/html": _static_html(self.task_id, view, now),
        }

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        data.update(self._static_bundle())
        return data

    def _bundle(self) -> dict[str, Any]:
        """The live bundle, or only the static one once closed (`Widget.close` drops the widget view)."""
        return self._static_bundle() if self._closed else self._repr_mimebundle_()

    def _ipython_display_(self) -> None:
        """Display with a display id, so the static fallback can be refreshed when the task ends."""
        # Under the lock, so a final update cannot land between showing this bundle and recording its handle.
        with self._lock:
            handle = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]
            if handle is not None:
                self._handles.append(handle)

    # -- the polling side: the only writer of widget values ---------------------------------------------

    def _on_stop_click(self, _button: Any) -> None:
        # May run on the main thread or a kernel subshell thread (jupyter-widgets.md §1.3): only stop.
        self.stop()

    def _on_update(self, update: Update) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                task = update.task or self.task
                now = datetime.now(timezone.utc)
                view = _describe(
                    update,
                    task,
                    previous=self._view,
                    generating_for=self._generating_for(update, task, now),
                    now=now,
                )
                self._show(view, task, now)
                if view.final:
                    _log.debug("task %s: %s", self.task_id, view.line)
                    for handle in self._handles:
                        handle.update(self._bundle(), raw=True)
        finally:
            if update.state.is_final:
                self._done.set()

    def _generating_for(self, update: Update, task: Task | None, now: datetime) -> float:
        """Seconds the task has been generating: seen by us, or since the gateway's start_time if longer."""
        if task is None or task.status is not TaskStatus.IN_PROGRESS:
            return 0.0
        if self._generating_since is None:
            self._generating_since = update.elapsed
        return max(update.elapsed - self._generating_since, _seconds_since(task.start_time, now) or 0.0)

    def _show(self, view: _View, task: Task | None, now: datetime) -> None:
        media = []
        if view.final and (view.videos or view.blocked):
            for video in view.videos:
                media.append(
                    ipywidgets.Video.from_url(
                        video.url,
                        autoplay=False,
                        loop=False,
                        controls=True,
                        width=_VIDEO_WIDTH,
                        layout=ipywidgets.Layout(max_width="100%"),
                    )
                )
                media.append(ipywidgets.HTML(_links_html(video, now)))
            if view.blocked:
                media.append(ipywidgets.HTML(html.escape(_blocked_text(view.blocked))))
            self._owned.extend(media)
        self._view = view
        self.task = task
        with contextlib.ExitStack() as stack:
            for widget in (self, self._bar, self._line, self._stop_button):
                stack.enter_context(widget.hold_sync())
            self._bar.value = view.progress
            self._bar.bar_style = view.bar_style
            self._line.value = html.escape(view.line)
            self._stop_button.disabled = view.final
            if view.final:  # nothing left to stop
                self._stop_button.layout.display = "none"
            if media:
                self.children = (self._row, *media)
        self.status = task.status.value if task is not None else ""
        self.progress = view.progress
        self.video_url = view.videos[0].url if view.videos else ""
        self.error = view.error


def generate(
    prompt: str,
    *,
    client: KlingClient | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **params: Any,
) -> TaskStatusWidget:
    """Submit a text-to-video task and return a started `TaskStatusWidget` watching it.

    Parameters
    ----------
    prompt : str
        What the video should show.
    client, api_key, base_url
        As for `TaskStatusWidget`; the widget polls with the same client that submitted.
    **params
        `KlingClient.text2video` options (``duration``, ``aspect_ratio``, ``model_name``, ``mode``,
        ``negative_prompt``, …) and the widget options ``poll_interval``, ``max_poll_interval``,
        ``timeout`` and ``autostart``.

    Returns
    -------
    TaskStatusWidget
        Display it (last expression of a cell) to watch the task; ``.wait()`` blocks until it ends.
    """
    options = {name: params.pop(name) for name in _WIDGET_OPTIONS if name in params}
    kling, owned = _resolve_client(client, api_key, base_url)
    try:
        task = kling.text2video(prompt, **params)
        widget = TaskStatusWidget(task, client=kling, **options)
    except BaseException:
        if owned:
            kling.close()
        raise
    if owned:
        widget._own_client = kling
    return widget
