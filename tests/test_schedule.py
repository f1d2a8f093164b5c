"""The polling and retry policy: growth, caps, phases, Retry-After floor, jitter bounds (seeded)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_widgets._models import TaskStatus
from kling_widgets._schedule import next_poll_delay, retry_delay


def poll_delays(
    status: TaskStatus | None, *, elapsed: float = 120.0, n: int = 8, **intervals: float
) -> list[float]:
    intervals = {"poll_interval": 1.0, "max_poll_interval": 5.0, **intervals}
    return [next_poll_delay(status=status, polls=polls, elapsed=elapsed, **intervals) for polls in range(n)]


@pytest.mark.parametrize("status", [TaskStatus.IN_PROGRESS, TaskStatus.UNKNOWN])
def test_poll_delay_grows_geometrically_to_the_ceiling(status: TaskStatus) -> None:
    assert poll_delays(status, elapsed=5.0) == pytest.approx([1.0, 1.5, 2.25, 3.375, 5.0, 5.0, 5.0, 5.0])


@pytest.mark.parametrize("status", [None, TaskStatus.NOT_START, TaskStatus.SUBMITTED, TaskStatus.QUEUED])
def test_queued_tasks_are_polled_briskly_in_the_first_minute(status: TaskStatus | None) -> None:
    assert poll_delays(status, elapsed=59.9) == pytest.approx([1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    # A long queue (Kling busy) then relaxes to the normal ceiling.
    assert poll_delays(status, elapsed=60.0)[-1] == 5.0


def test_queued_cap_never_exceeds_the_ceiling() -> None:
    assert poll_delays(TaskStatus.SUBMITTED, elapsed=0.0, max_poll_interval=1.2)[-1] == 1.2


@pytest.mark.parametrize("status", [None, *TaskStatus])
def test_poll_delay_stays_within_the_intervals(status: TaskStatus | None) -> None:
    for delay in poll_delays(status, n=40, elapsed=30.0, poll_interval=0.25, max_poll_interval=7.0):
        assert 0.25 <= delay <= 7.0


def test_ceiling_below_the_interval_means_no_growth() -> None:
    assert poll_delays(TaskStatus.IN_PROGRESS, poll_interval=3.0, max_poll_interval=1.0) == [3.0] * 8


def test_poll_delay_survives_absurd_poll_counts() -> None:
    common = {
        "status": TaskStatus.IN_PROGRESS,
        "elapsed": 1e9,
        "poll_interval": 1.0,
        "max_poll_interval": 5.0,
    }
    assert next_poll_delay(polls=10**9, **common) == 5.0
    assert next_poll_delay(polls=-3, **common) == 1.0


def test_retry_delay_is_reproducible_with_a_seed() -> None:
    first = [retry_delay(attempt, rng=random.Random(7)) for attempt in range(1, 10)]
    again = [retry_delay(attempt, rng=random.Random(7)) for attempt in range(1, 10)]
    assert first == again


@pytest.mark.parametrize(
    ("attempt", "backoff"), [(1, 4.0), (2, 8.0), (3, 16.0), (4, 32.0), (5, 60.0), (50, 60.0)]
)
def test_retry_delay_equal_jitter_bounds(attempt: int, backoff: float) -> None:
    rng = random.Random(1234)
    delays = [retry_delay(attempt, base=4.0, cap=60.0, rng=rng) for _ in range(200)]
    assert all(backoff / 2 <= delay <= backoff for delay in delays)
    # Real jitter: the draws spread over most of the band, so clients that failed together spread out.
    assert max(delays) - min(delays) > 0.4 * backoff


def test_retry_delay_is_at_least_one_second() -> None:
    rng = random.Random(3)
    assert all(retry_delay(1, base=0.01, rng=rng) == 1.0 for _ in range(20))
    assert retry_delay(1, base=0.0, cap=0.0, rng=rng) == 1.0


@pytest.mark.parametrize("retry_after", [0.0, 1.0, 8.0, 45.0, 3600.0])
def test_retry_delay_never_below_retry_after(retry_after: float) -> None:
    rng = random.Random(99)
    for attempt in range(1, 8):
        delay = retry_delay(attempt, retry_after=retry_after, rng=rng)
        assert delay >= max(retry_after, 1.0)
        assert delay <= max(retry_after, 30.0)


@pytest.mark.parametrize("retry_after", [math.nan, math.inf, -5.0])
def test_retry_delay_ignores_nonsense_retry_after(retry_after: float) -> None:
    delay = retry_delay(2, retry_after=retry_after, rng=random.Random(5))
    assert 1.0 <= delay <= 2.0


def test_retry_delay_without_a_rng_stays_in_bounds() -> None:
    assert all(4.0 <= retry_delay(2, base=4.0) <= 8.0 for _ in range(50))
    assert retry_delay(10**9) <= 30.0


@given(
    attempt=st.integers(-5, 10**6),
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    base=st.floats(0, 100),
    cap=st.floats(0, 1000),
    seed=st.integers(0, 2**32),
)
def test_retry_delay_is_total_and_bounded(
    attempt: int, retry_after: float | None, base: float, cap: float, seed: int
) -> None:
    delay = retry_delay(attempt, retry_after=retry_after, base=base, cap=cap, rng=random.Random(seed))
    floor = max(1.0, retry_after) if retry_after is not None and math.isfinite(retry_after) else 1.0
    assert floor <= delay <= max(floor, cap)
