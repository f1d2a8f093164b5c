"""Watch Kling text-to-video tasks live in Jupyter and play the result inline.

>>> from kling_widgets import generate
>>> generate("a corgi surfing at sunset")        # doctest: +SKIP

The widgets (and with them ipywidgets and IPython) are imported on first use (PEP 562), so a script or
the CLI that only needs `KlingClient` pays nothing for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._client import KlingClient
from ._errors import (
    APIError,
    AuthenticationError,
    KlingError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransportError,
)
from ._models import Task, TaskStatus, Video
from ._version import __version__ as __version__

if TYPE_CHECKING:
    from ._billing import Balance
    from ._gallery import TaskGallery, generate_many
    from ._history import TaskHistory, history, resume
    from ._keep import keep
    from ._ledger import Ledger, LedgerEntry
    from ._studio import Studio, studio
    from ._widget import TaskStatusWidget, generate
    from .simulator import GatewaySimulator

__all__ = [
    "APIError",
    "AuthenticationError",
    "Balance",
    "GatewaySimulator",
    "KlingClient",
    "KlingError",
    "Ledger",
    "LedgerEntry",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "Studio",
    "Task",
    "TaskFailedError",
    "TaskGallery",
    "TaskHistory",
    "TaskNotFoundError",
    "TaskStatus",
    "TaskStatusWidget",
    "TaskTimeoutError",
    "TransportError",
    "Video",
    "generate",
    "generate_many",
    "history",
    "keep",
    "resume",
    "studio",
]

# Public names imported on first use (the widgets need ipywidgets), and the module that defines each.
_LAZY = {
    "Balance": "._billing",
    "Studio": "._studio",
    "studio": "._studio",
    "GatewaySimulator": ".simulator",
    "Ledger": "._ledger",
    "LedgerEntry": "._ledger",
    "keep": "._keep",
    "TaskGallery": "._gallery",
    "TaskHistory": "._history",
    "TaskStatusWidget": "._widget",
    "generate": "._widget",
    "generate_many": "._gallery",
    "history": "._history",
    "resume": "._history",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
