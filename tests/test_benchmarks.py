"""The benchmark command runs end to end (N = 1, heavily time-compressed); no timing asserts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quick_benchmark_prints_the_tables(tmp_path: Path) -> None:
    per_task = tmp_path / "tasks.csv"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--csv", str(per_task)],
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| N | watcher | speed | threads | CPU s |")
    assert sum(line.startswith("| 1 | ") for line in lines) == 3  # ours, 1 s, 5 s
    assert any(line.startswith("| kernel cell round trip") for line in lines)
    rows = per_task.read_text().splitlines()
    assert rows[0] == "N,watcher,task,requests,lag_s"
    assert len(rows) == 4
