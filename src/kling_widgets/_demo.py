"""``kling-widgets demo``: JupyterLab on the example notebooks, with no API key needed.

Without ``EZMODEL_API_KEY`` the demo starts a :class:`~kling_widgets.simulator.GatewaySimulator` in this
process and points the Jupyter server's environment (and so every kernel's) at it; with the key set it uses
the real gateway. The demo runs from a clone of the repository: the notebooks are not part of the wheel.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

from .simulator import Flavor, GatewaySimulator

__all__ = ["SIMULATOR_MARKER", "run_demo"]

#: Set to "1" in the Jupyter server's environment when EZMODEL_* point at the demo's simulator,
#: so that the notebooks can say so.
SIMULATOR_MARKER = "KLING_WIDGETS_SIMULATOR"

#: What the demo runs in this interpreter, and what the ``demo`` extra installs.
DEMO_MODULES = ("jupyterlab", "ipykernel")
DEMO_EXTRA = 'pip install "kling-widgets[demo]"'
#: The variables that point a client at a service; the simulator replaces them all, so a stray one left in
#: the shell (a base URL, half a key pair) cannot mix the real service with the simulator.
SERVICE_VARIABLES = (
    "EZMODEL_API_KEY", "EZMODEL_BASE_URL", "KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL",
)  # fmt: skip

FIRST_NOTEBOOK = "quickstart.ipynb"
DEFAULT_PORT = 8888
STARTUP_TIMEOUT = 120.0
SHUTDOWN_TIMEOUT = 20.0


def _missing_modules() -> list[str]:
    """The `DEMO_MODULES` this interpreter cannot import (checked without importing them)."""
    return [name for name in DEMO_MODULES if importlib.util.find_spec(name) is None]


def _find_notebooks() -> Path | None:
    """The ``notebooks/`` folder of the repository checkout, or None.

    Looked for next to the package source first (an editable install from a clone: src/kling_widgets/..),
    then in the current directory (a clone whose package was installed from elsewhere).
    """
    for candidate in (Path(__file__).resolve().parents[2] / "notebooks", Path.cwd() / "notebooks"):
        if (candidate / FIRST_NOTEBOOK).is_file():
            return candidate
    return None


def _choose_port(port: int | None) -> int:
    """The requested port, else Jupyter's usual 8888 when it is free, else any free port."""
    if port is not None:
        return port
    for wanted in (DEFAULT_PORT, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def _say(message: str) -> None:
    print(message, flush=True)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``stop.set()`` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _server_ready(status_url: str, token: str) -> bool:
    # Our own http://127.0.0.1 URL, so the scheme audit does not apply.
    request = urllib.request.Request(status_url, headers={"Authorization": f"token {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (Jupyter then shuts its kernels down), SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    # The server leads its own session, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _serve(
    notebooks: Path, env: Mapping[str, str], port: int, open_browser: bool, stop: threading.Event
) -> int:
    token = secrets.token_urlsafe(24)
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebooks}",
        "--ServerApp.log_level=WARN",
        "--LabApp.log_level=WARN",
    ]  # fmt: skip
    if os.geteuid() == 0:  # containers often run as root; the server only listens on 127.0.0.1
        command.append("--allow-root")
    # The token travels in the environment, not on the command line that `ps` shows.
    server_env = {**env, "JUPYTER_TOKEN": token}
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/lab/tree/{FIRST_NOTEBOOK}?token={token}"
    _say(f"Starting JupyterLab on {notebooks} ...")
    # Its own session: Ctrl-C reaches only us, and we stop the whole group ourselves
    # (Jupyter would otherwise ask "Shutdown this Jupyter server (y/[n])?").
    server = subprocess.Popen(command, env=server_env, cwd=notebooks, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _server_ready(f"{base}/api/status", token):
            if server.poll() is not None:
                _say(f"JupyterLab exited during start-up (exit code {server.returncode}).")
                return server.returncode or 1
            if stop.wait(0.25):
                return 0
            if time.monotonic() > deadline:
                _say(f"JupyterLab did not answer within {STARTUP_TIMEOUT:.0f} s; giving up.")
                return 1
        _say(f"JupyterLab is ready: {url}")
        if open_browser:
            webbrowser.open(url)
        _say("Press Ctrl-C to stop the demo.")
        while not stop.wait(0.5):
            if server.poll() is not None:
                _say(f"JupyterLab exited (exit code {server.returncode}).")
                return server.returncode
        return 0
    finally:
        if server.poll() is None:
            _say("Stopping JupyterLab and its kernels ...")
        _stop_server(server)


def run_demo(*, port: int | None, open_browser: bool, flavor: Flavor = "ezmodel") -> int:
    """Run the demo until Ctrl-C, SIGINT or SIGTERM; return the process exit code.

    Parameters
    ----------
    port
        Port for JupyterLab on 127.0.0.1; None picks 8888 when free, else any free port.
    open_browser
        Open the quickstart notebook in the default web browser once the server answers.
    flavor
        Which service the simulator stands in for: ``"ezmodel"`` (the gateway) or ``"kling"`` (Kling's own
        API). Without effect when real credentials are set.

    Returns
    -------
    int
        0 after a requested stop, non-zero when JupyterLab is not installed, could not start or died.
    """
    missing = _missing_modules()
    if missing:
        # Before anything starts: the demo needs its extra, which a plain `pip install kling-widgets` lacks.
        print(
            f"kling-widgets demo needs JupyterLab and a Python kernel, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install the demo extra: {DEMO_EXTRA}",
            file=sys.stderr,
        )
        return 2
    notebooks = _find_notebooks()
    if notebooks is None:
        _say(
            "Cannot find notebooks/quickstart.ipynb. The demo runs from a clone of the kling-widgets "
            "repository: run it from the clone's root directory (scripts/demo does that)."
        )
        return 2
    env = dict(os.environ)
    simulator: GatewaySimulator | None = None
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            if env.get("EZMODEL_API_KEY"):
                env.pop(SIMULATOR_MARKER, None)
                gateway = env.get("EZMODEL_BASE_URL") or "the default EZmodel gateway"
                _say(f"EZMODEL_API_KEY is set: the notebooks will use the real gateway ({gateway}).")
            elif env.get("KLING_ACCESS_KEY"):
                env.pop(SIMULATOR_MARKER, None)
                service = env.get("KLING_BASE_URL") or "Kling's default API host"
                _say(f"KLING_ACCESS_KEY is set: the notebooks will use Kling's own API ({service}).")
            else:
                simulator = GatewaySimulator(flavor=flavor).start()
                for name in (*SERVICE_VARIABLES, SIMULATOR_MARKER):
                    env.pop(name, None)
                env.update(simulator.environment())
                env[SIMULATOR_MARKER] = "1"
                service = "Kling API" if flavor == "kling" else "gateway"
                _say(
                    f"No API key is set: started the offline {service} simulator at {simulator.url}\n"
                    "(a local stand-in that returns a bundled sample clip; set EZMODEL_API_KEY, or "
                    "KLING_ACCESS_KEY and KLING_SECRET_KEY, to use the real service)."
                )
            return _serve(notebooks, env, _choose_port(port), open_browser, stop)
        finally:
            if simulator is not None:
                simulator.stop()
            _say("Demo stopped.")
