"""The ledger on screen: `resume` watches every unfinished task again, `TaskHistory` lists and replays them.

`resume` is what to run after a kernel restart: one `TaskGallery` of every task of this key and gateway
that the ledger has not seen end, each watched to its end, and a card for every POST that never answered
(it may have created, and billed, a task; it is never sent again).

`TaskHistory` is one small widget over the ledger, newest first: a status dropdown and a text box filter it,
one escaped HTML table shows a page of rows (not a widget per cell: a saved notebook keeps every model), and
a row picker drives three actions: Open (the player, with a kept copy when the link has expired), Watch
again (a `TaskStatusWidget` in the detail area) and Keep (`keep` on a daemon thread).

Playing a kept copy (docs/durable.md, "Playing a kept copy"): a ``<video src="kling-videos/…">`` inside a
widget is not resolved against the notebook's folder by JupyterLab, and Voila serves no local file unless
its ``file_allowlist`` names it, so a kept file is sent to the browser as the bytes of an
``ipywidgets.Video`` (any front-end plays it), up to `MAX_INLINE_BYTES`; a larger one is named by its path.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ipywidgets

from ._backend import MAX_PAGE, MAX_PAGE_SIZE
from ._base import KlingWidget, close_model, resolve_client, shared_layout, shared_style
from ._catalogue import ROUTES
from ._client import KlingClient
from ._errors import KlingError
from ._gallery import TaskGallery
from ._keep import keep
from ._ledger import REFUSED, SUBMITTING, UNANSWERED, LedgerEntry, LedgerVideo
from ._models import Media, Task, TaskStatus
from ._text import clean_text, strip_credentials
from ._view import embeddable, results_html
from ._widget import TaskStatusWidget

__all__ = [
    "FILTERS",
    "MAX_INLINE_BYTES",
    "TaskHistory",
    "history",
    "resume",
    "table_html",
    "unanswered_error",
]

#: A kept file up to this size plays inline (its bytes go through the widget's comm, and into a saved
#: notebook while shown); a larger one is named by its path.
MAX_INLINE_BYTES = 20 * 1024 * 1024
#: The status dropdown: label -> the ledger states it shows (None: all).
FILTERS: dict[str, tuple[str, ...] | None] = {
    "All": None,
    "Running": tuple(s.value for s in TaskStatus if s not in (TaskStatus.SUCCESS, TaskStatus.FAILURE)),
    "Succeeded": (TaskStatus.SUCCESS.value,),
    "Failed": (TaskStatus.FAILURE.value,),
    "No answer": (SUBMITTING, UNANSWERED),
    "Refused": (REFUSED,),
}
_PAGE = 50
_SCANNED = 10_000  # the text box searches this many newest entries of the chosen status
_PROMPT_CHARS = 60
_REASON_CHARS = 80
_MAX_PLAYERS = 4
_VIDEO_WIDTH = "480px"
_UNANSWERED_STATES = (SUBMITTING, UNANSWERED)
_LINK_STYLE = "color:var(--jp-content-link-color,#1976d2)"
_TABLE_STYLE = "border-collapse:collapse;font-size:var(--jp-content-font-size1,13px)"
_CELL_STYLE = (
    "padding:2px 8px;text-align:left;white-space:nowrap;"
    "border-bottom:1px solid var(--jp-border-color2,#e0e0e0)"
)
_ROW = {"display": "flex", "flex_flow": "row wrap", "align_items": "center", "grid_gap": "4px 8px"}
_COLUMN = {"display": "flex", "flex_flow": "column", "grid_gap": "4px"}


# -- resume ----------------------------------------------------------------------------------------------


def resume(
    client: KlingClient | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> TaskGallery:
    """Watch again every task of this key and gateway that the ledger has not seen end.

    After a kernel restart, one call brings every paid task back on screen and to its end. Each card is
    captioned with its prompt. A submission whose POST never answered (no task id; state ``submitting``
    or ``unknown``) shows as an error card saying when it was sent and that it may have been charged; it
    is never sent again.

    Parameters
    ----------
    client : KlingClient, optional
        Whose ledger, key and gateway to use; by default one built from ``api_key`` and ``base_url``
        (which fall back to ``EZMODEL_API_KEY`` and ``EZMODEL_BASE_URL``), closed with the gallery.
    api_key, base_url : str, optional
        For that client; not allowed together with ``client``.
    **options
        `TaskGallery` options: ``poll_interval``, ``max_poll_interval``, ``timeout``, ``autostart`` and
        ``endpoint`` (by default each task is polled on the route it was recorded with).

    Returns
    -------
    TaskGallery
        Newest first; ``.wait()`` returns the tasks that succeeded, ``.failed`` explains the rest (the
        unanswered submissions are `KlingError` with code ``"unanswered"``).

    Raises
    ------
    KlingError
        The client has no usable ledger (``ledger=False``, or its file could not be opened).
    """
    kling, owned = resolve_client(client, api_key, base_url)
    try:
        ledger = kling.ledger
        if ledger is None or not ledger.available:
            raise KlingError(
                "The task ledger is off or cannot be used, so there is nothing to resume "
                "(see KlingClient(ledger=...) and KLING_WIDGETS_HOME)."
            )
        entries = _one_per_task(ledger.unfinished(kling.base_url, kling.key_id))
        return TaskGallery(
            [_resumable(entry) for entry in entries],
            labels=[_prompt(entry) or f"{entry.endpoint} task" for entry in entries],
            client=kling,
            owns_client=owned,
            **options,
        )
    except BaseException:
        if owned:
            kling.close()
        raise


def _one_per_task(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """The newest entry of each task id (a gallery shows a task once); every unanswered entry."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry.task_id is None or entry.task_id not in seen:
            kept.append(entry)
        if entry.task_id is not None:
            seen.add(entry.task_id)
    return kept


