"""Benchmark: a simulated batch of 1,000 prompts at concurrency 10, against the ideal schedule.

    .venv/bin/python benchmarks/batch.py                  # 1,000 prompts, concurrency 10 (about 3 minutes)
    .venv/bin/python benchmarks/batch.py --prompts 100    # a smoke run

The simulator runs in this process with the account's parallel-task limit set to the concurrency; the
batch runs as ``kling-widgets batch FILE --concurrency C`` in a child process (ledger and all), so its CPU
is measured apart. Every task takes ``TASK_SECONDS`` Kling seconds (a fifth queued), time-compressed by
``--speed``. The ideal schedule is ``ceil(N / C) × task time``: C slots always busy, no gap between a task
ending and the next one starting.

Reported: wall time against the ideal, POSTs (must equal the prompts: 429s are counted apart, they create
nothing), tasks lost (prompts without a SUCCESS task in the ledger: must be 0), the child's CPU per task,
and the ledger's own cost per task: its bytes on disk, and the CPU of replaying one task's ledger calls
(begin, submitted, one observe per poll the batch made, add_kept) on a fresh ledger.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from kling_widgets._ledger import Ledger
from kling_widgets._models import Task, TaskStatus, Video
from kling_widgets.simulator import GatewaySimulator, Scenario

TASK_SECONDS = 150.0  # Kling's median text-to-video time, about 2.5 minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--speed", type=float, default=100.0, help="time compression (default 100)")
    parser.add_argument("--interval", type=float, default=0.05, help="longest poll gap, wall seconds")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="kling-batch-bench-"))
    batch_file = home / "prompts.txt"
    batch_file.write_text("".join(f"prompt number {i}\n" for i in range(args.prompts)))
    scenario = Scenario(queued=TASK_SECONDS / 5, running=TASK_SECONDS * 4 / 5)
    task_wall = TASK_SECONDS / args.speed
    ideal = math.ceil(args.prompts / args.concurrency) * task_wall

    with GatewaySimulator(scenario=scenario, speed=args.speed, max_parallel=args.concurrency) as sim:
        env = {
            **os.environ,
            "KLING_WIDGETS_HOME": str(home),
            "EZMODEL_BASE_URL": sim.url,
            "EZMODEL_API_KEY": sim.api_key,
        }
        command = [sys.executable, "-m", "kling_widgets", "batch", str(batch_file)]
        command += ["--concurrency", str(args.concurrency), "--interval", str(args.interval)]
        started = time.monotonic()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        requests = sim.requests()
        peak = sim.peak_unfinished

    posts = Counter(r.status for r in requests if r.method == "POST")
    gets = sum(1 for r in requests if r.method == "GET")
    ledger = Ledger(home / "ledger.sqlite3")
    succeeded = {e.source for e in ledger.entries(status="SUCCESS") if e.task_id}
    lost = args.prompts - len(succeeded)
    disk = sum(f.stat().st_size for f in home.glob("ledger.sqlite3*"))
    polls_per_task = gets / max(posts[200], 1)

    print(f"batch of {args.prompts} prompts at concurrency {args.concurrency}, speed {args.speed:g}")
    print(f"  exit code {done.returncode}; {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    print(f"  wall time     {wall:8.1f} s   ideal {ideal:.1f} s   ratio {wall / ideal:.3f}")
    print(f"  POSTs         {posts[200]:8d}     (prompts {args.prompts}; 429s answered: {posts[429]})")
    print(f"  peak running  {peak:8d}     lost: {lost}")
    print(f"  status GETs   {gets:8d}     ({polls_per_task:.1f} per task)")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"  client CPU    {cpu:8.2f} s   ({cpu / args.prompts * 1e3:.2f} ms per task, everything included)")
    print(f"  ledger disk   {disk:8d} B   ({disk / args.prompts:.0f} B per task, WAL included)")
    print(f"  ledger CPU    {ledger_cpu_per_task(round(polls_per_task)) * 1e3:8.3f} ms per task (replayed)")


def ledger_cpu_per_task(polls: int, tasks: int = 300) -> float:
    """CPU seconds of one task's ledger calls, on a fresh ledger: what the ledger adds to a task."""
    folder = Path(tempfile.mkdtemp(prefix="kling-ledger-cost-"))
    ledger = Ledger(folder / "ledger.sqlite3")
    video = Video("https://cdn.example/v.mp4?Expires=1900000000&Signature=abc", 5.0)
    states = [TaskStatus.SUBMITTED] * (polls // 5) + [TaskStatus.IN_PROGRESS] * (polls - polls // 5 - 1)
    started = time.process_time()
    for i in range(tasks):
        task_id = str(10**17 + i)
        local_id = ledger.begin("text2video", "https://api.ezmodel.cloud", "abcd1234", {"prompt": f"p {i}"})
        ledger.submitted(local_id, Task(task_id, TaskStatus.SUBMITTED))
        for status in states:
            ledger.observe(Task(task_id, status))
        ledger.observe(Task(task_id, TaskStatus.SUCCESS, 100, (video,)))
        ledger.add_kept(task_id, [folder / f"{task_id}.mp4"])
    return (time.process_time() - started) / tasks


if __name__ == "__main__":
    main()
