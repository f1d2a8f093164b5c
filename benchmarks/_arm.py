"""One benchmark arm in its own process: create the workload's tasks on the simulator, watch them, report.

Run by ``run.py`` (not meant to be run by hand). Reads a JSON job on stdin, prints a JSON result on stdout:
when each task was created and when its watcher saw SUCCESS (``time.monotonic()``, which is system-wide on
Linux, so it compares with the simulator's clock), and the CPU time this process spent watching.

Arms:

- ``ours``: a `TaskGallery` on the shared engine, with its default schedule (time-compressed, see below).
- ``fixed``: what users write: one thread per task, each a plain `requests` loop (one ``requests.Session``
  per process; ``session.get(url, headers={"Authorization": ...}, timeout=...)``, ``.json()``, read
  ``data.status``, sleep ``interval`` seconds), like Kling's own ComfyUI nodes (``poll_interval`` 1 s).
  It does not go through `KlingClient`, so our transport's savings do not flatter the baseline.

Time compression: the simulator runs ``speed`` times faster than Kling, so every delay on the watching side
is divided by ``speed`` too. For the fixed arms that is the sleep; for ours it is the engine's policy,
which sees task ages in Kling seconds and scales its answer back (`CompressedPolicy`).
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from kling_widgets import KlingClient, Task, TaskStatus
from kling_widgets._gallery import TaskGallery
from kling_widgets._poller import Engine, set_default_engine
from kling_widgets._schedule import PollPolicy, next_poll_delay

GALLERY_POLL_INTERVAL = 1.0  # TaskGallery's defaults, in Kling seconds
GALLERY_MAX_POLL_INTERVAL = 15.0
TIMEOUT = 900.0
TASK_ROUTE = "/kling/v1/videos/text2video"  # the gateway's task route (docs/gateway.md)


@dataclass(frozen=True)
class CompressedPolicy(PollPolicy):
    """The default policy on a clock running ``speed`` times fast: ages scaled up, delays scaled down.

    Task ages come from the watch time alone: the simulator's ``submit_time`` has whole-second resolution,
    which compression would inflate to up to ``speed`` Kling seconds, and these tasks are watched from the
    moment they are created, so the watch time is their age.
    """

    speed: float = 1.0

    def next_poll(self, task: Task | None, elapsed: float) -> float:
        delay = next_poll_delay(
            status=None if task is None else task.status,
            age=elapsed * self.speed,
            poll_interval=self.poll_interval * self.speed,
            max_poll_interval=self.max_poll_interval * self.speed,
            rng=self.rng,
        )
        return delay / self.speed


def compress_engine(speed: float) -> None:
    """Make the shared engine (the one every widget uses) run its schedule on the compressed clock."""
    set_default_engine(Engine(policy=CompressedPolicy(speed=speed)))


def create_tasks(url: str, key: str, workload: list[list[float]]) -> tuple[list[str], list[float]]:
    """Create a simulator task per (queued, running) pair; return ids and the instant before each POST."""
    session = requests.Session()
    ids, created = [], []
    for queued, running in workload:
        before = time.monotonic()
        response = session.post(
            f"{url}/_simulator/tasks",
            json={"queued": queued, "running": running},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        response.raise_for_status()
        ids.append(response.json()["task_id"])
        created.append(before)
    session.close()
    return ids, created


def watch_ours(client: KlingClient, ids: list[str], speed: float, seen: dict[str, float]) -> None:
    compress_engine(speed)
    gallery = TaskGallery(
        ids,
        client=client,
        poll_interval=GALLERY_POLL_INTERVAL / speed,
        max_poll_interval=GALLERY_MAX_POLL_INTERVAL / speed,
        timeout=TIMEOUT / speed,
    )

    def on_status(change: dict[str, Any]) -> None:
        if change["new"] == TaskStatus.SUCCESS.value:
            seen.setdefault(change["owner"].task_id, time.monotonic())

    for card in gallery.cards:
        card.observe(on_status, names=["status"])  # type: ignore[union-attr]
    gallery.wait()
    gallery.close()


def watch_fixed(url: str, key: str, ids: list[str], interval: float, seen: dict[str, float]) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {key}"}

    def poll(task_id: str) -> None:
        while True:
            answer = session.get(f"{url}{TASK_ROUTE}/{task_id}", headers=headers, timeout=30)
            if answer.json()["data"]["status"] == "SUCCESS":
                seen[task_id] = time.monotonic()
                return
            time.sleep(interval)

    threads = [threading.Thread(target=poll, args=(task_id,), daemon=True) for task_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    job = json.load(sys.stdin)
    speed = job["speed"]
    client = KlingClient(api_key=job["key"], base_url=job["url"]) if job["arm"] == "ours" else None
    ids, created = create_tasks(job["url"], job["key"], job["workload"])
    seen: dict[str, float] = {}
    cpu, wall = time.process_time(), time.monotonic()
    if client is not None:
        watch_ours(client, ids, speed, seen)
    else:
        watch_fixed(job["url"], job["key"], ids, job["interval"] / speed, seen)
    result = {
        "ids": ids,
        "created": created,
        "seen": [seen.get(task_id) for task_id in ids],
        "cpu": time.process_time() - cpu,
        "wall": time.monotonic() - wall,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
