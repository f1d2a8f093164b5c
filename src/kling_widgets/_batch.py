"""Batches that finish: read a batch file, then submit its rows without ever exceeding a concurrency.

`read_batch` turns a CSV (a ``prompt`` column and optional parameter columns), JSON Lines (one object with
``prompt`` per line) or plain text (one prompt per line) into `BatchRow` s, validating every row before
anything is sent. `BatchSubmitter` submits rows on a daemon thread, keeping at most ``concurrency`` tasks
unfinished; whoever watches the tasks tells it when one ends (`BatchSubmitter.finished`), so the CLI and
the gallery can both drive it (docs/durable.md, "Batches").

Money rules: a 429 on a POST created nothing (Kling's parallel-task limit, code 1303, reaches us through
EZmodel as 429 ``fail_to_fetch_task``: docs/gateway.md, "Retry-After and rate limits"), so the same row is
sent again once a task ends or the backoff passes; a POST without an answer may have created a task, so
that row is never sent again: it is reported ``unknown``. Each row of a file is recorded with the ledger
``source`` ``"{absolute path}#{row number}"``; running the file again skips every row already sent (in any
state but ``refused``).
"""

from __future__ import annotations

import csv
import enum
import io
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._client import KlingClient
from ._errors import (
    APIError,
    AuthenticationError,
    KlingError,
    PermissionDeniedError,
    RateLimitError,
    TransportError,
)
from ._ledger import REFUSED, LedgerEntry
from ._schedule import retry_delay

__all__ = [
    "COLUMNS",
    "DEFAULT_CONCURRENCY",
    "BatchRow",
    "BatchSubmitter",
    "RowOutcome",
    "RowState",
    "read_batch",
    "rows_from_prompts",
]

logger = logging.getLogger("kling_widgets")

#: Kling's smallest accounts run 5 tasks at once; more only waits in the gateway's queue.
DEFAULT_CONCURRENCY = 5
#: Kling refuses longer prompts.
MAX_PROMPT_CHARS = 2500
#: This many POSTs in a row without an answer stop a batch: the gateway is down, and each may have billed.
MAX_UNANSWERED_IN_A_ROW = 3


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return text

    return convert


def _unit_float(value: Any) -> float:
    number = float(value) if not isinstance(value, bool) else math.nan
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"must be a number from 0 to 1, got {value!r}")
    return number


#: The columns (CSV) or keys (JSON Lines) a batch file may have, and how each value is read. ``image``
#: makes the row an image-to-video task.
COLUMNS: Mapping[str, Callable[[Any], Any]] = {
    "prompt": _text,
    "negative_prompt": _text,
    "model_name": _text,
    "duration": _choice("5", "10"),
    "aspect_ratio": _choice("16:9", "9:16", "1:1"),
    "mode": _choice("std", "pro", "master"),
    "cfg_scale": _unit_float,
    "sound": _choice("on", "off"),
    "image": _text,
    "image_tail": _text,
    "external_task_id": _text,
}


@dataclass(frozen=True)
class BatchRow:
    """One prompt of a batch, validated.

    Attributes
    ----------
    number : int
        1-based: the line of a text or JSON Lines file, the record after the header of a CSV, the position
        in a list of prompts.
    prompt : str
    params : Mapping
        The other keywords for `KlingClient.text2video` (or ``image2video`` when there is an ``image``).
    source : str or None
        The ledger ``source`` (``"{absolute path}#{number}"`` for a file): how a re-run finds the row.
    """

    number: int
    prompt: str
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None


class RowState(str, enum.Enum):
    """What became of a row's submission."""

    SUBMITTED = "submitted"  # the gateway gave a task id
    RESUMED = "resumed"  # sent by an earlier run; its task is not finished yet: watch it
    DONE_BEFORE = "done_before"  # sent by an earlier run; its task ended (or the ledger says it did)
    REFUSED = "refused"  # the gateway said no (not a 429): nothing was created
    UNKNOWN = "unknown"  # the POST got no answer, now or in an earlier run: it may have been charged
    NOT_SENT = "not_sent"  # the batch stopped before this row


