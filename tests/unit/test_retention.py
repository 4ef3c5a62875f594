"""Retention: finished tasks past their keep period are found, purged, and space compacted."""

from __future__ import annotations

from pathlib import Path

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.layout import Family
from tq.core.machine import Machine
from tq.core.replies import ClaimReply
from tq.storage import open_store
from tq.storage.retention import find_expired


def test_purge_removes_only_tasks_finished_before_the_cutoff_in_bounded_slices(
    tmp_path: Path,
) -> None:
    m = Machine()
    ids = [make_task_id(1_700_000_000_000, i) for i in range(30)]
    with open_store(tmp_path) as store:
        fx = Effects()
        m.apply(c.SubmitTasks(0.0, tuple(c.NewTask(i, "t", "q", b"", 128, 0) for i in ids), 99), fx)
        claimed = m.apply(c.ClaimTasks(1.0, WorkerId("w"), ("q",), 30, 60.0), fx)
        assert isinstance(claimed, ClaimReply)
        for n, t in enumerate(claimed.tasks):  # finished at t=10 (old) or t=1000 (recent)
            when = 10.0 if n % 2 == 0 else 1000.0
            m.apply(c.CompleteTasks(when, (c.CompletedItem(t.id, t.lease_token),)), fx)
        m.end_batch(fx)
        store.write(fx.mutations, sync=True)

        found: list[TaskId] = []
        cursor: bytes | None = None
        slices = 0
        while True:
            exp = find_expired(store, 500.0, cursor=cursor, scan_limit=7)
            slices += 1
            fx = Effects()
            m.apply(c.PurgeTasks(2000.0, exp.task_ids, exp.states), fx)
            store.write(fx.mutations, sync=True)
            found += exp.task_ids
            if exp.cursor is None:
                break
            cursor = exp.cursor
        store.compact(Family.COMPLETED)
        left = [k for k, _ in store.iterate(Family.COMPLETED)]
    assert slices == 5
    assert sorted(found) == sorted(t.id for n, t in enumerate(claimed.tasks) if n % 2 == 0)
    assert sorted(left) == sorted(t.id for n, t in enumerate(claimed.tasks) if n % 2 == 1)
    assert m.meta.counters.purged == 15
