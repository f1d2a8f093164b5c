"""The task ledger: every submission recorded in SQLite, so a task that was paid for is never lost.

A row is written *before* the POST (state ``submitting``) and updated when the answer comes (the task id, or
the refusal, or ``unknown`` when no answer came: the task may exist and may have been charged), then again
whenever a watcher sees a new status, the failure reason, the video URLs with their expiry (and the image and
sound URLs of the image and audio routes), and kept files.

What is stored, and what never is:

- the gateway's host (not its URL), a short fingerprint of the key (`KlingClient.key_id`), never the key;
- the request parameters with every image as its URL or ``{"sha256": ..., "bytes": n}`` (`storable_params`),
  never base64; the `Task` fields the ledger needs, never the raw response; a failure reason capped by
  `clean_text`.

Concurrency: one SQLite connection per thread (and per process: a forked child opens its own), WAL mode and a
busy timeout, and every read-modify-write in a ``BEGIN IMMEDIATE`` transaction, so the engine's threads,
several kernels and the CLI can write at once without losing a row.

Failure: a corrupt, unreadable or unwritable database gives one warning (`warnings.warn` on the main thread,
a log warning elsewhere) and the ledger turns into a no-op (`Ledger.available` is False): the widgets go on
working without it. No method raises for I/O trouble.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import platformdirs

from ._errors import KlingError
from ._models import Audio, Image, Task, TaskStatus, Video
from ._text import clean_text, strip_credentials

__all__ = [
    "FINAL_STATES",
    "HOME_ENV",
    "REFUSED",
    "SCHEMA_VERSION",
    "SUBMITTING",
    "UNANSWERED",
    "Ledger",
    "LedgerEntry",
    "LedgerVideo",
    "default_ledger_path",
    "gateway_host",
    "shared_ledger",
    "storable_params",
]

logger = logging.getLogger("kling_widgets")

#: The folder of the ledger (``ledger.sqlite3`` inside it); else the user data directory.
HOME_ENV = "KLING_WIDGETS_HOME"
LEDGER_FILE = "ledger.sqlite3"

#: How long a write waits for another process's transaction before the ledger gives up.
BUSY_TIMEOUT = 30.0

# States that are not a TaskStatus value (lower case, so they never clash with the gateway's).
SUBMITTING = "submitting"  # the row is written, the POST is on its way
UNANSWERED = "unknown"  # the POST got no answer: the task may exist, and may have been charged
REFUSED = "refused"  # the gateway answered with an error: nothing was created
_TERMINAL = (TaskStatus.SUCCESS.value, TaskStatus.FAILURE.value)
FINAL_STATES = frozenset({*_TERMINAL, REFUSED})

# Bounds on a row: a hostile or broken gateway must not grow the file by megabytes per poll. MAX_VIDEOS
# bounds the images and the sounds too, each kind on its own.
MAX_VIDEOS = 16
MAX_URL_CHARS = 4096
# Parameters: a string this long without spaces that decodes as base64 is data, not text...
MIN_BLOB_CHARS = 256
# ...and any string longer than this is stored as its digest (Kling's prompts stop at 2,500 characters).
MAX_PARAM_CHARS = 10_000

_BASE64 = re.compile(r"[A-Za-z0-9+/_\-\r\n]+={0,2}[\r\n]*")

T = TypeVar("T")


def default_ledger_path() -> Path:
    """``$KLING_WIDGETS_HOME/ledger.sqlite3``, else ``ledger.sqlite3`` in the user data directory."""
    home = os.environ.get(HOME_ENV, "").strip()
    folder = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("kling-widgets", False))
    return folder / LEDGER_FILE


def gateway_host(gateway: str) -> str:
    """The host (with its port, if any) of a base URL, without credentials; a bare host stays as it is.

    >>> gateway_host("https://user:pw@API.ezmodel.cloud/")
    'api.ezmodel.cloud'
    """
    text = gateway.strip()
    netloc = urlsplit(text if "://" in text else f"//{text}").netloc
    return netloc.rpartition("@")[2].lower()


def storable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Request parameters as the ledger stores them: JSON values, bounded, without any image data.

    A ``data:`` URL, a long base64 string (raw base64 is how Kling takes images) or bytes become
    ``{"sha256": <hex digest of the decoded bytes>, "bytes": <their number>}``, so the digest matches the
    image file; any other string over `MAX_PARAM_CHARS` becomes the digest of its UTF-8 text. URLs lose any
    ``user:password@``. Nested objects and lists are walked; other values are kept if JSON has them, else
    stored as their ``str``.

    Parameters
    ----------
    params : Mapping
        The body of a submission, as sent.

    Returns
    -------
    dict
        A new dict; ``params`` is not changed.
    """
    return {str(key): _storable(value) for key, value in params.items()}


