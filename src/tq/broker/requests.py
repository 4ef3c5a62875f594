"""The service's own request and answer types: what every door (TCP, REST, WebSocket, gRPC)
translates its transport into, so no door hands the service another door's wire messages.

Values are already typed (ids as 16 bytes, states as ``TaskState``); each door validates its
own representation and names bad fields in its own terms, and these types refuse what would
still be wrong with ``ValidationError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from tq.core.ids import TaskId
from tq.core.model import PriorityTier, Task, TaskState
from tq.errors import ValidationError

#: Most tasks a listing page holds; most ids or filter matches one bulk action takes.
MAX_PAGE = 1000
#: Most bytes of task records a listing page holds, by their bound (``tq.core.sizes``): a
#: page of large results holds fewer tasks, but always at least one. Half of gRPC clients'
#: default 4 MiB receive limit, as a protobuf Task spells ids as 36-character text; the TCP
#: door lowers it further to what fits the client's frame limit.
PAGE_BYTES = 2 * 1024 * 1024
MAX_BULK = 10_000
DEFAULT_BULK_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Tasks matching every given field. Priorities are inclusive bounds, ``created_after``
    inclusive and ``created_before`` exclusive."""

    state: TaskState | None = None
    queue: str | None = None
    task_type: str | None = None
    priority_min: int = 0
    priority_max: int = 255
    created_after: float | None = None
    created_before: float | None = None

    def __post_init__(self) -> None:
        for name in ("priority_min", "priority_max"):
            value = getattr(self, name)
            if not 0 <= value <= 255:
                raise ValidationError(f"{name} {value} is outside 0..255")
        for name in ("created_after", "created_before"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValidationError(f"{name} {value} is not a time (finite seconds >= 0)")

    @classmethod
    def build(
        cls,
        *,
        state: TaskState | None = None,
        queue: str | None = None,
        task_type: str | None = None,
        tier: PriorityTier | None = None,
        priority_min: int | None = None,
        priority_max: int | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> TaskFilter:
        """A filter whose priority range is the intersection of ``tier`` and the bounds."""
        low, high = tier.bounds if tier is not None else (0, 255)
        if priority_min is not None:
            low = max(low, priority_min)
        if priority_max is not None:
            high = min(high, priority_max)
        return cls(state, queue, task_type, low, high, created_after, created_before)

    @property
    def empty(self) -> bool:
        """True when no task can match (an empty priority range)."""
        return self.priority_min > self.priority_max

    @property
    def is_everything(self) -> bool:
        return self == _EVERYTHING

    def matches(self, t: Task) -> bool:
        return (
            (self.state is None or t.state is self.state)
            and (self.queue is None or t.queue == self.queue)
            and (self.task_type is None or t.task_type == self.task_type)
            and self.priority_min <= t.priority <= self.priority_max
            and (self.created_after is None or t.created_at >= self.created_after)
            and (self.created_before is None or t.created_at < self.created_before)
        )


_EVERYTHING = TaskFilter()


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One page of a listing: ``cursor`` is the previous page's ``next_cursor``. The page
    ends at ``limit`` tasks or when the next would take its records past ``max_bytes``."""

    filter: TaskFilter = field(default_factory=TaskFilter)
    cursor: bytes | None = None
    limit: int = 100
    max_bytes: int = PAGE_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValidationError(f"limit {self.limit} is outside 1..{MAX_PAGE}")
        if self.max_bytes < 1:
            raise ValidationError(f"max_bytes {self.max_bytes} is not positive")
        if self.cursor is not None and not 0 < len(self.cursor) <= 64:
            raise ValidationError("cursor is not a next_cursor value")


class Action(StrEnum):
    """What a management call does to tasks (one at a time or in bulk)."""

    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One task's answer to an action: ``code`` 0 when applied, else an ``ErrorCode`` with a
    message worded for that action and the task's state."""

    task_id: TaskId
    code: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True, slots=True)
class BulkResult:
    """Per-task answers in the order of the selection; ``truncated``: a filter selected
    ``limit`` tasks and more may match (repeat the call, or go on from ``next_cursor``: the
    listing cursor after the last task selected)."""

    results: list[ItemResult]
    truncated: bool = False
    next_cursor: bytes | None = None

    @property
    def applied(self) -> int:
        return sum(r.ok for r in self.results)


@dataclass(frozen=True, slots=True)
class Watch:
    """What a subscription follows: task ids, whole queues, or every task. With
    ``until_terminal`` each id gets only its terminal event, after which it is forgotten."""

    task_ids: tuple[TaskId, ...] = ()
    queues: tuple[str, ...] = ()
    all: bool = False
    until_terminal: bool = False

    @property
    def anything(self) -> bool:
        return bool(self.task_ids or self.queues or self.all)