@dataclass(frozen=True)
class RowOutcome:
    """A row's submission outcome, as given to ``on_outcome``.

    Attributes
    ----------
    row : BatchRow
    state : RowState
    task_id : str or None
        The task, when one is known.
    error : KlingError or None
        Why the row was refused, left unknown or not sent.
    entry : LedgerEntry or None
        For RESUMED, DONE_BEFORE and an UNKNOWN from an earlier run: the ledger's record of it.
    """

    row: BatchRow
    state: RowState
    task_id: str | None = None
    error: KlingError | None = None
    entry: LedgerEntry | None = None


# -- reading ---------------------------------------------------------------------------------------------


def read_batch(path: str | Path) -> list[BatchRow]:
    """Read and validate a batch file: ``.csv``, ``.jsonl`` / ``.ndjson``, or text (one prompt per line).

    A CSV has a header with a ``prompt`` column and any of `COLUMNS`; an empty cell keeps the default.
    A JSON Lines file has one object per line with those keys. In a text file every non-blank line is a
    prompt. Blank lines are skipped in every format.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of BatchRow
        With ``source`` ``"{absolute path}#{number}"``.

    Raises
    ------
    ValueError
        Anything wrong in any row (all problems, by row), an unknown column, or no prompt at all. Nothing
        has been sent.
    """
    file = Path(path).expanduser().resolve()
    text = file.read_text(encoding="utf-8-sig")
    suffix = file.suffix.lower()
    if suffix == ".csv":
        records = _csv_records(text)
    elif suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(text)
    else:
        records = [
            (n, {"prompt": line.strip()}) for n, line in enumerate(text.splitlines(), 1) if line.strip()
        ]
    return _validated(records, lambda n: f"{file}#{n}", str(file))


def rows_from_prompts(prompts: Iterable[str], **params: Any) -> list[BatchRow]:
    """Rows for a list of prompts sharing ``params`` (no ``source``: not resumable), validated.

    Raises
    ------
    ValueError
        A prompt is blank or too long, or a parameter is invalid (nothing has been sent).
    """
    if isinstance(prompts, str):
        raise TypeError("expected a list of prompts, not one string")
    records = [(n, {**params, "prompt": prompt}) for n, prompt in enumerate(prompts, 1)]
    return _validated(records, lambda n: None, "the prompts")


