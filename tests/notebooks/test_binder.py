"""Replay what mybinder.org does with this repository, then run the quickstart in the result.

repo2docker starts from its base environment (JupyterLab, Notebook, ipywidgets, ipykernel), then, because
binder/requirements.txt names a local path, copies the whole repository and runs
``pip install -r binder/requirements.txt`` from the repository root. Here: a fresh venv (no system site
packages) with ipykernel standing in for the base environment, the same pip command from the root of a copy
of the checkout, and the quickstart executed by a kernel of that venv. The pip cache is allowed (repo2docker
passes --no-cache-dir), so repeated runs stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from notebook_support import assert_recorded_success, base_python, execute_notebook, run_logged

pytestmark = pytest.mark.notebook


@pytest.mark.timeout(900)
def test_binder_build_then_quickstart(
    checkout: Path, keyless_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv = tmp_path / "binder-env"
    python = str(venv / "bin" / "python")
    run_logged([base_python(), "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run_logged([*pip, "ipykernel>=6.29,!=7.0.0"], cwd=tmp_path, timeout=600)
    run_logged([*pip, "-r", "binder/requirements.txt"], cwd=checkout, timeout=600)

    # The package came from the copy and was installed into the venv, not found on a path.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    where = run_logged(
        [python, "-c", "import kling_widgets; print(kling_widgets.__file__)"], cwd=tmp_path, timeout=60
    )
    assert Path(where.strip()).is_relative_to(venv)
    clip = run_logged(
        [python, "-c", "import importlib.resources as r; print(r.files('kling_widgets') / '_data/demo.mp4')"],
        cwd=tmp_path,
        timeout=60,
    )
    assert Path(clip.strip()).stat().st_size > 0
    # The README's second Binder link opens the studio through Voila, which the base image lacks.
    run_logged([python, "-m", "voila", "--version"], cwd=tmp_path, timeout=60)

    kernels = tmp_path / "jupyter" / "kernels" / "binder"
    kernels.mkdir(parents=True)
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Binder",
        "language": "python",
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))

    saved = tmp_path / "quickstart.ipynb"
    execute_notebook(
        checkout / "notebooks" / "quickstart.ipynb", saved, cwd=checkout / "notebooks", kernel_name="binder"
    )
    assert_recorded_success(saved)
