"""The one tq exception tree and the stable error codes every interface shares.

One table (``ErrorCode``) drives the wire NACK code, the HTTP status and the gRPC status, so a
client in any language sees the same code for the same failure::

    TqError                      code, message; base of everything tq raises
    ├── ProtocolError            malformed / oversized / unknown frames, bad handshake
    ├── ValidationError          a request names a bad value (field and value in the message)
    ├── NotFoundError            unknown task or worker id
    ├── ConflictError            task exists, invalid state transition, stale lease
    ├── QueueFullError           backpressure: pending depth above the threshold
    ├── UnavailableError         too many connections, shutting down, not leader, timeout
    │   └── NotLeaderError           this node is not (or no longer) the cluster's leader
    ├── AuthError                unauthenticated / permission denied / rate limited
    │   ├── UnauthenticatedError     no key, or one that is malformed, wrong, revoked, expired
    │   ├── PermissionDeniedError    the key lacks the permission or the queue
    │   └── RateLimitedError         the key's token bucket is empty; carries retry_after
    ├── ConfigError              invalid configuration (names the key and the bad value)
    ├── StorageError             the store failed or holds data it cannot decode
    │   └── LogTrimmedError          the replicated log no longer holds the entries asked for
    └── TaskFailedError          a task ended in dead_letter/cancelled; carries remote type

Control-flow signals (a handler asking for a retry, a task learning it was cancelled) are not
errors and live with the worker, not here.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar, NamedTuple


class _CodeInfo(NamedTuple):
    http_status: int
    grpc_status: str  # grpc.StatusCode name; grpc is not imported here
    description: str


class ErrorCode(IntEnum):
    """Stable numeric error codes. Never renumber; only append."""

    # 1xxx: protocol
    PROTOCOL_ERROR = 1000
    FRAME_TOO_LARGE = 1001
    UNKNOWN_MESSAGE_TYPE = 1002
    UNSUPPORTED_VERSION = 1003
    HANDSHAKE_REQUIRED = 1004
    ROUTE_NOT_FOUND = 1005
    METHOD_NOT_ALLOWED = 1006
    UPGRADE_REQUIRED = 1007
    # 2xxx: request validation
    INVALID_ARGUMENT = 2000
    PAYLOAD_TOO_LARGE = 2001
    REPLY_TOO_LARGE = 2002
    # 3xxx: task / worker state
    TASK_NOT_FOUND = 3000
    TASK_ALREADY_EXISTS = 3001
    INVALID_STATE = 3002
    LEASE_MISMATCH = 3003
    DEPENDENCY_NOT_FOUND = 3004
    WORKER_NOT_FOUND = 3005
    KEY_NOT_FOUND = 3006
    KEY_ALREADY_EXISTS = 3007
    SCHEDULE_ALREADY_EXISTS = 3008
    SCHEDULE_NOT_FOUND = 3009
    LIMIT_NOT_FOUND = 3010
    TOO_MANY_ORDERS = 3012
    # 4xxx: load
    QUEUE_FULL = 4000
    TOO_MANY_CONNECTIONS = 4001
    RATE_LIMITED = 4002
    # 5xxx: security
    UNAUTHENTICATED = 5000
    PERMISSION_DENIED = 5001
    # 6xxx: availability
    NOT_LEADER = 6000
    SHUTTING_DOWN = 6001
    TIMEOUT = 6002
    # 7xxx: task outcome seen by a client
    TASK_FAILED = 7000
    TASK_CANCELLED = 7001
    # 8xxx: local
    CONFIG_ERROR = 8000
    STORAGE_ERROR = 8001
    # 9xxx: the broker's own fault
    INTERNAL = 9000

    @property
    def http_status(self) -> int:
        return _INFO[self].http_status

    @property
    def grpc_status(self) -> str:
        return _INFO[self].grpc_status

    @property
    def description(self) -> str:
        return _INFO[self].description


_INFO: dict[ErrorCode, _CodeInfo] = {
    ErrorCode.PROTOCOL_ERROR: _CodeInfo(400, "INVALID_ARGUMENT", "malformed frame or message"),
    ErrorCode.FRAME_TOO_LARGE: _CodeInfo(413, "RESOURCE_EXHAUSTED", "frame above the size limit"),
    ErrorCode.UNKNOWN_MESSAGE_TYPE: _CodeInfo(400, "UNIMPLEMENTED", "unknown message type code"),
    ErrorCode.UNSUPPORTED_VERSION: _CodeInfo(
        400, "FAILED_PRECONDITION", "no protocol version in common"
    ),
    ErrorCode.HANDSHAKE_REQUIRED: _CodeInfo(
        400, "FAILED_PRECONDITION", "first message must be HELLO"
    ),
    # HTTP only: no route for the path, a method the path does not serve, a plain GET of /ws.
    ErrorCode.ROUTE_NOT_FOUND: _CodeInfo(404, "UNIMPLEMENTED", "no HTTP route for that path"),
    ErrorCode.METHOD_NOT_ALLOWED: _CodeInfo(
        405, "UNIMPLEMENTED", "the HTTP route does not serve that method"
    ),
    ErrorCode.UPGRADE_REQUIRED: _CodeInfo(
        426, "FAILED_PRECONDITION", "a WebSocket endpoint requested without the upgrade"
    ),
    ErrorCode.INVALID_ARGUMENT: _CodeInfo(422, "INVALID_ARGUMENT", "a field has a bad value"),
    ErrorCode.PAYLOAD_TOO_LARGE: _CodeInfo(413, "INVALID_ARGUMENT", "task payload above limit"),
    ErrorCode.REPLY_TOO_LARGE: _CodeInfo(
        413, "RESOURCE_EXHAUSTED", "the reply would exceed the receiver's frame limit"
    ),
    ErrorCode.TASK_NOT_FOUND: _CodeInfo(404, "NOT_FOUND", "no task with that id"),
    ErrorCode.TASK_ALREADY_EXISTS: _CodeInfo(409, "ALREADY_EXISTS", "a task has that id"),
    ErrorCode.INVALID_STATE: _CodeInfo(
        409, "FAILED_PRECONDITION", "operation not allowed in the task's state"
    ),
    ErrorCode.LEASE_MISMATCH: _CodeInfo(
        409, "FAILED_PRECONDITION", "lease expired or held by another claim"
    ),
    # 409 as the other FAILED_PRECONDITIONs: the request is valid, the broker's state (a
    # task it names is absent) refuses it, and the same request may succeed later.
    ErrorCode.DEPENDENCY_NOT_FOUND: _CodeInfo(
        409, "FAILED_PRECONDITION", "a task named in depends_on does not exist"
    ),
    ErrorCode.WORKER_NOT_FOUND: _CodeInfo(404, "NOT_FOUND", "no worker with that id"),
    ErrorCode.KEY_NOT_FOUND: _CodeInfo(404, "NOT_FOUND", "no API key with that id"),
    ErrorCode.LIMIT_NOT_FOUND: _CodeInfo(
        404, "NOT_FOUND", "no rate limit or concurrency cap on that queue or task type"
    ),
    ErrorCode.KEY_ALREADY_EXISTS: _CodeInfo(409, "ALREADY_EXISTS", "an API key has that id"),
    ErrorCode.SCHEDULE_ALREADY_EXISTS: _CodeInfo(
        409, "ALREADY_EXISTS", "a schedule has that name (ask to replace it)"
    ),
    ErrorCode.SCHEDULE_NOT_FOUND: _CodeInfo(404, "NOT_FOUND", "no schedule with that name"),
    ErrorCode.TOO_MANY_ORDERS: _CodeInfo(
        409, "FAILED_PRECONDITION", "the worker has too many orders not acknowledged yet"
    ),
    ErrorCode.QUEUE_FULL: _CodeInfo(503, "RESOURCE_EXHAUSTED", "pending depth above threshold"),
    ErrorCode.TOO_MANY_CONNECTIONS: _CodeInfo(
        503, "RESOURCE_EXHAUSTED", "connection limit reached"
    ),
    ErrorCode.RATE_LIMITED: _CodeInfo(429, "RESOURCE_EXHAUSTED", "rate limit exceeded"),
    ErrorCode.UNAUTHENTICATED: _CodeInfo(401, "UNAUTHENTICATED", "missing or invalid credentials"),
    ErrorCode.PERMISSION_DENIED: _CodeInfo(403, "PERMISSION_DENIED", "key lacks the permission"),
    ErrorCode.NOT_LEADER: _CodeInfo(503, "UNAVAILABLE", "this node is not the leader"),
    ErrorCode.SHUTTING_DOWN: _CodeInfo(503, "UNAVAILABLE", "the broker is shutting down"),
    ErrorCode.TIMEOUT: _CodeInfo(504, "DEADLINE_EXCEEDED", "the operation timed out"),
    ErrorCode.TASK_FAILED: _CodeInfo(200, "OK", "the task ended in dead_letter"),
    ErrorCode.TASK_CANCELLED: _CodeInfo(200, "OK", "the task was cancelled"),
    ErrorCode.CONFIG_ERROR: _CodeInfo(500, "INTERNAL", "invalid configuration"),
    # Retryable: the broker refuses writes while its storage fails (e.g. a full disk) and
    # resumes by itself, so it is an availability error, not a fault of the request.
    ErrorCode.STORAGE_ERROR: _CodeInfo(
        503, "UNAVAILABLE", "storage unavailable (e.g. disk full): retry later"
    ),
    ErrorCode.INTERNAL: _CodeInfo(500, "INTERNAL", "internal broker error"),
}


class TqError(Exception):
    """Base of every error tq raises. ``code`` is stable; ``message`` names the bad input."""

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return f"[{self.code.name}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


class ProtocolError(TqError):
    default_code = ErrorCode.PROTOCOL_ERROR


class ValidationError(TqError):
    default_code = ErrorCode.INVALID_ARGUMENT


class NotFoundError(TqError):
    default_code = ErrorCode.TASK_NOT_FOUND


class ConflictError(TqError):
    default_code = ErrorCode.INVALID_STATE


class QueueFullError(TqError):
    default_code = ErrorCode.QUEUE_FULL


class UnavailableError(TqError):
    default_code = ErrorCode.SHUTTING_DOWN


class NotLeaderError(UnavailableError):
    """This node is not the cluster's leader, or was deposed: etcd refused its fenced append
    (the leader key's create_revision, its epoch, changed). It must step down. ``leader``: the
    address (``host:port`` of its TCP door) of the node that leads now, when one is known; a
    client retries there. A refusal with this code changed nothing: the request was not
    applied."""

    default_code = ErrorCode.NOT_LEADER

    def __init__(
        self, message: str, code: ErrorCode | None = None, *, leader: str | None = None
    ) -> None:
        super().__init__(message, code)
        self.leader = leader


class AuthError(TqError):
    default_code = ErrorCode.UNAUTHENTICATED


class UnauthenticatedError(AuthError):
    default_code = ErrorCode.UNAUTHENTICATED


class PermissionDeniedError(AuthError):
    default_code = ErrorCode.PERMISSION_DENIED


class RateLimitedError(AuthError):
    """Refused by a rate limit; ``retry_after``: seconds until the call would be allowed
    (None when the broker did not say)."""

    default_code = ErrorCode.RATE_LIMITED

    def __init__(
        self, message: str, code: ErrorCode | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class ConfigError(TqError):
    default_code = ErrorCode.CONFIG_ERROR


class StorageError(TqError):
    default_code = ErrorCode.STORAGE_ERROR


class LogTrimmedError(StorageError):
    """The replicated log no longer holds the entries asked for: they were trimmed, so the
    reader must install a checkpoint first. ``first_index``: the oldest entry still held."""

    def __init__(self, message: str, *, first_index: int) -> None:
        super().__init__(message)
        self.first_index = first_index


class TaskFailedError(TqError):
    """A task ended without a result; carries the handler's exception type and message."""

    default_code = ErrorCode.TASK_FAILED

    def __init__(
        self,
        message: str,
        code: ErrorCode | None = None,
        *,
        task_id: str | None = None,
        remote_type: str | None = None,
    ) -> None:
        super().__init__(message, code)
        self.task_id = task_id
        self.remote_type = remote_type


_CLASS_FOR_CODE: dict[ErrorCode, type[TqError]] = {}
for _cls, _codes in (
    (
        ProtocolError,
        (
            ErrorCode.PROTOCOL_ERROR,
            ErrorCode.FRAME_TOO_LARGE,
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            ErrorCode.UNSUPPORTED_VERSION,
            ErrorCode.HANDSHAKE_REQUIRED,
            ErrorCode.ROUTE_NOT_FOUND,
            ErrorCode.METHOD_NOT_ALLOWED,
            ErrorCode.UPGRADE_REQUIRED,
        ),
    ),
    (
        ValidationError,
        (ErrorCode.INVALID_ARGUMENT, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.REPLY_TOO_LARGE),
    ),
    (
        NotFoundError,
        (
            ErrorCode.TASK_NOT_FOUND,
            ErrorCode.WORKER_NOT_FOUND,
            ErrorCode.KEY_NOT_FOUND,
            ErrorCode.SCHEDULE_NOT_FOUND,
            ErrorCode.LIMIT_NOT_FOUND,
        ),
    ),
    (
        ConflictError,
        (
            ErrorCode.TASK_ALREADY_EXISTS,
            ErrorCode.INVALID_STATE,
            ErrorCode.LEASE_MISMATCH,
            ErrorCode.DEPENDENCY_NOT_FOUND,
            ErrorCode.KEY_ALREADY_EXISTS,
            ErrorCode.SCHEDULE_ALREADY_EXISTS,
            ErrorCode.TOO_MANY_ORDERS,
        ),
    ),
    (QueueFullError, (ErrorCode.QUEUE_FULL,)),
    (
        UnavailableError,
        (
            ErrorCode.TOO_MANY_CONNECTIONS,
            ErrorCode.NOT_LEADER,
            ErrorCode.SHUTTING_DOWN,
            ErrorCode.TIMEOUT,
        ),
    ),
    (UnauthenticatedError, (ErrorCode.UNAUTHENTICATED,)),
    (PermissionDeniedError, (ErrorCode.PERMISSION_DENIED,)),
    (RateLimitedError, (ErrorCode.RATE_LIMITED,)),
    (TaskFailedError, (ErrorCode.TASK_FAILED, ErrorCode.TASK_CANCELLED)),
    (ConfigError, (ErrorCode.CONFIG_ERROR,)),
    (StorageError, (ErrorCode.STORAGE_ERROR,)),
    (TqError, (ErrorCode.INTERNAL,)),
):
    for _code in _codes:
        _CLASS_FOR_CODE[_code] = _cls


def error_for_code(
    code: int, message: str, *, retry_after: float | None = None, leader: str | None = None
) -> TqError:
    """Build the typed exception for a code received from the wire (unknown codes -> TqError);
    ``retry_after`` goes to a RateLimitedError, ``leader`` to a NotLeaderError."""
    try:
        ec = ErrorCode(code)
    except ValueError:
        return TqError(f"{message} (unknown error code {code})", ErrorCode.INTERNAL)
    if ec is ErrorCode.RATE_LIMITED:
        return RateLimitedError(message, ec, retry_after=retry_after)
    if ec is ErrorCode.NOT_LEADER:
        return NotLeaderError(message, ec, leader=leader)
    return _CLASS_FOR_CODE[ec](message, ec)


__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "ErrorCode",
    "NotFoundError",
    "NotLeaderError",
    "PermissionDeniedError",
    "ProtocolError",
    "QueueFullError",
    "RateLimitedError",
    "StorageError",
    "TaskFailedError",
    "TqError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
    "error_for_code",
]
