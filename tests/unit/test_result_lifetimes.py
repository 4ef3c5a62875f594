"""The result-lifetime index on a real RocksDB store: its keys sort by purge time, the purge
job's read finds exactly what is due (in slices, from where it left off), tells orphans from
entries, and recovery brings back the marks retries leave; bad lifetimes are refused."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.layout import TTL_PREFIX, Family, parse_ttl_key, ttl_key
from tq.core.machine import Machine
from tq.core.model import TaskState, decode_task
from tq.core.replies import Affected, ClaimReply
from tq.errors import ValidationError
from tq.storage import RocksStore, open_store
from tq.storage.lifetimes import due_results
from tq.storage.recovery import recover
from tq.storage.retention import find_expired

ID = make_task_id(1_700_000_000_000, 1)
TIMES = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)


@given(a=TIMES, b=TIMES)
def test_index_keys_sort_as_their_purge_times_and_read_back_exactly(a: float, b: float) -> None:
    ka, kb = ttl_key(a, ID), ttl_key(b, ID)
    assert (ka < kb) == (a < b)
    assert parse_ttl_key(ka) == (a, ID)


class Broker:
    """A machine writing into a RocksDB store, one batch per command, as the broker does."""

    def __init__(self, store: RocksStore) -> None:
        self.m = Machine()
        self.store = store
        self.n = 0

    def apply(self, cmd: c.Command) -> object:
        fx = Effects()
        reply = self.m.apply(cmd, fx)
        self.m.end_batch(fx)
        self.store.write(fx.mutations, sync=True)
        return reply

    def run(
        self,
        now: float,
        *,
        ok: bool = True,
        result_ttl: float | None = None,
        failure_ttl: float | None = None,
    ) -> TaskId:
        """Submit one task and end it at ``now`` (completed, or dead-lettered)."""
        self.n += 1
        task_id = make_task_id(int(now * 1000), self.n)
        self.apply(
            c.SubmitTasks(
                now,
                (
                    c.NewTask(
                        task_id,
                        "t",
                        "q",
                        b"",
                        128,
                        0,
                        result_ttl=result_ttl,
                        failure_ttl=failure_ttl,
                    ),
                ),
                99,
            )
        )
        claimed = self.apply(c.ClaimTasks(now, WorkerId("w"), ("q",), 1, 60.0))
        assert isinstance(claimed, ClaimReply)
        token = claimed.tasks[0].lease_token
        if ok:
            self.apply(c.CompleteTasks(now, (c.CompletedItem(task_id, token, b"r"),)))
        else:
            self.apply(c.FailTasks(now, (c.FailedItem(task_id, token, "boom", retry=False),)))
        return task_id


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with open_store(tmp_path / "db") as store:
        yield Broker(store)


def test_what_is_due_is_read_in_purge_time_order_in_slices(broker: Broker) -> None:
    late = broker.run(100.0, result_ttl=50.0)  # due at 150
    early = broker.run(110.0, result_ttl=10.0)  # due at 120
    dead = broker.run(120.0, ok=False, failure_ttl=5.0, result_ttl=1.0)  # due at 125
    broker.run(130.0)  # no lifetime: no entry
    found = due_results(broker.store, 140.0)
    assert [(e.task_id, e.purge_at, e.state) for e in found.entries] == [
        (early, 120.0, TaskState.COMPLETED),
        (dead, 125.0, TaskState.DEAD_LETTER),
    ]
    assert (found.orphans, found.next_at, found.more) == ((), 150.0, False)
    first = due_results(broker.store, 200.0, limit=1)
    assert ([e.task_id for e in first.entries], first.more) == ([early], True)
    rest = due_results(broker.store, 200.0, since=125.0)
    assert [e.task_id for e in rest.entries] == [dead, late]


def test_purging_deletes_the_tasks_and_their_entries_and_counts_them(broker: Broker) -> None:
    kept = broker.run(100.0, result_ttl=100.0)
    gone = broker.run(100.0, result_ttl=1.0)
    found = due_results(broker.store, 150.0)
    reply = broker.apply(c.PurgeResults(150.0, found.entries, found.orphans))
    assert isinstance(reply, Affected) and reply.task_ids == [gone]
    assert broker.store.get(Family.COMPLETED, gone) is None
    assert broker.store.get(Family.COMPLETED, kept) is not None
    assert [
        parse_ttl_key(k)[1] for k, _ in broker.store.iterate(Family.METADATA, prefix=TTL_PREFIX)
    ] == [kept]
    assert broker.m.meta.counters.results_expired == 1


def test_a_retried_dead_letter_is_an_orphan_and_its_later_end_is_kept(broker: Broker) -> None:
    task_id = broker.run(100.0, ok=False, failure_ttl=10.0)
    stale = due_results(broker.store, 200.0)  # the job reads the entry ...
    assert [e.task_id for e in stale.entries] == [task_id]
    stored = decode_task(broker.store.get(Family.DEAD_LETTER, task_id) or b"")
    broker.apply(c.RetryTasks(150.0, (stored,)))  # ... a retry lands ...
    claimed = broker.apply(c.ClaimTasks(160.0, WorkerId("w"), ("q",), 1, 60.0))
    assert isinstance(claimed, ClaimReply)
    token = claimed.tasks[0].lease_token
    broker.apply(c.FailTasks(160.0, (c.FailedItem(task_id, token, "again", retry=False),)))
    # ... and the task is dead again (due at 170) before the job applies what it read.
    reply = broker.apply(c.PurgeResults(200.0, stale.entries, stale.orphans))
    assert isinstance(reply, Affected) and reply.task_ids == []
    record = decode_task(broker.store.get(Family.DEAD_LETTER, task_id) or b"")
    assert (record.error, record.purge_at) == ("again", 170.0)
    restored = recover(broker.store, 200.0).machine  # the mark is gone, as in memory
    assert restored.snapshot() == broker.m.snapshot()
    found = due_results(broker.store, 200.0)
    assert [e.purge_at for e in found.entries] == [170.0]
    broker.apply(c.PurgeResults(200.0, found.entries, found.orphans))
    assert broker.store.get(Family.DEAD_LETTER, task_id) is None


def test_recovery_brings_back_the_mark_a_retry_left(broker: Broker) -> None:
    task_id = broker.run(100.0, ok=False, failure_ttl=10.0)
    stored = decode_task(broker.store.get(Family.DEAD_LETTER, task_id) or b"")
    broker.apply(c.RetryTasks(105.0, (stored,)))
    restored = recover(broker.store, 105.0).machine
    assert restored.snapshot() == broker.m.snapshot()
    assert restored.snapshot()["revived"] == [(110.0, task_id)]
    found = due_results(broker.store, 120.0)  # the task is live again: its entry is an orphan
    assert (found.entries, [e.task_id for e in found.orphans]) == ((), [task_id])


def test_the_retention_leaves_tasks_with_a_lifetime_of_their_own(broker: Broker) -> None:
    own = broker.run(100.0, result_ttl=1e6)
    plain = broker.run(100.0)
    found = find_expired(broker.store, 500.0)
    assert found.task_ids == (plain,)
    assert own not in found.task_ids


@pytest.mark.parametrize(
    ("field", "value"),
    [("result_ttl", -1.0), ("failure_ttl", math.inf), ("result_ttl", math.nan)],
)
def test_a_bad_lifetime_is_refused_naming_the_field(field: str, value: float) -> None:
    task = c.NewTask(
        ID, "t", "q", b"", 128, 0,
        result_ttl=value if field == "result_ttl" else None,
        failure_ttl=value if field == "failure_ttl" else None,
    )  # fmt: skip
    with pytest.raises(ValidationError, match=field):
        Machine().apply(c.SubmitTasks(0.0, (task,), 99), Effects())


def test_purging_an_entry_of_a_live_state_is_refused() -> None:
    entry = c.ResultEntry(ID, 1.0, TaskState.PENDING)
    with pytest.raises(ValidationError, match="pending"):
        Machine().apply(c.PurgeResults(2.0, (entry,)), Effects())
