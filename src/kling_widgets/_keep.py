"""Kept videos: local copies of a finished task's videos, with a JSON sidecar, before the links expire.

Kling deletes generated videos after 30 days and its signed links stop working then. `keep` downloads each
video of a task as ``{task_id}.mp4`` (``{task_id}-{i}.mp4`` when there are several) next to
``{task_id}.json``, which says what the files are (prompt, parameters, model, times, source URL, size,
SHA-256), and records the paths in the ledger (docs/durable.md, "Kept videos").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._client import KlingClient
from ._errors import KlingError
from ._ledger import LedgerEntry, LedgerVideo
from ._models import Task, TaskStatus, Video

__all__ = ["KEEP_ENV", "keep", "keep_directory", "keep_in_background"]

#: The folder for kept videos; ``0`` turns automatic keeping off.
KEEP_ENV = "KLING_WIDGETS_KEEP"
DEFAULT_KEEP_DIR = "kling-videos"

# The video host's answers that mean the file is gone for good (an expired or deleted link).
_GONE = frozenset({403, 404, 410})
_HASH_CHUNK = 1 << 20


def keep_directory() -> Path | None:
    """Where videos are kept automatically: ``$KLING_WIDGETS_KEEP``, else ``./kling-videos``.

    Returns
    -------
    Path or None
        None when ``KLING_WIDGETS_KEEP`` is ``0`` (automatic keeping is off).
    """
    value = os.environ.get(KEEP_ENV, "").strip()
    if value == "0":
        return None
    return Path(value or DEFAULT_KEEP_DIR).expanduser()


def keep(
    task_or_id: Task | str,
    directory: str | os.PathLike[str] | None = None,
    *,
    client: KlingClient | None = None,
) -> list[Path]:
    """Download every video of a finished task, with a ``{task_id}.json`` sidecar, and record them.

    A file already kept whose SHA-256 matches its sidecar is not downloaded again. Files and the sidecar
    are written under temporary names and renamed when complete.

    Parameters
    ----------
    task_or_id : Task or str
        A task that succeeded, or a task id (its videos come from the ledger, else from a fetch).
    directory : str or path-like, optional
        Where to write; default ``$KLING_WIDGETS_KEEP``, else ``./kling-videos`` (created if needed).
    client : KlingClient, optional
        Downloads, and finds the ledger entry; default a new `KlingClient()` (closed afterwards).

    Returns
    -------
    list of Path
        The absolute paths of the video files, in the task's order.

    Raises
    ------
    ValueError
        The task has no video (it has not succeeded).
    KlingError
        A link already expired (code ``"link_expired"``; Kling deletes videos after 30 days), or the
        download failed.

    Examples
    --------
    >>> keep("842250903629086785")                                      # doctest: +SKIP
    [PosixPath('/home/me/kling-videos/842250903629086785.mp4')]
    """
    kling = client if client is not None else KlingClient()
    try:
        return _keep(kling, task_or_id, Path(directory) if directory is not None else _manual_directory())
    finally:
        if client is None:
            kling.close()


# At most this many background downloads at once, across every widget of the process.
MAX_BACKGROUND_DOWNLOADS = 4
_DOWNLOADS = threading.BoundedSemaphore(MAX_BACKGROUND_DOWNLOADS)


def keep_in_background(
    task: Task,
    directory: str | os.PathLike[str] | None,
    client: KlingClient,
    on_done: Callable[[list[Path], KlingError | OSError | ValueError | None], None] | None = None,
) -> threading.Thread:
    """Keep a finished task's videos on a daemon thread: what a widget calls on SUCCESS.

    At most `MAX_BACKGROUND_DOWNLOADS` of these download at once in a process; the others wait their turn.

    Nothing is printed and the caller never waits: the outcome goes to ``on_done(paths, error)`` (on that
    thread) with ``error`` None on success, else the `KlingError`, `OSError` or `ValueError` that stopped
    it (``paths`` is then empty).

    Parameters
    ----------
    task : Task
        The task, status SUCCESS.
    directory : str or path-like, optional
        As for `keep`; None means `keep_directory` (``KLING_WIDGETS_KEEP=0`` then keeps nothing and
        ``on_done`` gets an empty list).
    client : KlingClient
        The widget's client.
    on_done : callable, optional
        Called once with the outcome.

    Returns
    -------
    threading.Thread
        Already started.
    """

    def run() -> None:
        paths: list[Path] = []
        error: KlingError | OSError | ValueError | None = None
        target = Path(directory) if directory is not None else keep_directory()
        try:
            if target is not None:
                with _DOWNLOADS:  # a batch finishing together downloads a few at a time, not all at once
                    paths = _keep(client, task, target)
        except (KlingError, OSError, ValueError) as exc:
            error = exc
        if on_done is not None:
            on_done(paths, error)

    thread = threading.Thread(target=run, name=f"kling-widgets-keep-{task.task_id}", daemon=True)
    thread.start()
    return thread


# -- internals -------------------------------------------------------------------------------------------


def _manual_directory() -> Path:
    """`keep_directory`, except that ``KLING_WIDGETS_KEEP=0`` only turns off *automatic* keeping."""
    return keep_directory() or Path(DEFAULT_KEEP_DIR)


def _keep(client: KlingClient, task_or_id: Task | str, directory: Path) -> list[Path]:
    ledger = client.ledger
    task_id = task_or_id.task_id if isinstance(task_or_id, Task) else task_or_id
    entry = ledger.get(task_id) if ledger is not None else None
    videos, finished = _videos(client, task_or_id, entry)
    directory = directory.expanduser().absolute()
    directory.mkdir(parents=True, exist_ok=True)
    stem = _file_stem(task_id)
    sidecar = directory / f"{stem}.json"
    known = _known_digests(sidecar)
    records: list[dict[str, Any]] = []
    for index, video in enumerate(videos, 1):
        path = directory / (f"{stem}.mp4" if len(videos) == 1 else f"{stem}-{index}.mp4")
        digest = _sha256(path) if path.name in known else None
        if digest is None or digest != known[path.name]:
            _download(client, video, path)
            digest = _sha256(path)
        records.append(
            {
                "file": path.name,
                "url": video.url,
                "bytes": path.stat().st_size,
                "sha256": digest,
                "duration": video.duration,
                "expires_at": _iso(video.expires_at),
            }
        )
    _write_atomically(sidecar, _sidecar(task_id, entry, finished, records))
    paths = [directory / record["file"] for record in records]
    if ledger is not None:
        ledger.add_kept(task_id, paths)
    return paths


def _videos(
    client: KlingClient, task_or_id: Task | str, entry: LedgerEntry | None
) -> tuple[tuple[Video | LedgerVideo, ...], Task | None]:
    """The videos to keep and, when fetched or given, the task: the ledger spares a request."""
    task = task_or_id if isinstance(task_or_id, Task) else None
    if task is None and entry is not None and entry.videos:
        return entry.videos, None
    if task is None:
        task = client.get_task(str(task_or_id), entry.endpoint if entry is not None else "text2video")
    if task.status is not TaskStatus.SUCCESS or not task.videos:
        reason = f": {task.fail_reason}" if task.fail_reason else ""
        raise ValueError(
            f"Task {task.task_id} has no video to keep (status {task.status.value}{reason}); "
            "keep it once it has succeeded"
        )
    return task.videos, task


def _download(client: KlingClient, video: Video | LedgerVideo, path: Path) -> None:
    expires = video.expires_at
    if expires is not None and expires <= datetime.now(timezone.utc):
        raise _expired(path.stem, f"on {expires:%d %b %Y %H:%M} UTC")
    try:
        client.download(video.url, path, overwrite=True)
    except KlingError as exc:
        if exc.status_code in _GONE:
            raise _expired(path.stem, f"(the video host answered HTTP {exc.status_code})") from exc
        raise


def _expired(name: str, when: str) -> KlingError:
    return KlingError(
        f"Cannot keep {name}: its video link expired {when}. Kling deletes videos after 30 days; "
        "a copy kept earlier is the only one left.",
        code="link_expired",
    )


def _sidecar(
    task_id: str, entry: LedgerEntry | None, task: Task | None, records: list[dict[str, Any]]
) -> dict[str, Any]:
    params = dict(entry.params) if entry is not None else {}
    submitted = (task.submit_time if task is not None else None) or (entry.created_at if entry else None)
    finished = task.finish_time if task is not None else None
    if finished is None and entry is not None and entry.is_final:
        finished = entry.updated_at  # when the ledger saw it end
    return {
        "task_id": task_id,
        "endpoint": entry.endpoint if entry is not None else None,
        "gateway": entry.gateway if entry is not None else None,
        "model": params.get("model_name") or params.get("model"),
        "prompt": params.get("prompt"),
        "params": params,
        "submitted_at": _iso(submitted),
        "finished_at": _iso(finished),
        "kept_at": _iso(datetime.now(timezone.utc)),
        "videos": records,
    }


def _known_digests(sidecar: Path) -> dict[str, str]:
    """File name -> SHA-256 from an earlier sidecar (empty when there is none or it is unreadable)."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        return {str(v["file"]): str(v["sha256"]) for v in data["videos"]}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        partial.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _file_stem(task_id: str) -> str:
    """A task id as one harmless file name component (ids come from the server)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id).lstrip(".") or "task"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
