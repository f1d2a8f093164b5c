"""Helpers for the tests here: run the notebooks, the Binder replay and the demo command for real."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import nbformat
import psutil
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
# The single-task notebooks; many_tasks.ipynb has its own test (tests/notebooks/test_many_tasks.py).
NOTEBOOK_NAMES = ["quickstart.ipynb", "watch_existing_task.ipynb"]
# The environment a user without a key has: none of the variables the demo or the notebooks look at.
GATEWAY_VARIABLES = (
    "EZMODEL_API_KEY", "EZMODEL_BASE_URL", "KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL",
    "KLING_WIDGETS_SIMULATOR",
)  # fmt: skip
# Every key the simulator makes up starts like this; none may be saved in a notebook.
SIMULATOR_KEY_PREFIX = "sk-sim-"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SUCCESS_LINE = re.compile(r"^SUCCESS (https?://\S+)$", re.MULTILINE)
# The widget's text/plain fallback, "Kling task <id>: <status line>", once watching has ended.
VIDEO_SRC = re.compile(r'<video src="([^"]+)"')
FINAL_LINE = re.compile(r"^Kling task \S+: (Done in |Failed: |Stopped: |Gave up |Stopped watching )")


def execute_notebook(
    source: Path, saved: Path, *, cwd: Path | None = None, kernel_name: str = "python3"
) -> nbformat.NotebookNode:
    """Execute ``source`` in a real kernel (cwd ``cwd``, default ``saved``'s folder); write it to ``saved``.

    Widget state is stored as JupyterLab's "save widget state" would; a cell error raises
    CellExecutionError with the traceback.
    """
    nb = nbformat.read(source, as_version=4)
    NotebookClient(
        nb,
        timeout=120,
        kernel_name=kernel_name,
        store_widget_state=True,
        resources={"metadata": {"path": str(cwd or saved.parent)}},
    ).execute()
    nbformat.write(nb, saved)
    return nbformat.read(saved, as_version=4)


def _outputs(nb: nbformat.NotebookNode) -> Iterator[dict[str, Any]]:
    for cell in nb.cells:
        yield from cell.get("outputs", [])


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o["text"] for o in _outputs(nb) if o["output_type"] == "stream" and o["name"] == "stdout")


def _video_urls_in_widget_state(nb: nbformat.NotebookNode) -> list[str]:
    """URLs of the ``<video>`` players in the saved widget state (the live cards' HTML blocks)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    values = [
        model["state"].get("value", "") for model in state.values() if model.get("model_name") == "HTMLModel"
    ]
    return [html.unescape(url) for value in values for url in VIDEO_SRC.findall(value)]


def widget_displays(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The data of every output a TaskStatusWidget displayed (its text/plain starts "Kling task ")."""
    return [
        o["data"]
        for o in _outputs(nb)
        if o["output_type"] in ("display_data", "execute_result")
        and str(o["data"].get("text/plain", "")).startswith("Kling task ")
    ]


def assert_recorded_success(saved: Path, *, secrets: tuple[str, ...] = ()) -> list[str]:
    """Check an executed notebook file the way a reader of the saved file would see it.

    Returns the video URLs that the notebook printed after ``SUCCESS``.
    """
    text = saved.read_text()
    nb = nbformat.read(saved, as_version=4)
    errors = [o for o in _outputs(nb) if o["output_type"] == "error"]
    assert not errors, f"error outputs: {errors}"
    stderr = [o["text"] for o in _outputs(nb) if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert not stderr, f"stderr outputs: {stderr}"

    urls = SUCCESS_LINE.findall(_stdout(nb))
    assert urls, f"no task reached SUCCESS; stdout was:\n{_stdout(nb)}"
    saved_videos = _video_urls_in_widget_state(nb)
    displays = widget_displays(nb)
    assert displays, "no widget output was saved"
    fallbacks = "".join(d.get("text/html", "") for d in displays)
    for url in urls:
        assert url in saved_videos, f"{url} is not in the saved widget state ({saved_videos})"
        assert html.escape(url) in fallbacks, f"{url} is not in any text/html output"
    # Every widget ended before the kernel did, so each display was replaced by its static final state:
    # plain HTML that nbconvert, GitHub and an untrusted reopen show without the widgets JavaScript.
    for data in displays:
        first_line = data["text/plain"].splitlines()[0]
        assert FINAL_LINE.search(first_line), f"a widget's saved output is not final: {first_line!r}"
        assert WIDGET_VIEW not in data, (
            f"a finished widget's output still needs the widget view: {first_line!r}"
        )

    assert SIMULATOR_KEY_PREFIX not in text, "a simulator API key was saved in the notebook"
    produced = json.dumps([list(_outputs(nb)), nb.metadata])
    assert "Bearer" not in produced, "an Authorization header was saved in the notebook"
    for secret in secrets:
        assert secret not in text, "the API key was saved in the notebook"
    return urls


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OutputWatcher:
    """Collects a child's combined stdout/stderr on a thread; wait for a line matching a pattern."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self._lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(self._lines))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.text}")
                self._changed.wait(min(remaining, 1.0))


def start_in_own_session(command: list[str], *, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``command`` as a terminal would: a process group of its own, output captured."""
    return subprocess.Popen(
        command,
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def assert_nothing_left(
    leader: subprocess.Popen[str], family: list[psutil.Process], timeout: float = 30
) -> None:
    """Every process started under ``leader`` (and every member of their process groups) is gone."""
    groups = {leader.pid}
    for proc in family:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(proc.pid))
    _, alive = psutil.wait_procs(family, timeout=timeout)
    assert not alive, f"left behind: {alive}"
    stragglers = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(proc.pid) in groups:
                stragglers.append(proc.info)
        except (ProcessLookupError, psutil.Error):
            continue
    assert not stragglers, f"processes left in the demo's process groups: {stragglers}"


def kill_session(process: subprocess.Popen[str]) -> None:
    """Last-resort clean-up after a failed test: nothing may outlive it."""
    family = []
    with contextlib.suppress(psutil.Error):
        family = psutil.Process(process.pid).children(recursive=True)
    for proc in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def copy_checkout(destination: Path) -> Path:
    """Copy the files a fresh clone would have (tracked or new, not ignored) to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_logged(command: list[str], *, cwd: Path, timeout: float) -> str:
    """Run a set-up command; on failure show its output in the assertion."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def base_python() -> str:
    """The interpreter this venv was made from, as a fresh machine's python3 would be."""
    return getattr(sys, "_base_executable", sys.executable)


DEMO_READY = r"JupyterLab is ready: (http://127\.0\.0\.1:\d+)/lab/tree/quickstart\.ipynb\?token=(\S+)"


@contextlib.contextmanager
def running_demo(
    command: list[str], *, env: Mapping[str, str], cwd: Path, ready_timeout: float
) -> Iterator[tuple[subprocess.Popen[str], OutputWatcher, str, str]]:
    """Start a demo command and wait until it says JupyterLab is ready.

    Yields the process, its output, the server's base URL and its token. Whatever happens, nothing it
    started outlives the block.
    """
    process = start_in_own_session(command, env=env, cwd=cwd)
    try:
        output = OutputWatcher(process)
        ready = output.wait_for(DEMO_READY, ready_timeout)
        yield process, output, ready[1], ready[2]
    finally:
        if process.poll() is None:
            kill_session(process)


def http_json(url: str, *, token: str | None = None, body: object = None) -> Any:
    """GET (or POST ``body``) and decode the JSON answer; HTTP errors raise urllib's HTTPError."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def started_kernel(
    server: subprocess.Popen[str], base: str, token: str, timeout: float = 60
) -> psutil.Process:
    """Start a kernel through the Jupyter server (as opening a notebook does); return its process."""
    http_json(f"{base}/api/kernels", token=token, body={"name": "python3"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process(server.pid).children(recursive=True):
            try:
                if any("ipykernel" in part for part in proc.cmdline()):
                    return proc
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise AssertionError("the kernel process did not appear")


def isolated_jupyter_env(base: Mapping[str, str], tmp_path: Path) -> dict[str, str]:
    """``base`` with Jupyter's runtime and config folders in ``tmp_path`` (no user config, no stray files)."""
    return {
        **base,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
    }


CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
# Anything that would leave this machine (the widgets' JavaScript from a CDN, fonts, ...).
OFF_MACHINE = re.compile(r"^(https?|wss?)://(?!127\.0\.0\.1[:/])")
RENDERED_JS = """() => ({text: document.body.innerText,
    videos: [...document.querySelectorAll('video')].map(v => v.getAttribute('src')),
    bars: [...document.querySelectorAll('.kling-bar')].map(
        b => b.dataset.style + ' ' + b.getAttribute('aria-valuenow'))})"""


def render_nbconvert_offline(saved: Path, tmp_path: Path) -> dict[str, Any]:
    """``jupyter nbconvert --to html`` the saved notebook, open the page in Chromium with every off-machine
    request blocked (so no widgets JavaScript loads), and return what it shows: text, videos, bars."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_logged([sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(tmp_path), str(saved)],
               cwd=tmp_path, timeout=120)  # fmt: skip
    page_file = tmp_path / f"{saved.stem}.html"
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(offline=True)
            context.route(OFF_MACHINE, lambda route: (blocked.append(route.request.url), route.abort()))
            page = context.new_page()
            page.goto(page_file.as_uri(), wait_until="load", timeout=60_000)
            shown: dict[str, Any] = page.evaluate(RENDERED_JS)
        finally:
            browser.close()
    shown["blocked"] = blocked
    return shown
