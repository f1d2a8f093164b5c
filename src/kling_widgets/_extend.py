"""What "Extend" on a finished card sends, shared by the studio and the gallery (docs/studio.md, "Cards").

`Extension` is one video-extend submission for a finished task; `extendable` says whether a card may offer
it; `script` writes the Python that makes a task, for "Show code". `REARM_SECONDS` is how long a button
that just created a task stays disabled, so a double click bills once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._client import KlingClient
from ._models import Task, TaskStatus
from ._widget import TaskStatusWidget

__all__ = ["REARM_SECONDS", "Extension", "extendable", "script"]

#: After a task is created, the button that sent it stays disabled this long: a double click's second
#: click, arriving after a fast answer, must not bill a second task.
REARM_SECONDS = 0.6


@dataclass(frozen=True)
class Extension:
    """What "Extend" on a finished card sends: a video-extend task for the first video of ``source``."""

    source: Task
    prompt: str | None = None
    route: ClassVar[str] = "video-extend"

    def send(self, client: KlingClient) -> Task:
        """Submit it (one POST; the client checks the task has a video and the prompt first)."""
        return client.extend_video(self.source, prompt=self.prompt)

    def code(self) -> str:
        """The same call with the video's id, so the code does not need the task object."""
        video = self.source.videos[0].id if self.source.videos else None
        arguments = [repr(video)] + ([] if self.prompt is None else [f"prompt={self.prompt!r}"])
        return script(
            f"# The first video of task {self.source.task_id}.\n", "extend_video", self.route, arguments
        )

    @property
    def caption(self) -> str:
        """The card's heading: what it extends, and the prompt if any."""
        extends = f"Extends {self.source.task_id}"
        return extends if self.prompt is None else f"{extends}: {self.prompt}"


def script(note: str, method: str, route: str, arguments: list[str]) -> str:
    """A script that makes the same task with ``client.<method>(*arguments)`` and watches it."""
    call = ",\n    ".join(arguments)
    return (
        "from kling_widgets import KlingClient, TaskStatusWidget\n\n"
        f"{note}client = KlingClient()\n"
        f"task = client.{method}(\n    {call},\n)\n"
        f"TaskStatusWidget(task, client=client, endpoint={route!r})"
    )


def extendable(card: TaskStatusWidget) -> bool:
    """Whether Extend may be offered for ``card``: its task succeeded with a Kling video id."""
    task = card.task
    return (
        card.done() and task is not None and task.status is TaskStatus.SUCCESS
        and bool(task.videos) and task.videos[0].id is not None
    )  # fmt: skip
