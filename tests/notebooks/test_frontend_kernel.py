"""Front-end detection and Colab delivery inside real kernels (jupyter_client, IOPub messages as sent).

Detection: each front-end's signs are reproduced the way the front-end produces them, in the kernel's
environment, its user namespace or the execute request's metadata. Delivery: with the Colab path forced by
``KLING_WIDGETS_FRONTEND=colab`` (the only thing this kernel cannot have of Colab is its browser front-end), a
background thread hands updates to `deliver`, and the kernel's messages show where and when they ran.

``KLING_TEST_KERNEL`` names another kernelspec to run these against, e.g. one with Colab's ipykernel
(docs/frontends.md, "What was verified here, and what was not").
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient, KernelManager

from helpers import WAIT

pytestmark = pytest.mark.notebook

SRC = str(Path(__file__).resolve().parents[2] / "src")
EDITOR_VARIABLES = (
    "VSCODE_PID",
    "VSCODE_CWD",
    "VSCODE_IPC_HOOK_CLI",
    "COLAB_RELEASE_TAG",
    "KLING_WIDGETS_FRONTEND",
)
DETECT = "from kling_widgets._frontend import detect\nprint(detect().value)"
# What VS Code's Jupyter extension sends: the cell document's URI as cellId, and this line at kernel start.
VSCODE_CELL_ID = "vscode-notebook-cell:/home/user/demo.ipynb#W1sZmlsZQ%3D%3D"
VSCODE_STARTUP = '__vsc_ipynb_file__ = "/home/user/demo.ipynb"'
PROBE = "application/x-kling-probe+json"

PROBES = r"""
import asyncio, os, threading
from IPython.display import display
from kling_widgets._frontend import Frontend, deliver

PROBE = "application/x-kling-probe+json"
kernel = get_ipython().kernel

def where():
    try:
        on_kernel_loop = asyncio.get_running_loop() is kernel.io_loop.asyncio_loop
    except RuntimeError:
        on_kernel_loop = False
    return {"thread": threading.current_thread().name, "on_kernel_loop": on_kernel_loop}

def probe(label, extra=dict):
    return lambda: display({PROBE: {"label": label, **where(), **extra()}}, raw=True)
