"""tq: a durable, fast distributed task queue with its own broker.

The public API is re-exported here as later layers land (Client, AsyncClient, task, Worker).
"""

import importlib
from typing import TYPE_CHECKING

from tq.core.model import TaskState
from tq.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ErrorCode,
    NotFoundError,
    NotLeaderError,
    PermissionDeniedError,
    ProtocolError,
    QueueFullError,
    RateLimitedError,
    StorageError,
    TaskFailedError,
    TqError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from tq.version import __version__

if TYPE_CHECKING:
    from tq.client import (
        AsyncClient,
        AsyncTaskHandle,
        Client,
        TaskFunction,
        TaskHandle,
        TlsConfig,
        handler,
        periodic,
        set_default_client,
        task,
    )
    from tq.worker import Reject, Retry, Worker, current_task


#: Loaded on first use (PEP 562): the client pulls in asyncio and sockets, which ``import
#: tq.protocol`` or ``tq.core`` (pure layers, imported through this package) must not.
_CLIENT_EXPORTS = frozenset(
    {
        "AsyncClient",
        "AsyncTaskHandle",
        "Client",
        "TaskFunction",
        "TaskHandle",
        "TlsConfig",
        "handler",
        "periodic",
        "set_default_client",
        "task",
    }
)


_WORKER_EXPORTS = frozenset({"Worker", "current_task", "Retry", "Reject"})


def __getattr__(name: str) -> object:
    if name in _CLIENT_EXPORTS:
        return getattr(importlib.import_module("tq.client"), name)
    if name in _WORKER_EXPORTS:
        return getattr(importlib.import_module("tq.worker"), name)
    raise AttributeError(f"module 'tq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CLIENT_EXPORTS, *_WORKER_EXPORTS})


__all__ = [
    "AsyncClient",
    "AsyncTaskHandle",
    "AuthError",
    "Client",
    "ConfigError",
    "ConflictError",
    "ErrorCode",
    "NotFoundError",
    "NotLeaderError",
    "PermissionDeniedError",
    "ProtocolError",
    "QueueFullError",
    "RateLimitedError",
    "Reject",
    "Retry",
    "StorageError",
    "TaskFailedError",
    "TaskFunction",
    "TaskHandle",
    "TaskState",
    "TlsConfig",
    "TqError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "Worker",
    "__version__",
    "current_task",
    "handler",
    "periodic",
    "set_default_client",
    "task",
]
