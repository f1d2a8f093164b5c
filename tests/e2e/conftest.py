"""Fixtures for the browser tests: one GatewaySimulator, one Chromium, one server per front-end.

Everything runs on 127.0.0.1. Each Jupyter front-end (JupyterLab 4, Notebook 7) gets one server with
isolated config/data/runtime/IPython dirs and one generated notebook that watches several simulated tasks
at once; the tests then judge different cells of that one run, which keeps the whole suite near one
minute on two cores. Every process is stopped in a ``finally``-style finalizer, failures leave a
screenshot, and every screenshot path is listed in the terminal summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from e2e_harness import (
    CHROME_ARGS,
    CHROMIUM,
    KERNEL_IDLE_JS,
    RECORDER_JS,
    RUN_ALL_JS,
    SAVED,
    SCENARIOS,
    TOKEN,
    NotebookRun,
    Server,
    VoilaRun,
    in_ci,
    log,
    notebook_cells,
    save_screenshot,
    start_jupyter,
    start_voila,
    write_notebook,
)

from kling_widgets.simulator import GatewaySimulator, Scenario

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route


def _require(condition: bool, reason: str) -> None:
    """Skip when a browser prerequisite is missing locally; in CI a missing prerequisite is a failure."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- reporting hooks


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SAVED:
        terminalreporter.section("e2e screenshots")
        for path in SAVED:
            terminalreporter.write_line(str(path))


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for value in request.node.funcargs.values():
        page = getattr(value, "page", None)
        if page is not None and not page.is_closed():
            try:
                save_screenshot(page, f"FAIL-{request.node.name}")
            except Exception as exc:  # a failing screenshot must not hide the real failure
                log(f"failure screenshot not taken: {exc}")


# ---------------------------------------------------------------- shared resources


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def gateway() -> Iterator[GatewaySimulator]:
    """The simulator, in this process so tests can read its request log. Submits run 1 s queued + 4 s."""
    sim = GatewaySimulator(scenario=Scenario(queued=1.0, running=4.0)).start()
    log(f"gateway simulator at {sim.url}")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright for Python (never ``playwright install``)."""
    _require(os.path.exists(CHROMIUM), f"no browser at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install playwright)")
        raise
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROME_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


def new_page(browser: Browser, label: str) -> tuple[BrowserContext, Page]:
    """A fresh context and page with the DOM recorder installed and browser errors logged."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    context.add_init_script(RECORDER_JS)

    def block(route: Route) -> None:  # the tests use no network beyond this machine
        log(f"[{label}] blocked off-machine request: {route.request.url[:160]}")
        route.abort()

    context.route(OFF_MACHINE, block)
    page = context.new_page()
    page.on("pageerror", lambda exc: log(f"[{label}] page error: {exc}"))

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            log(f"[{label}] console.error: {msg.text[:300]}")

    page.on("console", console)
    return context, page


COLLAPSE_LEFT_JS = """() => { const app = window.jupyterapp;
    if (!app.shell.leftCollapsed) { app.commands.execute('application:toggle-left-area'); } }"""
OFF_MACHINE = re.compile(r"^(https?|wss?)://(?!127\.0\.0\.1[:/])")


@pytest.fixture(scope="session", params=["lab", "notebook"])
def frontend(request: pytest.FixtureRequest) -> str:
    """JupyterLab 4 or Notebook 7."""
    return str(request.param)


@pytest.fixture(scope="session")
def jupyter_server(frontend: str, e2e_workdir: Path) -> Iterator[Server]:
    """The front-end's one server for the session: every notebook of the browser tests opens on it."""
    server = start_jupyter(frontend, e2e_workdir)
    try:
        yield server
    finally:
        server.stop()
        log(f"[{frontend}] server stopped")


@pytest.fixture(scope="session")
def nb_run(
    frontend: str, jupyter_server: Server, browser: Browser, gateway: GatewaySimulator
) -> Iterator[NotebookRun]:
    """Open the generated notebook on the front-end's server, wait for the kernel, run all cells."""
    server = jupyter_server
    context = None
    try:
        task_ids = {role: gateway.add_task(scenario) for role, scenario in SCENARIOS.items()}
        name = f"e2e-{frontend}.ipynb"
        write_notebook(server.root / name, notebook_cells(gateway, task_ids))
        context, page = new_page(browser, frontend)
        path = "lab/tree" if frontend == "lab" else "notebooks"
        page.goto(f"{server.url}/{path}/{name}?token={TOKEN}", timeout=60_000)
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000, polling=200)
        if frontend == "lab":  # fold the file browser away: more notebook in the screenshots
            page.evaluate(COLLAPSE_LEFT_JS)
        log(f"[{frontend}] notebook open, kernel connected and idle; running all cells")
        page.evaluate(RUN_ALL_JS)
        yield NotebookRun(frontend, page, gateway, task_ids, ["setup", *task_ids, "sleep"])
    finally:
        if context is not None:
            context.close()


QUICKSTART = (
    'from kling_widgets import generate\n\nw = generate("a corgi surfing at sunset", duration="5")\nw'
)


@pytest.fixture(scope="session")
def voila_run(browser: Browser, gateway: GatewaySimulator, e2e_workdir: Path) -> Iterator[VoilaRun]:
    """Voila rendering a quickstart-style notebook that submits through ``generate`` (env-configured)."""
    root = e2e_workdir / "root-voila"
    root.mkdir(exist_ok=True)
    notebook = root / "quickstart.ipynb"
    write_notebook(notebook, [
        ("markdown", "# Kling text-to-video\nSubmit a prompt and watch it render."),
        ("code", QUICKSTART),
    ])  # fmt: skip
    env = {"EZMODEL_API_KEY": gateway.api_key, "EZMODEL_BASE_URL": gateway.url}
    server = start_voila(root, e2e_workdir, env)
    context = None
    try:
        context, page = new_page(browser, "voila")
        submits_before = len([r for r in gateway.requests() if r.method == "POST"])
        page.goto(f"{server.url}/voila/render/{notebook.name}?token={TOKEN}", timeout=90_000)
        yield VoilaRun(page, gateway, submits_before)
    finally:
        if context is not None:
            context.close()
        server.stop()
        log("[voila] server stopped")
