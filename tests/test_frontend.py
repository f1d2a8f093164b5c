"""Front-end detection outside a kernel, the playback decision, and delivery where no kernel loop runs.

Detection runs in a fresh interpreter with the environment under test, so nothing of this process (pytest,
an imported IPython) leaks into the answer. Detection inside real kernels, and the Colab delivery path, are
tested in tests/notebooks/test_frontend_kernel.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kling_widgets._frontend import (
    FRONTEND_VARIABLE,
    VSCODE_PLAYBACK_NOTE,
    Frontend,
    deliver,
    playback_note,
    plays_h264_inline,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Variables that VS Code's extension host and Colab's runtime put in the environment of what they start.
EDITOR_VARIABLES = {"VSCODE_PID": "4242", "VSCODE_CWD": "/home/user", "COLAB_RELEASE_TAG": "release-colab_1"}


def detect_in_subprocess(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in EDITOR_VARIABLES and k != FRONTEND_VARIABLE}
    env.update(extra_env, PYTHONPATH=SRC)
    code = "from kling_widgets._frontend import detect; print(detect().value)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_without_a_kernel_it_is_a_terminal_whatever_the_editor_variables() -> None:
    done = detect_in_subprocess(EDITOR_VARIABLES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "terminal"


@pytest.mark.parametrize(
    ("value", "expected"), [("colab", "colab"), (" VSCode ", "vscode"), ("jupyter", "jupyter")]
)
def test_the_variable_overrides_detection(value: str, expected: str) -> None:
    done = detect_in_subprocess({FRONTEND_VARIABLE: value})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_a_wrong_override_names_the_accepted_values() -> None:
    done = detect_in_subprocess({FRONTEND_VARIABLE: "safari"})
    assert done.returncode != 0
    assert "KLING_WIDGETS_FRONTEND='safari' is not one of: jupyter, vscode, colab, terminal" in done.stderr


def test_only_vscode_gets_a_note_instead_of_the_player() -> None:
    assert {f: (plays_h264_inline(f), playback_note(f)) for f in Frontend} == {
        Frontend.JUPYTER: (True, None),
        Frontend.COLAB: (True, None),
        Frontend.VSCODE: (False, VSCODE_PLAYBACK_NOTE),
        Frontend.TERMINAL: (False, None),
    }


@pytest.mark.parametrize("frontend", list(Frontend))
def test_without_a_kernel_loop_an_update_runs_at_once_on_the_calling_thread(frontend: Frontend) -> None:
    ran_on: list[str] = []

    def worker() -> None:
        deliver(lambda: ran_on.append(threading.current_thread().name), frontend)
        ran_on.append("deliver returned")

    thread = threading.Thread(target=worker, name="poller")
    thread.start()
    thread.join()
    assert ran_on == ["poller", "deliver returned"]
