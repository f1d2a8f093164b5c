"""The ledger's commands: ``kling-widgets history``, ``keep``, ``resume`` and ``batch``.

`add_commands` adds them to the ``kling-widgets`` parser; each handler returns an exit code (0 success, 1 a
task or a prompt failed, 2 any other error, like the other commands). Tables and results go to stdout,
progress to stderr, plain text only (docs/durable.md, "Command line").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from ._batch import DEFAULT_CONCURRENCY, BatchSubmitter, RowOutcome, RowState, read_batch
from ._client import KlingClient
from ._errors import KlingError
from ._keep import keep
from ._ledger import REFUSED, SUBMITTING, UNANSWERED, Ledger, LedgerEntry
from ._models import Task, TaskStatus
from ._poller import Update, Watch, default_engine
from ._terminal import ProgressLine
from ._text import clean_text

__all__ = ["add_commands"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
#: A CLI watch gives up on a task after this long (the task itself keeps running on the server).
WATCH_TIMEOUT = 3600.0
PROMPT_WIDTH = 40


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``history``, ``keep``, ``resume`` and ``batch`` to the ``kling-widgets`` subcommands."""
    history = commands.add_parser("history", help="list the tasks in the ledger, newest first")
    history.add_argument("--json", action="store_true", help="print the entries as JSON")
    history.add_argument(
        "--status",
        metavar="S",
        help="only this state: a task status (success, failure, ...), unknown, refused",
    )
    history.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    history.set_defaults(handler=history_command)

    keep_ = commands.add_parser("keep", help="download a finished task's videos with a JSON sidecar")
    which = keep_.add_mutually_exclusive_group(required=True)
    which.add_argument("task_id", nargs="?", metavar="TASK_ID", help="the task to keep")
    which.add_argument("--all", action="store_true", help="every succeeded task not kept yet")
    keep_.add_argument(
        "--dir", metavar="DIR", help="where (default $KLING_WIDGETS_KEEP, else ./kling-videos)"
    )
    keep_.set_defaults(handler=keep_command)

    resume = commands.add_parser("resume", help="watch every unfinished task of this key until it ends")
    _add_interval(resume)
    resume.set_defaults(handler=resume_command)

    batch = commands.add_parser("batch", help="submit every prompt of a file, a few at a time")
    batch.add_argument("file", metavar="FILE", help="a .csv (prompt column), .jsonl, or one prompt per line")
    batch.add_argument(
        "--concurrency",
        type=_at_least_one,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"most tasks unfinished at once (default {DEFAULT_CONCURRENCY})",
    )
    batch.add_argument("--json", action="store_true", help="print the final table as JSON")
    _add_interval(batch)
    batch.set_defaults(handler=batch_command)


def _add_interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=5.0, help="the longest gap between polls, in seconds (default 5)"
    )


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


# -- history and keep ------------------------------------------------------------------------------------


def history_command(args: argparse.Namespace) -> int:
    """``kling-widgets history``: the ledger, newest first."""
    entries = Ledger().entries(status=_state(args.status) if args.status else None, limit=args.limit)
    if args.json:
        print(json.dumps([entry_json(e) for e in entries], indent=2, ensure_ascii=False))
    else:
        print(history_table(entries))
    return EXIT_OK