"""


class Kernel:
    """A started kernel and every IOPub message it sent, in order."""

    def __init__(self, client: BlockingKernelClient) -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = []

    def run(self, code: str, *, cell_id: str | None = None, silent: bool = False) -> tuple[str, list[Any]]:
        """Execute ``code`` as a front-end would; return the request's id and its messages up to idle."""
        content = {"code": code, "silent": silent, "store_history": not silent, "allow_stdin": False}
        request = self.client.session.msg(
            "execute_request", content, metadata={"cellId": cell_id} if cell_id else {}
        )
        self.client.shell_channel.send(request)
        msg_id = request["header"]["msg_id"]
        start = len(self.messages)
        self.read_until(lambda m: _parent(m) == msg_id and _is_status(m, "idle"))
        reply = self.client.get_shell_msg(timeout=WAIT)
        while reply["parent_header"].get("msg_id") != msg_id:  # e.g. a late kernel_info_reply of the start-up
            reply = self.client.get_shell_msg(timeout=WAIT)
        assert reply["content"]["status"] == "ok", "\n".join(reply["content"].get("traceback", []))
        return msg_id, [m for m in self.messages[start:] if _parent(m) == msg_id]

    def stdout(self, code: str, **kwargs: Any) -> str:
        return _stdout(self.run(code, **kwargs)[1])

    def read_until(self, done: Callable[[dict[str, Any]], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not any(done(m) for m in self.messages):
            assert time.monotonic() < deadline, f"no such message within {WAIT} s: {self.messages[-5:]}"
            with contextlib.suppress(Exception):  # queue.Empty: nothing yet
                self.messages.append(self.client.get_iopub_msg(timeout=0.2))

    def probes(self, labels: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Wait for the probes with these labels: label -> (index in `messages`, what the probe saw)."""
        self.read_until(lambda _: labels <= set(_probes(self.messages)))
        return {label: seen for label, seen in _probes(self.messages).items() if label in labels}


@contextlib.contextmanager
def running_kernel(**env: str) -> Iterator[Kernel]:
    clean = {k: v for k, v in os.environ.items() if k not in EDITOR_VARIABLES}
    clean.update(env, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    manager = KernelManager(kernel_name=os.environ.get("KLING_TEST_KERNEL", "python3"))
    manager.start_kernel(env=clean)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        yield Kernel(client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _parent(message: dict[str, Any]) -> str | None:
    return message["parent_header"].get("msg_id")


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def _is_status(message: dict[str, Any], state: str) -> bool:
    return message["msg_type"] == "status" and message["content"]["execution_state"] == state


def _probes(messages: list[dict[str, Any]]) -> dict[str, tuple[int, dict[str, Any]]]:
    found = {}
    for index, message in enumerate(messages):
        if message["msg_type"] == "display_data" and PROBE in message["content"]["data"]:
            seen = dict(message["content"]["data"][PROBE])
            found[seen.pop("label")] = (index, seen)
    return found


def test_jupyter_and_vscode_are_told_apart_in_a_kernel() -> None:
    # VS Code's variables also reach a JupyterLab started from VS Code's terminal: they decide nothing.
    with running_kernel(VSCODE_PID="4242", VSCODE_CWD="/home/user") as kernel:
        assert kernel.stdout(DETECT) == "jupyter\n"
        assert kernel.stdout(DETECT, cell_id="5f1c-a JupyterLab cell id") == "jupyter\n"
        assert kernel.stdout(DETECT, cell_id=VSCODE_CELL_ID) == "vscode\n"
        kernel.run(VSCODE_STARTUP, silent=True)
        assert kernel.stdout(DETECT) == "vscode\n"


def test_colab_is_detected_unless_vscode_drives_the_colab_runtime() -> None:
    with running_kernel(COLAB_RELEASE_TAG="release-colab_20261201-060000_RC00") as kernel:
        assert kernel.stdout(DETECT) == "colab\n"
        assert kernel.stdout(DETECT, cell_id=VSCODE_CELL_ID) == "vscode\n"


@pytest.fixture
def colab_kernel() -> Iterator[Kernel]:
    with running_kernel(KLING_WIDGETS_FRONTEND="colab") as kernel:
        kernel.run(PROBES)
        yield kernel


def test_in_colab_an_update_from_a_thread_runs_on_the_kernel_loop_while_no_cell_runs(
    colab_kernel: Kernel, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    colab_kernel.run(
        f"""
def poll():
    while not os.path.exists({str(go)!r}):
        threading.Event().wait(0.01)
    deliver(probe("colab", extra=dict))
    deliver(probe("elsewhere", extra=dict), Frontend.JUPYTER)
threading.Thread(target=poll, name="poller", daemon=True).start()
"""
    )
    idle_since = len(colab_kernel.messages)  # the cell has replied; no request is pending from here on
    go.touch()
    seen = colab_kernel.probes({"colab", "elsewhere"})
    assert seen["colab"][1] == {"thread": "MainThread", "on_kernel_loop": True}
    assert seen["elsewhere"][1] == {"thread": "poller", "on_kernel_loop": False}  # the test can tell
    later = colab_kernel.messages[idle_since : seen["colab"][0]]
    assert not [m for m in later if _is_status(m, "busy")], "a cell ran before the update did"


def test_in_colab_updates_queued_during_a_blocking_cell_all_run_in_order_inside_it(
    colab_kernel: Kernel,
) -> None:
    msg_id, messages = colab_kernel.run(
        """
unblock, ran, body_done = threading.Event(), [], False
def note(i):
    return lambda: ran.append([i, threading.current_thread().name, body_done])
def poll():
    for i in range(5):
        deliver(note(i))
    deliver(lambda: 1 / 0)  # a broken update strands none behind it
    deliver(probe("final", extra=lambda: {"ran": ran, "body_done": body_done}))
    unblock.set()  # reached only because deliver never waits for the blocked main thread
threading.Thread(target=poll, name="poller", daemon=True).start()
released = unblock.wait(20)
body_done = True
print("released" if released else "deadlock")
"""
    )
    assert _stdout(messages) == "released\n"
    final = [m for m in messages if m["msg_type"] == "display_data" and PROBE in m["content"]["data"]]
    assert len(final) == 1, "the final update did not go out with the cell that blocked it"
    seen = final[0]["content"]["data"][PROBE]
    assert final[0]["parent_header"]["msg_id"] == msg_id
    assert seen["thread"] == "MainThread"
    assert seen["body_done"] is True
    assert seen["ran"] == [[i, "MainThread", True] for i in range(5)]


def test_in_colab_a_widget_waited_on_in_its_own_cell_ends_and_shows_its_final_state(
    colab_kernel: Kernel,
) -> None:
    """The widget's writes wait for the main thread, which the cell's wait() holds: wait() needs none."""
    msg_id, messages = colab_kernel.run(
        """
from kling_widgets import TaskStatusWidget
from kling_widgets.simulator import GatewaySimulator, Scenario
sim = GatewaySimulator(speed=50.0, scenario=Scenario(polls=(1, 1))).start()
w = TaskStatusWidget(sim.add_task(), base_url=sim.url, api_key=sim.api_key, poll_interval=0.05,
                     max_poll_interval=0.05)
during = (w.frontend.value, w.wait(20).status.value, w.status)  # the writes are still queued here
print(during)
"""
    )
    assert _stdout(messages) == "('colab', 'SUCCESS', '')\n"
    # The queued writes ran at the end of that cell, inside it: the final state and the kept file.
    assert colab_kernel.stdout("print(w.status, w.progress, len(w.kept), 'Kept as' in w._text.value)") == (
        "SUCCESS 100 1 True\n"
    )
    updates = [m for m in messages if m["msg_type"] == "comm_msg" and m["parent_header"]["msg_id"] == msg_id]
    assert updates, "no widget update went out with the cell that waited"