def _csv_records(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # keeps line breaks inside quoted cells
    header = [name.strip() for name in reader.fieldnames or ()]
    if "prompt" not in header:
        raise ValueError(f"the CSV needs a 'prompt' column; its header is {header}")
    _check_columns(header)
    reader.fieldnames = header
    records = []
    for number, record in enumerate(reader, 1):
        if None in record:  # more cells than columns
            raise ValueError(f"row {number} has more cells than the header has columns")
        values = {key: value for key, value in record.items() if value is not None and value.strip()}
        if values:
            records.append((number, values))
    return records


def _jsonl_records(text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"line {number} is not a JSON object")
        _check_columns(value)
        records.append((number, {key: v for key, v in value.items() if v is not None}))
    return records


def _check_columns(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; a batch may have: {', '.join(COLUMNS)}")


def _validated(
    records: Sequence[tuple[int, Mapping[str, Any]]], source: Callable[[int], str | None], where: str
) -> list[BatchRow]:
    rows, problems = [], []
    for number, record in records:
        _check_columns(record)
        values: dict[str, Any] = {}
        for key, value in record.items():
            try:
                values[key] = COLUMNS[key](
                    value.strip() if isinstance(value, str) and key != "prompt" else value
                )
            except (ValueError, TypeError) as exc:
                problems.append(f"row {number}: {key} {exc}")
        prompt = values.pop("prompt", "")
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"row {number}: the prompt is blank")
        elif len(prompt) > MAX_PROMPT_CHARS:
            problems.append(
                f"row {number}: the prompt has {len(prompt)} characters (at most {MAX_PROMPT_CHARS})"
            )
        rows.append(BatchRow(number, prompt, values, source(number)))
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ValueError(f"{where}: {shown} (nothing was sent)")
    if not rows:
        raise ValueError(f"{where}: no prompt found (nothing was sent)")
    return rows


# -- submitting ------------------------------------------------------------------------------------------


class BatchSubmitter:
    """Submits rows on a daemon thread with at most ``concurrency`` tasks unfinished.

    The submitter never watches tasks: the caller does, and calls `finished` when a watch ends (in any
    way: success, failure, error, timeout, stop), which frees a slot. ``on_outcome`` gets one `RowOutcome`
    per row, on the submitter's thread, in row order; start watching SUBMITTED and RESUMED tasks there.

    A 429 on a POST holds the queue until a task ends or the backoff (at least the ``Retry-After``) passes,
    then the same row is sent again: a 429 never fails a row. Rows already in the ledger under their
    ``source`` are not sent again (see `RowState`). AuthenticationError, PermissionDeniedError and
    `MAX_UNANSWERED_IN_A_ROW` unanswered POSTs stop the batch: the rest is NOT_SENT.

    Parameters
    ----------
    client : KlingClient
        Submits; its ledger (if any) makes the batch resumable.
    rows : sequence of BatchRow
    concurrency : int
        Most tasks unfinished at once (this batch's own, including RESUMED ones).
    on_outcome : callable, optional
        ``on_outcome(outcome)``; its exceptions are logged and ignored.

    Examples
    --------
    >>> submitter = BatchSubmitter(client, read_batch("prompts.csv"), concurrency=5,    # doctest: +SKIP
    ...                            on_outcome=start_watching)   # which calls submitter.finished(task_id)
    >>> submitter.start().wait()
    """

    def __init__(
        self,
        client: KlingClient,
        rows: Sequence[BatchRow],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_outcome: Callable[[RowOutcome], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        self.client = client
        self.rows = tuple(rows)
        self.concurrency = concurrency
        self._on_outcome = on_outcome
        self._cv = threading.Condition()
        self._running: set[str] = set()  # task ids submitted (or resumed) and not reported finished
        self._ended: set[str] = set()  # reported finished before their submission returned
        self._ends = 0  # how many times `finished` was called: a 429 waits for the next one
        self._outcomes: list[RowOutcome] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.rate_limited = 0  # 429s answered to POSTs (each created nothing and was sent again)

    def __repr__(self) -> str:
        sent = len(self.outcomes)
        return f"BatchSubmitter(rows={len(self.rows)}, concurrency={self.concurrency}, sent={sent})"

    @property
    def outcomes(self) -> list[RowOutcome]:
        """The outcomes so far, in row order."""
        with self._cv:
            return list(self._outcomes)

    @property
    def running(self) -> int:
        """How many of this batch's tasks are unfinished (as far as `finished` has been told)."""
        with self._cv:
            return len(self._running)

    def start(self) -> BatchSubmitter:
        """Start submitting on a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("this batch was already started")
        self._thread = threading.Thread(target=self._run, name="kling-widgets-batch", daemon=True)
        self._thread.start()
        return self

    def finished(self, task_id: str) -> None:
        """A task of this batch ended (or its watch did): free its slot. Safe from any thread."""
        with self._cv:
            self._ends += 1
            if task_id in self._running:
                self._running.discard(task_id)
            else:
                self._ended.add(task_id)
            self._cv.notify_all()

    def stop(self) -> None:
        """Send nothing more (a POST in flight still completes); the remaining rows become NOT_SENT."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every row has an outcome; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    # -- the submitting thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            halt: KlingError | None = None
            unanswered = 0
            for row in self.rows:
                if halt is not None or not self._wait_for_slot():
                    self._report(RowOutcome(row, RowState.NOT_SENT, error=halt))
                    continue
                try:
                    outcome = self._earlier(row) or self._send(row)
                except Exception as exc:  # a bug must not strand the batch: this and the rest are reported
                    logger.exception("Batch row %d could not be handled; the batch stops", row.number)
                    halt = KlingError(
                        f"The batch stopped at row {row.number}: {type(exc).__name__}: {exc}",
                        code="internal_error",
                    )
                    outcome = RowOutcome(row, RowState.NOT_SENT, error=halt)
                self._report(outcome)
                unanswered = (
                    unanswered + 1 if outcome.state is RowState.UNKNOWN and outcome.entry is None else 0
                )
                if isinstance(outcome.error, (AuthenticationError, PermissionDeniedError)):
                    halt = outcome.error
                elif unanswered >= MAX_UNANSWERED_IN_A_ROW:
                    halt = KlingError(
                        f"{unanswered} submissions in a row got no answer; the batch stopped (each may have "
                        "created a task). Run it again later: rows already sent are skipped.",
                        code="gateway_not_answering",
                    )
        finally:
            self._done.set()

    def _wait_for_slot(self) -> bool:
        """Wait until fewer than ``concurrency`` tasks run; False once stopped."""
        with self._cv:
            self._cv.wait_for(lambda: self._stopped or len(self._running) < self.concurrency)
            return not self._stopped

    def _hold(self, ends: int, delay: float) -> bool:
        """After a 429: wait until a task ends (the ``ends``-th on) or ``delay`` passes; False if stopped."""
        with self._cv:
            self._cv.wait_for(lambda: self._stopped or self._ends > ends, delay)
            return not self._stopped

    def _earlier(self, row: BatchRow) -> RowOutcome | None:
        """The outcome of an earlier run of the same row, if it was sent (refusals don't count)."""
        ledger = self.client.ledger
        if row.source is None or ledger is None:
            return None
        sent = [entry for entry in ledger.entries(source=row.source) if entry.state != REFUSED]
        if not sent:
            return None
        entry = sent[0]
        if entry.params.get("prompt") != row.prompt:
            changed = KlingError(
                f"{row.source} was sent before with another prompt: the file changed since. It is not sent "
                "again; save the changed batch under a new name to run it as a new batch.",
                code="batch_changed",
            )
            return RowOutcome(row, RowState.NOT_SENT, entry.task_id, changed, entry)
        if entry.task_id is None:
            return RowOutcome(row, RowState.UNKNOWN, None, None, entry)
        if entry.is_final:
            return RowOutcome(row, RowState.DONE_BEFORE, entry.task_id, None, entry)
        self._track(entry.task_id)
        return RowOutcome(row, RowState.RESUMED, entry.task_id, None, entry)

    def _send(self, row: BatchRow) -> RowOutcome:
        params = dict(row.params)
        attempt = 0
        while True:
            with self._cv:
                ends = self._ends
            try:
                if "image" in params:
                    task = self.client.image2video(
                        params.pop("image"), row.prompt, source=row.source, **params
                    )
                else:
                    task = self.client.text2video(row.prompt, source=row.source, **params)
            except RateLimitError as exc:  # nothing was created: hold the queue, then send the same row
                attempt += 1
                with self._cv:
                    self.rate_limited += 1
                delay = retry_delay(attempt, retry_after=exc.retry_after)
                logger.info(
                    "Batch row %d: the gateway is at its limit (429); next try in %.1f s", row.number, delay
                )
                if not self._hold(ends, delay):
                    return RowOutcome(row, RowState.NOT_SENT, error=exc)
                params = dict(row.params)
                continue
            except APIError as exc:
                return RowOutcome(row, RowState.REFUSED, exc.task_id, exc)
            except (TransportError, KlingError) as exc:  # no usable answer: it may exist, never sent again
                return RowOutcome(row, RowState.UNKNOWN, exc.task_id, exc)
            self._track(task.task_id)
            return RowOutcome(row, RowState.SUBMITTED, task.task_id)

    def _track(self, task_id: str) -> None:
        with self._cv:
            if task_id in self._ended:  # its watch ended before the submission returned here
                self._ended.discard(task_id)
            else:
                self._running.add(task_id)

    def _report(self, outcome: RowOutcome) -> None:
        with self._cv:
            self._outcomes.append(outcome)
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:
                logger.exception("on_outcome failed for batch row %d", outcome.row.number)
