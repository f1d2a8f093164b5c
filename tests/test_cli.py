"""The ``kling-widgets`` command, run in-process against the gateway simulator (plus two subprocess runs)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kling_widgets
from helpers import run_cli
from kling_widgets import KlingClient, TaskStatus, _demo
from kling_widgets.__main__ import main
from kling_widgets.simulator import Fault, GatewaySimulator, Scenario

pytestmark = pytest.mark.usefixtures("cli_env")


def test_status_prints_a_one_line_summary(sim: GatewaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = sim.add_task(Scenario(polls=(0, 0)))
    code, out, err = run_cli(capsys, "status", task_id)
    assert code == 0
    assert out.startswith(f"{task_id}: SUCCESS 100% {sim.url}")
    assert out.count("\n") == 1
    assert err == ""


def test_status_json(sim: GatewaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = sim.add_task(Scenario(outcome="failure", polls=(0, 0), fail_message="Image pixel is invalid"))
    code, out, _ = run_cli(capsys, "status", task_id, "--endpoint", "image2video", "--json")
    assert code == 0
    task = json.loads(out)
    assert task["task_id"] == task_id
    assert task["status"] == "FAILURE"
    assert task["progress"] == 100
    assert task["video_url"] is None
    assert task["fail_reason"] == "Image pixel is invalid"
    assert task["submit_time"].endswith("+00:00")
    assert task["endpoint"] == "text2video"  # the task's own route, from the gateway's answer
    assert set(task) == {
        "task_id",
        "endpoint",
        "status",
        "progress",
        "video_url",
        "image_urls",
        "audio_urls",
        "fail_reason",
        "submit_time",
        "start_time",
        "finish_time",
        "units",
    }
    assert task["units"] is None  # the gateway bills its own quota
    assert task["image_urls"] == task["audio_urls"] == []


@pytest.mark.parametrize("route", ["motion-control", "avatar/image2video"])
def test_status_polls_the_endpoint_it_is_given(
    sim: GatewaySimulator, capsys: pytest.CaptureFixture[str], route: str
) -> None:
    task_id = sim.add_task(Scenario(polls=(0, 0)), endpoint=route)
    code, out, _ = run_cli(capsys, "status", task_id, "--endpoint", route, "--json")
    assert code == 0
    assert json.loads(out)["endpoint"] == route
    assert [r.path for r in sim.requests(task_id)] == [f"/kling/v1/videos/{route}/{task_id}"]


def test_status_of_an_unknown_task_is_an_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "status", "404404404")
    assert code == 2
    assert out == ""
    assert err.startswith("kling-widgets: error: No such task")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EZMODEL_API_KEY")
    code, _, err = run_cli(capsys, "status", "1")
    assert code == 2
    assert "EZMODEL_API_KEY" in err


def test_watch_prints_the_video_url(sim: GatewaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 2)))
    code, out, err = run_cli(capsys, "watch", task_id, "--interval", "0.01")
    assert code == 0
    final = KlingClient(sim.api_key, base_url=sim.url).get_task(task_id)
    assert out == f"{final.video_url}\n"  # only the URL on stdout, for $(kling-widgets watch ...)
    lines = err.splitlines()  # not a terminal: one plain line per change of state or progress
    assert [line.split(" · ")[1:3] for line in lines] == [
        ["Queued", "0%"],
        ["Queued", "10%"],
        ["Generating", "30%"],
        ["Done", "100%"],
    ]
    assert "\r" not in err


def test_watch_rewrites_one_line_on_a_terminal(
    sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    task_id = sim.add_task(Scenario(polls=(1, 1)))
    assert main(["watch", task_id, "--interval", "0.01"]) == 0
    shown = terminal.getvalue()
    assert shown.count("\r") == 3
    assert shown.endswith("\n")
    assert shown.count("\n") == 1


def test_watch_failure_exits_1_with_the_reason(
    sim: GatewaySimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = sim.add_task(Scenario(outcome="failure", polls=(1, 1), fail_message="risk control \x1b[31mred"))
    code, out, err = run_cli(capsys, "watch", task_id, "--interval", "0.01")
    assert code == 1
    assert out == ""
    assert err.splitlines()[-1] == "Failed: risk control \\x1b[31mred"  # no terminal escape gets through
    assert "\x1b" not in err


def test_watch_error_exits_2(sim: GatewaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = sim.add_task(Scenario(polls=(2, 2), faults=(Fault("revoke_key", at_poll=2),)))
    code, out, err = run_cli(capsys, "watch", task_id, "--interval", "0.01")
    assert code == 2
    assert out == ""
    assert err.splitlines()[-1].startswith("kling-widgets: error: The API key was rejected (401)")
    assert sim.api_key not in err


def test_watch_timeout_exits_2(sim: GatewaySimulator, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = sim.add_task(Scenario(queued=10_000.0))
    code, _, err = run_cli(capsys, "watch", task_id, "--timeout", "0.2", "--interval", "0.02")
    assert code == 2
    assert "did not finish within 0.2 s" in err


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["watch", "1", "--interval", "0"])
    assert info.value.code == 2
    assert "positive" in capsys.readouterr().err


def test_demo_calls_run_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def run_demo(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(_demo, "run_demo", run_demo)
    assert main(["demo", "--port", "9999", "--no-browser"]) == 0
    assert main(["demo"]) == 0
    assert main(["demo", "--flavor", "kling"]) == 0
    assert calls == [
        {"port": 9999, "open_browser": False, "flavor": "ezmodel"},
        {"port": None, "open_browser": True, "flavor": "ezmodel"},
        {"port": None, "open_browser": True, "flavor": "kling"},
    ]


def test_version_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kling_widgets", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == f"kling-widgets {kling_widgets.__version__}\n"
    assert result.stderr == ""


def test_demo_without_jupyterlab_names_the_demo_extra(tmp_path: Path) -> None:
    """A plain `pip install kling-widgets` has no JupyterLab: the demo says how to get it, and starts nothing.

    A sitecustomize on PYTHONPATH makes `jupyterlab` unimportable in this process and in any it starts.
    """
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['jupyterlab'] = None\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "kling_widgets", "demo", "--no-browser", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 2
    assert result.stdout == ""  # no simulator, no server
    assert 'Install the demo extra: pip install "kling-widgets[demo]"' in result.stderr
    assert "jupyterlab is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kling_widgets", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for command in ("status", "watch", "simulate", "demo"):
        assert command in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX-only")
def test_simulate_serves_until_ctrl_c() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "kling_widgets", "simulate", "--speed", "100", "--api-key", "sk-sim-cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(5)]
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1) for line in lines if "export" in line
        )
        assert exports["EZMODEL_API_KEY"] == "sk-sim-cli"
        with KlingClient(exports["EZMODEL_API_KEY"], base_url=exports["EZMODEL_BASE_URL"]) as kling:
            task = kling.text2video("a corgi")
            assert kling.get_task(task.task_id).status is not TaskStatus.UNKNOWN
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 0
        assert "Traceback" not in (child.stderr.read() if child.stderr else "")
    finally:
        child.kill()
        child.wait(timeout=30)
