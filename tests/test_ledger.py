"""The task ledger on real SQLite files: concurrent writers (threads and processes), damaged and unwritable
files, migrations, filtering, what is stored of parameters and tasks, and what never is (base64, the key).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import multiprocessing
import os
import sqlite3
import threading
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from helpers import FOREVER
from kling_widgets import (
    APIError,
    AuthenticationError,
    KlingClient,
    KlingError,
    RateLimitError,
    TaskNotFoundError,
    TransportError,
    _ledger,
)
from kling_widgets._ledger import (
    HOME_ENV,
    SCHEMA_VERSION,
    Ledger,
    LedgerEntry,
    LedgerVideo,
    default_ledger_path,
    gateway_host,
    shared_ledger,
    storable_params,
)
from kling_widgets._models import Task, TaskStatus, Video
from kling_widgets._text import MAX_SHOWN_CHARS
from kling_widgets.simulator import GatewaySimulator

GATEWAY = "https://api.ezmodel.cloud"
BODY = {"model_name": "kling-v2-6", "prompt": "a corgi surfing", "duration": "5", "aspect_ratio": "16:9"}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite3")


def record(ledger: Ledger, task_id: str | None, status: TaskStatus | None = None, **kw: Any) -> int:
    """A submission that got ``task_id`` (None: left ``submitting``), then was seen at ``status``."""
    local_id = ledger.begin(
        kw.pop("endpoint", "text2video"), kw.pop("gateway", GATEWAY), kw.pop("key_id", "k1"), BODY, **kw
    )
    assert local_id is not None
    if task_id is not None:
        ledger.submitted(local_id, Task(task_id, TaskStatus.SUBMITTED))
    if status is not None and task_id is not None:
        ledger.observe(Task(task_id, status))
    return local_id


def file_bytes(path: Path) -> bytes:
    """The database with its WAL and shared-memory files: every byte SQLite wrote."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def write_rows(path: str, name: str, count: int, start: Any) -> None:
    """One writer process: ``count`` submissions, each answered (two writes per row)."""
    ledger = Ledger(path)
    start.wait(60)
    for i in range(count):
        local_id = ledger.begin("text2video", GATEWAY, name, {"prompt": f"{name} {i}"})
        ledger.submitted(local_id, Task(f"{name}-{i}", TaskStatus.SUBMITTED))
    if not ledger.available:
        raise SystemExit(1)


# --- concurrency ------------------------------------------------------------------------------------------


