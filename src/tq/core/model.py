"""The task model: fields (SPEC §1), states and their transition table, priority tiers.

Rules:
- ``Task`` is both the in-memory record of a live task and, encoded with ``encode_task``, the
  value stored in RocksDB. It is a mutable msgspec Struct: the state machine is the only code
  that mutates one, and only through ``transition`` so the table below is enforced.
- Times are float seconds since the Unix epoch, always passed in (never read here).
- Fields are only ever appended (with defaults), so older records still decode.
"""

from __future__ import annotations

import sys
from enum import IntEnum, StrEnum
from typing import Final

import msgspec

from tq.core.ids import TaskId, WorkerId, format_task_id
from tq.errors import ConflictError

PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 255
DEFAULT_PRIORITY: Final = 128
DEFAULT_QUEUE: Final = "default"


class TaskState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"  # ETA in the future, or waiting on dependencies
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"  # an attempt failed; will retry at scheduled_at
    DEAD_LETTER = "dead_letter"  # retries exhausted or a dependency failed
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL: Final = frozenset({TaskState.COMPLETED, TaskState.DEAD_LETTER, TaskState.CANCELLED})

#: Every allowed state change. Anything else is a bug in the caller or a stale request.
TRANSITIONS: Final[dict[TaskState, frozenset[TaskState]]] = {
    TaskState.SCHEDULED: frozenset({TaskState.PENDING, TaskState.CANCELLED, TaskState.DEAD_LETTER}),
    TaskState.PENDING: frozenset(
        {TaskState.IN_PROGRESS, TaskState.CANCELLED, TaskState.DEAD_LETTER}
    ),
    TaskState.IN_PROGRESS: frozenset(
        {
            TaskState.COMPLETED,
            TaskState.FAILED,
            TaskState.DEAD_LETTER,
            TaskState.PENDING,  # lease expired, worker died, or the task was handed back
            TaskState.CANCELLED,
        }
    ),
    TaskState.FAILED: frozenset({TaskState.PENDING, TaskState.CANCELLED}),
    TaskState.DEAD_LETTER: frozenset({TaskState.PENDING}),  # manual retry from dead letter
    TaskState.COMPLETED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class PriorityTier(IntEnum):
    """The three priority tiers of SPEC §1; the one place their ranges are written."""

    LOW = 0  # 0-99
    NORMAL = 1  # 100-199
    HIGH = 2  # 200-255

    @classmethod
    def of(cls, priority: int) -> PriorityTier:
        if priority >= 200:
            return cls.HIGH
        if priority >= 100:
            return cls.NORMAL
        return cls.LOW

    @property
    def bounds(self) -> tuple[int, int]:
        """The inclusive priority range of this tier."""
        return _TIER_BOUNDS[self]

    @property
    def label(self) -> str:
        """The tier's name as interfaces show it: ``low``, ``normal``, ``high``."""
        return self.name.lower()


_TIER_BOUNDS: Final = {
    PriorityTier.LOW: (0, 99),
    PriorityTier.NORMAL: (100, 199),
    PriorityTier.HIGH: (200, 255),
}


class RetryPolicy(msgspec.Struct, frozen=True, array_like=True):
    """Exponential backoff: ``min(max_delay, base * factor ** (attempt - 1))`` scaled by jitter.

    ``jitter`` is the fraction of the delay that is randomised: with a random draw ``u`` in
    [0, 1) carried by the command, the delay is ``d * (1 - jitter + 2 * jitter * u)``, i.e.
    uniformly within ±jitter of ``d`` (then capped at ``max_delay``).
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def delay(self, attempt: int, u: float) -> float:
        exp = min(max(attempt - 1, 0), 64)  # cap the exponent: 2**64 s is already "max_delay"
        d = min(self.max_delay, self.base * self.factor**exp)
        d *= 1.0 - self.jitter + 2.0 * self.jitter * u
        return max(0.0, min(d, self.max_delay))


class Lifetime(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Seconds a task is kept once completed (``result_ttl``) or dead-lettered
    (``failure_ttl``), None: the broker-wide retention; and, once it finished with one of
    them, ``purge_at``: when it is deleted."""

    result_ttl: float | None = None
    failure_ttl: float | None = None
    purge_at: float | None = None


class Task(msgspec.Struct, array_like=True, gc=False):
    """One task. ``gc=False``: a Task never references another object that could form a cycle,
    and skipping GC tracking saves memory and collector time with a million live tasks."""

    id: TaskId
    task_type: str
    queue: str
    payload: bytes
    priority: int
    state: TaskState
    created_at: float
    updated_at: float
    #: FIFO position within a priority: assigned from the machine's counter each time the task
    #: enters the pending queue (a handed-back task keeps its old one and so its place).
    seq: int = 0
    scheduled_at: float | None = None
    attempts: int = 0
    max_retries: int = 3
    timeout: float | None = None
    retry: RetryPolicy | None = None
    depends_on: tuple[TaskId, ...] = ()
    result: bytes | None = None
    error: str | None = None
    worker_id: WorkerId | None = None
    lease_expires_at: float | None = None
    #: Fencing token of the current claim; results quoting another token are rejected.
    lease_token: int = 0
    progress: int = 0
    progress_message: str | None = None
    tags: dict[str, str] = {}
    idempotency_key: str | None = None
    expires_at: float | None = None
    completed_at: float | None = None
    started_at: float | None = None
    #: The exception type a handler raised (``error`` holds its message).
    error_type: str | None = None
    #: How long the task is kept once finished (``tq.core.lifetimes``); None: no lifetime of
    #: its own. One field for three values: a task without costs 8 bytes, not 24.
    lifetime: Lifetime | None = None
    #: Whether the task's priority escalates while it waits (priority aging, when the broker
    #: turns it on); False: it keeps its submitted priority.
    aging: bool = True
    #: When the task took its place in line (its ``seq``): its aging wait counts from here, so
    #: a handed-back task that regains its place regains its age too. Never decreases with
    #: ``seq`` (the machine clamps it), so the head of a priority has waited longest. None in
    #: records written before aging existed: ``updated_at`` stands in.
    queued_at: float | None = None

    @property
    def result_ttl(self) -> float | None:
        return None if self.lifetime is None else self.lifetime.result_ttl

    @property
    def failure_ttl(self) -> float | None:
        return None if self.lifetime is None else self.lifetime.failure_ttl

    @property
    def purge_at(self) -> float | None:
        return None if self.lifetime is None else self.lifetime.purge_at

    def transition(self, to: TaskState, now: float) -> None:
        if to not in TRANSITIONS[self.state]:
            raise ConflictError(
                f"task {format_task_id(self.id)} cannot go from {self.state.value} to {to.value}"
            )
        self.state = to
        self.updated_at = now


#: The tags of every task that has none: shared, never mutated (a dict per task costs 64 bytes).
NO_TAGS: Final[dict[str, str]] = {}

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Task)


def encode_task(task: Task) -> bytes:
    return _encoder.encode(task)


def decode_task(data: bytes) -> Task:
    """Raises msgspec.DecodeError on corrupt data; storage translates it to StorageError.
    Type and queue names are interned and empty tags shared: recovery may hold millions."""
    task = _decoder.decode(data)
    task.task_type = sys.intern(task.task_type)
    task.queue = sys.intern(task.queue)
    if not task.tags:
        task.tags = NO_TAGS
    return task
