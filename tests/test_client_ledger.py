"""`KlingClient` and its ledger: a row before every POST, its outcome after, every fetched state observed."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from helpers import WAIT
from kling_widgets import APIError, KlingClient, TransportError
from kling_widgets._ledger import Ledger, default_ledger_path
from kling_widgets.simulator import GatewaySimulator, Scenario


def test_the_default_ledger_is_the_home_one_and_shared(sim: GatewaySimulator, private_home: Path) -> None:
    with KlingClient(base_url=sim.url, api_key=sim.api_key) as one, KlingClient(api_key="k") as two:
        assert one.ledger is not None
        assert one.ledger is two.ledger
        assert one.ledger.path == default_ledger_path() == private_home / "ledger.sqlite3"


def test_a_path_or_a_ledger_picks_that_one(sim: GatewaySimulator, tmp_path: Path) -> None:
    mine = Ledger(tmp_path / "mine.sqlite3")
    with KlingClient(base_url=sim.url, api_key=sim.api_key, ledger=tmp_path / "other.sqlite3") as by_path:
        assert by_path.ledger is not None
        assert by_path.ledger.path == tmp_path / "other.sqlite3"
    with KlingClient(base_url=sim.url, api_key=sim.api_key, ledger=mine) as by_object:
        task = by_object.text2video("a corgi", source="prompts.csv#3")
    entry = mine.get(task.task_id)
    assert entry is not None
    assert entry.source == "prompts.csv#3"


def test_a_submission_is_recorded_before_its_post_then_settled(
    sim: GatewaySimulator, client: KlingClient
) -> None:
    ledger = client.ledger
    assert ledger is not None
    task = client.text2video("a corgi surfing", duration=10, aspect_ratio="9:16")
    [entry] = ledger.entries()
    assert (entry.task_id, entry.state, entry.endpoint) == (task.task_id, "SUBMITTED", "text2video")
    assert entry.gateway == "127.0.0.1:" + sim.url.rsplit(":", 1)[1]
    assert entry.key_id == client.key_id
    assert sim.api_key not in repr(entry)
    assert entry.params["prompt"] == "a corgi surfing"
    assert entry.params["duration"] == "10"
    assert entry.params["aspect_ratio"] == "9:16"


def test_a_refused_submission_is_recorded_refused(sim: GatewaySimulator, client: KlingClient) -> None:
    sim.max_parallel = 1
    sim.add_task(Scenario(polls=(5, 5)))  # unfinished until polled: the POST meets the parallel limit
    with pytest.raises(APIError):
        client.text2video("a corgi")
    assert client.ledger is not None
    [entry] = client.ledger.entries()
    assert (entry.task_id, entry.state) == (None, "refused")
    assert "429" in (entry.fail_reason or "")


def test_a_post_without_an_answer_is_submitting_then_unknown(sim: GatewaySimulator) -> None:
    sim.drop_next_submits(1, hang=True)
    ledger_seen: list[str] = []
    with KlingClient(base_url=sim.url, api_key=sim.api_key, timeout=1.0) as client:
        ledger = client.ledger
        assert ledger is not None
        outcome: list[BaseException] = []

        def submit() -> None:
            try:
                client.text2video("a corgi that may exist")
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=submit)
        worker.start()
        while not ledger.entries() and worker.is_alive():
            worker.join(0.01)
        ledger_seen = [e.state for e in ledger.entries()]  # while the POST is in flight
        worker.join(WAIT)
    assert ledger_seen == ["submitting"]
    assert isinstance(outcome[0], TransportError)
    [entry] = ledger.entries()
    assert (entry.task_id, entry.state) == (None, "unknown")
    assert entry.params["prompt"] == "a corgi that may exist"
    assert ledger.unfinished(sim.url, client.key_id) == [entry]  # `resume` lists it: it may be billed


def test_polls_are_observed(sim: GatewaySimulator, client: KlingClient) -> None:
    task = client.text2video("a corgi")
    assert client.ledger is not None
    states = []
    for _ in range(3):
        client.get_task(task.task_id)
        entry = client.ledger.get(task.task_id)
        assert entry is not None
        states.append(entry.state)
    assert states == ["SUBMITTED", "IN_PROGRESS", "SUCCESS"]
    [video] = entry.videos
    assert video.url.startswith(sim.url)
    assert video.expires_at is not None


def test_fetching_a_task_not_in_the_ledger_adds_nothing(sim: GatewaySimulator, client: KlingClient) -> None:
    client.get_task(sim.add_task(Scenario(polls=(0, 0))))
    assert client.ledger is not None
    assert client.ledger.entries() == []


def test_ledger_false_writes_nothing(sim: GatewaySimulator, private_home: Path) -> None:
    with KlingClient(base_url=sim.url, api_key=sim.api_key, ledger=False) as client:
        assert client.ledger is None
        task = client.text2video("a corgi")
        client.wait(task.task_id, poll_interval=0.01, max_poll_interval=0.02)
        sim.max_parallel = 1
        sim.add_task(Scenario(polls=(5, 5)))
        with pytest.raises(APIError):
            client.text2video("a corgi")  # refused by the gateway: the parallel limit
    assert list(private_home.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX SIGINT")
def test_an_interrupted_post_is_unknown(sim: GatewaySimulator) -> None:
    sim.drop_next_submits(1, hang=True)
    with KlingClient(base_url=sim.url, api_key=sim.api_key, timeout=WAIT) as client:
        ledger = client.ledger
        assert ledger is not None
        # A real SIGINT, as Ctrl-C sends: it interrupts the blocked read of the answer.
        interrupt = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        interrupt.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.text2video("a corgi, interrupted")
        finally:
            interrupt.join()
    [entry] = ledger.entries()
    assert (entry.task_id, entry.state, entry.fail_reason) == (None, "unknown", "KeyboardInterrupt")
