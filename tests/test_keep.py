"""`keep`: local copies of a task's videos with a JSON sidecar, against the simulator's video host."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import threading
from pathlib import Path

import pytest
import requests

from helpers import WAIT
from kling_widgets import KlingClient, KlingError, Task, TaskStatus, Video
from kling_widgets._keep import keep, keep_directory, keep_in_background
from kling_widgets.simulator import VIDEO_PATH_PREFIX, GatewaySimulator, Scenario

CLIP_SHA256 = hashlib.sha256(
    importlib.resources.files("kling_widgets").joinpath("_data/demo.mp4").read_bytes()
).hexdigest()


def finished(client: KlingClient, prompt: str = "a corgi surfing") -> Task:
    task = client.text2video(prompt, duration="10", aspect_ratio="1:1")
    return client.wait(task.task_id, poll_interval=0.01, max_poll_interval=0.02)


def video_gets(sim: GatewaySimulator) -> int:
    return sum(1 for r in sim.requests() if r.path.startswith(VIDEO_PATH_PREFIX))


def test_keep_writes_the_clip_and_a_sidecar(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    task = finished(client)
    [path] = keep(task, tmp_path, client=client)
    assert path == tmp_path / f"{task.task_id}.mp4"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CLIP_SHA256
    sidecar = json.loads((tmp_path / f"{task.task_id}.json").read_text())
    assert sidecar["task_id"] == task.task_id
    assert sidecar["prompt"] == "a corgi surfing"
    assert sidecar["model"] == "kling-v2-6"
    assert sidecar["endpoint"] == "text2video"
    assert sidecar["params"]["duration"] == "10"
    assert sidecar["params"]["aspect_ratio"] == "1:1"
    assert sidecar["submitted_at"] is not None
    assert sidecar["finished_at"] is not None
    [video] = sidecar["videos"]
    assert video["file"] == path.name
    assert video["url"] == task.video_url
    assert video["sha256"] == CLIP_SHA256
    assert video["bytes"] == path.stat().st_size
    assert video["expires_at"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f"{task.task_id}.json"])
    assert client.ledger is not None
    entry = client.ledger.get(task.task_id)
    assert entry is not None
    assert entry.kept == (path,)


def test_a_kept_file_is_not_downloaded_again_unless_it_changed(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    task = finished(client)
    [path] = keep(task, tmp_path, client=client)
    before = video_gets(sim)
    assert keep(task.task_id, tmp_path, client=client) == [path]  # by id: the ledger has its videos
    assert video_gets(sim) == before
    path.write_bytes(b"damaged")
    keep(task, tmp_path, client=client)
    assert video_gets(sim) == before + 1
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CLIP_SHA256


@pytest.mark.parametrize("sim", [Scenario(polls=(0, 0), videos=2)], indirect=True)
def test_several_videos_get_an_index(sim: GatewaySimulator, client: KlingClient, tmp_path: Path) -> None:
    task = finished(client)
    paths = keep(task, tmp_path, client=client)
    assert [p.name for p in paths] == [f"{task.task_id}-1.mp4", f"{task.task_id}-2.mp4"]
    sidecar = json.loads((tmp_path / f"{task.task_id}.json").read_text())
    assert [v["file"] for v in sidecar["videos"]] == [p.name for p in paths]


def test_keep_by_id_of_a_task_not_in_the_ledger_fetches_it(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = sim.add_task(Scenario(polls=(0, 0)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KLING_WIDGETS_KEEP")
    [path] = keep(task_id, client=client)
    assert path == tmp_path / "kling-videos" / f"{task_id}.mp4"
    assert json.loads(path.with_suffix(".json").read_text())["prompt"] is None  # nothing known of it


def test_an_unfinished_task_has_nothing_to_keep(sim: GatewaySimulator, client: KlingClient) -> None:
    task = client.text2video("a corgi")
    with pytest.raises(ValueError, match="no video to keep"):
        keep(task, client=client)


def test_an_expired_link_says_so(tmp_path: Path) -> None:
    with GatewaySimulator(scenario=Scenario(polls=(0, 0)), url_lifetime=-60) as sim:
        assert requests.get(sim.clip_url, timeout=WAIT).status_code == 403  # the host refuses it too
        with KlingClient(base_url=sim.url, api_key=sim.api_key) as client:
            task = finished(client)
            before = len(sim.requests())
            with pytest.raises(KlingError, match=r"link expired on .*30 days") as info:
                keep(task, tmp_path, client=client)
            assert len(sim.requests()) == before  # known expired: nothing downloaded
    assert info.value.code == "link_expired"
    assert not list(tmp_path.iterdir())


def test_a_link_the_host_no_longer_serves_says_so(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    gone = Task(
        "842250903629086785", TaskStatus.SUCCESS, 100, (Video(f"{sim.url}{VIDEO_PATH_PREFIX}gone.mp4"),)
    )
    with pytest.raises(
        KlingError, match=r"link expired \(the video host answered HTTP 404\).*30 days"
    ) as info:
        keep(gone, tmp_path, client=client)
    assert info.value.code == "link_expired"


def test_keep_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLING_WIDGETS_KEEP", str(tmp_path))
    assert keep_directory() == tmp_path
    monkeypatch.setenv("KLING_WIDGETS_KEEP", "0")
    assert keep_directory() is None
    monkeypatch.delenv("KLING_WIDGETS_KEEP")
    assert keep_directory() == Path("kling-videos")


def test_keep_in_background_reports_through_on_done(
    sim: GatewaySimulator, client: KlingClient, tmp_path: Path
) -> None:
    task = finished(client)
    done = threading.Event()
    outcomes: list[tuple[list[Path], BaseException | None, bool]] = []

    def on_done(paths: list[Path], error: BaseException | None) -> None:
        outcomes.append((paths, error, threading.current_thread() is threading.main_thread()))
        done.set()

    thread = keep_in_background(task, tmp_path, client, on_done)
    assert thread.daemon
    assert done.wait(WAIT)
    assert outcomes == [([tmp_path / f"{task.task_id}.mp4"], None, False)]

    outcomes.clear()
    done.clear()
    unfinished = client.text2video("a corgi")
    keep_in_background(unfinished, tmp_path, client, on_done)
    assert done.wait(WAIT)
    [(paths, error, _)] = outcomes
    assert paths == []
    assert isinstance(error, ValueError)


def test_keep_in_background_keeps_nothing_when_turned_off(
    sim: GatewaySimulator, client: KlingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_WIDGETS_KEEP", "0")
    task = finished(client)
    before = video_gets(sim)
    results: list[list[Path]] = []
    keep_in_background(task, None, client, lambda paths, error: results.append(paths)).join(WAIT)
    assert results == [[]]
    assert video_gets(sim) == before
