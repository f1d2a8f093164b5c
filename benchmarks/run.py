"""Benchmark: our shared engine and schedule against thread-per-task polling, on one simulated workload.

    .venv/bin/python benchmarks/run.py            # the full run (about 17 minutes), prints markdown tables
    .venv/bin/python benchmarks/run.py --quick    # N = 1 only, heavily time-compressed (a smoke run)

Workload: N tasks whose time from submission to SUCCESS is drawn (fixed seed) from a log-normal with median
150 s and shape 0.4, kept within 60–300 s (Kling takes about 1–5 minutes; docs/gateway.md, "How long a task
takes"); the first 5–30 s of each (at most a third) are spent queued. Every arm watches the same draws.

Arms, each in its own process (so the simulator's CPU is not counted; it runs as ``kling-widgets simulate``
in another process): ``ours`` is a `TaskGallery` (widgets included) on the shared engine with its default
schedule; ``1 s`` and ``5 s`` are what users write: one thread per task, each a plain `requests` loop (one
``requests.Session`` per process: ``session.get``, ``.json()``, read ``data.status``, sleep), as Kling's own
ComfyUI nodes do (1 s). They do not use `KlingClient`, so its lean transport does not cheapen the baseline.

Time compression: the simulator runs ``speed`` times faster than Kling and every watcher's delays are
divided by the same factor, so one run takes minutes instead of hours. ``speed = min(30, 300 / N)`` keeps
the 1 s baseline's nominal request rate at most 300/s. Lags and intervals are reported in Kling seconds
(wall seconds × speed). Request latency is magnified by the same factor, which adds to every arm's lag and
stretches the fixed arms' effective interval (their sleep starts after the answer): both are reported as
measured. Creation instants are taken just before each create request, so lags are overestimated by that
request's latency.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import queue
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
KEY = "sk-bench-" + os.urandom(6).hex()
SIZES = (1, 10, 100, 200)
ARMS = (("ours", None), ("1 s", 1.0), ("5 s", 5.0))
KERNEL_TASKS = 200
KERNEL_SPEED = 3.0
MODEL_SEEDS = 10
KERNEL_WINDOW = 200.0  # Kling seconds of watching sampled: the densest polling, and most completions


def speed_for(n: int) -> float:
    return min(30.0, 300.0 / n)


# -- workload and the fake clock ------------------------------------------------------------------------


def workload(n: int, seed: int) -> list[tuple[float, float]]:
    """(queued, running) seconds per task: total 60–300 s, log-normal around 150 s."""
    rng = random.Random(seed)
    tasks = []
    for _ in range(n):
        total = 0.0
        while not 60.0 <= total <= 300.0:
            total = 150.0 * math.exp(rng.gauss(0.0, 0.4))
        queued = min(rng.uniform(5.0, 30.0), total / 3)
        tasks.append((queued, total - queued))
    return tasks


def fake_clock(
    tasks: Sequence[tuple[float, float]], gap: Callable[[bool, float], float]
) -> tuple[float, float]:
    """Poll every task from t = 0 with ``gap(queued, t)``; return (mean requests per task, median lag)."""
    requests_made, lags = [], []
    for queued, running in tasks:
        t, n = 0.0, 1
        while t < queued + running:
            t += gap(t < queued, t)
            n += 1
        requests_made.append(n)
        lags.append(t - queued - running)
    return statistics.fmean(requests_made), statistics.median(lags)


def our_model(tasks: Sequence[tuple[float, float]], seeds: int = MODEL_SEEDS) -> tuple[float, float]:
    """Our policy on the fake clock, jitter included: (requests per task, median lag), each a mean over
    ``seeds`` jitter seeds (one seed's median lag varies by about ±0.1 s at N = 200)."""
    from kling_widgets import TaskStatus
    from kling_widgets._schedule import next_poll_delay

    runs = []
    for seed in range(seeds):
        rng = random.Random(seed)

        def gap(queued: bool, t: float, rng: random.Random = rng) -> float:
            status = TaskStatus.SUBMITTED if queued else TaskStatus.IN_PROGRESS
            return next_poll_delay(status=status, age=t, poll_interval=1.0, max_poll_interval=15.0, rng=rng)

        runs.append(fake_clock(tasks, gap))
    return statistics.fmean(r for r, _ in runs), statistics.fmean(lag for _, lag in runs)


# -- live arms ------------------------------------------------------------------------------------------


class Simulator:
    """``kling-widgets simulate`` in its own process."""

    def __init__(self, speed: float) -> None:
        command = [PYTHON, "-m", "kling_widgets", "simulate", "--speed", f"{speed:g}", "--api-key", KEY]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        match = re.search(r"running at (\S+)", self.process.stdout.readline())
        if match is None:
            self.stop()
            raise RuntimeError("the simulator did not start")
        self.url = match.group(1)

    def gets_per_task(self) -> Counter[str]:
        response = requests.get(
            f"{self.url}/_simulator/requests", headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )
        response.raise_for_status()
        return Counter(r["task_id"] for r in response.json() if r["method"] == "GET" and r["task_id"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class ArmResult:
    n: int
    arm: str
    speed: float
    threads: int
    cpu: float
    rss_mb: float
    requests: list[int]
    lags: list[float]  # Kling seconds; math.inf where SUCCESS was never seen

    def quantile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_arm(
    sim: Simulator, tasks: list[tuple[float, float]], arm: str, interval: float | None, speed: float
) -> ArmResult:
    kind = "ours" if interval is None else "fixed"
    job = {"url": sim.url, "key": KEY, "speed": speed, "workload": tasks, "arm": kind, "interval": interval}
    process = subprocess.Popen(
        [PYTHON, str(HERE / "_arm.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(json.dumps(job))
    process.stdin.close()
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:  # sample from outside, so the count includes no sampler thread
        try:
            peak = max(peak, watched.num_threads())
        except psutil.Error:
            break
        time.sleep(0.1)
    if process.wait() != 0:
        raise RuntimeError(f"arm {arm} with N={len(tasks)} failed")
    result = json.loads(process.stdout.read())
    gets = sim.gets_per_task()
    lags = [
        math.inf if seen is None else (seen - created - (queued + running) / speed) * speed
        for seen, created, (queued, running) in zip(result["seen"], result["created"], tasks, strict=True)
    ]
    return ArmResult(len(tasks), arm, speed, peak, result["cpu"], result["max_rss_mb"],
                     [gets[i] for i in result["ids"]], lags)  # fmt: skip


# -- kernel responsiveness ------------------------------------------------------------------------------


@dataclass
class RoundTrips:
    tasks: int
    speed: float
    idle: list[float]  # seconds
    busy: list[float]


def kernel_round_trips(n_tasks: int, speed: float, samples_idle: int, seed: int) -> RoundTrips:
    """Round-trip times of a trivial cell: idle kernel, then while a gallery of ``n_tasks`` is watched.

    Samples for the first `KERNEL_WINDOW` Kling seconds of watching, then closes the gallery.
    """
    from jupyter_client import KernelManager

    sim = Simulator(speed)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    drain = threading.Event()
    drainer: threading.Thread | None = None
    try:
        client.wait_for_ready(timeout=60)

        def drain_iopub() -> None:  # a front end would consume these; keep the queue from growing
            while not drain.is_set():
                with contextlib.suppress(queue.Empty):
                    client.iopub_channel.get_msg(timeout=0.1)

        drainer = threading.Thread(target=drain_iopub, daemon=True)
        drainer.start()

        def execute(code: str) -> float:
            started = time.monotonic()
            msg_id = client.execute(code, store_history=False)
            while True:
                reply = client.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    if reply["content"]["status"] != "ok":
                        raise RuntimeError(f"kernel cell failed: {reply['content']}")
                    return time.monotonic() - started

        tasks = workload(n_tasks, seed)
        execute(
            f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
            "from IPython.display import display\n"
            "from _arm import compress_engine, create_tasks\n"
            "from kling_widgets import KlingClient\n"
            "from kling_widgets._gallery import TaskGallery\n"
        )

        def sample(count: int, until: float | None = None) -> list[float]:
            times = []
            while len(times) < count or (until is not None and time.monotonic() < until):
                times.append(execute("pass"))
                time.sleep(0.1)
            return times

        idle = sample(samples_idle)
        execute(
            f"compress_engine({speed})\n"
            f"ids, _ = create_tasks({sim.url!r}, {KEY!r}, {json.dumps(tasks)})\n"
            f"g = TaskGallery(ids, client=KlingClient(api_key={KEY!r}, base_url={sim.url!r}), "
            f"poll_interval={1 / speed}, max_poll_interval={15 / speed}, timeout={900 / speed})\n"
            "display(g)\n"
        )
        busy = sample(1, until=time.monotonic() + KERNEL_WINDOW / speed)
        execute("g.close()")
        return RoundTrips(n_tasks, speed, idle, busy)
    finally:
        drain.set()
        if drainer is not None:
            drainer.join()
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        sim.stop()


# -- report ---------------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 2) -> str:
    return "∞" if math.isinf(x) else f"{x:.{digits}f}"


def report(results: list[ArmResult], seed: int, trips: RoundTrips) -> str:
    out = [
        "| N | watcher | speed | threads | CPU s | peak RSS MB | requests/task | lag median s | lag p90 s "
        "| lag max s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {r.n} | {r.arm} | ×{r.speed:g} | {r.threads} | {fmt(r.cpu)} | {r.rss_mb:.0f} | "
            f"{statistics.fmean(r.requests):.1f} | {fmt(r.quantile(0.5))} | {fmt(r.quantile(0.9))} | "
            f"{fmt(max(r.lags))} |"
        )
    by = {(r.n, r.arm): r for r in results}
    big = max(r.n for r in results)
    ours, one, five = by[big, "ours"], by[big, "1 s"], by[big, "5 s"]
    ours_req, one_req = statistics.fmean(ours.requests), statistics.fmean(one.requests)
    median_lag = ours.quantile(0.5)

    tasks = workload(big, seed)
    sweep = [(d, *fake_clock(tasks, lambda q, t, d=d: d)) for d in [1.0 + 0.25 * i for i in range(17)]]
    model_req, model_lag = our_model(tasks)
    matching = [(d, req) for d, req, lag in sweep if lag <= median_lag]
    out += ["", f"Fixed-interval sweep on a fake clock (same N = {big} draws; no latency):", "",
            "| interval s | requests/task | lag median s |", "|---:|---:|---:|"]  # fmt: skip
    out += [f"| {d:.2f} | {req:.1f} | {lag:.2f} |" for d, req, lag in sweep]
    out.append(f"| ours (model, {MODEL_SEEDS} jitter seeds) | {model_req:.1f} | {model_lag:.2f} |")

    checks = [
        (f"threads at N = {big} ≤ 8", ours.threads <= 8, f"{ours.threads} (1 s baseline: {one.threads})"),
        ("median detection lag ≤ 1.5 s", median_lag <= 1.5, f"{median_lag:.2f} s"),
        ("requests ≤ ¼ of the 1 s baseline", ours_req <= one_req / 4,
         f"{ours_req:.1f} vs {one_req:.1f} per task ({ours_req / one_req:.1%})"),
        ("fewer requests than any fixed interval with the same median lag",
         bool(matching) and all(ours_req < req for _, req in matching),
         f"best fixed interval with lag ≤ {median_lag:.2f} s: " + _interval(matching)),
        (f"CPU ≥ 5× below the 1 s baseline at N = {big}", one.cpu >= 5 * ours.cpu,
         f"{ours.cpu:.2f} s vs {one.cpu:.2f} s ({one.cpu / ours.cpu:.1f}×); 5 s baseline {five.cpu:.2f} s"),
    ]  # fmt: skip
    idle, busy = trips.idle, trips.busy
    worst = max(statistics.median(busy) - statistics.median(idle), _p95(busy) - _p95(idle))
    checks.append(
        (f"kernel cell round trip with {trips.tasks} tasks watched within 20 ms of idle", worst <= 0.020,
         f"median {statistics.median(idle) * 1e3:.1f} → {statistics.median(busy) * 1e3:.1f} ms, "
         f"p95 {_p95(idle) * 1e3:.1f} → {_p95(busy) * 1e3:.1f} ms, max {max(busy) * 1e3:.1f} ms "
         f"({len(busy)} samples over the first {KERNEL_WINDOW:g} s of Kling time, ×{trips.speed:g})")
    )  # fmt: skip
    out += ["", "| target | met | measured |", "|---|---|---|"]
    out += [f"| {name} | {'yes' if ok else '**no**'} | {detail} |" for name, ok, detail in checks]
    return "\n".join(out)


def _interval(matching: list[tuple[float, float]]) -> str:
    if not matching:
        return "none in the sweep"
    interval, requests_made = matching[-1]
    return f"{interval:.2f} s, {requests_made:.1f} requests/task"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1 only, ×100 time compression (smoke run)")
    parser.add_argument("--seed", type=int, default=2026, help="workload seed (default 2026)")
    parser.add_argument("--csv", type=Path, help="per-task results (default: a file in the temp directory)")
    parser.add_argument(
        "--kernel-speed",
        type=float,
        default=KERNEL_SPEED,
        help=f"time compression of the kernel round trips (default {KERNEL_SPEED:g}; 1 adds about 4 minutes)",
    )
    args = parser.parse_args(argv)

    sizes, speed = ((1,), lambda n: 100.0) if args.quick else (SIZES, speed_for)
    results: list[ArmResult] = []
    started = time.monotonic()
    for n in sizes:
        sim = Simulator(speed(n))
        try:
            for arm, interval in ARMS:
                print(f"N = {n}: {arm} (×{speed(n):g}) …", file=sys.stderr, flush=True)
                results.append(run_arm(sim, workload(n, args.seed), arm, interval, speed(n)))
        finally:
            sim.stop()
    print("kernel round trips …", file=sys.stderr, flush=True)
    if args.quick:
        trips = kernel_round_trips(2, 100.0, samples_idle=5, seed=args.seed)
    else:
        trips = kernel_round_trips(KERNEL_TASKS, args.kernel_speed, samples_idle=100, seed=args.seed)

    path = args.csv or Path(tempfile.gettempdir()) / "kling-widgets-benchmark-tasks.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["N", "watcher", "task", "requests", "lag_s"])
        for r in results:
            writer.writerows(
                [r.n, r.arm, i, req, f"{lag:.3f}"]
                for i, (req, lag) in enumerate(zip(r.requests, r.lags, strict=True))
            )
    print(report(results, args.seed, trips))
    took = time.monotonic() - started
    print(f"\nPer-task requests and lags: {path}. Took {took:.0f} s on {os.cpu_count()} CPUs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
