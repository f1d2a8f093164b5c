"""The polling and retry policy: the completion prior, phases, clamps, Retry-After floor, jitter (seeded)."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_widgets._errors import RateLimitError, ServerError
from kling_widgets._models import Task, TaskStatus
from kling_widgets._schedule import (
    MAX_RETRY_AFTER,
    POLL_JITTER,
    PRIOR_MEDIAN,
    PRIOR_SIGMA,
    REQUEST_COST,
    PollPolicy,
    completion_hazard,
    next_poll_delay,
    poll_gap,
    retry_delay,
    task_age,
)


def poll_delay(status: TaskStatus | None, age: float, **intervals: float) -> float:
    """The policy's gap, without jitter."""
    intervals = {"poll_interval": 1.0, "max_poll_interval": 15.0, **intervals}
    return poll_gap(status=status, age=age, **intervals)


GENERATING = [TaskStatus.IN_PROGRESS, TaskStatus.UNKNOWN]


@pytest.mark.parametrize("age", [1.0, 60.0, PRIOR_MEDIAN, 240.0, 600.0, 1800.0])
def test_completion_hazard_is_the_log_normal_priors(age: float) -> None:
    z = math.log(age / PRIOR_MEDIAN) / PRIOR_SIGMA
    density = NormalDist().pdf(z) / (PRIOR_SIGMA * age)
    assert completion_hazard(age) == pytest.approx(density / (1 - NormalDist().cdf(z)), rel=1e-9)


@pytest.mark.parametrize("age", [0.0, -5.0, math.nan, math.inf, -math.inf, 5e-324, 1e-300])
def test_completion_hazard_is_zero_for_nonsense_and_tiny_ages(age: float) -> None:
    assert completion_hazard(age) == 0.0


@pytest.mark.parametrize("age", [1e5, 1e12, 1e300])
def test_completion_hazard_far_in_the_tail_stays_finite(age: float) -> None:
    assert 0.0 < completion_hazard(age) < completion_hazard(PRIOR_MEDIAN)


def test_nothing_known_yet_means_poll_soon() -> None:
    assert poll_delay(None, 0.0) == 1.0
    assert poll_delay(None, 500.0, poll_interval=0.25) == 0.25


@pytest.mark.parametrize("status", [TaskStatus.NOT_START, TaskStatus.SUBMITTED, TaskStatus.QUEUED])
@pytest.mark.parametrize("age", [0.0, 30.0, PRIOR_MEDIAN, 900.0])
def test_queued_tasks_are_polled_at_the_ceiling(status: TaskStatus, age: float) -> None:
    # A queued task still has a whole generation ahead of it: it cannot finish before the next poll.
    assert poll_delay(status, age) == 15.0
    assert poll_delay(status, age, max_poll_interval=5.0) == 5.0


@pytest.mark.parametrize("status", GENERATING)
@pytest.mark.parametrize("age", [0.0, 5.0, 20.0, 40.0])
def test_young_tasks_are_polled_sparsely(status: TaskStatus, age: float) -> None:
    assert poll_delay(status, age) == 15.0


@pytest.mark.parametrize("status", GENERATING)
def test_polling_is_densest_where_kling_usually_finishes(status: TaskStatus) -> None:
    at_median = poll_delay(status, PRIOR_MEDIAN)
    assert at_median == pytest.approx(math.sqrt(2 * REQUEST_COST / completion_hazard(PRIOR_MEDIAN)))
    assert 2.0 < at_median < 3.0
    assert poll_delay(status, 60.0) > 2 * at_median


def test_gap_shrinks_while_completion_grows_likely_then_relaxes_slowly() -> None:
    rising = [poll_delay(TaskStatus.IN_PROGRESS, float(t)) for t in range(0, 280, 2)]
    assert all(a >= b for a, b in itertools.pairwise(rising))
    falling = [poll_delay(TaskStatus.IN_PROGRESS, float(t)) for t in range(300, 20_000, 50)]
    assert all(a <= b for a, b in itertools.pairwise(falling))
    # A straggler is still polled every few seconds at the 15-minute default deadline.
    assert poll_delay(TaskStatus.IN_PROGRESS, 900.0) < 3.0


