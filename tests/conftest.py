"""Fixtures shared by every test: a live gateway simulator and a client pointed at it.

``sim`` is a started `GatewaySimulator` on 127.0.0.1 whose submitted tasks are poll-driven
(``Scenario(polls=(1, 1))``: SUBMITTED, IN_PROGRESS, then SUCCESS on the third GET), so a task finishes as
fast as it is polled and the sequence of states never depends on timing. For another default scenario,
parametrize indirectly::

    @pytest.mark.parametrize("sim", [Scenario(outcome="failure", polls=(0, 0))], indirect=True)
    def test_failure(sim, client): ...

or create extra tasks with ``sim.add_task(Scenario(...))``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from kling_widgets.simulator import GatewaySimulator, Scenario

if TYPE_CHECKING:
    from kling_widgets import KlingClient

FAST = Scenario(polls=(1, 1))


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[GatewaySimulator]:
    """A started simulator (stopped, with every thread joined, after the test)."""
    scenario = getattr(request, "param", FAST)
    with GatewaySimulator(speed=50.0, scenario=scenario) as simulator:
        yield simulator


@pytest.fixture
def client(sim: GatewaySimulator) -> Iterator[KlingClient]:
    """A `KlingClient` talking to ``sim`` with its key."""
    from kling_widgets import KlingClient  # imported late: the client is built alongside these fixtures

    with KlingClient(base_url=sim.url, api_key=sim.api_key) as kling:
        yield kling
