"""When to poll next, and how long to wait before retrying: pure policy, no threads, no I/O.

Polling grows geometrically from ``poll_interval`` to ``max_poll_interval``. EZmodel refreshes from Kling on
every GET and Kling's query endpoint has no QPS limit (gateway-api.md §5, §10.4), so early polls are cheap
and make the "Queued" → "Generating" flip prompt; the long generation phase (1–5 min, progress frozen at
30 %, §6.4, §10.6) is polled at the relaxed rate.

Retries use capped exponential backoff with equal jitter, never less than 1 s (Kling's advice for 429)
and never less than the server's ``Retry-After``.
"""

from __future__ import annotations

import math
import random

from ._models import TaskStatus

__all__ = ["next_poll_delay", "retry_delay"]

POLL_GROWTH = 1.5  # each poll waits this much longer than the one before
QUEUED_FAST_WINDOW = 60.0  # seconds during which a queued task is polled at most 2 × poll_interval apart
MIN_RETRY_DELAY = 1.0  # Kling: "exponential backoff, initial delay ≥ 1 s"

_rng = random.Random()


def next_poll_delay(
    *,
    status: TaskStatus | None,
    polls: int,
    elapsed: float,
    poll_interval: float,
    max_poll_interval: float,
) -> float:
    """Seconds to wait before the next poll.

    Parameters
    ----------
    status : TaskStatus or None
        The latest known status (None before the first successful poll).
    polls : int
        How many polls were made so far.
    elapsed : float
        Seconds since watching started.
    poll_interval, max_poll_interval : float
        The first delay, and the ceiling the delay grows toward.

    Returns
    -------
    float
        ``poll_interval * 1.5 ** polls``, capped at ``max_poll_interval``. While the task is still queued
        (or no status is known yet) during the first 60 s, the cap is ``2 * poll_interval`` instead, so the
        start of generation shows up quickly. The result is never below ``poll_interval`` (a
        ``max_poll_interval`` below it just means no growth).
    """
    ceiling = max(max_poll_interval, poll_interval)
    if (status is None or status.is_queued) and elapsed < QUEUED_FAST_WINDOW:
        ceiling = min(ceiling, 2 * poll_interval)
    try:
        grown = poll_interval * POLL_GROWTH ** max(polls, 0)
    except OverflowError:
        grown = math.inf
    return float(max(min(grown, ceiling), poll_interval))


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = 1.0,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retrying a failed request.

    Parameters
    ----------
    attempt : int
        1 for the first retry, 2 for the second, …
    retry_after : float or None
        The server's ``Retry-After`` in seconds; the result is never below it. Non-finite or negative
        values are ignored.
    base, cap : float
        The backoff before jitter is ``min(cap, base * 2 ** (attempt - 1))``.
    rng : random.Random or None
        Source of jitter (pass a seeded one for reproducible delays).

    Returns
    -------
    float
        A delay drawn uniformly from [backoff / 2, backoff] ("equal jitter", so clients that failed together
        spread out yet none retries at once), then raised to at least 1 s and ``retry_after``.
    """
    try:
        backoff = min(cap, base * 2.0 ** max(attempt - 1, 0))
    except OverflowError:
        backoff = cap
    jittered = (rng or _rng).uniform(backoff / 2, backoff)
    floor = MIN_RETRY_DELAY
    if retry_after is not None and math.isfinite(retry_after):
        floor = max(floor, retry_after)
    return float(max(jittered, floor))