def test_two_processes_write_1000_rows_each_at_once_and_none_is_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each, like two kernels
    start = context.Barrier(2)
    writers = [context.Process(target=write_rows, args=(path, name, 1000, start)) for name in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(100)
    assert [w.exitcode for w in writers] == [0, 0]
    entries = Ledger(path).entries()
    assert len(entries) == 2000
    assert {e.task_id for e in entries} == {f"{n}-{i}" for n in "ab" for i in range(1000)}
    assert {e.state for e in entries} == {"SUBMITTED"}
    assert [e.params["prompt"] for e in entries if e.key_id == "a"] == [
        f"a {i}" for i in reversed(range(1000))
    ]


def test_threads_share_a_ledger(ledger: Ledger) -> None:
    def work(n: int) -> None:
        for i in range(50):
            local_id = record(ledger, f"{n}-{i}")
            ledger.observe(Task(f"{n}-{i}", TaskStatus.IN_PROGRESS))
            if i % 10 == 0:
                ledger.refused(local_id, ValueError("never mind"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = ledger.entries()
    assert len(entries) == 400
    assert sum(e.state == "refused" for e in entries) == 40
    assert sum(e.state == "IN_PROGRESS" for e in entries) == 360
    assert ledger.available


# --- damaged, unwritable, newer ---------------------------------------------------------------------------


def check_no_op(ledger: Ledger) -> None:
    """Every method answers without raising and without doing anything."""
    assert not ledger.available
    assert ledger.begin("text2video", GATEWAY, "k1", BODY) is None
    ledger.submitted(None, Task("1", TaskStatus.SUBMITTED))
    ledger.refused(None, ValueError("x"))
    ledger.unanswered(None)
    ledger.observe(Task("1", TaskStatus.SUCCESS))
    ledger.add_kept("1", ["a.mp4"])
    assert ledger.entries() == []
    assert ledger.get("1") is None
    assert ledger.unfinished(GATEWAY, "k1") == []


def test_a_corrupt_file_gives_one_warning_and_a_no_op_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ledger = Ledger(path)
        check_no_op(ledger)
    assert len(caught) == 1
    warning = caught[0]
    assert warning.category is RuntimeWarning
    assert warning.filename == __file__  # it points at the caller
    assert str(path) in str(warning.message)
    assert "file is not a database" in str(warning.message)
    assert HOME_ENV in str(warning.message)
    assert path.read_bytes() == garbage  # the user's file is never overwritten


def test_a_ledger_that_turns_corrupt_later_gives_up_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    record(ledger, "1")
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    path.write_bytes(os.urandom(8192))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ledger._local = threading.local()  # a new thread would open the damaged file too
        assert ledger.get("1") is None
        check_no_op(ledger)
    assert len(caught) == 1
    assert caught[0].filename == __file__


def test_unwritable_location_gives_one_warning_and_a_no_op_ledger(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the ledger's folder should be")
    with pytest.warns(RuntimeWarning, match="cannot be used") as caught:
        ledger = Ledger(blocker / "ledger.sqlite3")
    check_no_op(ledger)
    assert len(caught) == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions that bind")
def test_read_only_folder_gives_one_warning_and_a_no_op_ledger(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        with pytest.warns(RuntimeWarning, match="cannot be used") as caught:
            ledger = Ledger(folder / "ledger.sqlite3")
        check_no_op(ledger)
        assert len(caught) == 1
    finally:
        folder.chmod(0o700)


def test_a_ledger_that_is_off_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_no_op(Ledger.off())
    assert list(tmp_path.rglob("*")) == []


def test_one_shared_ledger_per_file_and_one_warning_per_process(tmp_path: Path) -> None:
    assert shared_ledger() is shared_ledger(default_ledger_path())
    assert shared_ledger().path == tmp_path / "default-home" / "ledger.sqlite3"
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.warns(RuntimeWarning) as caught:
        ledgers = [shared_ledger(bad) for _ in range(3)]
    assert len(caught) == 1
    assert ledgers[0] is ledgers[2]
    assert shared_ledger(tmp_path / "other.sqlite3") is not shared_ledger()


def test_off_the_main_thread_the_warning_is_logged_not_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"not a database" * 100)
    made: list[Ledger] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread = threading.Thread(target=lambda: made.append(Ledger(path)))
        thread.start()
        thread.join()
    assert caught == []
    [message] = [r for r in caplog.records if r.name == "kling_widgets" and r.levelno == logging.WARNING]
    assert "cannot be used" in message.getMessage()
    assert not made[0].available


def test_a_newer_schema_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.warns(RuntimeWarning, match="newer kling-widgets"):
        ledger = Ledger(path)
    check_no_op(ledger)


# --- schema and migrations --------------------------------------------------------------------------------


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("existing", [False, True])
def test_new_or_empty_file_is_migrated_and_reopening_keeps_rows(tmp_path: Path, existing: bool) -> None:
    path = tmp_path / "deep" / "folder" / "ledger.sqlite3"
    if existing:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")  # an empty file is an empty SQLite database
    ledger = Ledger(path)
    assert ledger.available
    record(ledger, "1", TaskStatus.SUCCESS)
    assert user_version(path) == SCHEMA_VERSION == len(_ledger.MIGRATIONS)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    again = Ledger(path)
    assert [(e.task_id, e.state) for e in again.entries()] == [("1", "SUCCESS")]
    assert again.entries() == ledger.entries()


def test_a_second_schema_version_is_one_more_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.sqlite3"
    record(Ledger(path), "1", TaskStatus.IN_PROGRESS)
    ran: list[Path] = []

    def add_note(db: sqlite3.Connection) -> None:
        ran.append(path)
        db.execute("ALTER TABLE tasks ADD COLUMN note TEXT")

    monkeypatch.setattr(_ledger, "MIGRATIONS", (*_ledger.MIGRATIONS, add_note))
    monkeypatch.setattr(_ledger, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    upgraded = Ledger(path)
    Ledger(path)  # already at the new version: nothing runs again
    assert (len(ran), user_version(path)) == (1, SCHEMA_VERSION + 1)
    assert [(e.task_id, e.state) for e in upgraded.entries()] == [("1", "IN_PROGRESS")]
    record(upgraded, "2")
    assert len(upgraded.entries()) == 2


# --- what is recorded -------------------------------------------------------------------------------------


def test_lifecycle_of_a_submission(ledger: Ledger) -> None:
    before = datetime.now(timezone.utc)
    local_id = ledger.begin("image2video", "https://api.ezmodel.cloud/", "k1", BODY, source="p.csv#3")
    assert local_id is not None
    [entry] = ledger.entries()
    assert entry == LedgerEntry(
        local_id=local_id,
        task_id=None,
        endpoint="image2video",
        gateway="api.ezmodel.cloud",
        key_id="k1",
        params=BODY,
        state="submitting",
        fail_reason=None,
        videos=(),
        kept=(),
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        source="p.csv#3",
    )
    assert before <= entry.created_at <= entry.updated_at <= datetime.now(timezone.utc)
    assert entry.created_at.tzinfo is timezone.utc
    assert not entry.is_final

    ledger.submitted(local_id, Task("842", TaskStatus.SUBMITTED))
    ledger.observe(Task("842", TaskStatus.IN_PROGRESS, progress=30))
    expires = int((datetime.now(timezone.utc) + timedelta(days=30)).timestamp())
    url = f"https://cdn.example/v.mp4?Expires={expires}&Signature=abc"
    ledger.observe(Task("842", TaskStatus.SUCCESS, videos=(Video(url, 5.1, "v1"),)))
    entry = ledger.get("842")
    assert entry is not None
    assert (entry.local_id, entry.state, entry.is_final) == (local_id, "SUCCESS", True)
    assert entry.videos == (LedgerVideo(url, 5.1, datetime.fromtimestamp(expires, timezone.utc)),)
    assert not entry.videos[0].expired
    assert entry.updated_at > entry.created_at
    ledger.add_kept("842", [Path("kling-videos/842.mp4"), "/data/842.mp4"])
    ledger.add_kept("842", ["/data/842.mp4"])
    entry = ledger.get("842")
    assert entry is not None
    assert entry.kept == (Path("kling-videos/842.mp4").absolute(), Path("/data/842.mp4"))
    assert ledger.get("nope") is None


def test_expired_and_unknown_expiry(ledger: Ledger) -> None:
    record(ledger, "1")
    videos = (Video("https://cdn.example/a.mp4?Expires=1000000000"), Video("https://cdn.example/b.mp4"))
    ledger.observe(Task("1", TaskStatus.SUCCESS, videos=videos))
    entry = ledger.get("1")
    assert entry is not None
    assert [(v.expires_at is not None, v.expired) for v in entry.videos] == [(True, True), (False, False)]


def test_refused_unanswered_and_an_error_that_carries_a_task_id(ledger: Ledger) -> None:
    refused, lost, created = (record(ledger, None) for _ in range(3))
    ledger.refused(refused, AuthenticationError("The API key was rejected (401).", status_code=401))
    ledger.unanswered(lost, TransportError("Read timed out"))
    ledger.refused(created, TransportError("not JSON", task_id="777"))
    entries = {e.local_id: e for e in ledger.entries()}
    assert (entries[refused].state, entries[refused].fail_reason) == (
        "refused",
        "The API key was rejected (401).",
    )
    assert (entries[lost].state, entries[lost].task_id, entries[lost].fail_reason) == (
        "unknown",
        None,
        "Read timed out",
    )
    assert (entries[created].state, entries[created].task_id) == ("UNKNOWN", "777")  # exists: watch it
    assert entries[refused].is_final
    assert not entries[lost].is_final


def test_unfinished_is_what_resume_brings_back(ledger: Ledger) -> None:
    submitting = record(ledger, None)
    lost = record(ledger, None)
    ledger.unanswered(lost)
    refused = record(ledger, None)
    ledger.refused(refused, TaskNotFoundError("no"))
    running = record(ledger, "run", TaskStatus.IN_PROGRESS)
    record(ledger, "ok", TaskStatus.SUCCESS)
    record(ledger, "bad", TaskStatus.FAILURE)
    record(ledger, "other-key", TaskStatus.QUEUED, key_id="k2")
    record(ledger, "other-gateway", TaskStatus.QUEUED, gateway="http://127.0.0.1:8000")
    keyless = record(ledger, "keyless", TaskStatus.QUEUED, key_id=None)
    assert [e.local_id for e in ledger.unfinished(GATEWAY, "k1")] == [running, lost, submitting]
    assert [e.local_id for e in ledger.unfinished("api.ezmodel.cloud", None)] == [keyless]
    assert [e.task_id for e in ledger.unfinished("127.0.0.1:8000", "k1")] == ["other-gateway"]


def test_entries_filter_and_order(ledger: Ledger) -> None:
    for i, status in enumerate(
        [TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.SUCCESS, TaskStatus.QUEUED]
    ):
        record(ledger, str(i), status, source=f"f.csv#{i}")
    record(ledger, "4", TaskStatus.SUCCESS, key_id="k2", gateway="http://127.0.0.1:9")
    assert [e.task_id for e in ledger.entries()] == ["4", "3", "2", "1", "0"]
    assert [e.task_id for e in ledger.entries("SUCCESS")] == ["4", "2", "0"]
    assert [e.task_id for e in ledger.entries(TaskStatus.SUCCESS, 2)] == ["4", "2"]
    assert [e.task_id for e in ledger.entries(["FAILURE", TaskStatus.QUEUED])] == ["3", "1"]
    assert [e.task_id for e in ledger.entries(status=[])] == []
    assert [e.task_id for e in ledger.entries(limit=0)] == []
    assert [e.task_id for e in ledger.entries(gateway="127.0.0.1:9")] == ["4"]
    assert [e.task_id for e in ledger.entries(gateway=GATEWAY + "/", key_id="k1", limit=1)] == ["3"]
    assert [e.task_id for e in ledger.entries(key_id="k2")] == ["4"]
    assert [e.task_id for e in ledger.entries(source="f.csv#1")] == ["1"]
    assert ledger.entries("submitting") == []


def test_a_final_status_is_never_replaced_by_an_older_one(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first, late = Ledger(path), Ledger(path)  # two watchers, e.g. in two kernels
    record(first, "1", TaskStatus.IN_PROGRESS)
    first.observe(Task("1", TaskStatus.FAILURE, fail_reason="Image pixel is invalid"))
    late.observe(Task("1", TaskStatus.IN_PROGRESS))
    entry = first.get("1")
    assert entry is not None
    assert (entry.state, entry.fail_reason) == ("FAILURE", "Image pixel is invalid")


def test_observe_writes_only_changes_and_only_known_tasks(ledger: Ledger) -> None:
    record(ledger, "1", TaskStatus.IN_PROGRESS)
    entry = ledger.get("1")
    for _ in range(5):
        ledger.observe(Task("1", TaskStatus.IN_PROGRESS, progress=30))
    assert ledger.get("1") == entry  # same updated_at: nothing was written
    ledger.observe(Task("stranger", TaskStatus.SUCCESS))
    assert ledger.get("stranger") is None


def test_rows_stay_bounded_whatever_the_gateway_says(ledger: Ledger) -> None:
    record(ledger, "1")
    reason = "\u202eevil\u200b" + "x" * 1_000_000
    videos = (
        Video("https://x/" + "a" * 10**5),
        *(Video(f"https://cdn.example/{i}.mp4") for i in range(1000)),
    )
    ledger.observe(Task("1", TaskStatus.FAILURE, fail_reason=reason, videos=videos))
    entry = ledger.get("1")
    assert entry is not None
    assert entry.fail_reason is not None
    assert len(entry.fail_reason) == MAX_SHOWN_CHARS
    assert entry.fail_reason.startswith("evilxxx")
    assert [v.url for v in entry.videos] == [f"https://cdn.example/{i}.mp4" for i in range(16)]
    assert ledger.path.stat().st_size + Path(f"{ledger.path}-wal").stat().st_size < 2_000_000


# --- what is never stored ---------------------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(768 * 1024)  # 1 MB once in base64


def digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_a_1_mb_base64_image_is_stored_as_its_digest(ledger: Ledger) -> None:
    raw = base64.b64encode(PNG).decode()
    assert len(raw) >= 1_000_000
    params = {
        "image": raw,
        "image_tail": f"data:image/png;base64,{raw}",
        "image_list": [{"image": raw}, {"image": "https://example.com/cat.png"}],
        "mime": base64.encodebytes(PNG).decode(),  # with line breaks
        "urlsafe": base64.urlsafe_b64encode(PNG).decode(),
        **BODY,
    }
    local_id = ledger.begin("image2video", GATEWAY, "k1", params)
    entry = ledger.entries()[0]
    assert entry.local_id == local_id
    assert entry.params == {
        "image": digest(PNG),
        "image_tail": digest(PNG),
        "image_list": [{"image": digest(PNG)}, {"image": "https://example.com/cat.png"}],
        "mime": digest(PNG),
        "urlsafe": digest(PNG),
        **BODY,
    }
    stored = file_bytes(ledger.path)
    assert len(stored) < 200_000
    assert raw[1000:1100].encode() not in stored
    assert params["image"] == raw  # the caller's dict is untouched


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("a corgi surfing at sunset, golden hour, " * 20, "a corgi surfing at sunset, golden hour, " * 20),
        ("风" * 2500, "风" * 2500),  # a long prompt is text, not data
        ("x" * 10_001, digest(b"x" * 10_001)),  # but nothing unbounded is kept
        (b"\x00\x01", digest(b"\x00\x01")),
        ("https://user:pw@example.com/cat.png", "https://example.com/cat.png"),
        ("data:image/png;base64,@@@", digest(b"@@@")),  # undecodable: the digest of the text
        (Path("cat.png"), "cat.png"),
        ((1, 2.5, None, True), [1, 2.5, None, True]),
        ({"nested": {"deep": b"zz"}}, {"nested": {"deep": digest(b"zz")}}),
    ],
)
def test_storable_params(value: object, stored: object) -> None:
    assert storable_params({"field": value}) == {"field": stored}


def test_the_key_never_reaches_the_database_file(tmp_path: Path) -> None:
    key = "sk-" + "s3cr3t" * 8
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    with GatewaySimulator(api_key=key) as sim, KlingClient(key, base_url=sim.url) as client:
        local_id = ledger.begin("text2video", client.base_url, client.key_id, BODY)
        task = client.text2video(BODY["prompt"])
        ledger.submitted(local_id, task)
        ledger.observe(client.get_task(task.task_id))
        sim.revoke_key()
        refused = ledger.begin("text2video", client.base_url, client.key_id, BODY)
        with pytest.raises(AuthenticationError) as caught:
            client.text2video(BODY["prompt"])
        ledger.refused(refused, caught.value)
    entries = ledger.entries()
    assert [e.key_id for e in entries] == [client.key_id] * 2
    assert entries[0].state == "refused"
    stored = file_bytes(path)
    for secret in (key, key.removeprefix("sk-"), "s3cr3ts3cr3t"):
        assert secret.encode() not in stored
    assert client.key_id is not None
    assert client.key_id.encode() in stored


# --- where it lives ---------------------------------------------------------------------------------------


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    assert default_ledger_path() == tmp_path / "home" / "ledger.sqlite3"
    assert Ledger().path == tmp_path / "home" / "ledger.sqlite3"
    monkeypatch.setenv(HOME_ENV, " ")
    assert (
        default_ledger_path() == Path(platformdirs.user_data_dir("kling-widgets", False)) / "ledger.sqlite3"
    )
    monkeypatch.delenv(HOME_ENV)
    assert default_ledger_path().name == "ledger.sqlite3"
    assert "kling-widgets" in default_ledger_path().parts


@pytest.mark.parametrize(
    ("gateway", "host"),
    [
        ("https://api.ezmodel.cloud", "api.ezmodel.cloud"),
        ("https://user:pw@API.ezmodel.cloud:8443/v1/", "api.ezmodel.cloud:8443"),
        ("http://127.0.0.1:38123", "127.0.0.1:38123"),
        ("api.ezmodel.cloud", "api.ezmodel.cloud"),
    ],
)
def test_gateway_host(gateway: str, host: str) -> None:
    assert gateway_host(gateway) == host


def test_repr_names_the_file(ledger: Ledger) -> None:
    assert repr(ledger) == f"Ledger({str(ledger.path)!r}, available=True)"


@pytest.fixture(autouse=True)
def _no_stray_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test here may touch the real user data directory."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "default-home"))


def write_in_child(ledger: Ledger) -> None:
    """Runs in a forked child: the parent's connection must not be used (SQLite forbids it)."""
    inherited = ledger._local.db  # the copy of the parent's connection
    record(ledger, "from-child")
    if not ledger.available or ledger._local.db is inherited:
        raise SystemExit(1)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_opens_its_own_connection(ledger: Ledger) -> None:
    record(ledger, "before")
    child = multiprocessing.get_context("fork").Process(target=write_in_child, args=(ledger,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    record(ledger, "after")
    assert [e.task_id for e in ledger.entries()] == ["after", "from-child", "before"]


def submit_recorded(ledger: Ledger, client: KlingClient, prompt: str) -> Task:
    """The wiring `KlingClient` is meant to get: a row before the POST, then what came of it."""
    local_id = ledger.begin("text2video", client.base_url, client.key_id, {"prompt": prompt})
    try:
        task = client.text2video(prompt)
    except APIError as exc:  # the gateway answered: nothing was created (unless the error names a task)
        ledger.refused(local_id, exc)
        raise
    except BaseException as exc:  # no usable answer: the task may exist, and may have been charged
        ledger.unanswered(local_id, exc)
        raise
    ledger.submitted(local_id, task)
    return task


def test_every_outcome_of_a_real_post_is_recorded(ledger: Ledger) -> None:
    with (
        GatewaySimulator(max_parallel=1, scenario=FOREVER) as sim,
        KlingClient(sim.api_key, base_url=sim.url, timeout=0.5) as client,
    ):
        task = submit_recorded(ledger, client, "answered")
        with pytest.raises(RateLimitError):
            submit_recorded(ledger, client, "over the parallel limit")
        sim.max_parallel = None
        sim.drop_next_submits()
        with pytest.raises(KlingError):
            submit_recorded(ledger, client, "dropped")
        sim.drop_next_submits(hang=True)
        with pytest.raises(KlingError):
            submit_recorded(ledger, client, "timed out")
        created = [r.task_id for r in sim.requests() if r.method == "POST" and r.task_id]
    got = [(e.params["prompt"], e.state, e.task_id) for e in reversed(ledger.entries())]
    assert got == [
        ("answered", "SUBMITTED", task.task_id),
        ("over the parallel limit", "refused", None),
        ("dropped", "unknown", None),
        ("timed out", "unknown", None),
    ]
    assert len(created) == 3  # the two unknown ones were created, and may be billed: never resubmit them
    unfinished = ledger.unfinished(client.base_url, client.key_id)
    assert [e.params["prompt"] for e in unfinished] == ["timed out", "dropped", "answered"]
