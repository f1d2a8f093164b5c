"""Batches: reading files, the submitter (limits, 429s, no-answer POSTs, resuming), the batch command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import FOREVER, WAIT
from kling_widgets import KlingClient, RateLimitError, Task
from kling_widgets.__main__ import main
from kling_widgets._batch import BatchRow, BatchSubmitter, RowOutcome, RowState, read_batch, rows_from_prompts
from kling_widgets.simulator import GatewaySimulator, Scenario

# -- reading ---------------------------------------------------------------------------------------------


def test_csv_rows_are_typed_and_carry_their_source(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text(
        "prompt,duration,aspect_ratio,cfg_scale,negative_prompt\n"
        '"a corgi, surfing",10,9:16,0.5,blur\n'
        "\n"
        "a cat,,,,\n"
        '"two\nlines",,,,\n',
        encoding="utf-8",
    )
    first, second, third = read_batch(path)
    assert first == BatchRow(
        1,
        "a corgi, surfing",
        {"duration": "10", "aspect_ratio": "9:16", "cfg_scale": 0.5, "negative_prompt": "blur"},
        f"{path.resolve()}#1",
    )
    assert second == BatchRow(2, "a cat", {}, f"{path.resolve()}#2")
    assert third.prompt == "two\nlines"


def test_json_lines_and_plain_text(tmp_path: Path) -> None:
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "a corgi", "duration": 5, "mode": "pro"}\n\n{"prompt": "a cat"}\n')
    assert [(r.number, r.prompt, dict(r.params)) for r in read_batch(jsonl)] == [
        (1, "a corgi", {"duration": "5", "mode": "pro"}),
        (3, "a cat", {}),
    ]
    text = tmp_path / "prompts.txt"
    text.write_text("a corgi\n\n  \na cat, with commas\n")
    assert [(r.number, r.prompt) for r in read_batch(text)] == [(1, "a corgi"), (4, "a cat, with commas")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "prompt,colour\na corgi,red\n", r"unknown column\(s\) \['colour'\]"),
        ("a.csv", "text\na corgi\n", "needs a 'prompt' column"),
        ("a.jsonl", '{"prompt": "a", "seed": 3}\n', r"unknown column\(s\) \['seed'\]"),
        ("a.jsonl", "[1]\n", "line 1 is not a JSON object"),
        ("a.txt", "\n\n", "no prompt found"),
        (
            "a.csv",
            "prompt,duration,aspect_ratio\na,7,16:9\n,5,16:9\nb,5,4:3\n",
            r"row 1: duration must be one of 5, 10, got '7'; row 2: the prompt is blank; row 3: aspect_ratio",
        ),
    ],
)
def test_a_bad_file_is_refused_whole(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_batch(path)


def test_rows_from_prompts_validates_every_prompt_first() -> None:
    assert rows_from_prompts(["a", "b"], duration=10) == [
        BatchRow(1, "a", {"duration": "10"}),
        BatchRow(2, "b", {"duration": "10"}),
    ]
    with pytest.raises(ValueError, match="row 2: the prompt has 2501 characters"):
        rows_from_prompts(["a", "x" * 2501])


# -- submitting ------------------------------------------------------------------------------------------


def run_batch(
    client: KlingClient, rows: list[BatchRow], concurrency: int, *, finish: bool = True
) -> tuple[BatchSubmitter, list[RowOutcome]]:
    """Submit ``rows``; a stand-in watcher polls each task to its end and tells the submitter."""
    from kling_widgets._poller import default_engine

    watches = []

    def on_outcome(outcome: RowOutcome) -> None:
        if finish and outcome.task_id and outcome.state in (RowState.SUBMITTED, RowState.RESUMED):
            task_id = outcome.task_id
            watches.append(
                default_engine().watch(
                    lambda: client.get_task(task_id, retry=False),
                    task_id=task_id,
                    on_update=lambda u: submitter.finished(task_id) if u.state.is_final else None,
                    poll_interval=0.01,
                    max_poll_interval=0.02,
                )
            )

    submitter = BatchSubmitter(client, rows, concurrency=concurrency, on_outcome=on_outcome).start()
    assert submitter.wait(WAIT)
    for watch in list(watches):
        assert watch.wait(WAIT)
    return submitter, submitter.outcomes


def test_a_submit_over_the_account_limit_is_the_gateways_429_and_creates_nothing() -> None:
    with (
        GatewaySimulator(scenario=FOREVER, max_parallel=1) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        client.text2video("the one that runs")
        with pytest.raises(RateLimitError) as info:
            client.text2video("one too many")
        assert info.value.code == "fail_to_fetch_task"
        assert [r.status for r in sim.requests() if r.method == "POST"] == [200, 429]
        assert sim.peak_unfinished == 1
        assert client.ledger is not None
        assert [e.state for e in client.ledger.entries()] == ["refused", "SUBMITTED"]


def test_a_limit_of_5_holds_the_queue_and_every_prompt_succeeds(tmp_path: Path) -> None:
    with (
        GatewaySimulator(scenario=Scenario(polls=(1, 2)), max_parallel=5) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        rows = rows_from_prompts([f"prompt {i}" for i in range(30)])
        submitter, outcomes = run_batch(client, rows, concurrency=8)  # more than the account allows
        assert [o.state for o in outcomes] == [RowState.SUBMITTED] * 30
        assert len({o.task_id for o in outcomes}) == 30
        assert sim.peak_unfinished <= 5
        posts = Counter(r.status for r in sim.requests() if r.method == "POST")
        assert posts[200] == 30
        assert posts[429] == submitter.rate_limited > 0  # the limit was hit, and never failed a row
        assert client.ledger is not None
        assert {e.state for e in client.ledger.entries() if e.task_id} == {"SUCCESS"}


def test_concurrency_is_never_exceeded_without_a_limit() -> None:
    with (
        GatewaySimulator(scenario=Scenario(polls=(2, 2))) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        run_batch(client, rows_from_prompts([f"p{i}" for i in range(12)]), concurrency=3)
        assert sim.peak_unfinished <= 3
        assert sum(1 for r in sim.requests() if r.method == "POST") == 12


def test_an_unanswered_post_is_unknown_and_never_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("first\nsecond\nthird\n")
    with (
        GatewaySimulator(scenario=Scenario(polls=(0, 0))) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key, timeout=1.0) as client,
    ):
        sim.drop_next_submits(1, hang=True)
        _, outcomes = run_batch(client, read_batch(path), concurrency=1)
        assert [o.state for o in outcomes] == [RowState.UNKNOWN, RowState.SUBMITTED, RowState.SUBMITTED]
        posts = sum(1 for r in sim.requests() if r.method == "POST")
        _, again = run_batch(client, read_batch(path), concurrency=1)  # the same file, run again
        assert [o.state for o in again] == [RowState.UNKNOWN, RowState.DONE_BEFORE, RowState.DONE_BEFORE]
        assert again[0].entry is not None
        assert again[0].entry.state == "unknown"
        assert sum(1 for r in sim.requests() if r.method == "POST") == posts


def test_three_unanswered_posts_in_a_row_stop_the_batch() -> None:
    with (
        GatewaySimulator(scenario=Scenario(polls=(0, 0))) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key, timeout=0.5) as client,
    ):
        sim.drop_next_submits(3, hang=True)
        _, outcomes = run_batch(client, rows_from_prompts(["a", "b", "c", "d", "e"]), concurrency=5)
    assert [o.state for o in outcomes] == [RowState.UNKNOWN] * 3 + [RowState.NOT_SENT] * 2
    assert "rows already sent are skipped" in str(outcomes[-1].error)


def test_a_resumed_batch_watches_unfinished_rows_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("one\ntwo\nthree\n")
    with (
        GatewaySimulator(scenario=FOREVER) as sim,
        KlingClient(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        _, first = run_batch(client, read_batch(path)[:2], concurrency=5, finish=False)
        submitter = BatchSubmitter(client, read_batch(path), concurrency=2).start()
        time.sleep(0.3)  # it must not send row 3 while rows 1 and 2 (resumed) hold both slots
        assert [o.state for o in submitter.outcomes] == [RowState.RESUMED, RowState.RESUMED]
        assert [o.task_id for o in submitter.outcomes] == [o.task_id for o in first]
        assert submitter.outcomes[0].task_id is not None
        submitter.finished(submitter.outcomes[0].task_id)
        assert submitter.wait(WAIT)
        assert [o.state for o in submitter.outcomes][-1] is RowState.SUBMITTED
        assert sum(1 for r in sim.requests() if r.method == "POST") == 3


def test_a_changed_file_is_not_sent_again_by_row_number(tmp_path: Path, client: KlingClient) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("one\n")
    run_batch(client, read_batch(path), concurrency=1)
    path.write_text("another\n")
    _, outcomes = run_batch(client, read_batch(path), concurrency=1)
    assert outcomes[0].state is RowState.NOT_SENT
    assert "changed" in str(outcomes[0].error)


# -- the command -----------------------------------------------------------------------------------------


def cli_env(sim: GatewaySimulator) -> dict[str, str]:
    return {**os.environ, "EZMODEL_BASE_URL": sim.url, "EZMODEL_API_KEY": sim.api_key}


def test_the_batch_command_prints_a_table_and_exits_0(
    sim: GatewaySimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    path = tmp_path / "prompts.csv"
    path.write_text("prompt,duration\na corgi,5\na cat,10\n")
    assert main(["batch", str(path), "--concurrency", "2", "--interval", "0.02"]) == 0
    out, err = capsys.readouterr()
    assert "batch: 2/2 handled · 0 running · 2 done · 0 failed" in err
    assert out.splitlines()[0].split() == ["ROW", "STATE", "TASK_ID", "PROMPT", "REASON"]
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["1", "SUCCESS"], ["2", "SUCCESS"]]

    assert main(["batch", str(path), "--json", "--interval", "0.02"]) == 0  # again: nothing is sent
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["SUCCESS", "SUCCESS"]
    assert sum(1 for r in sim.requests() if r.method == "POST") == 2


@pytest.mark.parametrize("sim", [Scenario(outcome="failure", polls=(0, 0))], indirect=True)
def test_the_batch_command_exits_1_when_a_prompt_failed(
    sim: GatewaySimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    path = tmp_path / "prompts.txt"
    path.write_text("a corgi\n")
    assert main(["batch", str(path), "--interval", "0.02"]) == 1
    assert "FAILURE" in capsys.readouterr().out


def test_a_bad_file_sends_nothing(
    sim: GatewaySimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    path = tmp_path / "prompts.csv"
    path.write_text("prompt,duration\na corgi,5\na cat,7\n")
    assert main(["batch", str(path)]) == 2
    assert "row 2: duration" in capsys.readouterr().err
    assert sim.requests() == []


def test_a_batch_killed_halfway_finishes_on_rerun_without_a_duplicate_post(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"prompt {i}\n" for i in range(30)))
    command = [
        sys.executable,
        "-m",
        "kling_widgets",
        "batch",
        str(path),
        "--concurrency",
        "5",
        "--interval",
        "0.05",
    ]
    with GatewaySimulator(scenario=Scenario(polls=(2, 2)), max_parallel=5) as sim:
        first = subprocess.Popen(
            command, env=cli_env(sim), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + WAIT
        while sum(1 for r in sim.requests() if r.method == "POST") < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(WAIT)
        killed_after = sum(1 for r in sim.requests() if r.method == "POST" and r.status == 200)
        assert 15 <= killed_after < 30

        rerun = subprocess.run(command, env=cli_env(sim), capture_output=True, text=True, timeout=60)
        created = [r for r in sim.requests() if r.method == "POST" and r.status == 200]
        with KlingClient(base_url=sim.url, api_key=sim.api_key) as client:
            assert client.ledger is not None
            sent = Counter(e.source for e in client.ledger.entries() if e.state != "refused")
    assert len(created) == 30  # one task per prompt, across both runs
    assert sent == Counter({f"{path.resolve()}#{n}": 1 for n in range(1, 31)})
    states = Counter(line.split()[1] for line in rerun.stdout.splitlines()[1:])
    # A POST in flight at the kill got no answer: its row is `unknown`, never sent again.
    assert states["SUCCESS"] + states["unknown"] == 30
    assert states["unknown"] <= 1
    assert rerun.returncode == (0 if states["SUCCESS"] == 30 else 1)


def test_the_batch_command_watches_rows_an_earlier_run_left_unfinished(
    sim: GatewaySimulator,
    client: KlingClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    path = tmp_path / "prompts.txt"
    path.write_text("one\ntwo\nthree\n")
    run_batch(client, read_batch(path), concurrency=3, finish=False)  # as if that run had been killed
    assert main(["batch", str(path), "--interval", "0.02"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["1", "SUCCESS"],
        ["2", "SUCCESS"],
        ["3", "SUCCESS"],
    ]
    assert sum(1 for r in sim.requests() if r.method == "POST") == 3


def test_a_bug_while_sending_stops_the_batch_and_reports_every_row() -> None:
    class Broken(KlingClient):  # stands in for a bug in the submit path, which no gateway answer can cause
        def text2video(self, prompt: str, **options: object) -> Task:  # type: ignore[override]
            if prompt == "b":
                raise RuntimeError("a bug")
            return super().text2video(prompt, **options)  # type: ignore[arg-type]

    with (
        GatewaySimulator(scenario=Scenario(polls=(0, 0))) as sim,
        Broken(base_url=sim.url, api_key=sim.api_key) as client,
    ):
        submitter, outcomes = run_batch(client, rows_from_prompts(["a", "b", "c"]), concurrency=5)
    assert [o.state for o in outcomes] == [RowState.SUBMITTED, RowState.NOT_SENT, RowState.NOT_SENT]
    assert outcomes[1].error is not None
    assert outcomes[1].error.code == "internal_error"
    assert submitter.wait(0)
