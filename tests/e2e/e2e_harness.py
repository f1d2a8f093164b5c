"""Plumbing for the browser tests: isolated Jupyter/Voila servers, process clean-up, page JS.

Nothing here is a fixture; ``conftest.py`` wires these pieces together. The flags, selectors and pitfalls
are explained in docs/testing.md, "Browser tests in Chromium" (Debian chromium + Playwright for Python).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import psutil
import requests

from kling_widgets.simulator import GatewaySimulator, Scenario

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
# Playwright never downloads a browser here: it drives Debian's chromium through executable_path.
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
TOKEN = "e2e-token"
AUTH = {"Authorization": f"token {TOKEN}"}
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", REPO / "test-artifacts" / "e2e"))
_T0 = time.monotonic()


def log(msg: str) -> None:
    """Timestamped progress line (visible with ``-s`` and in the captured output of a failure)."""
    print(f"[e2e {time.monotonic() - _T0:7.2f}s] {msg}", flush=True)


def in_ci() -> bool:
    """True when the CI variable is set to anything but an explicit false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def free_port() -> int:
    """An ephemeral loopback port (the usual small bind-then-release race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- isolated environment


def isolated_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a server whose user config/data/runtime/IPython dirs live under ``home``.

    Only the *user* directories are redirected: the widgets' labextension and ipykernel's files live in
    ``sys.prefix/share/jupyter`` (the venv), which Jupyter keeps searching.
    """
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        path = home / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    # The kernel imports exactly the kling_widgets this test process imports (working tree or install).
    import kling_widgets

    pkg_parent = str(Path(kling_widgets.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    env.pop("EZMODEL_API_KEY", None)  # a real key from the developer's shell must never reach a test kernel
    env.pop("EZMODEL_BASE_URL", None)
    env.update(extra or {})

    # A user kernelspec shadows any system one: the kernel runs this very interpreter (the venv's python).
    spec_dir = Path(env["JUPYTER_DATA_DIR"]) / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "metadata": {"debugger": False},
            }
        )
    )
    # Lab/Notebook user settings: no news toast over the page; render every cell (no windowing), so that
    # off-screen widgets and videos exist in the DOM and keep updating.
    settings = Path(env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab"
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return env


# ---------------------------------------------------------------- processes


@dataclass
class Server:
    """A server process started in its own session (process group)."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and everything it started (kernels run in their own process groups)."""
        stop_process_tree(self.proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copy(self.log_path, ARTIFACTS / self.log_path.name)


def stop_process_tree(proc: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
    """SIGTERM the process group (jupyter-server then shuts its kernels down), SIGKILL what remains."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Kernels have their own process group, so the killpg above does not reach them if the server died hard.
    _, alive = psutil.wait_procs(descendants, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def start_server(
    name: str,
    cmd: list[str],
    *,
    env: Mapping[str, str],
    root: Path,
    port: int,
    ready_path: str | None,
    workdir: Path,
    timeout: float = 90.0,
) -> Server:
    """Start ``cmd`` in a new session and wait until it answers (``ready_path``) or accepts TCP (None)."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(
            cmd, env=dict(env), cwd=root, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", root, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        if ready_path is None:
            with socket.socket() as s:
                s.settimeout(1)
                return s.connect_ex(("127.0.0.1", port)) == 0
        try:
            return requests.get(server.url + ready_path, headers=AUTH, timeout=2).ok
        except requests.RequestException:
            return False

    t0 = time.monotonic()
    try:
        wait_until(ready, timeout=timeout, what=f"{name} on port {port}", interval=0.2)
    except BaseException:
        server.stop()
        raise
    log(f"{name} up at {server.url} in {time.monotonic() - t0:.1f}s (log {log_path})")
    return server


def start_jupyter(app: str, workdir: Path) -> Server:
    """JupyterLab 4 (``app="lab"``) or Notebook 7 (``app="notebook"``) on 127.0.0.1 with token auth."""
    home = workdir / f"home-{app}"
    root = workdir / f"root-{app}"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        f"--{app_class}.expose_app_in_browser=True",  # window.jupyterapp: kernel readiness, run-all
    ]
    if app == "lab":
        cmd += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    return start_server(
        f"jupyter-{app}",
        cmd,
        env=isolated_env(home),
        root=root,
        port=port,
        ready_path="/api/status",
        workdir=workdir,
    )


def start_voila(root: Path, workdir: Path, env_extra: Mapping[str, str]) -> Server:
    """Voila serving the notebooks of the folder ``root`` (``/voila/render/<name>``) on 127.0.0.1 with token
    auth: one server for every notebook the tests render."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(root),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        f"--Voila.token={TOKEN}",
        "--show_tracebacks=True",
    ]
    # Readiness is "the port accepts connections": rendering a notebook to check would start a kernel.
    return start_server(
        "voila",
        cmd,
        env=isolated_env(workdir / "home-voila", env_extra),
        root=root,
        port=port,
        ready_path=None,
        workdir=workdir,
    )


# ---------------------------------------------------------------- notebooks


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    """Write a notebook of ``(kind, source)`` cells, kind ``"code"`` or ``"markdown"``."""
    nb = nbformat.v4.new_notebook(
        metadata={
            # A kernelspec makes the kernel start by itself (no "Select Kernel" dialog).
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"},
        }
    )
    for kind, source in cells:
        maker = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(maker(source))
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb))


# ---------------------------------------------------------------- page JavaScript

# '.jp-Notebook-ExecutionIndicator[data-status="idle"]' is NOT a readiness signal (it reads idle while the
# toolbar still says "No Kernel"); the session's kernel object is.
KERNEL_IDLE_JS = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }"""

# Fire and forget: execute() resolves only after the whole run, and page.evaluate has no timeout.
RUN_ALL_JS = "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"

# Installed before any page script runs. Every 50 ms it snapshots each root (a code cell's output area in
# Lab/Notebook, the whole body in Voila) and appends the snapshot when it changed, with a timestamp. The
# tests read this history afterwards, so "the width never decreased" and "the bar moved during the
# sleep" are judged from a dense, browser-side sample instead of slow round trips.
RECORDER_JS = """(() => {
  if (window.__e2e) return;
  const rec = window.__e2e = {roots: {}};
  const roots = () => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    if (cells.length) return cells.map(c => c.querySelector('.jp-Cell-outputArea'));
    return document.body ? [document.body] : [];
  };
  // Text nodes joined by spaces (textContent would glue "…0189" and "Done" into one word).
  const textOf = el => {
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT), parts = [];
    while (walk.nextNode()) { const s = walk.currentNode.nodeValue.trim(); if (s) parts.push(s); }
    return parts.join(' ').replace(/\\s+/g, ' ');
  };
  const snap = () => {
    roots().forEach((out, i) => {
      if (!out) return;
      // The live widget's bar, or (once watching has ended) the static card's bar that replaced it.
      const bar = out.querySelector('.widget-hprogress .progress-bar');
      const still = out.querySelector('.kling-bar');
      const s = {w: bar ? bar.style.width : still ? still.firstElementChild.style.width : null,
                 cls: bar ? bar.className : still ? `kling-bar ${still.dataset.style}` : null,
                 text: textOf(out).slice(0, 4000),
                 videos: out.querySelectorAll('video').length};
      const list = rec.roots[i] || (rec.roots[i] = []);
      const last = list[list.length - 1];
      if (!last || last.w !== s.w || last.cls !== s.cls || last.text !== s.text || last.videos !== s.videos) {
        s.t = performance.now() / 1000;
        if (list.length < 20000) list.push(s);
      }
    });
  };
  setInterval(snap, 50);
})();"""

# What the final bar of an output shows, live widget or static card: {style, value}, or null without a bar.
FINAL_BAR_JS = """el => { const still = el.querySelector('.kling-bar');
    if (still) return {style: still.dataset.style, value: Number(still.getAttribute('aria-valuenow')),
                       fill: getComputedStyle(still.firstElementChild).backgroundColor};
    const bar = el.querySelector('.widget-hprogress .progress-bar');
    if (!bar) return null;
    const style = (bar.className.match(/progress-bar-(\\w+)/) || [null, 'info'])[1];
    return {style, value: parseFloat(bar.style.width), fill: getComputedStyle(bar).backgroundColor}; }"""

# Wait until the element has a decodable frame and a duration (bounded by wait_for_function's timeout).
VIDEO_LOADED_JS = "v => v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0"

# play() muted, raced against a timer (page.evaluate has no timeout of its own), then report the clock.
VIDEO_PLAY_JS = """async v => {
  v.muted = true;
  const t0 = v.currentTime;
  try {
    const timer = new Promise((_, no) => setTimeout(() => no(new Error('play() timed out')), 5000));
    await Promise.race([v.play(), timer]);
  } catch (e) { return {error: String(e), rs: v.readyState}; }
  await new Promise(r => setTimeout(r, 800));
  const t1 = v.currentTime;
  v.pause();
  return {rs: v.readyState, duration: v.duration, width: v.videoWidth, t0, t1,
          err: v.error && v.error.code, src: v.currentSrc};
}"""

# Any attribute anywhere under the element whose value is a javascript: URL (href, src, action, ...).
JS_URL_ATTRS_JS = """el => [el, ...el.querySelectorAll('*')].flatMap(n => [...n.attributes]
    .filter(a => /^\\s*javascript:/i.test(a.value)).map(a => `${n.tagName}[${a.name}=${a.value}]`))"""


def width_percent(width: str | None) -> float | None:
    """``"42.5%"`` -> 42.5; None or anything else -> None."""
    if not width or not width.endswith("%"):
        return None
    try:
        return float(width[:-1])
    except ValueError:
        return None


# ---------------------------------------------------------------- the scenarios and their notebook

SAVED: list[Path] = []  # screenshots of this session, listed in the terminal summary

# Hostile strings from the gateway; each vector sets its own window flag, so a red run names the one that
# fired.
HOSTILE_IMG = "<img src=x onerror=window.__pwned=1>"
HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"
HOSTILE_MESSAGE = f"{HOSTILE_IMG} {HOSTILE_SCRIPT}"
JS_VIDEO_URL = "javascript:window.__pwned_by_url=1"
# How each watched task behaves. Poll-driven timelines make the phases independent of how long the
# kernel took to start; the widgets poll every 0.3–0.5 s.
SCENARIOS: dict[str, Scenario] = {
    "success": Scenario(polls=(4, 10)),
    "failure": Scenario(outcome="failure", polls=(2, 3)),
    "hostile": Scenario(outcome="failure", polls=(2, 2), fail_message=HOSTILE_MESSAGE),
    "js_url": Scenario(polls=(2, 2), video_url=JS_VIDEO_URL),
    "stop": Scenario(polls=(2, 100_000)),  # never finishes by itself
    "busy": Scenario(polls=(3, 5)),  # queued -> generating -> done within the time.sleep(5) that follows
}
SLEEP_CELL = 'print("sleep-start", flush=True)\ntime.sleep(5)\nprint("sleep-end")'


def notebook_cells(gateway: GatewaySimulator, task_ids: dict[str, str]) -> list[tuple[str, str]]:
    """The test notebook: a setup cell, one cell per watched task, then a cell that blocks for 5 s."""
    setup = (
        "import time\n\nfrom kling_widgets import TaskStatusWidget\n\n"
        "# The test's loopback GatewaySimulator (a throwaway fake key, not a secret).\n"
        f"SIM = dict(base_url={gateway.url!r}, api_key={gateway.api_key!r},\n"
        "           poll_interval=0.3, max_poll_interval=0.5, timeout=300)"
    )
    cells = [("markdown", "# kling-widgets end-to-end"), ("code", setup)]
    for role, task_id in task_ids.items():
        cells.append(("code", f"TaskStatusWidget({task_id!r}, **SIM)  # {role}"))
    cells.append(("code", SLEEP_CELL))
    return cells


# ---------------------------------------------------------------- what the tests hold


# The box around what an element actually draws: its text runs, players, bars and buttons (its block
# containers span the full width, and the output area starts with the empty prompt column).
CONTENT_BOX_JS = """el => {
    let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
    const grow = b => { if (b.width && b.height) {
      left = Math.min(left, b.left); top = Math.min(top, b.top);
      right = Math.max(right, b.right); bottom = Math.max(bottom, b.bottom); } };
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(walk.currentNode);
      grow(range.getBoundingClientRect());
    }
    el.querySelectorAll('video, button, .progress').forEach(n => grow(n.getBoundingClientRect()));
    return {x: left, y: top, width: right - left, height: bottom - top}; }"""


def save_screenshot(target: Page | Locator, name: str) -> Path:
    """Screenshot a page or an element into the artifacts dir; the path is printed and summarised."""
    path = ARTIFACTS / f"{name}.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(path), timeout=15_000)
    return _saved(path)


def save_content_screenshot(element: Locator, name: str) -> Path:
    """Screenshot just what ``element`` draws: no empty prompt column, no blank full-width margin."""
    box = element.evaluate(CONTENT_BOX_JS)
    px, py = 12, 8
    path = ARTIFACTS / f"{name}.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    element.page.screenshot(
        path=str(path),
        clip={"x": max(box["x"] - px, 0), "y": max(box["y"] - py, 0),
              "width": box["width"] + 2 * px, "height": box["height"] + 2 * py},
        timeout=15_000,
    )  # fmt: skip
    return _saved(path)


def _saved(path: Path) -> Path:
    SAVED.append(path)
    log(f"screenshot saved: {path}")
    return path


def copy_to_docs(source: Path, name: str) -> None:
    """Refresh ``docs/<name>`` from a screenshot when asked to (E2E_UPDATE_DOCS=1); never by default."""
    if os.environ.get("E2E_UPDATE_DOCS") == "1":
        target = REPO / "docs" / name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(source, target)
        log(f"docs screenshot updated: {target}")


class NotebookRun:
    """One generated notebook, opened in one front-end, all cells run once; each role is one code cell."""

    def __init__(
        self, app: str, page: Page, gateway: GatewaySimulator, task_ids: dict[str, str], cells: list[str]
    ) -> None:
        self.app = app
        self.page = page
        self.gateway = gateway
        self.task_ids = task_ids
        self._cells = cells  # role of each code cell, in order

    def index(self, role: str) -> int:
        return self._cells.index(role)

    def cell(self, role: str) -> Locator:
        return self.page.locator(".jp-Notebook .jp-CodeCell").nth(self.index(role))

    def output(self, role: str) -> Locator:
        return self.cell(role).locator(".jp-Cell-outputArea")

    def bar(self, role: str) -> Locator:
        """The live widget's bar (gone once watching has ended: the output becomes the static card)."""
        return self.output(role).locator(".widget-hprogress .progress-bar")

    def final_bar(self, role: str, style: str | None = None) -> Locator:
        """The static card's bar that replaces the widget when watching ends (with that style, if given)."""
        selector = ".kling-bar" if style is None else f'.kling-bar[data-style="{style}"]'
        return self.output(role).locator(selector)

    def records(self, role: str) -> list[dict[str, Any]]:
        """The recorder's history of this cell's output: ``{t, w, cls, text, videos}`` per change."""
        records: list[dict[str, Any]] = self.page.evaluate(
            "i => (window.__e2e && window.__e2e.roots[i]) || []", self.index(role)
        )
        return records

    def status_gets(self, role: str) -> list[float]:
        """Arrival times of the status GETs the simulator answered for this role's task."""
        return [r.time for r in self.gateway.requests(self.task_ids[role])
                if r.method == "GET" and r.path.startswith("/kling/")]  # fmt: skip

    def flag(self, name: str) -> object:
        """A window property (None when undefined): the hostile strings' proof of execution."""
        return self.page.evaluate("name => window[name]", name)


class VoilaRun:
    """The Voila page of the quickstart notebook and how many submits the simulator had seen before."""

    def __init__(self, page: Page, gateway: GatewaySimulator, submits_before: int) -> None:
        self.page = page
        self.gateway = gateway
        self.submits_before = submits_before
