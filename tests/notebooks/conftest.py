"""Fixtures for the notebook, Binder and demo-command tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_support import GATEWAY_VARIABLES, copy_checkout


@pytest.fixture
def keyless_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No gateway variables in this process, so none in the kernels or servers it starts."""
    for name in GATEWAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository as a fresh clone would have it (plus uncommitted, unignored files)."""
    return copy_checkout(tmp_path / "clone")
