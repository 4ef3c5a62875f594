"""Task listing with filters and cursor paging, read from storage in key (id) order.

Live tasks are read from their families too (the store holds every task as of the last
written batch). A listing scans a bounded number of records per call and returns a cursor,
so a selective filter over a large store costs several cheap calls, not one long stall.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from tq.core.layout import FAMILY_OF_STATE, TASK_FAMILIES, Family
from tq.core.model import Task, TaskState, decode_task
from tq.errors import ValidationError
from tq.protocol import messages as m
from tq.storage.base import Store

SCAN_LIMIT = 20_000


def list_tasks(store: Store, req: m.ListTasks) -> tuple[list[Task], bytes | None]:
    state: TaskState | None = None
    if req.state is not None:
        try:
            state = TaskState(req.state)
        except ValueError:
            names = ", ".join(s.value for s in TaskState)
            raise ValidationError(f"state {req.state!r} is not one of {names}") from None
    families = (FAMILY_OF_STATE[state],) if state is not None else TASK_FAMILIES
    start = None if req.cursor is None else req.cursor + b"\x00"  # resume after the cursor
    merged = heapq.merge(*(_scan(store, f, start) for f in families), key=lambda kv: kv[0])
    out: list[Task] = []
    last: bytes | None = None
    for scanned, (key, raw) in enumerate(merged):
        if scanned >= SCAN_LIMIT or len(out) >= req.limit:
            return out, last
        last = key
        task = decode_task(raw)
        if _matches(task, req, state):
            out.append(task)
    return out, None


def _scan(store: Store, family: Family, start: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    yield from store.iterate(family, start=start)


def _matches(t: Task, req: m.ListTasks, state: TaskState | None) -> bool:
    return (
        (state is None or t.state is state)
        and (req.queue is None or t.queue == req.queue)
        and (req.task_type is None or t.task_type == req.task_type)
        and (req.priority_min is None or t.priority >= req.priority_min)
        and (req.priority_max is None or t.priority <= req.priority_max)
        and (req.created_after is None or t.created_at >= req.created_after)
        and (req.created_before is None or t.created_at < req.created_before)
    )