def _resumable(entry: LedgerEntry) -> Task | KlingError:
    """A card's entry: the task as last recorded (its clock runs from the submission), or the error card
    of a POST that got no answer."""
    if entry.task_id is None:
        return unanswered_error(entry)
    return Task(
        task_id=entry.task_id,
        status=TaskStatus.parse(entry.state),
        submit_time=entry.created_at,
        endpoint=entry.endpoint,
    )


def unanswered_error(entry: LedgerEntry) -> KlingError:
    """What a submission without an answer is: a `KlingError` (code ``"unanswered"``) that says so."""
    prompt = _prompt(entry)
    about = f" of “{clean_text(prompt, _PROMPT_CHARS)}”" if prompt else ""
    return KlingError(
        f"state unknown — the {entry.endpoint} POST{about} sent {_when(entry.created_at)} got no answer. "
        "It may have created a task and may have been charged — check the provider's console; it is never "
        "resubmitted automatically.",
        code="unanswered",
    )


# -- history ---------------------------------------------------------------------------------------------


def history(
    client: KlingClient | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    status: str = "All",
    text: str = "",
    sync: bool = False,
) -> TaskHistory:
    """The ledger of this key and gateway as a widget: filter it, open, watch again or keep a task.

    Parameters
    ----------
    client, api_key, base_url, status, text
        As for `TaskHistory`.
    sync : bool
        First bring in the account's tasks that this ledger never saw, as the server lists them
        (`sync_from_server`; Kling's own API only: the EZmodel gateway has no task list).

    Returns
    -------
    TaskHistory
        Display it (last expression of a cell).
    """
    kling, owned = resolve_client(client, api_key, base_url)
    try:
        if sync:
            sync_from_server(kling)
        return TaskHistory(client=kling, owns_client=owned, status=status, text=text)
    except BaseException:
        if owned:
            kling.close()
        raise