def test_the_floor_binds_when_it_is_above_the_optimal_gap() -> None:
    assert poll_delay(TaskStatus.IN_PROGRESS, PRIOR_MEDIAN, poll_interval=4.0) == 4.0


def test_ceiling_below_the_interval_counts_as_equal() -> None:
    for age in (0.0, PRIOR_MEDIAN, 1e9):
        assert poll_delay(TaskStatus.IN_PROGRESS, age, poll_interval=3.0, max_poll_interval=1.0) == 3.0


def test_jitter_is_reproducible_with_a_seed() -> None:
    common = {
        "status": TaskStatus.IN_PROGRESS,
        "age": 200.0,
        "poll_interval": 1.0,
        "max_poll_interval": 5.0,
    }
    assert next_poll_delay(rng=random.Random(7), **common) == next_poll_delay(rng=random.Random(7), **common)


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("submitted", "watched_for", "age"),
    [
        (None, 12.0, 12.0),  # no submit_time: how long we watched
        (NOW - timedelta(minutes=10), 3.0, 600.0),  # watched again long after submission
        (NOW - timedelta(seconds=5), 30.0, 30.0),  # never younger than what we saw ourselves
        (NOW + timedelta(hours=1), 4.0, 4.0),  # a gateway clock running ahead
    ],
)
def test_task_age_prefers_the_gateways_submit_time(
    submitted: datetime | None, watched_for: float, age: float
) -> None:
    task = Task(task_id="1", status=TaskStatus.IN_PROGRESS, submit_time=submitted)
    assert task_age(task, watched_for, now=NOW) == age


@pytest.mark.parametrize(
    ("status", "age"), [(TaskStatus.IN_PROGRESS, 200.0), (TaskStatus.IN_PROGRESS, 90.0)]
)
def test_jitter_spreads_polls_around_the_gap_without_biasing_it(status: TaskStatus, age: float) -> None:
    gap = poll_delay(status, age)
    rng = random.Random(11)
    delays = [
        next_poll_delay(
            status=status, age=age, poll_interval=1.0, max_poll_interval=15.0, rng=rng
        )
        for _ in range(2000)
    ]
    assert all((1 - POLL_JITTER) * gap <= d <= (1 + POLL_JITTER) * gap for d in delays)
    assert statistics.fmean(delays) == pytest.approx(gap, rel=0.02)
    assert max(delays) - min(delays) > POLL_JITTER * gap  # real spread: tasks submitted together drift apart


def test_jitter_never_leaves_the_intervals() -> None:
    rng = random.Random(5)
    queued = [
        next_poll_delay(
            status=TaskStatus.SUBMITTED,
            age=0.0,
            poll_interval=1.0,
            max_poll_interval=15.0,
            rng=rng,
        )
        for _ in range(500)
    ]
    assert max(queued) == 15.0
    assert min(queued) >= 15.0 * (1 - POLL_JITTER)
    assert {
        next_poll_delay(status=None, age=0.0, poll_interval=2.0, max_poll_interval=2.0, rng=rng)
        for _ in range(50)
    } == {2.0}


@given(
    status=st.none() | st.sampled_from(TaskStatus),
    age=st.floats(allow_nan=True, allow_infinity=True),
    poll_interval=st.floats(1e-3, 1e3),
    max_poll_interval=st.floats(0, 1e4),
    seed=st.integers(0, 2**32),
)
def test_poll_delay_is_total_and_clamped(
    status: TaskStatus | None, age: float, poll_interval: float, max_poll_interval: float, seed: int
) -> None:
    common = {
        "status": status,
        "age": age,
        "poll_interval": poll_interval,
        "max_poll_interval": max_poll_interval,
    }
    gap = poll_gap(**common)
    delay = next_poll_delay(rng=random.Random(seed), **common)
    assert poll_interval <= gap <= max(poll_interval, max_poll_interval)
    assert poll_interval <= delay <= max(poll_interval, max_poll_interval)


