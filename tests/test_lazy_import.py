"""`import kling_widgets` costs nothing for widgets until one is used (PEP 562 lazy exports)."""

from __future__ import annotations

import subprocess
import sys

import kling_widgets

PROBE = """
import sys
import kling_widgets
from kling_widgets import KlingClient, KlingError, Task
kling_widgets.KlingClient
print(sorted(name for name in ("ipywidgets", "IPython", "traitlets") if name in sys.modules))
from kling_widgets import TaskStatusWidget
print("ipywidgets" in sys.modules)
"""


def test_the_client_alone_imports_no_widgets() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == ["[]", "True"]


def test_every_public_name_is_listed_and_reachable() -> None:
    for name in kling_widgets.__all__:
        assert name in dir(kling_widgets)
        assert getattr(kling_widgets, name) is not None
    assert "TaskStatusWidget" in dir(kling_widgets)
