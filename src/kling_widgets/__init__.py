"""Watch Kling text-to-video tasks live in Jupyter and play the result inline.

>>> from kling_widgets import generate
>>> generate("a corgi surfing at sunset")        # doctest: +SKIP
"""

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
from ._gallery import TaskGallery, generate_many
from ._models import Task, TaskStatus, Video
from ._version import __version__ as __version__
from ._widget import TaskStatusWidget, generate

__all__ = [
    "APIError",
    "AuthenticationError",
    "KlingClient",
    "KlingError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "Task",
    "TaskFailedError",
    "TaskGallery",
    "TaskNotFoundError",
    "TaskStatus",
    "TaskStatusWidget",
    "TaskTimeoutError",
    "TransportError",
    "Video",
    "generate",
    "generate_many",
]
