"""What every kling_widgets widget shares: lifecycle, owned models, display handles, cells, the client.

`KlingWidget` is the one base of `TaskStatusWidget`, `TaskGallery` and the widgets to come. It

- closes once (idempotent, any thread): the subclass's `_release` hook first (stop watching), then every
  child model it made *and* their layout and style models (`Widget.close` closes neither; see
  docs/architecture.md, "Closing, cell re-runs and kernel shutdown"), then itself, then the client it owns;
- shares layout and style models: `shared_layout` and `shared_style` hand out one model per set of
  properties for every card in the process (never closed per card), because nbclient and "save widget
  state" keep every model a card ever made (docs/architecture.md, "Saved notebooks");
- displays itself with a display id and, once its work has ended, replaces that display with its static
  bundle (`static_bundle`: ``text/plain`` and ``text/html``, no widget view), so nbconvert, GitHub and an
  untrusted reopen show the final state without the widgets JavaScript;
- closes what a notebook cell made when that cell runs again (`REGISTRY`);
- owns its `KlingClient` when it built it, or when handed one with ``owns_client=True``;
- knows its front-end (`kling_widgets._frontend.detect`, once, on the cell's thread) and sends every widget
  write of the polling side through `KlingWidget.deliver`, which in Colab runs it on the kernel's main thread
  (docs/frontends.md, "Colab and background updates").

No lock is held while trait observers, display calls that could reach user code, or callbacks run.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from abc import abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ipywidgets
from IPython import get_ipython
from IPython.display import display

from ._client import ENDPOINTS, KlingClient
from ._frontend import Frontend, deliver, detect
from ._models import Task

__all__ = [
    "REGISTRY",
    "AsyncWait",
    "CellRegistry",
    "KlingWidget",
    "WatchOptions",
    "close_model",
    "is_shared",
    "resolve_client",
    "shared_layout",
    "shared_style",
]

R = TypeVar("R")
_shared_lock = threading.Lock()
_shared: dict[tuple[Hashable, ...], ipywidgets.Widget] = {}


def _shared_model(kind: type[ipywidgets.Widget], properties: dict[str, Any]) -> Any:
    key = (kind, *sorted(properties.items()))
    with _shared_lock:
        model = _shared.get(key)
        if model is None or model.comm is None:  # first use, or closed by Widget.close_all()
            model = _shared[key] = kind(**properties)
        return model


def shared_layout(**properties: Any) -> Any:
    """The process's one `ipywidgets.Layout` with these properties (never close it)."""
    return _shared_model(ipywidgets.Layout, properties)


def shared_style(kind: type[ipywidgets.Widget], **properties: Any) -> Any:
    """The process's one style model of ``kind`` (e.g. ``ProgressStyle``) with these properties."""
    return _shared_model(kind, properties)


def is_shared(model: Any) -> bool:
    """True for a layout or style model handed out by `shared_layout` or `shared_style`."""
    with _shared_lock:
        return any(model is shared for shared in _shared.values())


def close_model(widget: Any) -> None:
    """Close a widget and its layout and style models, except the shared ones."""
    for model in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(model, ipywidgets.Widget) and model.comm is not None and not is_shared(model):
            model.close()


def resolve_client(
    client: KlingClient | None, api_key: str | None, base_url: str | None
) -> tuple[KlingClient, bool]:
    """The client to use, and whether it was built here (and so must be closed by whoever uses it)."""
    if client is None:
        return KlingClient(api_key, base_url=base_url), True
    if api_key is not None or base_url is not None:
        raise ValueError("Pass either client= or api_key=/base_url=, not both: the client already has them.")
    return client, False