def keep_command(args: argparse.Namespace) -> int:
    """``kling-widgets keep TASK_ID | --all``: prints each kept file; 2 if one could not be kept."""
    with KlingClient() as client:
        if args.all:
            ledger = client.ledger
            entries = ledger.entries(status=TaskStatus.SUCCESS.value) if ledger is not None else []
            task_ids = list(dict.fromkeys(e.task_id for e in entries if e.task_id and not e.kept))
        else:
            task_ids = [args.task_id]
        failed = 0
        for task_id in task_ids:
            try:
                paths = keep(task_id, args.dir, client=client)
            except (KlingError, ValueError, OSError) as exc:
                failed += 1
                print(f"{task_id}: {clean_text(str(exc))}", file=sys.stderr)
                continue
            for path in paths:
                print(path)
    if args.all and not task_ids:
        print("Nothing to keep: every task that succeeded is kept already.", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


# -- resume and batch ------------------------------------------------------------------------------------


def resume_command(args: argparse.Namespace) -> int:
    """``kling-widgets resume``: watch the unfinished tasks of this key and gateway, then print them."""
    with KlingClient() as client:
        ledger = client.ledger
        if ledger is None or not ledger.available:
            raise KlingError("The task ledger cannot be used, so there is nothing to resume.")
        entries = ledger.unfinished(client.base_url, client.key_id)
        watching = _Watching(client, args.interval)
        for entry in entries:
            if entry.task_id is not None:
                watching.add(entry.task_id, entry.endpoint)
        with ProgressLine(sys.stderr) as line:
            while not watching.wait(0.5):
                line.show(watching.summary())
            line.show(watching.summary())
        final = [ledger.get(e.task_id) or e if e.task_id else e for e in entries]
    print(history_table(final) if final else "Nothing to resume: every task in the ledger has ended.")
    unknown = [e for e in final if e.task_id is None]
    if unknown:
        print(
            f"{len(unknown)} submission(s) got no answer: they may have created (and billed) a task. "
            "Look for them in the EZmodel console.",
            file=sys.stderr,
        )
    failed = any(e.state not in (TaskStatus.SUCCESS.value, UNANSWERED, SUBMITTING) for e in final)
    return EXIT_FAILED if failed else EXIT_OK


def batch_command(args: argparse.Namespace) -> int:
    """``kling-widgets batch FILE``: 0 when every prompt succeeded, else 1."""
    rows = read_batch(args.file)  # every row is checked before the first POST
    with KlingClient() as client:
        watching = _Watching(client, args.interval)

        def on_outcome(outcome: RowOutcome) -> None:
            if outcome.state in (RowState.SUBMITTED, RowState.RESUMED) and outcome.task_id is not None:
                endpoint = outcome.entry.endpoint if outcome.entry else _endpoint(outcome.row.params)
                watching.add(outcome.task_id, endpoint, on_end=submitter.finished)

        submitter = BatchSubmitter(client, rows, concurrency=args.concurrency, on_outcome=on_outcome)
        submitter.start()  # after the assignment: on_outcome uses it
        with ProgressLine(sys.stderr) as line:
            while not (submitter.wait(0.5) and watching.wait(0)):
                line.show(_batch_summary(len(rows), submitter, watching))
            line.show(_batch_summary(len(rows), submitter, watching))
        results = [_row_result(o, watching.tasks, client.ledger) for o in submitter.outcomes]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print(_table(results, ("row", "state", "task_id", "prompt", "reason")))
    return EXIT_OK if all(r["state"] == TaskStatus.SUCCESS.value for r in results) else EXIT_FAILED


class _Watching:
    """Watches tasks on the shared engine until each ends; remembers their last snapshot."""

    def __init__(self, client: KlingClient, interval: float) -> None:
        self._client = client
        self._interval = max(interval, 0.01)
        self._lock = threading.Lock()
        self._watches: list[Watch] = []
        self.tasks: dict[str, Task] = {}

    def add(self, task_id: str, endpoint: str, on_end: Callable[[str], None] | None = None) -> None:
        def fetch() -> Task:
            return self._client.get_task(task_id, endpoint, retry=False)

        def on_update(update: Update) -> None:
            if update.task is not None:
                with self._lock:
                    self.tasks[task_id] = update.task
            if update.state.is_final and on_end is not None:
                on_end(task_id)

        watch = default_engine().watch(
            fetch,
            task_id=task_id,
            on_update=on_update,
            poll_interval=min(1.0, self._interval),
            max_poll_interval=self._interval,
            timeout=WATCH_TIMEOUT,
        )
        with self._lock:
            self._watches.append(watch)

    def wait(self, timeout: float) -> bool:
        """True once every watch so far has ended (waits up to ``timeout`` for it)."""
        end = time.monotonic() + timeout
        with self._lock:
            watches = list(self._watches)
        return all(w.wait(max(end - time.monotonic(), 0.0)) for w in watches)

    def counts(self) -> tuple[int, int, int]:
        """(watching, succeeded, failed)."""
        with self._lock:
            watches, tasks = list(self._watches), list(self.tasks.values())
        done = sum(1 for w in watches if w.state.is_final)
        succeeded = sum(1 for t in tasks if t.status is TaskStatus.SUCCESS)
        failed = sum(1 for t in tasks if t.status is TaskStatus.FAILURE)
        return len(watches) - done, succeeded, failed

    def summary(self) -> str:
        running, succeeded, failed = self.counts()
        return f"resume: {running} running · {succeeded} done · {failed} failed"


def _batch_summary(total: int, submitter: BatchSubmitter, watching: _Watching) -> str:
    outcomes = submitter.outcomes
    running, succeeded, failed = watching.counts()
    other = sum(1 for o in outcomes if o.state not in (RowState.SUBMITTED, RowState.RESUMED))
    text = f"batch: {len(outcomes)}/{total} handled · {running} running · {succeeded} done · {failed} failed"
    if other:
        text += f" · {other} not submitted now"
    if submitter.rate_limited:
        text += f" · {submitter.rate_limited}× held at the account's limit"
    return text


def _row_result(outcome: RowOutcome, tasks: dict[str, Task], ledger: Ledger | None) -> dict[str, Any]:
    """A row of the final batch table: the task's end state, or why there is none."""
    task = tasks.get(outcome.task_id) if outcome.task_id else None
    entry = outcome.entry
    if task is None and outcome.task_id and ledger is not None:
        entry = ledger.get(outcome.task_id) or entry
    if task is not None:
        state, reason = task.status.value, task.fail_reason
    elif outcome.state is RowState.DONE_BEFORE and entry is not None:
        state, reason = entry.state, entry.fail_reason
    else:
        state = outcome.state.value
        reason = str(outcome.error) if outcome.error else (entry.fail_reason if entry else None)
    return {
        "row": outcome.row.number,
        "state": state,
        "task_id": outcome.task_id,
        "prompt": outcome.row.prompt,
        "reason": reason,
        "source": outcome.row.source,
    }


def _endpoint(params: Any) -> str:
    return "image2video" if "image" in params else "text2video"


# -- tables ----------------------------------------------------------------------------------------------


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry as JSON for ``history --json`` (everything but the parameters' images)."""
    return {
        "local_id": entry.local_id,
        "task_id": entry.task_id,
        "state": entry.state,
        "endpoint": entry.endpoint,
        "gateway": entry.gateway,
        "key_id": entry.key_id,
        "params": entry.params,
        "fail_reason": entry.fail_reason,
        "videos": [
            {"url": v.url, "duration": v.duration, "expires_at": _iso(v.expires_at)} for v in entry.videos
        ],
        "images": [dataclasses.asdict(image) for image in entry.images],
        "audios": [dataclasses.asdict(audio) for audio in entry.audios],
        "kept": [str(p) for p in entry.kept],
        "created_at": _iso(entry.created_at),
        "updated_at": _iso(entry.updated_at),
        "source": entry.source,
    }


def history_table(entries: Iterable[LedgerEntry]) -> str:
    """The ledger as a text table: local id, task id, status, prompt, model, duration, when, kept, expiry."""
    rows = [
        {
            "id": e.local_id,
            "task_id": e.task_id or "-",
            "status": e.state,
            "prompt": e.params.get("prompt"),
            "model": e.params.get("model_name"),
            "duration": e.params.get("duration"),
            "when": e.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            "kept": e.kept[0].name + (f" +{len(e.kept) - 1}" if len(e.kept) > 1 else "") if e.kept else "",
            "link expires": _expiry(e),
        }
        for e in entries
    ]
    return _table(
        rows, ("id", "task_id", "status", "prompt", "model", "duration", "when", "kept", "link expires")
    )


def _expiry(entry: LedgerEntry) -> str:
    dates = [v.expires_at for v in entry.videos if v.expires_at is not None]
    if not dates:
        return ""
    first = min(dates)
    return "expired" if first <= datetime.now(timezone.utc) else f"{first.astimezone():%Y-%m-%d}"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned columns; every cell cleaned (server text must not drive the terminal), prompts cut."""

    def cell(column: str, value: object) -> str:
        text = "" if value is None else str(value)
        return clean_text(text, PROMPT_WIDTH if column in ("prompt", "reason") else 200)

    cells = [[cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _state(text: str) -> str:
    """A --status argument as the ledger spells it: the ledger's own states as written (``unknown`` is an
    unanswered POST, ``UNKNOWN`` the gateway's status), any other word as a `TaskStatus`, in any case."""
    text = text.strip()
    return text if text in (SUBMITTING, UNANSWERED, REFUSED) else text.upper()


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