def sync_from_server(client: KlingClient) -> int:
    """Merge the account's task list into the client's ledger, every route, every page.

    Tasks the ledger never saw get an entry; a submission whose POST went unanswered becomes its task when
    its ``external_task_id`` matches; known tasks are brought up to date.

    Returns
    -------
    int
        How many entries were added or filled in.

    Raises
    ------
    KlingError
        Code ``"not_supported"`` on the EZmodel gateway (it lists no tasks), or the list request failed.
    """
    ledger = client.ledger
    if ledger is None:
        raise KlingError("This client records no ledger (ledger=False): there is nothing to sync into.")
    merged = 0
    for endpoint in ROUTES:
        for page in range(1, MAX_PAGE + 1):
            tasks = client.list_tasks(endpoint, page=page, page_size=MAX_PAGE_SIZE)
            gateway, key_id = client.base_url, client.key_id
            merged += ledger.merge_remote(tasks, endpoint=endpoint, gateway=gateway, key_id=key_id)
            if len(tasks) < MAX_PAGE_SIZE:
                break
    return merged


class TaskHistory(KlingWidget):
    """The ledger of this key and gateway, newest first, with filters and per-task actions.

    Parameters
    ----------
    client : KlingClient, optional
        Whose ledger, key and gateway to show, and the client the actions use. By default the widget
        builds one from ``api_key`` and ``base_url`` and closes it in `close`.
    api_key, base_url : str, optional
        For the widget's own client; not allowed together with ``client``.
    owns_client : bool
        Close ``client`` when the widget closes.
    status : str
        The status filter at start: a key of `FILTERS` (``"All"``, ``"Running"``, ``"Succeeded"``,
        ``"Failed"``, ``"No answer"``, ``"Refused"``).
    text : str
        The text filter at start: rows whose prompt or task id contains it (any case).

    Notes
    -----
    The table shows 50 rows, and 50 more per "Show more". It is read from the ledger when the widget is
    made, when the status filter changes, on Refresh, and when an action of this widget ends. Every shown
    string from the ledger (prompts, reasons, ids: the gateway's text) is cleaned and escaped; a video
    link is shown only if it is http(s).
    """

    def __init__(
        self,
        *,
        client: KlingClient | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        owns_client: bool = False,
        status: str = "All",
        text: str = "",
    ) -> None:
        if status not in FILTERS:
            raise ValueError(f"Unknown status filter {status!r}; expected one of {', '.join(FILTERS)}.")
        self._detail_models: list[Any] = []  # before anything can fail: close() reads it
        super().__init__(client, api_key, base_url, owns_client, layout=shared_layout(**_COLUMN))
        self._entries: list[LedgerEntry] = []  # of the chosen status, newest first
        self._shown: list[LedgerEntry] = []  # what the table shows
        self._limit = _PAGE
        button_style = shared_style(ipywidgets.widgets.widget_button.ButtonStyle)
        auto = shared_layout(width="auto")
        self._status = ipywidgets.Dropdown(
            options=list(FILTERS), value=status, description="Status", layout=shared_layout(width="200px")
        )
        self._text = ipywidgets.Text(
            value=text,
            placeholder="prompt or task id",
            description="Find",
            layout=shared_layout(width="260px"),
        )
        self._refresh_button = ipywidgets.Button(description="Refresh", layout=auto, style=button_style)
        self._table = ipywidgets.HTML(style=shared_style(ipywidgets.widgets.widget_string.HTMLStyle))
        self._count = ipywidgets.HTML(style=shared_style(ipywidgets.widgets.widget_string.HTMLStyle))
        self._more = ipywidgets.Button(description="Show more", layout=auto, style=button_style)
        self._row = ipywidgets.Dropdown(description="Task", layout=shared_layout(width="420px"))
        self._open_button = ipywidgets.Button(
            description="Open",
            tooltip="Play the video (a kept copy once the link has expired)",
            layout=auto,
            style=button_style,
        )
        self._watch_button = ipywidgets.Button(
            description="Watch again", tooltip="Watch this task live below", layout=auto, style=button_style
        )
        self._keep_button = ipywidgets.Button(
            description="Keep",
            tooltip="Download the videos (with a .json sidecar)",
            layout=auto,
            style=button_style,
        )
        self._message = ipywidgets.HTML(style=shared_style(ipywidgets.widgets.widget_string.HTMLStyle))
        self._detail = ipywidgets.Box(layout=shared_layout(**_COLUMN))
        row = shared_layout(**_ROW)
        bars = [
            ipywidgets.Box([self._status, self._text, self._refresh_button], layout=row),
            ipywidgets.Box([self._count, self._more], layout=row),
            ipywidgets.Box([self._row, self._open_button, self._watch_button, self._keep_button], layout=row),
        ]
        self.own(
            self._status,
            self._text,
            self._refresh_button,
            self._table,
            self._count,
            self._more,
            self._row,
            self._open_button,
            self._watch_button,
            self._keep_button,
            self._message,
            self._detail,
            *bars,
        )
        self.children = (bars[0], self._table, bars[1], bars[2], self._message, self._detail)
        self._status.observe(self._on_status, names="value")
        self._text.observe(self._on_text, names="value")
        self._refresh_button.on_click(lambda _b: self.refresh())
        self._more.on_click(lambda _b: self.show_more())
        self._open_button.on_click(lambda _b: self.play())
        self._watch_button.on_click(lambda _b: self.watch_again())
        self._keep_button.on_click(lambda _b: self.keep())
        self.register()
        self.refresh()

    # -- reading and filtering -------------------------------------------------------------------------

    @property
    def entries(self) -> list[LedgerEntry]:
        """The rows the table shows, newest first."""
        with self._lock:
            return list(self._shown)

    def refresh(self) -> None:
        """Read the ledger again (with the status filter) and redraw."""
        ledger = self._client.ledger
        states = FILTERS[self._status.value]
        entries = (
            ledger.entries(states, _SCANNED, gateway=self._client.base_url, key_id=self._client.key_id)
            if ledger is not None
            else []
        )
        with self._lock:
            self._entries = entries
        self.redraw()

    def filter(self, status: str | None = None, text: str | None = None) -> None:
        """Set the filters, as the dropdown and the text box do (None leaves one as it is)."""
        if status is not None:
            self._status.value = status  # the observer reads the ledger again
        if text is not None:
            self._text.value = text

    def show_more(self) -> None:
        """Show 50 more rows."""
        with self._lock:
            self._limit += _PAGE
        self.redraw()

    def _on_status(self, _change: Any) -> None:
        with self._lock:
            self._limit = _PAGE
        self.refresh()

    def _on_text(self, _change: Any) -> None:
        with self._lock:
            self._limit = _PAGE
        self.redraw()

    def _matching(self, text: str) -> list[LedgerEntry]:
        needle = text.strip().casefold()
        if not needle:
            return self._entries
        return [
            entry
            for entry in self._entries
            if needle in (entry.task_id or "").casefold() or needle in (_prompt(entry) or "").casefold()
        ]

    def _writes(self) -> Callable[[], None]:
        """Table, count and picker (keeps end on daemon threads: see `redraw`)."""
        matching = self._matching(self._text.value)
        self._shown = matching[: self._limit]
        shown, total = list(self._shown), len(matching)

        def write() -> None:
            self._table.value = table_html(shown, datetime.now(timezone.utc))
            self._count.value = html.escape(_count_text(len(shown), total))
            self._more.disabled = len(shown) >= total
            previous = self._row.value
            options = [(_row_label(entry), entry.local_id) for entry in shown]
            self._row.options = options
            values = [value for _label, value in options]
            self._row.value = previous if previous in values else (values[0] if values else None)

        return write

    # -- actions (main thread, or a kernel subshell) ----------------------------------------------------

    def _entry(self, task: str | int | None) -> LedgerEntry | None:
        """The entry to act on: by task id or local id (picked in the table when shown), else the picker's."""
        key = self._row.value if task is None else task
        with self._lock:
            found = next((e for e in self._shown + self._entries if key in (e.task_id, e.local_id)), None)
        if found is None:
            ledger = self._client.ledger
            return ledger.get(key) if isinstance(key, str) and ledger is not None else None
        if found.local_id in [value for _label, value in self._row.options]:
            self._row.value = found.local_id  # the picker names the row the detail area is about
        return found

    def select(self, task: str | int) -> None:
        """Pick a row of the table by task id or local id."""
        entry = self._entry(task)
        if entry is None or entry.local_id not in [value for _label, value in self._row.options]:
            raise ValueError(f"No row {task!r} in the table (check the filters, or Show more).")
        self._row.value = entry.local_id

    def play(self, task: str | int | None = None) -> None:
        """Show the task's videos below the table: the remote players while the links work, else the
        kept copies (or where they are).

        Parameters
        ----------
        task : str or int, optional
            A task id or local id; by default the picked row.
        """
        entry = self._entry(task)
        if entry is None:
            self._say("Pick a task first.")
            return
        videos = [video for video in entry.videos if embeddable(video.url)]
        if entry.state != TaskStatus.SUCCESS.value or not (entry.videos or entry.images or entry.audios):
            self._say(f"Nothing to play: {_status_text(entry)}.")
            return
        now = datetime.now(timezone.utc)
        if not entry.videos:  # images or sounds: shown from their links (only videos are kept)
            self._show_detail([ipywidgets.HTML(results_html(entry.images, entry.audios, now))])
            expiry = _expiry_text((*entry.images, *entry.audios), now)
            self._say(f"The links of {_short_id(entry)} {expiry}." if expiry.startswith("expired") else "")
            return
        if videos and len(videos) == len(entry.videos) and not any(v.expired for v in videos):
            players = _players_html(videos[:_MAX_PLAYERS], now)  # and video-to-audio's sounds after them
            self._show_detail([ipywidgets.HTML(players + results_html(entry.images, entry.audios, now))])
            self._say("")
            return
        kept = _existing(entry.kept)
        if not kept:
            self._show_detail([])
            expiry = _expiry_text(entry.videos, now) or "is not usable"
            self._say(
                f"The video link of {_short_id(entry)} {expiry} and no copy was kept: Kling deletes "
                "videos after 30 days."
            )
            return
        models: list[Any] = []
        notes: list[str] = []
        for path in kept[:_MAX_PLAYERS]:
            size = path.stat().st_size
            if size <= MAX_INLINE_BYTES:
                # The file's bytes: the front-end plays them from a blob: URL, in every front-end (a
                # file path would not resolve inside a widget, nor in Voila at all).
                models.append(
                    ipywidgets.Video(
                        value=path.read_bytes(),
                        format="mp4",
                        autoplay=False,
                        loop=False,
                        controls=True,
                        layout=shared_layout(width=_VIDEO_WIDTH, max_width="100%"),
                    )
                )
                notes.append(f"Kept copy: {path}")
            else:
                notes.append(
                    f"Kept copy: {path} ({size / 1e6:.0f} MB, too large to send to the browser; open it "
                    "from the file browser or a video player)."
                )
        models.append(ipywidgets.HTML("".join(f"<div>{html.escape(note)}</div>" for note in notes)))
        self._show_detail(models)
        expiry = _expiry_text(entry.videos, now) or "is not usable"
        self._say(f"The video link of {_short_id(entry)} {expiry}: playing the kept copy.")

    def watch_again(self, task: str | int | None = None) -> TaskStatusWidget | None:
        """Watch the task live below the table (a new `TaskStatusWidget` on this widget's client).

        Returns
        -------
        TaskStatusWidget or None
            The card, or None when the entry has no task id (its POST never answered).
        """
        entry = self._entry(task)
        if entry is None or entry.task_id is None:
            self._say("Pick a task first." if entry is None else unanswered_error(entry).message)
            return None
        try:
            card = TaskStatusWidget(
                entry.task_id, client=self._client, endpoint=entry.endpoint, caption=_prompt(entry)
            )
        except (ValueError, RuntimeError) as exc:
            self._say(str(exc))
            return None
        self._show_detail([card])
        self._say("")
        watch = card.watch
        if watch is not None:
            watch.add_done_callback(lambda _watch: self.refresh())
        return card

    def keep(self, task: str | int | None = None) -> threading.Thread | None:
        """Keep the task's videos on a daemon thread (`kling_widgets.keep`); the outcome shows below.

        Returns
        -------
        threading.Thread or None
            The started thread, or None when the entry has no video to keep.
        """
        entry = self._entry(task)
        if entry is None or entry.task_id is None or entry.state != TaskStatus.SUCCESS.value:
            self._say(
                "Pick a task that succeeded first."
                if entry is None
                else f"Nothing to keep: {_status_text(entry)}."
            )
            return None
        task_id, client = entry.task_id, self._client
        self._say(f"Keeping {clean_text(task_id, 24)}…")

        def run() -> None:
            try:
                paths = keep(task_id, client=client)
            except (KlingError, OSError, ValueError) as exc:
                self._say(f"Could not keep {clean_text(task_id, 24)}: {exc}")
            else:
                self._say("Kept " + ", ".join(str(path) for path in paths))
            self.refresh()

        thread = threading.Thread(target=run, name=f"kling-widgets-keep-{task_id}", daemon=True)
        thread.start()
        return thread

    def _say(self, text: str) -> None:
        if not self._closed:
            self._message.value = html.escape(clean_text(text)) if text else ""

    def _show_detail(self, models: list[Any]) -> None:
        """Replace what the detail area shows, closing what it showed before."""
        with self._lock:
            if self._closed:
                for model in models:
                    _close(model)
                return
            previous, self._detail_models = self._detail_models, models
        self._detail.children = tuple(models)
        for model in previous:
            _close(model)

    def _release(self) -> None:
        with self._lock:
            models, self._detail_models = self._detail_models, []
        for model in models:
            _close(model)

    # -- display ---------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        with self._lock:
            shown, total = len(self._shown), len(self._matching(self._text.value))
        return f"TaskHistory({_count_text(shown, total)})"

    def static_bundle(self) -> dict[str, str]:
        """The table as ``text/html`` (readable without widgets) and its count as ``text/plain``."""
        with self._lock:
            shown = list(self._shown)
        return {"text/plain": repr(self), "text/html": table_html(shown, datetime.now(timezone.utc))}


