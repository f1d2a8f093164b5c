"""``kling-widgets history``, ``keep`` and ``resume``, in-process against the simulator."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from pathlib import Path

import pytest

from helpers import run_cli
from kling_widgets import KlingClient, TransportError
from kling_widgets.simulator import GatewaySimulator, Scenario

CLIP_SHA256 = hashlib.sha256(
    importlib.resources.files("kling_widgets").joinpath("_data/demo.mp4").read_bytes()
).hexdigest()


pytestmark = pytest.mark.usefixtures("cli_env")


def test_history_lists_the_ledger_newest_first(
    sim: GatewaySimulator, client: KlingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    done = client.wait(
        client.text2video("a corgi\x1b[2J surfing").task_id, poll_interval=0.01, max_poll_interval=0.02
    )
    queued = client.text2video("a cat " * 20, duration=10)
    code, out, err = run_cli(capsys, "history")
    assert (code, err) == (0, "")
    header, first, second = out.splitlines()
    assert header.split() == [
        "ID",
        "TASK_ID",
        "STATUS",
        "PROMPT",
        "MODEL",
        "DURATION",
        "WHEN",
        "KEPT",
        "LINK",
        "EXPIRES",
    ]
    assert first.split()[1:3] == [queued.task_id, "SUBMITTED"]
    assert "a cat a cat" in first
    assert "…" in first  # long prompts are cut
    assert second.split()[1:3] == [done.task_id, "SUCCESS"]
    assert "\x1b" not in out  # server or user text never drives the terminal

    code, out, _ = run_cli(capsys, "history", "--json", "--status", "success", "--limit", "5")
    [entry] = json.loads(out)
    assert entry["task_id"] == done.task_id
    assert entry["videos"][0]["url"] == done.video_url
    assert entry["params"]["prompt"] == "a corgi\x1b[2J surfing"


def test_keep_one_then_all(
    sim: GatewaySimulator, client: KlingClient, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (
        client.wait(client.text2video(p).task_id, poll_interval=0.01, max_poll_interval=0.02)
        for p in ("a corgi", "a cat")
    )
    code, out, _ = run_cli(capsys, "keep", first.task_id)
    assert code == 0
    assert out.splitlines() == [str(private_home / "kling-videos" / f"{first.task_id}.mp4")]
    code, out, _ = run_cli(capsys, "keep", "--all")
    assert code == 0
    assert out.splitlines() == [str(private_home / "kling-videos" / f"{second.task_id}.mp4")]
    assert hashlib.sha256(Path(out.strip()).read_bytes()).hexdigest() == CLIP_SHA256
    code, out, err = run_cli(capsys, "keep", "--all")
    assert (code, out) == (0, "")
    assert "Nothing to keep" in err


def test_keep_of_an_expired_link_exits_2_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with GatewaySimulator(scenario=Scenario(polls=(0, 0)), url_lifetime=-1) as sim:
        with KlingClient(base_url=sim.url, api_key=sim.api_key) as client:
            task = client.wait(
                client.text2video("a corgi").task_id, poll_interval=0.01, max_poll_interval=0.02
            )
        code, out, err = run_cli(capsys, "keep", "--all")
    assert (code, out) == (2, "")
    assert f"{task.task_id}: Cannot keep {task.task_id}: its video link expired" in err


def test_resume_watches_every_unfinished_task_to_its_end(
    sim: GatewaySimulator, client: KlingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [client.text2video(f"prompt {i}") for i in range(3)]  # submitted, never watched
    sim.drop_next_submits(1, hang=True)
    with (
        KlingClient(base_url=sim.url, api_key=sim.api_key, timeout=0.5) as impatient,
        pytest.raises(TransportError, match="did not answer"),
    ):
        impatient.text2video("in flight")
    code, out, err = run_cli(capsys, "resume", "--interval", "0.02")
    assert code == 0
    lines = out.splitlines()[1:]
    assert sorted(line.split()[1:3] for line in lines if line.split()[1] != "-") == sorted(
        [t.task_id, "SUCCESS"] for t in tasks
    )
    assert [line.split()[1:3] for line in lines if line.split()[1] == "-"] == [["-", "unknown"]]
    assert "1 submission(s) got no answer" in err
    code, out, _ = run_cli(capsys, "resume")
    assert code == 0
    assert "in flight" in out  # the unknown one stays listed: it may have been billed
    code, out, _ = run_cli(capsys, "history", "--json", "--status", "unknown")
    assert [e["params"]["prompt"] for e in json.loads(out)] == ["in flight"]
