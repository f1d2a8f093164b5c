"""notebooks/many_tasks.ipynb runs top to bottom in a real kernel: 50 simulated tasks, all done."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from notebook_support import NOTEBOOKS, SIMULATOR_KEY_PREFIX, WIDGET_STATE, WIDGET_VIEW, execute_notebook

pytestmark = pytest.mark.notebook

NOTEBOOK = NOTEBOOKS / "many_tasks.ipynb"


def test_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert WIDGET_STATE not in nb.metadata.get("widgets", {})


def test_fifty_simulated_tasks_finish_and_the_saved_file_shows_them(
    keyless_env: None, tmp_path: Path
) -> None:
    saved = tmp_path / NOTEBOOK.name
    nb = execute_notebook(NOTEBOOK, saved)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error" or o.get("name") == "stderr"]
    stdout = "".join(o["text"] for o in outputs if o["output_type"] == "stream")
    assert re.search(r"^50 tasks · 50 done · \d+:\d\d elapsed$", stdout, re.MULTILINE), stdout
    assert "50 videos; first: http://127.0.0.1:" in stdout

    # The engine's few threads, not one per task.
    (threads,) = [o for o in outputs if "kling-widgets-scheduler" in str(o.get("data", {}))]
    assert str(threads["data"]["text/plain"]).count("kling-widgets-") <= 5

    # The gallery's display was refreshed at the end: a reader without widgets sees 50 players.
    (gallery,) = [
        o["data"]
        for o in outputs
        if WIDGET_VIEW in o.get("data", {}) and "TaskGallery" in o["data"]["text/plain"]
    ]
    assert gallery["text/html"].count("<video src=") == 50
    assert "50 tasks · 50 done" in gallery["text/plain"]

    text = saved.read_text()
    assert SIMULATOR_KEY_PREFIX not in text
    assert "Bearer" not in json.dumps([outputs, nb.metadata])
