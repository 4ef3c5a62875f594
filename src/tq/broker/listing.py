"""Task listing with filters and cursor paging, read from storage in key (id) order.

Live tasks are read from their families too (the store holds every task as of the last
written batch). A listing scans a bounded number of records per call and returns a cursor,
so a selective filter over a large store costs several cheap calls, not one long stall. A
page also ends before the task that would take its records past the query's byte budget
(never before its first task), so large results make short pages, not huge replies.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from tq.broker.requests import ListQuery
from tq.core.layout import FAMILY_OF_STATE, TASK_FAMILIES, Family
from tq.core.model import Task, decode_task
from tq.core.sizes import info_size
from tq.storage.base import Store

SCAN_LIMIT = 20_000


def list_tasks(store: Store, query: ListQuery) -> tuple[list[Task], bytes | None]:
    """Up to ``query.limit`` matching tasks within ``query.max_bytes`` (by ``info_size``) and
    the cursor of the next page (None: done)."""
    f = query.filter
    if f.empty:
        return [], None
    families = (FAMILY_OF_STATE[f.state],) if f.state is not None else TASK_FAMILIES
    start = None if query.cursor is None else query.cursor + b"\x00"  # resume after it
    merged = heapq.merge(*(_scan(store, fam, start) for fam in families), key=lambda kv: kv[0])
    out: list[Task] = []
    room = query.max_bytes
    last: bytes | None = None
    for scanned, (key, raw) in enumerate(merged):
        if scanned >= SCAN_LIMIT or len(out) >= query.limit:
            return out, last
        task = decode_task(raw)
        if f.matches(task):
            size = info_size(task, include_payload=False)
            if out and size > room:
                return out, last  # the next page starts with this task
            room -= size
            out.append(task)
        last = key
    return out, None


def _scan(store: Store, family: Family, start: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    yield from store.iterate(family, start=start)
