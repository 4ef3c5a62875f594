"""tq: a durable, fast distributed task queue with its own broker.

The public API is re-exported here as later layers land (Client, AsyncClient, task, Worker).
"""

from tq.core.model import TaskState
from tq.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ErrorCode,
    NotFoundError,
    ProtocolError,
    QueueFullError,
    StorageError,
    TaskFailedError,
    TqError,
    UnavailableError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "ErrorCode",
    "NotFoundError",
    "ProtocolError",
    "QueueFullError",
    "StorageError",
    "TaskFailedError",
    "TaskState",
    "TqError",
    "UnavailableError",
    "ValidationError",
    "__version__",
]
