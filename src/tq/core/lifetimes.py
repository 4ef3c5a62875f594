"""Result lifetimes and expiry: the rules the machine applies when a task ends or expires.

Theory of operation:
- A task may carry ``result_ttl`` (seconds a completed task is kept) and ``failure_ttl``
  (seconds a dead-lettered one is kept). When it ends in that state, ``purge_at`` is set to
  ``now + ttl`` and an index entry ``ttl/<purge_at><id>`` is written beside it; the purge job
  reads the due part of that index, which sorts by purge time (never the finished tasks
  themselves), and applies ``PurgeResults``, which deletes both. Tasks without a TTL keep
  the broker-wide retention (completed and cancelled ones go after ``persistence.retention_s``).
- A dead-lettered task that is retried leaves its old entry behind, marked ``ttl-revived/``:
  when that entry falls due it deletes only itself, never the task's later record, even if
  the purge job read it before the retry (the index lives on disk, the retry in memory).
- ``expires_at``: a pending, scheduled or failed task still waiting at that time is
  cancelled, with the error ``expired before it started`` (``expired before its retry`` for
  a failed one), by ``ExpireTasks`` at its time or by a claim that meets it first.
"""

from __future__ import annotations

import math
from typing import Final

from tq.core.commands import NewTask
from tq.core.model import Task, TaskState
from tq.errors import ValidationError

#: What a task that expired before running says in ``error``.
EXPIRED_ERROR: Final = "expired before it started"

#: States a task leaves when its ``expires_at`` passes (a running task runs to its end).
EXPIRABLE: Final = frozenset({TaskState.PENDING, TaskState.SCHEDULED, TaskState.FAILED})


def validate_lifetimes(t: NewTask) -> None:
    """Refuse a negative, infinite or NaN TTL (NaN would poison the index's ordering)."""
    for name, value in (("result_ttl", t.result_ttl), ("failure_ttl", t.failure_ttl)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValidationError(f"{name} must be a finite number of seconds >= 0, got {value}")
    if t.expires_at is not None and not math.isfinite(t.expires_at):
        raise ValidationError(f"expires_at must be a finite time, got {t.expires_at}")


def ttl_of(task: Task) -> float | None:
    """The lifetime that applies to a task in its (terminal) state, if it has one."""
    state = task.state
    if state is TaskState.COMPLETED:
        return task.result_ttl
    if state is TaskState.DEAD_LETTER:
        return task.failure_ttl
    return None  # cancelled tasks keep the broker-wide retention


def expiry_error(task: Task) -> str:
    """The ``error`` of a task that expired while in ``task.state``."""
    if task.state is TaskState.FAILED:
        return f"expired before its retry (last error: {task.error})"
    return EXPIRED_ERROR