def _close(model: Any) -> None:
    if isinstance(model, KlingWidget):
        model.close()
    else:
        close_model(model)


# -- the table (pure) ------------------------------------------------------------------------------------


def table_html(entries: list[LedgerEntry], now: datetime) -> str:
    """The history table: one escaped row per entry (status, prompt, model, duration, when, kept, link)."""
    head = "".join(
        f'<th style="{_CELL_STYLE}">{name}</th>'
        for name in ("#", "task", "status", "prompt", "model", "duration", "when", "kept", "link")
    )
    rows = "".join(_row_html(entry, now) for entry in entries)
    if not entries:
        rows = f'<tr><td colspan="9" style="{_CELL_STYLE}">No tasks in the ledger match.</td></tr>'
    return f'<table class="kling-history" style="{_TABLE_STYLE}"><tr>{head}</tr>{rows}</table>'


def _row_html(entry: LedgerEntry, now: datetime) -> str:
    prompt = _prompt(entry) or ""
    duration = entry.params.get("duration")
    model = entry.params.get("model_name") or entry.params.get("model") or ""
    kept = _existing(entry.kept)
    cells = [
        _cell(str(entry.local_id)),
        _cell(clean_text(entry.task_id, 24) if entry.task_id else "—", title=entry.task_id or "no task id"),
        _cell(_status_text(entry), title=entry.fail_reason),
        _cell(clean_text(prompt, _PROMPT_CHARS), title=clean_text(prompt, 300) if prompt else None),
        _cell(clean_text(str(model), 40)),
        _cell(f"{duration} s" if duration not in (None, "") else ""),
        _cell(_when(entry.created_at)),
        _cell(
            kept[0].name + (f" +{len(kept) - 1}" if len(kept) > 1 else "") if kept else "",
            title=", ".join(str(path) for path in kept) or None,
        ),
        f'<td style="{_CELL_STYLE}">{_link_html(entry.videos or entry.images or entry.audios, now)}</td>',
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _cell(text: str, *, title: str | None = None) -> str:
    hover = f' title="{html.escape(clean_text(title, 300), quote=True)}"' if title else ""
    return f'<td style="{_CELL_STYLE}"{hover}>{html.escape(clean_text(text))}</td>'


def _link_html(videos: Sequence[LedgerVideo | Media], now: datetime) -> str:
    """``open · expires 29 Dec 2026`` for the first result; only an http(s) link becomes one."""
    if not videos:
        return ""
    video = videos[0]
    expiry = html.escape(_expiry_text(videos, now))
    if (video.expires_at is not None and video.expires_at <= now) or not embeddable(video.url):
        return expiry
    href = html.escape(video.url, quote=True)
    title = html.escape(clean_text(strip_credentials(video.url), 300), quote=True)
    link = (
        f'<a href="{href}" title="{title}" target="_blank" rel="noreferrer" '
        f'style="{_LINK_STYLE}">open</a>'
    )
    return f"{link} · {expiry}" if expiry else link


def _players_html(videos: list[LedgerVideo], now: datetime) -> str:
    blocks = []
    for video in videos:
        src = html.escape(video.url, quote=True)
        blocks.append(f'<video src="{src}" controls width="480" style="max-width:100%"></video>')
        blocks.append(f"<div>{_link_html((video,), now)}</div>")
    return "".join(blocks)


def _status_text(entry: LedgerEntry) -> str:
    if entry.state in _UNANSWERED_STATES:
        return "no answer (may have been charged)"
    if entry.state == TaskStatus.FAILURE.value and entry.fail_reason:
        return f"FAILURE: {clean_text(entry.fail_reason, _REASON_CHARS)}"
    if entry.state == REFUSED and entry.fail_reason:
        return f"refused: {clean_text(entry.fail_reason, _REASON_CHARS)}"
    return clean_text(entry.state, 40)


def _expiry_text(videos: Sequence[LedgerVideo | Media], now: datetime) -> str:
    dates = [video.expires_at for video in videos if video.expires_at is not None]
    if not dates:
        return ""
    first = min(dates)
    return f"{'expired' if first <= now else 'expires'} {_date(first)}"


def _count_text(shown: int, total: int) -> str:
    tasks = f"{total} task{'s' if total != 1 else ''}"
    return f"{tasks} · showing the {shown} newest" if shown < total else tasks


def _row_label(entry: LedgerEntry) -> str:
    who = entry.task_id or "no task id"
    prompt = _prompt(entry)
    return clean_text(f"#{entry.local_id} · {clean_text(who, 24)}" + (f" · {prompt}" if prompt else ""), 70)


def _short_id(entry: LedgerEntry) -> str:
    return clean_text(entry.task_id, 24) if entry.task_id else f"#{entry.local_id}"


def _prompt(entry: LedgerEntry) -> str | None:
    prompt = entry.params.get("prompt")
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def _existing(paths: Iterable[Path]) -> list[Path]:
    """Kept files still on disk, each file name once (a task kept twice, into two folders, plays once)."""
    found: dict[str, Path] = {}
    for path in paths:
        if path.name not in found and path.is_file():
            found[path.name] = path
    return list(found.values())


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _date(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y}"
