"""Assertions shared by several test modules."""

from __future__ import annotations

import time

from kling_widgets.simulator import GatewaySimulator


def assert_no_request_follows(sim: GatewaySimulator, task_ids: list[str], settle: float = 0.5) -> None:
    """After watching stopped: at most the GETs already in flight land (one per task), then silence.

    The engine starts no request after a stop, but a request sent just before it can still reach the
    server a moment later, on a busy machine later than any fixed grace.
    """

    def count() -> int:
        return sum(1 for r in sim.requests() if r.method == "GET" and r.task_id in task_ids)

    at_stop = count()
    time.sleep(settle)
    settled = count()
    assert settled - at_stop <= len(task_ids)
    time.sleep(settle)
    assert count() == settled
