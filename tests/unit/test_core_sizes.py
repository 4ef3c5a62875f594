"""The size bounds that byte budgets rely on are never below the real MessagePack encoding of
a record, whatever its names (any Unicode), payload, result, tags and numbers."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from tq.broker.convert import task_info
from tq.core.ids import TaskId, WorkerId
from tq.core.model import Task, TaskState
from tq.core.sizes import claimed_size, info_size, tags_size
from tq.protocol.records import ClaimedTask, TaskInfo

_encode = msgspec.msgpack.Encoder().encode

ids = st.binary(min_size=16, max_size=16).map(TaskId)
names = st.text(min_size=1, max_size=256)
texts = st.none() | st.text(max_size=300)
blobs = st.binary(max_size=5000)
big_int = st.integers(0, 2**64 - 1)
times = st.floats(0, 1e12)
tags = st.dictionaries(names, st.text(max_size=100), max_size=8)


@st.composite
def tasks(draw: st.DrawFn) -> Task:
    return Task(
        id=draw(ids), task_type=draw(names), queue=draw(names), payload=draw(blobs),
        priority=draw(st.integers(0, 255)), state=draw(st.sampled_from(list(TaskState))),
        created_at=draw(times), updated_at=draw(times), scheduled_at=draw(st.none() | times),
        attempts=draw(big_int), max_retries=draw(big_int), timeout=draw(st.none() | times),
        depends_on=tuple(draw(st.lists(ids, max_size=20))), result=draw(st.none() | blobs),
        error=draw(texts), worker_id=draw(st.none() | names.map(WorkerId)),
        lease_expires_at=draw(st.none() | times), lease_token=draw(big_int),
        progress=draw(st.integers(0, 100)), progress_message=draw(texts), tags=draw(tags),
        idempotency_key=draw(st.none() | names), expires_at=draw(st.none() | times),
        completed_at=draw(st.none() | times), started_at=draw(st.none() | times),
        error_type=draw(texts),
    )  # fmt: skip


@given(tasks(), big_int, times)
def test_a_claimed_task_never_encodes_above_its_bound(t: Task, token: int, until: float) -> None:
    wire = ClaimedTask(
        id=t.id, task_type=t.task_type, queue=t.queue, payload=t.payload, priority=t.priority,
        attempts=t.attempts, max_retries=t.max_retries, timeout=t.timeout, lease_token=token,
        lease_expires_at=until, created_at=t.created_at, tags=t.tags,
    )  # fmt: skip
    assert len(_encode(wire)) <= claimed_size(t)


@given(tasks(), st.booleans())
def test_a_task_record_never_encodes_above_its_bound(t: Task, include_payload: bool) -> None:
    info: TaskInfo = task_info(t, include_payload)
    assert len(_encode(info)) <= info_size(t, include_payload)


@given(tags)
def test_the_size_of_tags_is_their_exact_encoding(found: dict[str, str]) -> None:
    assert tags_size(found) == (len(_encode(found)) if found else 0)


def test_the_bounds_grow_with_what_the_record_carries() -> None:
    t = Task(TaskId(bytes(16)), "t", "q", b"p" * 1000, 128, TaskState.PENDING, 0.0, 0.0)
    bigger = Task(TaskId(bytes(16)), "t", "q", b"p" * 2000, 128, TaskState.PENDING, 0.0, 0.0)
    assert claimed_size(bigger) - claimed_size(t) == 1000
    assert info_size(t, include_payload=False) < info_size(t, include_payload=True)
    t.result = b"r" * 5000
    assert info_size(t, include_payload=False) >= 5000
