"""Helpers shared by several test modules: a stop check and a stand-in for IPython's cell events."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from kling_widgets.simulator import GatewaySimulator

T = TypeVar("T")


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


class FakeShell:
    """Just enough of IPython for the cell registry: events, and the running cell's ExecutionInfo."""

    def __init__(self) -> None:
        self.handlers: list[Callable[[Any], None]] = []
        self.events = SimpleNamespace(register=lambda name, handler: self.handlers.append(handler))
        self.displayhook = SimpleNamespace(exec_result=None)

    def run_cell(self, cell_id: str, body: Callable[[], T]) -> T:
        info = SimpleNamespace(cell_id=cell_id)
        for handler in list(self.handlers):
            handler(info)
        self.displayhook.exec_result = SimpleNamespace(info=info)
        try:
            return body()
        finally:
            self.displayhook.exec_result = None