def watch_on_a_fake_clock(finish: float, gap: Callable[[float], float]) -> tuple[int, float]:
    """Poll a task that finishes at ``finish`` s, from t = 0; return (requests, detection lag)."""
    t, requests = 0.0, 1
    while t < finish:
        t += gap(t)
        requests += 1
    return requests, t - finish


def test_fewer_requests_than_a_fixed_interval_with_the_same_lag() -> None:
    """The point of the policy, on a fake clock: tasks finishing across Kling's usual 1–5 minutes."""
    finishes = [60.0 + 0.37 * i for i in range(650)]  # 60 s … 300 s
    ours = [watch_on_a_fake_clock(f, lambda t: poll_delay(TaskStatus.IN_PROGRESS, t)) for f in finishes]
    our_requests = sum(r for r, _ in ours)
    our_lag = sum(lag for _, lag in ours) / len(ours)
    fixed = 2 * our_lag  # a fixed interval's mean lag is half of it
    fixed_requests = sum(watch_on_a_fake_clock(f, lambda t: fixed)[0] for f in finishes)
    assert our_lag < 1.5
    assert our_requests < 0.8 * fixed_requests


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


@pytest.mark.parametrize("retry_after", [0.0, 1.0, 8.0, 45.0, 300.0])
def test_retry_delay_never_below_retry_after(retry_after: float) -> None:
    rng = random.Random(99)
    for attempt in range(1, 8):
        delay = retry_delay(attempt, retry_after=retry_after, rng=rng)
        assert delay >= max(retry_after, 1.0)
        assert delay <= max(retry_after, 30.0)


@pytest.mark.parametrize("retry_after", [301.0, 3600.0, 1e10, 1e308])
def test_retry_delay_caps_retry_after(retry_after: float) -> None:
    assert retry_delay(1, retry_after=retry_after, rng=random.Random(1)) == MAX_RETRY_AFTER


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
    floor = 1.0
    if retry_after is not None and math.isfinite(retry_after):
        floor = max(floor, min(retry_after, MAX_RETRY_AFTER))
    assert floor <= delay <= max(floor, cap)


# -- PollPolicy: the one policy of the engine and KlingClient.wait ------------------------------------------


def test_poll_policy_gives_the_functions_delays() -> None:
    policy = PollPolicy(poll_interval=1.0, max_poll_interval=15.0, rng=random.Random(4))
    queued = Task("t", TaskStatus.QUEUED)
    expected = next_poll_delay(status=TaskStatus.QUEUED, age=10.0, poll_interval=1.0, max_poll_interval=15.0,
                               rng=random.Random(4))  # fmt: skip
    assert policy.next_poll(queued, 10.0) == expected
    assert policy.next_poll(None, 0.0) == 1.0  # nothing known yet: the shortest gap
    limited = RateLimitError("busy", status_code=429, retry_after=1e10)
    assert policy.retry(1, limited) == MAX_RETRY_AFTER
    assert PollPolicy(max_retry_after=5.0).retry(1, limited) == 5.0
    assert 0.05 <= PollPolicy(retry_base=0.05, retry_cap=0.1).retry(1, ServerError("502")) <= 0.05


def test_poll_policy_with_intervals_keeps_the_rest() -> None:
    rng = random.Random(1)
    policy = PollPolicy(retry_base=2.0, rng=rng)
    assert policy.with_intervals(None, None) is policy
    other = policy.with_intervals(0.5, None)
    assert (other.poll_interval, other.max_poll_interval, other.retry_base, other.rng) == (0.5, 5.0, 2.0, rng)


@pytest.mark.parametrize(
    "fields",
    [
        {"poll_interval": 0.0},
        {"poll_interval": 6.0},
        {"max_poll_interval": math.inf},
        {"retry_base": 0.0},
        {"retry_base": 40.0},
        {"max_retry_after": math.nan},
    ],
    ids=repr,
)
def test_poll_policy_refuses_nonsense(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        PollPolicy(**fields)  # type: ignore[arg-type]
