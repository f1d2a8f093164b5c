"""When to poll next, and how long to wait before retrying: pure policy, no threads, no I/O.

Polling follows the chance that the task finishes soon. Kling text-to-video takes about 1–5 minutes
(docs/gateway.md, "How long a task takes"), so a task that is still queued, or only seconds old, is polled
sparsely, and the gap shrinks to a couple of seconds around the time Kling usually finishes. The gap is the
one that minimises "mean detection lag + `REQUEST_COST` per request" for a log-normal prior on the duration:
with hazard rate h(t) (the chance per second of finishing now, given not finished yet), polling at rate
sqrt(h / (2 · cost)) is optimal, i.e. a gap of sqrt(2 · cost / h). `poll_interval` and `max_poll_interval`
clamp it, and a ±20 % jitter keeps tasks submitted together from polling in bursts.

Retries use capped exponential backoff with equal jitter, never less than 1 s (Kling's advice for 429)
and never less than the server's ``Retry-After``.

`PollPolicy` bundles these knobs into one value: the polling engine and ``KlingClient.wait`` both ask it
for every delay, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ._errors import KlingError, RateLimitError
from ._models import Task, TaskStatus

__all__ = [
    "MAX_RETRY_AFTER",
    "MIN_RETRY_DELAY",
    "PollPolicy",
    "completion_hazard",
    "next_poll_delay",
    "poll_gap",
    "retry_delay",
    "task_age",
]

# The prior on how long a Kling text-to-video task takes from submission to SUCCESS. Observations
# (docs/gateway.md, "How long a task takes"): 79–151 s for 5 s clips via fal, about 3 min in MIT Technology
# Review's test, about 240 s for Kling 3.0 std. A log-normal with median 150 s and shape 0.45 puts 90 % of
# tasks between 70 s and 315 s.
PRIOR_MEDIAN = 150.0
PRIOR_SIGMA = 0.45
# What one request is worth, in seconds of mean detection lag: it sets how densely the likely window is
# polled (about every 2.6 s around the median; the gap never exceeds max_poll_interval).
REQUEST_COST = 0.04
# Each poll gap is drawn from ±20 % around the policy's, so the polls of tasks submitted together spread out.
POLL_JITTER = 0.2
MIN_RETRY_DELAY = 1.0  # Kling: "exponential backoff, initial delay ≥ 1 s"
# The longest a server's Retry-After is honoured: a gateway asking for an hour (or for year 9999) is
# misconfigured, and waiting that long would look like a hang. A watch's own deadline may cut it shorter.
MAX_RETRY_AFTER = 300.0

_rng = random.Random()


def completion_hazard(age: float) -> float:
    """The chance per second that a task of this age finishes now, given that it has not yet.

    Parameters
    ----------
    age : float
        Seconds since the task was submitted.

    Returns
    -------
    float
        The hazard rate pdf / survival of the log-normal prior (`PRIOR_MEDIAN`, `PRIOR_SIGMA`): about 0
        in the first half minute, rising through the 1–5 minute window, then slowly falling. 0 for an
        age that is not a positive finite number.
    """
    if not (age > 0 and math.isfinite(age)):
        return 0.0
    z = (math.log(age) - math.log(PRIOR_MEDIAN)) / PRIOR_SIGMA  # not log(age / median): that underflows
    density = math.exp(-z * z / 2) / (math.sqrt(2 * math.pi) * PRIOR_SIGMA * age)
    survival = 0.5 * math.erfc(z / math.sqrt(2))
    if survival == 0.0:  # far in the tail both underflow; the ratio tends to z / (sigma * age)
        return z / (PRIOR_SIGMA * age)
    return density / survival


def task_age(task: Task, watched_for: float, now: datetime | None = None) -> float:
    """Seconds since the task was submitted, for the schedule.

    The gateway's ``submit_time`` when it is known and plausible (a task watched again long after it was
    submitted is not young), else how long we have been watching. Never less than ``watched_for``, so a
    gateway clock running ahead of ours cannot make a task look younger than we know it is.
    """
    if task.submit_time is None:
        return watched_for
    since_submit = ((now or datetime.now(timezone.utc)) - task.submit_time).total_seconds()
    return max(watched_for, since_submit) if math.isfinite(since_submit) else watched_for


def poll_gap(
    *, status: TaskStatus | None, age: float, poll_interval: float, max_poll_interval: float
) -> float:
    """The policy's gap before the next poll, before jitter.

    Parameters
    ----------
    status : TaskStatus or None
        The latest known status (None before the first successful poll).
    age : float
        Seconds since the task was submitted (`task_age`).
    poll_interval, max_poll_interval : float
        The shortest and the longest gap (a ``max_poll_interval`` below ``poll_interval`` counts as equal).

    Returns
    -------
    float
        ``poll_interval`` while nothing is known yet; ``max_poll_interval`` while the task is queued (it
        cannot finish before a whole generation has run); otherwise sqrt(2 · `REQUEST_COST` / hazard),
        clamped: the gap shrinks from ``max_poll_interval`` as ``age`` enters the 1–5 minute window.
    """
    ceiling = max(max_poll_interval, poll_interval)
    if status is None:
        return float(poll_interval)
    if status.is_queued:
        return float(ceiling)
    hazard = completion_hazard(age)
    if hazard <= 0.0:
        return float(ceiling)
    return float(min(max(math.sqrt(2 * REQUEST_COST / hazard), poll_interval), ceiling))


def next_poll_delay(
    *,
    status: TaskStatus | None,
    age: float,
    poll_interval: float,
    max_poll_interval: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next poll: `poll_gap` with jitter.

    Parameters
    ----------
    status, age, poll_interval, max_poll_interval
        As for `poll_gap`.
    rng : random.Random or None
        Source of jitter (pass a seeded one for reproducible delays).

    Returns
    -------
    float
        `poll_gap` times a factor drawn uniformly from 1 ± `POLL_JITTER`, kept within
        [``poll_interval``, ``max_poll_interval``]. Without jitter, tasks submitted together would be
        polled in bursts for their whole life (same age, same gap).
    """
    gap = poll_gap(
        status=status, age=age, poll_interval=poll_interval, max_poll_interval=max_poll_interval
    )
    jittered = gap * (rng or _rng).uniform(1 - POLL_JITTER, 1 + POLL_JITTER)
    return float(min(max(jittered, poll_interval), max(max_poll_interval, poll_interval)))


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = 1.0,
    cap: float = 30.0,
    floor: float = MIN_RETRY_DELAY,
    max_retry_after: float = MAX_RETRY_AFTER,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retrying a failed request.

    Parameters
    ----------
    attempt : int
        1 for the first retry, 2 for the second, …
    retry_after : float or None
        The server's ``Retry-After`` in seconds; the result is never below it, up to ``max_retry_after``.
        Non-finite or negative values are ignored.
    base, cap : float
        The backoff before jitter is ``min(cap, base * 2 ** (attempt - 1))``.
    floor : float
        The shortest delay (`MIN_RETRY_DELAY`, Kling's advice, unless a test wants it shorter).
    max_retry_after : float
        The longest ``Retry-After`` honoured (`MAX_RETRY_AFTER`).
    rng : random.Random or None
        Source of jitter (pass a seeded one for reproducible delays).

    Returns
    -------
    float
        A delay drawn uniformly from [backoff / 2, backoff] ("equal jitter", so clients that failed together
        spread out yet none retries at once), then raised to at least ``floor`` and ``retry_after``.
    """
    try:
        backoff = min(cap, base * 2.0 ** max(attempt - 1, 0))
    except OverflowError:
        backoff = cap
    jittered = (rng or _rng).uniform(backoff / 2, backoff)
    if retry_after is not None and math.isfinite(retry_after):
        floor = max(floor, min(retry_after, max_retry_after))
    return float(max(jittered, floor))


@dataclass(frozen=True)
class PollPolicy:
    """When to poll a task next and how long to back off after a failed poll: the one policy shared by
    the polling engine and ``KlingClient.wait``.

    Parameters
    ----------
    poll_interval, max_poll_interval : float
        The shortest and the longest gap between polls (`next_poll_delay`); ``0 < poll_interval <=
        max_poll_interval``.
    retry_base : float
        The first retry's backoff, and the shortest retry delay (Kling advises at least 1 s); later
        retries double it (`retry_delay`).
    retry_cap : float
        The longest backoff (a ``Retry-After`` may ask for more, up to ``max_retry_after``).
    max_retry_after : float
        The longest ``Retry-After`` honoured (`MAX_RETRY_AFTER`).
    rng : random.Random or None
        Source of jitter; pass a seeded one for reproducible delays. Left out of ``==``.
    """

    poll_interval: float = 1.0
    max_poll_interval: float = 5.0
    retry_base: float = MIN_RETRY_DELAY
    retry_cap: float = 30.0
    max_retry_after: float = MAX_RETRY_AFTER
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.poll_interval <= self.max_poll_interval < math.inf:
            raise ValueError(
                f"need 0 < poll_interval <= max_poll_interval (finite), not {self.poll_interval!r} and "
                f"{self.max_poll_interval!r}"
            )
        if not 0 < self.retry_base <= self.retry_cap < math.inf:
            raise ValueError(f"need 0 < retry_base <= retry_cap (finite), not {self.retry_base!r} and "
                             f"{self.retry_cap!r}")  # fmt: skip
        if not 0 <= self.max_retry_after < math.inf:
            raise ValueError(f"max_retry_after must be finite and non-negative, not {self.max_retry_after!r}")

    def with_intervals(self, poll_interval: float | None, max_poll_interval: float | None) -> PollPolicy:
        """This policy with other polling bounds; None keeps this policy's bound."""
        if poll_interval is None and max_poll_interval is None:
            return self
        return dataclasses.replace(
            self,
            poll_interval=self.poll_interval if poll_interval is None else poll_interval,
            max_poll_interval=self.max_poll_interval if max_poll_interval is None else max_poll_interval,
        )

    def next_poll(self, task: Task | None, elapsed: float) -> float:
        """Seconds until the next poll, after a successful one.

        Parameters
        ----------
        task : Task or None
            The latest snapshot (None before the first successful poll).
        elapsed : float
            Seconds since watching started.
        """
        return next_poll_delay(
            status=None if task is None else task.status,
            age=elapsed if task is None else task_age(task, elapsed),
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            rng=self.rng,
        )

    def retry(self, attempt: int, error: KlingError) -> float:
        """Seconds until the next try after ``attempt`` consecutive transient failures, the last ``error``.

        A `RateLimitError`'s ``retry_after`` is honoured up to ``max_retry_after``.
        """
        return retry_delay(
            attempt,
            retry_after=error.retry_after if isinstance(error, RateLimitError) else None,
            base=self.retry_base,
            cap=self.retry_cap,
            floor=self.retry_base,
            max_retry_after=self.max_retry_after,
            rng=self.rng,
        )
