"""A kernel killed with SIGKILL while it watches paid tasks loses none of them (issue 10, item 7).

The first kernel submits three tasks and watches them in a gallery while a fourth POST hangs (the simulator
holds it open, having created its task: the client cannot know); the test then kills that kernel with
``kill -9``. In a new kernel ``resume()`` watches the three to SUCCESS and shows the fourth as a submission
without an answer. Nothing is submitted again. Both kernels share the test's ledger (``KLING_WIDGETS_HOME``,
tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import KernelManager

from helpers import WAIT
from kling_widgets._ledger import Ledger
from kling_widgets.simulator import GatewaySimulator, Scenario

pytestmark = pytest.mark.notebook

SRC = str(Path(__file__).resolve().parents[2] / "src")
# Time-driven, 12 s from submission to SUCCESS: still running when the first kernel dies.
SLOW = Scenario(queued=3.0, running=9.0)
PROMPTS = ["a corgi surfing", "a cat on the moon", "a fox in the snow"]


class Kernel:
    """A started kernel: run code, collect its stdout and displays."""

    def __init__(self, manager: KernelManager) -> None:
        self.manager = manager
        self.client = manager.client()
        self.displays: list[dict[str, Any]] = []

    def run(self, code: str, timeout: float = WAIT) -> str:
        out: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind in ("display_data", "execute_result", "update_display_data"):
                self.displays.append(content["data"])
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, output_hook=hook, timeout=timeout)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)


@contextlib.contextmanager
def running_kernel() -> Iterator[Kernel]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env)
    kernel = Kernel(manager)
    try:
        kernel.client.start_channels()
        kernel.client.wait_for_ready(timeout=60)
        yield kernel
    finally:
        kernel.client.stop_channels()
        manager.shutdown_kernel(now=True)


def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def client_code(sim: GatewaySimulator) -> str:
    return (
        "from kling_widgets import KlingClient\n"
        f"client = KlingClient(base_url={sim.url!r}, api_key={sim.api_key!r})\n"
    )


def test_resume_after_kill_9_brings_every_paid_task_back(private_home: Path) -> None:
    with GatewaySimulator(scenario=SLOW) as sim:
        with running_kernel() as first:
            ids = json.loads(
                first.run(
                    client_code(sim) + "import json, os, threading\n"
                    "from kling_widgets import generate_many\n"
                    f"gallery = generate_many({PROMPTS!r}, client=client, poll_interval=0.2,"
                    " max_poll_interval=0.5)\n"
                    "display(gallery)\n"
                    "print(json.dumps([t.task_id for t in gallery.tasks]))\n"
                )
            )
            sim.drop_next_submits(1, hang=True)
            pid = int(
                first.run(
                    "threading.Thread(target=client.text2video, args=('a dog in the rain',), daemon=True)"
                    ".start()\nprint(os.getpid())\n"
                )
            )
            until(lambda: len([r for r in sim.requests() if r.method == "POST"]) == 4, "the hanging POST")
            until(
                lambda: any(len(sim.requests(task_id)) > 1 for task_id in ids), "the gallery to poll"
            )  # watching: at least one status GET
            assert sim.unfinished() == 4  # the three, and the one whose answer never came
            os.kill(pid, signal.SIGKILL)
            until(lambda: not first.manager.is_alive(), "the kernel to die")

        with running_kernel() as second:
            outcome = json.loads(
                second.run(
                    client_code(sim) + "import json\n"
                    "from kling_widgets import resume\n"
                    "g = resume(client, poll_interval=0.2, max_poll_interval=0.5)\n"
                    "display(g)\n"
                    "done = g.wait(60)\n"
                    "print(json.dumps({'done': [t.task_id for t in done],"
                    " 'failed': [[e.code, str(e)] for e in g.failed], 'summary': g.summary()}))\n",
                    timeout=90,
                )
            )
        posts = [r for r in sim.requests() if r.method == "POST"]

    assert sorted(outcome["done"]) == sorted(ids)
    [[code, message]] = outcome["failed"]
    assert code == "unanswered"
    assert "unknown" in message
    assert "a dog in the rain" in message
    assert "may have been charged" in message
    assert len(posts) == 4  # resume sent nothing
    assert outcome["summary"].startswith("4 tasks · 3 done · 1 failed")
    assert any("TaskGallery(4 tasks" in str(data.get("text/plain")) for data in second.displays)
    # The ledger both kernels wrote: the in-flight POST stays without an answer, never resent.
    states = {e.params["prompt"]: e.state for e in Ledger(private_home / "ledger.sqlite3").entries()}
    assert states == {**dict.fromkeys(PROMPTS, "SUCCESS"), "a dog in the rain": "submitting"}
