"""Helpers shared by several test modules: a stop check and a stand-in for IPython's cell events."""

from __future__ import annotations

import struct
import time
import uuid
import zlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import comm
import pytest

from kling_widgets.simulator import GatewaySimulator, Scenario

T = TypeVar("T")
WAIT = 20.0  # upper bound for a watch or a batch to end; never reached when things work
FOREVER = Scenario(polls=(10**6, 0))  # stays queued for as long as anyone polls


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


class RecordingComm:
    """A comm that records what would be sent to the front end.

    See docs/testing.md, "Widget tests without a kernel".
    """

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = uuid.uuid4().hex
        self.kernel = object()  # truthy: Widget._send sends
        self.open_data = kwargs.get("data")
        self.sent: list[Any] = []
        self.closed = False

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.sent.append(data)

    def on_msg(self, callback: Callable[..., Any]) -> None:
        self._callback = callback

    def close(self, *args: Any, **kwargs: Any) -> None:
        self.closed = True


class RecordingHandle:
    """A stand-in for IPython's display handle: records each ``update`` (the bundle and its keywords)."""

    def __init__(self) -> None:
        self.updates: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def update(self, obj: dict[str, Any], **kwargs: Any) -> None:
        self.updates.append((obj, kwargs))


def record_comms(monkeypatch: pytest.MonkeyPatch) -> list[RecordingComm]:
    """Make every widget opened from now on use a `RecordingComm`; return them, in order."""
    made: list[RecordingComm] = []

    def create_comm(**kwargs: Any) -> RecordingComm:
        made.append(RecordingComm(**kwargs))
        return made[-1]

    monkeypatch.setattr(comm, "create_comm", create_comm)
    return made


def png(width: int, height: int) -> bytes:
    """A real, decodable grey PNG of that size, built without Pillow (for image uploads)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the ``kling-widgets`` command in-process: (exit code, stdout, stderr)."""
    from kling_widgets.__main__ import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
