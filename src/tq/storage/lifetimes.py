"""The result-lifetime index on disk: which finished tasks are due for deletion, in order.

The machine writes ``ttl/<purge time><task id>`` when a task with a ``result_ttl`` or
``failure_ttl`` finishes (``tq.core.lifetimes``); keys sort by purge time, so what is due is
a range read from the start of the index, never a scan of the finished tasks. The purge job
turns each slice into one ``PurgeResults`` command, which deletes the tasks and the entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from tq.core.commands import ResultEntry
from tq.core.ids import TaskId
from tq.core.layout import (
    FAMILY_OF_STATE,
    TTL_PREFIX,
    TTL_REVIVED_PREFIX,
    Family,
    parse_ttl_key,
    ttl_key,
)
from tq.core.model import TaskState
from tq.errors import StorageError
from tq.storage.base import Store


@dataclass(frozen=True)
class DueResults:
    entries: tuple[ResultEntry, ...]
    #: Due entries whose task is no longer where the entry says (deleted, or retried).
    orphans: tuple[ResultEntry, ...]
    #: Purge time of the first entry not yet due (None: the index holds nothing later).
    next_at: float | None
    #: True when the slice stopped at ``limit`` with more entries due after it.
    more: bool


def due_results(store: Store, now: float, *, since: float = 0.0, limit: int = 1000) -> DueResults:
    """Index entries due at ``now`` (purge time <= now), at most ``limit``, from purge time
    ``since`` on: the purge job's last point, so it does not wade through the deletes it
    left behind before compaction removes them."""
    due: list[ResultEntry] = []
    next_at: float | None = None
    more = False
    start = ttl_key(max(0.0, since), b"")
    for key, value in store.iterate(Family.METADATA, prefix=TTL_PREFIX, start=start):
        purge_at, task_id = parse_ttl_key(key)
        if purge_at > now or len(due) == limit:
            next_at, more = purge_at, purge_at <= now
            break
        try:
            state = TaskState(value.decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise StorageError(f"corrupt result-lifetime index entry {key.hex()}: {e}") from e
        due.append(ResultEntry(TaskId(task_id), purge_at, state))
    entries, orphans = split_orphans(store, due)
    return DueResults(entries, orphans, next_at, more)


def split_orphans(
    store: Store, due: list[ResultEntry]
) -> tuple[tuple[ResultEntry, ...], tuple[ResultEntry, ...]]:
    """``due`` as (entries whose task record is where they say, the others)."""
    found: list[bool] = [False] * len(due)
    for family in (Family.COMPLETED, Family.DEAD_LETTER):
        at = [i for i, e in enumerate(due) if FAMILY_OF_STATE[e.state] is family]
        if at:
            values = store.multi_get(family, [due[i].task_id for i in at])
            for i, value in zip(at, values, strict=True):
                found[i] = value is not None
    entries = tuple(e for e, ok in zip(due, found, strict=True) if ok)
    orphans = tuple(e for e, ok in zip(due, found, strict=True) if not ok)
    return entries, orphans


def revived_entries(store: Store) -> list[tuple[float, TaskId]]:
    """The index entries whose task was retried since (``Machine.restore`` needs them)."""
    out = []
    for key, _ in store.iterate(Family.METADATA, prefix=TTL_REVIVED_PREFIX):
        purge_at, task_id = parse_ttl_key(key, TTL_REVIVED_PREFIX)
        out.append((purge_at, TaskId(task_id)))
    return out
