"""Retention: find finished tasks older than their keep period, in bounded slices.

The machine keeps no finished task in memory, so the purge job scans the completed family
(completed and cancelled tasks) here and turns what it finds into a ``PurgeTasks`` command;
every replica then deletes exactly the same ids. A scan resumes from a cursor, so one call
does bounded work and the broker can spread a large purge over many loop turns. After a
purge, ``Store.compact`` reclaims the space the deletes left behind. A task given a
``result_ttl`` or ``failure_ttl`` is left to its own lifetime (``tq.storage.lifetimes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tq.core.ids import TaskId
from tq.core.layout import Family
from tq.core.model import TaskState, decode_task
from tq.errors import StorageError
from tq.storage.base import Store


@dataclass(frozen=True)
class Expired:
    task_ids: tuple[TaskId, ...]
    states: tuple[TaskState, ...]
    #: Where the next slice starts; None when the scan reached the end of the family.
    cursor: bytes | None


def find_expired(
    store: Store,
    cutoff: float,
    *,
    family: Family = Family.COMPLETED,
    cursor: bytes | None = None,
    scan_limit: int = 10_000,
) -> Expired:
    """Tasks in ``family`` that finished before ``cutoff`` (unix seconds), among the next
    ``scan_limit`` records from ``cursor``."""
    if family not in (Family.COMPLETED, Family.DEAD_LETTER):
        raise StorageError(f"retention applies to finished tasks, not family {family.cf_name}")
    ids: list[TaskId] = []
    states: list[TaskState] = []
    for scanned, (key, value) in enumerate(store.iterate(family, start=cursor)):
        if scanned == scan_limit:
            return Expired(tuple(ids), tuple(states), key)
        task = decode_task(value)
        if task.purge_at is not None:  # a task with a lifetime of its own: the TTL job's
            continue
        finished = task.completed_at if task.completed_at is not None else task.updated_at
        if finished < cutoff:
            ids.append(TaskId(key))
            states.append(task.state)
    return Expired(tuple(ids), tuple(states), None)
