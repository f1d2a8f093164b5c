"""The route examples the README and docs/routes.md show, run as written against the simulator.

A newcomer copies these blocks first; each must send what it claims, on the route it claims, and the tasks
must be watchable on their own routes. The blocks are read from the files, so an edit that breaks an example
fails here. Files the examples name (``corgi.png``, ``hello.mp3``) are made in a temporary folder, and
``example.com`` URLs are only sent, never fetched, by the client and the simulator.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers import WAIT, png
from kling_widgets import KlingClient, KlingError, Task, TaskStatus, TaskStatusWidget
from kling_widgets.simulator import GatewaySimulator, Scenario

ROOT = Path(__file__).resolve().parent.parent
MP3 = b"ID3\x04\x00" + b"\x00" * 64
# The task succeeds on its first GET: `client.wait` in an example returns at once.
DONE_AT_ONCE = Scenario(polls=(0, 0))


def python_blocks(path: Path, after_heading: str | None = None) -> list[str]:
    """The ```python blocks of ``path``; with ``after_heading``, only those of that section."""
    text = path.read_text(encoding="utf-8")
    if after_heading is not None:
        section = text.split(f"\n{after_heading}\n", 1)[1]
        text = re.split(r"\n## ", section, maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: GatewaySimulator) -> Path:
    """The examples' working folder, with the files they name, and the environment pointing at ``sim``."""
    (tmp_path / "corgi.png").write_bytes(png(640, 480))
    (tmp_path / "corgi-end.png").write_bytes(png(640, 480))
    (tmp_path / "hello.mp3").write_bytes(MP3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    return tmp_path


def run(code: str, namespace: dict[str, Any], widgets: list[TaskStatusWidget]) -> dict[str, Any]:
    """Execute ``code`` in ``namespace``, recording each `TaskStatusWidget` it makes in ``widgets``."""
    real_init = TaskStatusWidget.__init__

    def recorded(self: TaskStatusWidget, *args: Any, **kwargs: Any) -> None:
        widgets.append(self)
        real_init(self, *args, **kwargs)

    namespace["__builtins__"] = __builtins__
    TaskStatusWidget.__init__ = recorded  # type: ignore[method-assign]
    try:
        exec(compile(code, "<example>", "exec"), namespace)
    finally:
        TaskStatusWidget.__init__ = real_init  # type: ignore[method-assign]
    return namespace


def posted_routes(sim: GatewaySimulator) -> list[str]:
    """The route of every POST the simulator answered, oldest first."""
    return [r.path.removeprefix("/kling/v1/videos/") for r in sim.requests() if r.method == "POST"]


def polled_routes(sim: GatewaySimulator, task_id: str) -> set[str]:
    """The route of every status GET for ``task_id`` (not the video downloads)."""
    return {
        r.path.removeprefix("/kling/v1/videos/").rsplit("/", 1)[0] for r in sim.requests(task_id)
        if r.method == "GET" and r.path.startswith("/kling/v1/videos/")
    }  # fmt: skip


@pytest.mark.parametrize("sim", [DONE_AT_ONCE], indirect=True)
def test_every_example_in_docs_routes_runs_on_its_route(
    sim: GatewaySimulator, folder: Path, widgets: list[TaskStatusWidget]
) -> None:
    block = python_blocks(ROOT / "docs" / "routes.md")[0]  # one example per route (later ones watch ids)

    namespace = run(block, {}, widgets)

    assert posted_routes(sim) == [
        "text2video", "image2video", "omni-video", "omni-video", "omni-video", "multi-image2video",
        "video-extend", "identify-face", "advanced-lip-sync", "motion-control", "avatar/image2video",
    ]  # fmt: skip
    task: Task = namespace["task"]
    assert task.endpoint == "avatar/image2video"
    assert namespace["done"].status is TaskStatus.SUCCESS
    assert all(r.status == 200 for r in sim.requests() if r.method == "POST")
    (widget,) = widgets
    assert widget.wait(WAIT).status is TaskStatus.SUCCESS
    assert polled_routes(sim, task.task_id) == {"avatar/image2video"}


@pytest.mark.parametrize("sim", [DONE_AT_ONCE], indirect=True)
def test_the_readmes_route_examples_run(
    sim: GatewaySimulator, folder: Path, widgets: list[TaskStatusWidget]
) -> None:
    (block,) = python_blocks(ROOT / "README.md", after_heading="## Every route")
    client = KlingClient()
    done_task = client.wait(client.text2video("a corgi").task_id)
    before = len(posted_routes(sim))

    run(block, {"client": client, "done_task": done_task, "TaskStatusWidget": TaskStatusWidget}, widgets)

    assert posted_routes(sim)[before:] == [
        "text2video", "image2video", "omni-video", "omni-video", "multi-image2video", "video-extend",
        "identify-face", "advanced-lip-sync", "motion-control", "avatar/image2video",
    ]  # fmt: skip
    assert all(r.status == 200 for r in sim.requests() if r.method == "POST")
    bodies = [json.loads(r.body) for r in sim.requests() if r.method == "POST"]
    assert bodies[before + 2]["duration"] == "12"
    (by_hand,) = widgets  # an id typed by hand (no such task here) is polled on the route it was given
    with pytest.raises(KlingError):
        by_hand.wait(WAIT)
    assert polled_routes(sim, by_hand.task_id) == {"omni-video"}