@dataclass(frozen=True)
class WatchOptions:
    """How a task is watched, checked when made: before anything is sent (a POST may bill).

    Raises
    ------
    ValueError
        Naming the option and what it accepts.
    """

    endpoint: str | None  # None: each task's own route (`Task.endpoint`)
    poll_interval: float
    max_poll_interval: float
    timeout: float | None

    def endpoint_of(self, task: Task | None) -> str:
        """The route to poll ``task`` on: the one given, else the task's own, else text-to-video."""
        if self.endpoint is not None:
            return self.endpoint
        return task.endpoint if task is not None else "text2video"

    def __post_init__(self) -> None:
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise ValueError(
                f"Unknown endpoint {self.endpoint!r}; expected one of {', '.join(sorted(ENDPOINTS))}."
            )
        if not (_number(self.poll_interval) and math.isfinite(self.poll_interval) and self.poll_interval > 0):
            raise ValueError(
                f"poll_interval must be a positive number of seconds, not {self.poll_interval!r}"
            )
        if not (_number(self.max_poll_interval) and self.max_poll_interval >= self.poll_interval):
            raise ValueError(
                f"max_poll_interval must be a number of seconds >= poll_interval ({self.poll_interval!r}), "
                f"not {self.max_poll_interval!r}."
            )
        if self.timeout is not None and not (_number(self.timeout) and self.timeout >= 0):
            raise ValueError(f"timeout must be a number of seconds >= 0, or None; not {self.timeout!r}.")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class CellRegistry:
    """Live widgets by key (a task id) and by the notebook cell that made them.

    A new widget for the same key closes the previous one, and re-running a cell closes the widgets that
    cell made before (IPython's ``pre_run_cell`` carries JupyterLab's and VS Code's cell id; see
    docs/architecture.md, "Closing, cell re-runs and kernel shutdown"), so stale watchers do not pile up
    or get saved with the notebook.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: weakref.WeakValueDictionary[str, KlingWidget] = weakref.WeakValueDictionary()
        self._by_cell: dict[str, list[weakref.ref[KlingWidget]]] = {}
        self._shell: object = None

    def adopt(self, widget: KlingWidget, key: str | None = None) -> None:
        """Register a new widget (under ``key`` if given); close the one it replaces."""
        previous = None
        if key is not None:
            with self._lock:
                previous = self._by_key.get(key)
                self._by_key[key] = widget
        self._track_cell(widget)
        if previous is not None and previous is not widget:
            previous.close()

    def forget(self, widget: KlingWidget) -> None:
        """Drop a closed widget from the key index."""
        with self._lock:
            for key in [key for key, value in self._by_key.items() if value is widget]:
                del self._by_key[key]

    def _track_cell(self, widget: KlingWidget) -> None:
        if threading.current_thread() is not threading.main_thread():
            # Cells run on the main thread; a widget made elsewhere (a batch's card, made when its POST
            # answers) belongs to no cell, whatever cell happens to be running meanwhile.
            return
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

    def _pre_run_cell(self, info: Any) -> None:
        cell_id = getattr(info, "cell_id", None)
        with self._lock:
            stale = self._by_cell.pop(cell_id, []) if cell_id else []
        for ref in stale:
            widget = ref()
            if widget is not None:
                widget.close()


REGISTRY = CellRegistry()


class KlingWidget(ipywidgets.Box):  # type: ignore[misc]  # ipywidgets is untyped
    """Base of every kling_widgets widget (see the module docstring). Not for direct use.

    Parameters
    ----------
    client : KlingClient, optional
        The client to use. By default the widget builds one from ``api_key`` and ``base_url`` (which fall
        back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``) and closes it in `close`.
    api_key, base_url : str, optional
        For the widget's own client; not allowed together with ``client``. The key stays in the client
        object: never a widget trait, never in HTML, a repr or a log line.
    owns_client : bool
        Close ``client`` when the widget closes (`generate` hands over the client it built this way).
    frontend : Frontend, optional
        The front-end to draw for; by default `detect` tells, which works only on the thread that runs
        the cell (a widget made on another thread gets it from whoever made that thread's work).
    """

    _closed = True  # until __init__ runs: Widget.__del__ calls close() even on a half-built widget

    def __init__(
        self,
        client: KlingClient | None,
        api_key: str | None,
        base_url: str | None,
        owns_client: bool,
        frontend: Frontend | None = None,
        **kwargs: Any,
    ) -> None:
        # Set first: close() (also run by Widget.__del__) must work on a half-built widget.
        self._lock = threading.RLock()
        self._closed = False
        self._ended = False
        self._dirty = self._drawing = False  # see redraw
        self._owned: list[Any] = []
        self._handles: list[Any] = []
        self._client_to_close: KlingClient | None = None
        self._client, built = resolve_client(client, api_key, base_url)
        if built or owns_client:
            self._client_to_close = self._client
        self.frontend = frontend if frontend is not None else detect()
        super().__init__(**kwargs)

    # -- lifecycle --------------------------------------------------------------------------------------

    def redraw(self) -> None:
        """Bring what the widget shows up to date, from any thread.

        Whoever finds no redraw running does it, for every request that comes in meanwhile: one writer at a
        time. `_writes` reads the state under the lock and returns the writes, which run once it is released
        (trait observers may be the user's, and may call back into the widget).
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
                write = self._writes()
            write()

    def _writes(self) -> Callable[[], None]:
        """For `redraw`: read what to show (the lock is held) and return the writes that show it."""
        raise NotImplementedError(f"{type(self).__name__} does not redraw")

    def register(self, key: str | None = None) -> None:
        """Join the cell registry (under ``key``, e.g. a task id): call once, at the end of ``__init__``."""
        REGISTRY.adopt(self, key)

    def own(self, *models: Any) -> None:
        """Record child models this widget made, to be closed with it."""
        self._owned.extend(models)

    def close(self) -> None:
        """Stop, then close this widget, every model it made and their layout and style. Idempotent."""
        if self._closed:  # also true of a half-built widget (the class default)
            return
        with self._lock:
            closing, self._closed = not self._closed, True
        if not closing:
            return
        self._release()
        for model in self._owned:
            close_model(model)
        REGISTRY.forget(self)
        if self.comm is not None:  # else __init__ never got as far as opening it (or close_all() ran)
            close_model(self.layout)
            super().close()
        if self._client_to_close is not None:
            self._client_to_close.close()

    def _release(self) -> None:
        """Hook: stop what the widget runs (called once, by `close`, before any model is closed)."""

    def deliver(self, update: Callable[[], None]) -> None:
        """Make widget writes from a background thread where this widget's front-end shows them.

        At once on the calling thread, except in Colab: there on the kernel's main thread, later
        (`kling_widgets._frontend.deliver`). So ``update`` must not be what a blocked ``wait`` needs:
        release waiters on the calling thread too.
        """
        deliver(update, self.frontend)

    # -- display and the static fallback ----------------------------------------------------------------

    @abstractmethod
    def static_bundle(self) -> dict[str, str]:
        """The widget's state as ``text/plain`` and ``text/html`` (readable without widgets)."""

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # Once ended, only the static bundle: there is nothing live left to show.
        if self._ended:
            return self.static_bundle()
        data: dict[str, Any] = super()._repr_mimebundle_(**kwargs)
        data.update(self.static_bundle())
        return data

    def _bundle(self) -> dict[str, Any]:
        """What to display now (`Widget.close` replaces ``_repr_mimebundle_`` with None)."""
        return self.static_bundle() if self._closed else self._repr_mimebundle_()

    def _ipython_display_(self) -> None:
        """Display with a display id, so that display can be replaced by the static state at the end."""
        # Under the lock, so the end cannot land between showing this bundle and recording its handle.
        with self._lock:
            handle = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]
            if handle is not None and not self._closed:
                self._handles.append(handle)

    def _end_display(self) -> None:
        """Replace every display of this widget by its static bundle: when its work has ended, and again
        when what it shows after that changes (a kept video's path)."""
        with self._lock:
            self._ended = True
            handles = list(self._handles)
        _show_in(handles, self.static_bundle)

    def _reopen_display(self) -> None:
        """Show the live widget again in every display of it that `_end_display` ended: it has work
        again (a gallery's new card)."""
        with self._lock:
            if not self._ended:
                return
            self._ended = False
            handles = list(self._handles)
        _show_in(handles, self._repr_mimebundle_)


def _show_in(handles: list[Any], bundle: Callable[[], dict[str, Any]]) -> None:
    """Update each display handle to ``bundle()`` (made once, and only if there is a display)."""
    if handles:
        shown = bundle()
        for handle in handles:
            handle.update(shown, raw=True)


class AsyncWait(Generic[R]):
    """``wait_async`` for a widget with a blocking ``wait``."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> R:
        """Block until the widget's work has ended."""

    async def wait_async(self, timeout: float | None = None) -> R:
        """Awaitable `wait` (runs it in a worker thread, so the kernel's event loop stays free)."""
        return await asyncio.to_thread(self.wait, timeout)
