"""Which notebook front-end shows this kernel's output, and how widget updates reach it there.

Two front-ends need the widgets to behave differently (docs/frontends.md):

- VS Code's notebook does not reliably play Kling's MP4s inline ("VS Code and inline video"), so the widget
  shows a short note beside the Open link instead of a player that never starts.
- Colab drops widget updates that a background thread sends ("Colab and background updates"), so there the
  updates run on the kernel's main thread, handed over through the kernel's event loop.

Everything else (JupyterLab, Notebook 7, Voila, nbclient) gets the plain behaviour: updates sent from the
polling thread as they happen, and the inline player.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)

FRONTEND_VARIABLE = "KLING_WIDGETS_FRONTEND"
"""Environment variable that overrides `detect` (one of the `Frontend` values): for a misdetected front-end,
and for tests that exercise the Colab path in an ordinary kernel."""

VSCODE_PLAYBACK_NOTE = "VS Code cannot play this video inline: use Open to watch it in your browser."


class Frontend(str, enum.Enum):
    """The program that shows this kernel's output."""

    JUPYTER = "jupyter"
    """A Jupyter front-end in a browser (JupyterLab, Notebook 7, Voila), or nbclient."""
    VSCODE = "vscode"
    """The notebook or Interactive Window of VS Code's Jupyter extension."""
    COLAB = "colab"
    """Google Colab."""
    TERMINAL = "terminal"
    """No notebook: plain Python or terminal IPython, where widgets are never drawn."""


def detect() -> Frontend:
    """Tell which front-end shows this kernel's output.

    Call it on the thread that runs the cell (the widget's constructor): the running cell's id is one of the
    signs of VS Code. The signs, strongest first (docs/frontends.md, "Detection"):

    1. ``KLING_WIDGETS_FRONTEND`` set to a `Frontend` value decides.
    2. No IPython kernel: `Frontend.TERMINAL`.
    3. VS Code's Jupyter extension defines ``__vsc_ipynb_file__`` in the user namespace of the kernels it
       starts, and sends each cell's document URI (``vscode-notebook-cell:…``) as the ``cellId`` of the
       execute request: either means `Frontend.VSCODE`, also for a Colab runtime opened from VS Code.
    4. Colab's runtime sets ``COLAB_RELEASE_TAG`` and runs its own shell class: `Frontend.COLAB`.
    5. Otherwise `Frontend.JUPYTER`.

    Returns
    -------
    Frontend
        The front-end; never raises for an unknown environment.

    Raises
    ------
    ValueError
        If ``KLING_WIDGETS_FRONTEND`` holds something that is not a `Frontend` value.
    """
    forced = os.environ.get(FRONTEND_VARIABLE, "").strip().lower()
    if forced:
        try:
            return Frontend(forced)
        except ValueError:
            accepted = ", ".join(frontend.value for frontend in Frontend)
            raise ValueError(f"{FRONTEND_VARIABLE}={forced!r} is not one of: {accepted}") from None
    shell = _shell()
    if shell is None or getattr(shell, "kernel", None) is None:
        return Frontend.TERMINAL
    if "__vsc_ipynb_file__" in shell.user_ns or _running_cell_id(shell).startswith("vscode-"):
        return Frontend.VSCODE
    if "COLAB_RELEASE_TAG" in os.environ or type(shell).__module__.startswith("google.colab"):
        return Frontend.COLAB
    return Frontend.JUPYTER


def plays_h264_inline(frontend: Frontend) -> bool:
    """Whether an inline ``<video>`` of an H.264/AAC MP4 plays in ``frontend``.

    VS Code's media library decodes H.264 but not AAC audio, and some VS Code builds shipped without working
    codecs (docs/frontends.md, "VS Code and inline video"); a terminal draws no player at all.
    """
    return frontend in (Frontend.JUPYTER, Frontend.COLAB)


def playback_note(frontend: Frontend) -> str | None:
    """The short plain-text note to show beside the Open link instead of a player, or None to show the player.

    The text is plain: escape it where it goes into HTML.
    """
    return VSCODE_PLAYBACK_NOTE if frontend is Frontend.VSCODE else None


def deliver(update: Callable[[], None], frontend: Frontend | None = None) -> None:
    """Run a widget update where ``frontend`` shows it; callable from any thread, never blocks.

    Everywhere but Colab, ``update`` runs at once on the calling thread (the polling thread: its messages go
    out even while a cell runs). In Colab it is queued for the kernel's main thread, where it runs in order
    with every other queued update: as soon as the kernel is idle (through the kernel's event loop), or at the
    end of the running cell if one blocks the kernel, inside that cell's execution. While the kernel runs,
    nothing is dropped: the last update queued is the last one run. Without a kernel event loop it runs at
    once, as elsewhere
    (docs/frontends.md, "Colab and background updates").

    A queued ``update`` that raises is logged (``kling_widgets._frontend``) and the updates after it still
    run; one that raises on the calling thread propagates to the caller.

    Parameters
    ----------
    update
        The widget writes to make (trait changes, a display-handle refresh). It must not print.
    frontend
        The front-end `detect` gave in the widget's constructor; detected now if None.
    """
    if (frontend or detect()) is Frontend.COLAB:
        queue = _main_thread_queue()
        if queue is not None:
            queue.put(update)
            return
    update()


class _MainThreadQueue:
    """Updates waiting for the kernel's main thread, run there first in, first out.

    Every `put` wakes the kernel's event loop to `drain`, which runs updates until the queue is empty.
    IPython's ``post_execute`` event drains too: updates queued while a cell blocks the main thread go out at
    the end of that cell, inside its execution, before the kernel reports idle.
    """

    def __init__(self, shell: Any, loop: Any) -> None:
        self._loop = loop
        self._pending: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        shell.events.register("post_execute", self.drain)

    def put(self, update: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(update)
        # tornado's add_callback is thread-safe and only wakes the loop; it never waits for it.
        self._loop.add_callback(self.drain)

    def drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                update = self._pending.popleft()
            try:
                update()  # outside the lock: an update may queue another
            except Exception:
                # One broken update must not strand the ones behind it, the final state above all.
                _log.exception("A widget update failed on the kernel's main thread")


_queue: _MainThreadQueue | None = None
_queue_lock = threading.Lock()


def _main_thread_queue() -> _MainThreadQueue | None:
    """The process's queue to the kernel's main thread; None when no kernel event loop runs here."""
    global _queue
    with _queue_lock:
        if _queue is None:
            shell = _shell()
            # ipykernel 5, 6 and 7 all run the shell channel's handlers on `kernel.io_loop`, the main thread's
            # tornado loop (docs/frontends.md, "Colab and background updates").
            loop = getattr(getattr(shell, "kernel", None), "io_loop", None)
            if loop is None:
                return None
            _queue = _MainThreadQueue(shell, loop)
        return _queue


def _shell() -> Any:
    """The running IPython shell, or None; never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    return None if ipython is None else ipython.get_ipython()


def _running_cell_id(shell: Any) -> str:
    """The ``cellId`` the front-end sent with the request being handled ("" if none)."""
    get_parent = getattr(shell.kernel, "get_parent", None)
    # ipykernel 5 (older Colab runtimes) has no get_parent; it keeps the whole request in _parent_header.
    parent = get_parent() if get_parent is not None else getattr(shell.kernel, "_parent_header", {})
    cell_id = (parent.get("metadata") or {}).get("cellId")
    return cell_id if isinstance(cell_id, str) else ""
