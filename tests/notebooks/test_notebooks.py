"""The example notebooks run top to bottom in a real kernel, and the saved file shows the result."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from notebook_support import (
    CHROMIUM,
    NOTEBOOK_NAMES,
    NOTEBOOKS,
    WIDGET_STATE,
    assert_recorded_success,
    execute_notebook,
    render_nbconvert_offline,
    widget_displays,
)

from kling_widgets.simulator import GatewaySimulator

pytestmark = pytest.mark.notebook


def test_both_notebooks_exist() -> None:
    assert NOTEBOOK_NAMES == ["quickstart.ipynb", "watch_existing_task.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebooks_are_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    fix = (
        "strip them: jupyter nbconvert --clear-output --ClearMetadataPreprocessor.enabled=True"
        " --ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec"
        " --ClearMetadataPreprocessor.preserve_nb_metadata_mask=language_info --inplace notebooks/*.ipynb"
    )
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} has outputs; {fix}"
            assert cell.execution_count is None, f"{name} has execution counts; {fix}"
    assert WIDGET_STATE not in nb.metadata.get("widgets", {}), f"{name} has saved widget state; {fix}"


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_without_key_uses_its_own_simulator(name: str, keyless_env: None, tmp_path: Path) -> None:
    """A newcomer's run (Binder, a plain `jupyter lab`): no key, so the kernel starts the simulator.

    nbconvert's HTML of the saved file, opened offline (no widgets JavaScript), shows every widget's final
    line and the player (issue 9, item 2).
    """
    saved = tmp_path / name
    execute_notebook(NOTEBOOKS / name, saved)
    urls = assert_recorded_success(saved)
    assert "SIMULATOR: http://127.0.0.1:" in saved.read_text()
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    shown = render_nbconvert_offline(saved, tmp_path / "html")
    finals = [
        d["text/plain"].splitlines()[0].split(": ", 1)[1] for d in widget_displays(nbformat.read(saved, 4))
    ]
    assert finals
    for final in finals:
        assert final in shown["text"], final
    assert set(urls) <= set(shown["videos"])


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_under_the_demo_uses_the_demo_simulator(
    name: str, keyless_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under `kling-widgets demo` the kernel inherits EZMODEL_* and the marker, and uses that simulator."""
    with GatewaySimulator(speed=4.0) as sim:
        monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
        monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
        monkeypatch.setenv("KLING_WIDGETS_SIMULATOR", "1")
        saved = tmp_path / name
        execute_notebook(NOTEBOOKS / name, saved)
        urls = assert_recorded_success(saved, secrets=(sim.api_key,))
        assert all(url.startswith(f"{sim.url}/") for url in urls)
        assert any(record.path.startswith("/kling/") for record in sim.requests())
        assert f"SIMULATOR: {sim.url} " in saved.read_text()


def test_quickstart_on_klings_own_api(
    keyless_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under `kling-widgets demo --flavor kling` the kernel inherits KLING_*: the quickstart runs on it."""
    with GatewaySimulator(speed=4.0, flavor="kling") as sim:
        for name, value in sim.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("KLING_WIDGETS_SIMULATOR", "1")
        saved = tmp_path / "quickstart.ipynb"
        execute_notebook(NOTEBOOKS / "quickstart.ipynb", saved)
        urls = assert_recorded_success(saved, secrets=(sim.secret_key, sim.access_key))
        assert all(url.startswith(f"{sim.url}/") for url in urls)
        paths = {record.path for record in sim.requests()}
        assert any(path.startswith("/v1/videos/text2video") for path in paths)
        assert not any(path.startswith("/kling/") for path in paths)


def _watch_existing_task(saved: Path, *, submit_new_task: bool) -> Path:
    """watch_existing_task.ipynb as a user would leave it: no TASK_ID, SUBMIT_NEW_TASK as given."""
    nb = nbformat.read(NOTEBOOKS / "watch_existing_task.ipynb", as_version=4)
    (settings,) = (cell for cell in nb.cells if cell.get("id") == "cell-settings")
    assert 'TASK_ID = ""' in settings.source
    assert "SUBMIT_NEW_TASK = False" in settings.source  # what the notebook ships with
    settings.source = settings.source.replace("= False", f"= {submit_new_task}")
    nbformat.write(nb, saved)
    return saved


def test_watch_existing_task_submits_nothing_on_the_real_gateway_unless_asked(
    keyless_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Run All with a key and no TASK_ID stops and says what to do, and sends no POST (a POST is billed)."""
    with GatewaySimulator(speed=4.0) as sim:
        # A key and a base URL without the simulator marker: to the notebook this is the real gateway.
        monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
        monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
        source = _watch_existing_task(tmp_path / "source.ipynb", submit_new_task=False)
        with pytest.raises(CellExecutionError) as stopped:
            execute_notebook(source, tmp_path / "saved.ipynb")
        assert "SUBMIT_NEW_TASK = True" in str(stopped.value)
        assert [r.path for r in sim.requests() if r.method == "POST"] == []


def test_watch_existing_task_submits_one_task_when_asked(
    keyless_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With SUBMIT_NEW_TASK = True the same run submits exactly one task and watches it to the end."""
    with GatewaySimulator(speed=4.0) as sim:
        monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
        monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
        saved = tmp_path / "saved.ipynb"
        execute_notebook(_watch_existing_task(tmp_path / "source.ipynb", submit_new_task=True), saved)
        assert_recorded_success(saved, secrets=(sim.api_key,))
        posts = [r.path for r in sim.requests() if r.method == "POST"]
        assert posts == ["/kling/v1/videos/text2video"]
        assert "submitted a new task" in saved.read_text()
