"""Fixtures shared by every test: a live gateway simulator and a client pointed at it.

``sim`` is a started `GatewaySimulator` on 127.0.0.1 whose submitted tasks are poll-driven
(``Scenario(polls=(1, 1))``: SUBMITTED, IN_PROGRESS, then SUCCESS on the third GET), so a task finishes as
fast as it is polled and the sequence of states never depends on timing. For another default scenario,
parametrize indirectly::

    @pytest.mark.parametrize("sim", [Scenario(outcome="failure", polls=(0, 0))], indirect=True)
    def test_failure(sim, client): ...

or create extra tasks with ``sim.add_task(Scenario(...))``.

``flavor`` is the protocol the simulator speaks, ``"ezmodel"`` unless a test parametrizes it; ``client``
then holds that flavor's credentials (the gateway key, or Kling's access and secret keys)::

    @pytest.mark.parametrize("flavor", ["ezmodel", "kling"])
    def test_on_both_backends(sim, client): ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from helpers import RecordingComm, record_comms
from kling_widgets.simulator import Flavor, GatewaySimulator, Scenario

if TYPE_CHECKING:
    from kling_widgets import KlingClient

FAST = Scenario(polls=(1, 1))
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Quick tests first; notebooks in a real kernel, then the browser suite, last."""
    items.sort(key=lambda item: 2 if "e2e" in item.keywords else 1 if "notebook" in item.keywords else 0)


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A ledger folder for the session: session-scoped servers (Jupyter, Voila) start before a test's."""
    home = tmp_path_factory.mktemp("kling-session-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KLING_WIDGETS_HOME", str(home))
        patch.setenv("KLING_WIDGETS_KEEP", str(home / "kling-videos"))
        yield


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of its own per test, outside ``tmp_path``, for the ledger and the kept videos.

    The whole suite builds clients, and each client records to the default ledger: never the user's. The
    variables reach every process a test starts (kernels, the CLI).
    """
    home = tmp_path_factory.mktemp("kling-home")
    monkeypatch.setenv("KLING_WIDGETS_HOME", str(home))
    monkeypatch.setenv("KLING_WIDGETS_KEEP", str(home / "kling-videos"))
    return home


@pytest.fixture
def flavor() -> Flavor:
    """The simulator's protocol; parametrize ``flavor`` to run a test on Kling's own API too."""
    return "ezmodel"


@pytest.fixture
def sim(request: pytest.FixtureRequest, flavor: Flavor) -> Iterator[GatewaySimulator]:
    """A started simulator (stopped, with every thread joined, after the test)."""
    scenario = getattr(request, "param", FAST)
    with GatewaySimulator(speed=50.0, scenario=scenario, flavor=flavor) as simulator:
        yield simulator


@pytest.fixture
def client(sim: GatewaySimulator) -> Iterator[KlingClient]:
    """A `KlingClient` talking to ``sim`` with its credentials."""
    from kling_widgets import KlingClient  # imported late: the client is built alongside these fixtures

    if sim.flavor == "kling":
        kling = KlingClient(base_url=sim.url, access_key=sim.access_key, secret_key=sim.secret_key)
    else:
        kling = KlingClient(base_url=sim.url, api_key=sim.api_key)
    with kling:
        yield kling


@pytest.fixture
def run_async() -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion on a fresh event loop in its own thread.

    ``asyncio.run`` refuses to start where a loop is already running in the main thread (Playwright's sync
    API keeps one there for the browser suite); a kernel's top-level ``await`` is what users have instead.
    """

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = asyncio.run(coroutine)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=target, name="run-async")
        worker.start()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]  # type: ignore[no-any-return]

    return run


@pytest.fixture
def widgets() -> Iterator[list[Any]]:
    """Widgets (or galleries, studios) a test made: append them, and they are all closed afterwards."""
    made: list[Any] = []
    yield made
    for widget in made:
        widget.close()


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> list[RecordingComm]:
    """Every comm opened during the test, in order."""
    return record_comms(monkeypatch)


@pytest.fixture
def cli_env(sim: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> GatewaySimulator:
    """Point the CLI (which reads only the environment) at the simulator."""
    monkeypatch.setenv("EZMODEL_API_KEY", sim.api_key)
    monkeypatch.setenv("EZMODEL_BASE_URL", sim.url)
    return sim