def _storable(value: object) -> Any:
    if isinstance(value, Mapping):
        return storable_params(value)
    if isinstance(value, (list, tuple)):
        return [_storable(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _digest(bytes(value))
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _storable_text(value if isinstance(value, str) else str(value))


def _storable_text(text: str) -> Any:
    if text.startswith("data:") and ";base64," in text[:256]:
        payload = text.partition(";base64,")[2]
        return _digest(_decode(payload) or payload.encode())
    if len(text) >= MIN_BLOB_CHARS and _BASE64.fullmatch(text):
        decoded = _decode(text)
        if decoded is not None:
            return _digest(decoded)
    if len(text) > MAX_PARAM_CHARS:
        return _digest(text.encode())
    return strip_credentials(text) if text.lower().startswith(("http://", "https://")) else text


def _decode(text: str) -> bytes | None:
    compact = text.replace("\r", "").replace("\n", "")
    urlsafe = "-" in compact or "_" in compact
    try:
        return base64.b64decode(compact, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        return None


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


@dataclass(frozen=True)
class LedgerVideo:
    """A video of a finished task as the ledger remembers it.

    Attributes
    ----------
    url : str
        Kling's signed link.
    duration : float or None
        Seconds, when Kling said.
    expires_at : datetime or None
        When the link stops working (its ``Expires`` parameter), aware UTC; None if it does not say.
    """

    url: str
    duration: float | None = None
    expires_at: datetime | None = None

    @property
    def expired(self) -> bool:
        """True once the link's expiry has passed (False when the expiry is unknown)."""
        return self.expires_at is not None and self.expires_at <= datetime.now(timezone.utc)


@dataclass(frozen=True)
class LedgerEntry:
    """One submission in the ledger, as last recorded.

    Attributes
    ----------
    local_id : int
        The row's own id, known before the gateway answers.
    task_id : str or None
        The gateway's task id; None until the POST answers (and for ever if it never did).
    endpoint : str
        The route, e.g. ``"text2video"``.
    gateway : str
        The gateway's host, e.g. ``"api.ezmodel.cloud"``.
    key_id : str or None
        A short fingerprint of the API key (`KlingClient.key_id`), never the key.
    params : dict
        The request parameters, images as URL or ``{"sha256", "bytes"}`` (see `storable_params`).
    state : str
        ``"submitting"`` (the POST is on its way, or its process died before the answer), ``"unknown"``
        (the POST got no answer: the task may exist and may have been charged), ``"refused"`` (the gateway
        said no; nothing was created) or a `TaskStatus` value such as ``"IN_PROGRESS"`` or ``"SUCCESS"``.
    fail_reason : str or None
        Why the task failed or the submission was refused, cleaned and capped.
    videos : tuple of LedgerVideo
        The results, once the task succeeded.
    kept : tuple of Path
        Local copies of the videos.
    created_at, updated_at : datetime
        Aware UTC.
    source : str or None
        What the submission came from, when the caller said (e.g. a batch file and row): a re-run skips it.
    units : float or None
        The units Kling charged (`Task.units`), once known; None through the gateway.
    images, audios : tuple of Image, tuple of Audio
        The results of the image and audio routes (`Task.images`, `Task.audios`), once the task succeeded.
    """

    local_id: int
    task_id: str | None
    endpoint: str
    gateway: str
    key_id: str | None
    params: dict[str, Any]
    state: str
    fail_reason: str | None
    videos: tuple[LedgerVideo, ...]
    kept: tuple[Path, ...]
    created_at: datetime
    updated_at: datetime
    source: str | None = None
    units: float | None = None
    images: tuple[Image, ...] = ()
    audios: tuple[Audio, ...] = ()

    @property
    def is_final(self) -> bool:
        """True for SUCCESS, FAILURE and refused: nothing about this entry will change on the server."""
        return self.state in FINAL_STATES


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE tasks (
            local_id INTEGER PRIMARY KEY,
            task_id TEXT,
            endpoint TEXT NOT NULL,
            gateway TEXT NOT NULL,
            key_id TEXT,
            params TEXT NOT NULL,
            source TEXT,
            state TEXT NOT NULL,
            fail_reason TEXT,
            videos TEXT NOT NULL DEFAULT '[]',
            kept TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX tasks_by_task_id ON tasks (task_id)")
    db.execute("CREATE INDEX tasks_by_source ON tasks (source)")


def _add_units_v2(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE tasks ADD COLUMN units REAL")  # Kling's final_unit_deduction (Task.units)


def _add_media_v3(db: sqlite3.Connection) -> None:
    # The results that are not videos: {"images": [...], "audios": [...]} (Task.images, Task.audios).
    db.execute("ALTER TABLE tasks ADD COLUMN media TEXT NOT NULL DEFAULT '{}'")


# Entry i brings a database from schema version i to i + 1 (``PRAGMA user_version``); a new schema is
# one more function here.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_create_v1, _add_units_v2, _add_media_v3)
SCHEMA_VERSION = len(MIGRATIONS)

# What the ledger keeps of a task: state, capped fail reason, videos as JSON, units charged, the other
# results as JSON.
_Fields = tuple[str, str | None, str, float | None, str]
_Seen = tuple[TaskStatus, str | None, tuple[Video, ...], float | None, tuple[Image, ...], tuple[Audio, ...]]
# The columns _Fields fills, in its order.
_FIELD_COLUMNS = "state = ?, fail_reason = ?, videos = ?, units = ?, media = ?"

_COLUMNS = (
    "local_id, task_id, endpoint, gateway, key_id, params, state, fail_reason, videos, kept, "
    "created_at, updated_at, source, units, media"
)


class Ledger:
    """The SQLite record of every submission, shared by threads, kernels and the CLI.

    Parameters
    ----------
    path : str or PathLike, optional
        The database file; default `default_ledger_path` (``$KLING_WIDGETS_HOME/ledger.sqlite3``, else the
        user data directory). Its folder is created if needed.

    Notes
    -----
    Opening creates or migrates the database at once, so a bad file is reported by the constructor (one
    warning) and every later call is a no-op that returns an empty answer. Entries are newest first.

    Examples
    --------
    >>> ledger = Ledger("/tmp/ledger.sqlite3")                          # doctest: +SKIP
    >>> local_id = ledger.begin("text2video", client.base_url, client.key_id, body)
    >>> ledger.submitted(local_id, task)
    >>> ledger.entries(status="SUCCESS", limit=10)
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._setup(Path(path).expanduser() if path is not None else default_ledger_path(), available=True)
        self._run(self._open, None)

    @classmethod
    def off(cls) -> Ledger:
        """A ledger that records nothing and touches no file (for ``KlingClient(ledger=False)``)."""
        ledger = cls.__new__(cls)
        ledger._setup(Path(os.devnull), available=False)
        return ledger

    def _setup(self, path: Path, *, available: bool) -> None:
        self.path = path
        self._available = available
        self._lock = threading.Lock()
        self._local = threading.local()
        self._inherited: list[sqlite3.Connection] = []  # a forked child's copies: never used, never closed
        self._seen: dict[str, _Seen] = {}  # task id -> what was last written from here (`_seen_key`)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, available={self._available})"

    @property
    def available(self) -> bool:
        """False once the database proved unusable: from then on every call is a no-op."""
        return self._available

    # -- reading -------------------------------------------------------------------------------------------

    def entries(
        self,
        status: str | Iterable[str] | None = None,
        limit: int | None = None,
        *,
        gateway: str | None = None,
        key_id: str | None = None,
        source: str | None = None,
    ) -> list[LedgerEntry]:
        """Entries, newest first.

        Parameters
        ----------
        status : str or iterable of str, optional
            Only entries in this state (or these states): a `TaskStatus` or ``"submitting"``,
            ``"unknown"``, ``"refused"``.
        limit : int, optional
            At most this many.
        gateway : str, optional
            Only this gateway (a host or a base URL).
        key_id : str, optional
            Only this key fingerprint.
        source : str, optional
            Only entries recorded with this ``source``.

        Returns
        -------
        list of LedgerEntry
            Empty when the ledger is unavailable.
        """
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            states = [str(status)] if isinstance(status, str) else [str(s) for s in status]
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += states
        for column, value in (("gateway", gateway and gateway_host(gateway)), ("key_id", key_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        return self._select(where, args, limit)

    def get(self, task_id: str) -> LedgerEntry | None:
        """The newest entry of the task ``task_id``, or None."""
        found = self._select(["task_id = ?"], [task_id], 1)
        return found[0] if found else None

    def unfinished(self, gateway: str, key_id: str | None) -> list[LedgerEntry]:
        """Entries of this gateway and key that are not final, newest first: what `resume` shows.

        That is tasks still queued or running as last seen, and submissions whose POST never answered
        (``task_id`` None, state ``"submitting"`` or ``"unknown"``: they may have been charged).

        Parameters
        ----------
        gateway : str
            A host or a base URL.
        key_id : str or None
            The key's fingerprint; None matches entries recorded without a key.
        """
        final = sorted(FINAL_STATES)
        where = [f"state NOT IN ({', '.join('?' * len(final))})", "gateway = ?", "key_id IS ?"]
        return self._select(where, [*final, gateway_host(gateway), key_id], None)

    # -- writing -------------------------------------------------------------------------------------------

    def begin(
        self,
        endpoint: str,
        gateway: str,
        key_id: str | None,
        params: Mapping[str, Any],
        *,
        source: str | None = None,
    ) -> int | None:
        """Record a submission before its POST is sent (state ``"submitting"``).

        Parameters
        ----------
        endpoint : str
            The route, e.g. ``"text2video"``.
        gateway : str
            The base URL (only its host is stored) or the host.
        key_id : str or None
            The key's fingerprint (`KlingClient.key_id`).
        params : Mapping
            The body as it will be sent; stored through `storable_params`.
        source : str, optional
            Where the submission comes from, e.g. ``"prompts.csv#17"``, found again with
            ``entries(source=...)``.

        Returns
        -------
        int or None
            The entry's ``local_id`` for `submitted`, `refused` or `unanswered`; None when the ledger is
            unavailable (those methods then do nothing with it).
        """

        def insert(db: sqlite3.Connection) -> int | None:
            now = time.time()
            stored = _dumps(storable_params(params))
            cursor = db.execute(
                "INSERT INTO tasks (endpoint, gateway, key_id, params, source, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (endpoint, gateway_host(gateway), key_id, stored, source, SUBMITTING, now, now),
            )
            return cursor.lastrowid

        return self._run(insert, None)

    def submitted(self, local_id: int | None, task: Task) -> None:
        """The POST answered with ``task``: record its id and status."""
        self._update(
            local_id,
            f"task_id = ?, {_FIELD_COLUMNS}",
            (task.task_id, *_task_fields(task)),
        )

    def refused(self, local_id: int | None, error: BaseException) -> None:
        """The POST was answered with an error: nothing was created (state ``"refused"``).

        If the error carries a task id (`KlingError.task_id`), the task exists after all: it is recorded
        with status UNKNOWN, so `unfinished` brings it back to be watched.
        """
        self._settle(local_id, REFUSED, error)

    def unanswered(self, local_id: int | None, error: BaseException | None = None) -> None:
        """The POST got no answer (timeout, dropped connection, interrupt): state ``"unknown"``.

        The task may exist and may have been charged; it is never resubmitted blindly. ``error``, if
        given, is kept as the reason (and its task id, if it has one, as for `refused`).
        """
        self._settle(local_id, UNANSWERED, error)

    def observe(self, task: Task) -> None:
        """A watcher saw ``task``: record its status, failure reason and videos, if they changed.

        Only entries already in the ledger are updated, and a final status is never replaced by an older,
        unfinished one (watchers in several processes may report out of order). Repeating what this
        ledger object last wrote costs nothing.
        """
        seen = _seen_key(task)
        if self._seen.get(task.task_id) == seen:
            return
        fields = _task_fields(task)
        state = fields[0]

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                f"UPDATE tasks SET {_FIELD_COLUMNS}, updated_at = ?"  # noqa: S608 - fixed text
                " WHERE task_id = ? AND (state NOT IN (?, ?) OR state = ?)",
                (*fields, time.time(), task.task_id, *_TERMINAL, state),
            )

        self._run(update, None)
        if task.is_terminal:  # nothing more will come: keep the memo as small as the number of live tasks
            self._seen.pop(task.task_id, None)
        else:
            self._seen[task.task_id] = seen

    def merge_remote(self, tasks: Iterable[Task], *, endpoint: str, gateway: str, key_id: str | None) -> int:
        """Bring in the account's tasks as the server lists them (`KlingClient.list_tasks`).

        A task this ledger never saw gets a new entry (no parameters: the list does not give them back); a
        submission whose POST went unanswered becomes its task when the ``external_task_id`` it was sent
        with matches; a task already recorded is updated like `observe` does.

        Parameters
        ----------
        tasks : iterable of Task
            One or more pages of the list.
        endpoint : str
            The route they were listed from, e.g. ``"text2video"``.
        gateway, key_id
            As for `begin`: the base URL (or host) and the key's fingerprint.

        Returns
        -------
        int
            How many entries were added or filled in (0 when the ledger is unavailable).
        """
        tasks, host = list(tasks), gateway_host(gateway)
        known: list[Task] = []

        def merge(db: sqlite3.Connection) -> int:
            merged = 0
            with db:
                db.execute("BEGIN IMMEDIATE")  # no other writer between the look-up and the insert
                for task in tasks:
                    if db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone():
                        known.append(task)
                        continue
                    fields, now = _task_fields(task), time.time()
                    filled = (
                        task.external_task_id is not None
                        and db.execute(
                            f"UPDATE tasks SET task_id = ?, {_FIELD_COLUMNS},"  # noqa: S608 - fixed text
                            " updated_at = ? WHERE task_id IS NULL AND gateway = ? AND key_id IS ?"
                            " AND json_extract(params, '$.external_task_id') = ?",
                            (task.task_id, *fields, now, host, key_id, task.external_task_id),
                        ).rowcount
                    )
                    if not filled:
                        created = task.submit_time.timestamp() if task.submit_time else now
                        db.execute(
                            "INSERT INTO tasks (task_id, endpoint, gateway, key_id, params, state,"
                            " fail_reason, videos, units, media, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?, '{}', ?, ?, ?, ?, ?, ?, ?)",
                            (task.task_id, endpoint, host, key_id, *fields, created, now),
                        )
                    merged += 1
            return merged

        merged = self._run(merge, 0)
        for task in known:
            self.observe(task)
        return merged

    def add_kept(self, task_id: str, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Record local copies of the task's videos (absolute paths, each once)."""
        new = [str(Path(p).absolute()) for p in paths]

        def update(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")  # read-modify-write: no other writer in between
                rows = db.execute("SELECT local_id, kept FROM tasks WHERE task_id = ?", (task_id,)).fetchall()
                for local_id, kept in rows:
                    merged = list(dict.fromkeys([*_list(kept), *new]))
                    db.execute(
                        "UPDATE tasks SET kept = ?, updated_at = ? WHERE local_id = ?",
                        (_dumps(merged), time.time(), local_id),
                    )

        self._run(update, None)

    # -- internals -----------------------------------------------------------------------------------------

    def _settle(self, local_id: int | None, state: str, error: BaseException | None) -> None:
        task_id = error.task_id if isinstance(error, KlingError) else None
        if task_id:
            state = TaskStatus.UNKNOWN.value  # the gateway created it: watch it, never submit it again
        reason = clean_text(str(error) or type(error).__name__) if error is not None else None
        assignments = "task_id = COALESCE(?, task_id), state = ?, fail_reason = ?"
        self._update(local_id, assignments, (task_id, state, reason))

    def _update(self, local_id: int | None, assignments: str, values: tuple[Any, ...]) -> None:
        if local_id is None:
            return

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                f"UPDATE tasks SET {assignments}, updated_at = ? WHERE local_id = ?",  # noqa: S608 - ours
                (*values, time.time(), local_id),
            )

        self._run(update, None)

    def _select(self, where: list[str], args: list[Any], limit: int | None) -> list[LedgerEntry]:
        sql = f"SELECT {_COLUMNS} FROM tasks"  # noqa: S608 - fixed text; values are bound
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY local_id DESC LIMIT ?"
        bound = (*args, -1 if limit is None else max(int(limit), 0))
        return self._run(lambda db: [_entry(row) for row in db.execute(sql, bound)], [])

    def _open(self, db: sqlite3.Connection) -> None:
        """Create or migrate the schema (the constructor runs this once, on its own connection)."""
        _use_wal(db)
        if _user_version(db) == SCHEMA_VERSION:
            return
        with db:
            db.execute("BEGIN IMMEDIATE")  # two processes opening a new ledger: one migrates, one waits
            version = _user_version(db)
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"a newer kling-widgets wrote it (schema {version}; this one knows {SCHEMA_VERSION})"
                )
            for migrate in MIGRATIONS[version:]:
                migrate(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child)."""
        local = self._local
        db: sqlite3.Connection | None = getattr(local, "db", None)
        if db is not None and local.pid == os.getpid():
            return db
        if (
            db is not None
        ):  # inherited through fork: SQLite forbids using it; closing it could hurt the parent
            self._inherited.append(db)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        # WAL with synchronous=NORMAL never corrupts and survives a killed process; only an OS crash can
        # lose the last commits. FULL would add an fsync to every status change.
        db.execute("PRAGMA synchronous = NORMAL")
        db.row_factory = sqlite3.Row
        local.db, local.pid = db, os.getpid()
        return db

    def _run(self, work: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``work`` on this thread's connection; on a database or file error, give up once: ``default``."""
        if not self._available:
            return default
        try:
            return work(self._connection())
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)
            return default

    def _give_up(self, exc: BaseException) -> None:
        with self._lock:
            if not self._available:
                return
            self._available = False
        message = (
            f"The task ledger {self.path} cannot be used ({exc}); tasks are not recorded from now on. "
            f"Make its folder writable, move a damaged file away, or set {HOME_ENV} to another folder."
        )
        if threading.current_thread() is threading.main_thread():
            warnings.warn(message, RuntimeWarning, stacklevel=_outside_stacklevel())
        else:  # nothing is printed from a background thread
            logger.warning("%s", message)


_shared: dict[Path, Ledger] = {}
_shared_lock = threading.Lock()


def shared_ledger(path: str | os.PathLike[str] | None = None) -> Ledger:
    """This process's one `Ledger` for ``path`` (`default_ledger_path` when None), opened on first use.

    Every client and widget that shares it shares its connections, and a bad file warns once per process,
    not once per client.
    """
    where = Path(path).expanduser() if path is not None else default_ledger_path()
    with _shared_lock:
        if where not in _shared:
            _shared[where] = Ledger(where)
        return _shared[where]


def _outside_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this module, so the warning names the user's line."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    return level


def _seen_key(task: Task) -> _Seen:
    """What `_task_fields` is made of: compared on every poll, so it is taken as is (no JSON, no cleaning)."""
    return task.status, task.fail_reason, task.videos, task.units, task.images, task.audios


def _task_fields(task: Task) -> _Fields:
    """(state, capped fail reason, videos as JSON, units, images and sounds as JSON) of a task: all the
    ledger keeps of it."""
    videos = [
        {
            "url": video.url,
            "duration": video.duration,
            "expires_at": expires.timestamp() if (expires := video.expires_at) is not None else None,
        }
        for video in _bounded(task.videos)
    ]
    media = {
        "images": [
            {"url": image.url, "index": image.index, "watermark_url": _bounded_url(image.watermark_url)}
            for image in _bounded(task.images)
        ],
        "audios": [
            {
                "url": audio.url,
                "duration": audio.duration,
                "wav_url": _bounded_url(audio.wav_url),
                "id": audio.id,
            }
            for audio in _bounded(task.audios)
        ],
    }
    reason = clean_text(task.fail_reason) if task.fail_reason else None
    return task.status.value, reason, _dumps(videos), task.units, _dumps(media)


_ResultT = TypeVar("_ResultT", Video, Image, Audio)


def _bounded(results: tuple[_ResultT, ...]) -> list[_ResultT]:
    return [result for result in results if len(result.url) <= MAX_URL_CHARS][:MAX_VIDEOS]


def _bounded_url(url: str | None) -> str | None:
    return url if url is not None and len(url) <= MAX_URL_CHARS else None


def _entry(row: sqlite3.Row) -> LedgerEntry:
    """A row as a `LedgerEntry`; a damaged JSON column reads as empty rather than failing the listing."""
    params, media = _loads(row["params"]), _loads(row["media"])
    return LedgerEntry(
        local_id=row["local_id"],
        task_id=row["task_id"],
        endpoint=row["endpoint"],
        gateway=row["gateway"],
        key_id=row["key_id"],
        params=params if isinstance(params, dict) else {},
        state=row["state"],
        fail_reason=row["fail_reason"],
        videos=tuple(_video(item) for item in _list(row["videos"]) if isinstance(item, dict)),
        kept=tuple(Path(p) for p in _list(row["kept"]) if isinstance(p, str)),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        source=row["source"],
        units=row["units"],
        images=tuple(_image(item) for item in _items(media, "images")),
        audios=tuple(_audio(item) for item in _items(media, "audios")),
    )


def _video(item: dict[str, Any]) -> LedgerVideo:
    duration, expires = item.get("duration"), item.get("expires_at")
    return LedgerVideo(
        url=str(item.get("url", "")),
        duration=float(duration) if isinstance(duration, (int, float)) else None,
        expires_at=_utc(expires) if isinstance(expires, (int, float)) else None,
    )


def _items(media: object, key: str) -> list[dict[str, Any]]:
    """The objects with a text ``url`` in ``media[key]``: a damaged column reads as empty."""
    items = media.get(key) if isinstance(media, dict) else None
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("url"), str)]


def _image(item: dict[str, Any]) -> Image:
    index, watermark = item.get("index"), item.get("watermark_url")
    return Image(
        url=item["url"],
        index=index if isinstance(index, int) else None,
        watermark_url=watermark if isinstance(watermark, str) else None,
    )


def _audio(item: dict[str, Any]) -> Audio:
    duration, wav, audio_id = item.get("duration"), item.get("wav_url"), item.get("id")
    return Audio(
        url=item["url"],
        duration=float(duration) if isinstance(duration, (int, float)) else None,
        wav_url=wav if isinstance(wav, str) else None,
        id=audio_id if isinstance(audio_id, str) else None,
    )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (it stays so): readers never block the writer, nor the writer them.

    The switch does not wait for a busy file: when two processes open a new ledger at once, one switches
    and the other gets "locked" and goes on (its next statements wait). A corrupt file fails here.
    """
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        with contextlib.suppress(sqlite3.OperationalError):
            db.execute("PRAGMA journal_mode = WAL")


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    """Decoded JSON, or None for a damaged column."""
    try:
        return json.loads(text or "")
    except ValueError:
        return None


def _list(text: str | None) -> list[Any]:
    value = _loads(text)
    return value if isinstance(value, list) else []
