"""`kling-widgets demo` and scripts/demo: server and simulator answer; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from notebook_support import (
    assert_nothing_left,
    base_python,
    free_port,
    http_json,
    isolated_jupyter_env,
    running_demo,
    started_kernel,
)

pytestmark = pytest.mark.notebook

KLING_WIDGETS = Path(sys.executable).with_name("kling-widgets")


def _stop(process: psutil.Popen, family: list[psutil.Process], signum: signal.Signals) -> None:
    """Send ``signum`` to the demo's process group (as a terminal's Ctrl-C does); it must exit 0, alone."""
    os.killpg(process.pid, signum)
    assert process.wait(60) == 0
    assert_nothing_left(process, family)


def test_demo_without_key_serves_the_simulator_and_stops_on_ctrl_c(keyless_env: None, tmp_path: Path) -> None:
    env = isolated_jupyter_env(os.environ, tmp_path)
    command = [str(KLING_WIDGETS), "demo", "--no-browser", "--port", str(free_port())]
    with running_demo(command, env=env, cwd=tmp_path, ready_timeout=120) as (process, output, base, token):
        assert "started" in http_json(f"{base}/api/status", token=token)
        sim_url = output.wait_for(r"simulator at (http://127\.0\.0\.1:\d+)", 1)[1]
        with pytest.raises(urllib.error.HTTPError) as answered:  # no key: the gateway's 401
            urllib.request.urlopen(f"{sim_url}/kling/v1/videos/text2video/1", timeout=10)
        assert answered.value.code == 401

        kernel_env = started_kernel(process, base, token).environ()
        assert kernel_env["EZMODEL_BASE_URL"] == sim_url
        assert kernel_env["KLING_WIDGETS_SIMULATOR"] == "1"
        assert kernel_env["EZMODEL_API_KEY"].startswith("sk-sim-")
        assert kernel_env["EZMODEL_API_KEY"] not in output.text

        family = psutil.Process(process.pid).children(recursive=True)
        _stop(process, family, signal.SIGINT)
    assert "Demo stopped." in output.text


def test_demo_on_the_kling_flavor_points_the_kernel_at_a_kling_api_simulator(
    keyless_env: None, tmp_path: Path
) -> None:
    env = {**isolated_jupyter_env(os.environ, tmp_path), "EZMODEL_BASE_URL": "http://127.0.0.1:9"}
    command = [str(KLING_WIDGETS), "demo", "--no-browser", "--flavor", "kling", "--port", str(free_port())]
    with running_demo(command, env=env, cwd=tmp_path, ready_timeout=120) as (process, output, base, token):
        sim_url = output.wait_for(r"Kling API simulator at (http://127\.0\.0\.1:\d+)", 1)[1]
        with pytest.raises(urllib.error.HTTPError) as answered:  # no token: Kling's own 401
            urllib.request.urlopen(f"{sim_url}/v1/videos/text2video/1", timeout=10)
        assert answered.value.code == 401

        kernel_env = started_kernel(process, base, token).environ()
        assert kernel_env["KLING_BASE_URL"] == sim_url
        assert kernel_env["KLING_WIDGETS_SIMULATOR"] == "1"
        assert kernel_env["KLING_SECRET_KEY"] not in output.text
        assert "EZMODEL_BASE_URL" not in kernel_env  # a stray gateway setting cannot mix the two services

        family = psutil.Process(process.pid).children(recursive=True)
        _stop(process, family, signal.SIGINT)


def test_demo_with_key_uses_the_real_gateway_and_stops_on_sigterm(keyless_env: None, tmp_path: Path) -> None:
    user_key = "test-user-key-never-printed"
    env = {
        **isolated_jupyter_env(os.environ, tmp_path),
        "EZMODEL_API_KEY": user_key,
        "EZMODEL_BASE_URL": "http://127.0.0.1:9",  # never contacted: no notebook runs here
        "KLING_WIDGETS_SIMULATOR": "1",  # stale marker from an earlier shell: must not reach the kernel
    }
    command = [str(KLING_WIDGETS), "demo", "--no-browser", "--port", str(free_port())]
    with running_demo(command, env=env, cwd=tmp_path, ready_timeout=120) as (process, output, base, token):
        assert "real gateway (http://127.0.0.1:9)" in output.text
        assert "simulator at" not in output.text
        kernel_env = started_kernel(process, base, token).environ()
        assert kernel_env["EZMODEL_API_KEY"] == user_key
        assert "KLING_WIDGETS_SIMULATOR" not in kernel_env

        family = psutil.Process(process.pid).children(recursive=True)
        _stop(process, family, signal.SIGTERM)
    assert user_key not in output.text


@pytest.mark.timeout(900)
def test_scripts_demo_from_a_fresh_clone(checkout: Path, keyless_env: None, tmp_path: Path) -> None:
    """The README's command on a clone without .venv: it installs, starts, answers and stops cleanly."""
    assert not (checkout / ".venv").exists()
    env = {**isolated_jupyter_env(os.environ, tmp_path), "PYTHON": base_python()}
    env.pop("VIRTUAL_ENV", None)
    command = ["bash", "scripts/demo", "--no-browser", "--port", str(free_port())]
    with running_demo(command, env=env, cwd=checkout, ready_timeout=780) as (process, output, base, token):
        assert "started" in http_json(f"{base}/api/status", token=token)
        sim_url = output.wait_for(r"simulator at (http://127\.0\.0\.1:\d+)", 1)[1]
        kernel = started_kernel(process, base, token)
        assert kernel.cmdline()[0].startswith(str(checkout / ".venv"))  # exe() would resolve the symlink
        assert kernel.environ()["EZMODEL_BASE_URL"] == sim_url
        family = psutil.Process(process.pid).children(recursive=True)
        _stop(process, family, signal.SIGINT)
