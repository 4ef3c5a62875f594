"""Translation between the tq.v1 messages and tq's records: defaults, every field carried,
and bad input refused as a ValidationError that names the field."""

from __future__ import annotations

import uuid

import pytest

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc_convert import (
    STATE_FROM_PB,
    STATE_TO_PB,
    event_to_pb,
    list_query,
    parse_ids,
    spec_from_pb,
    stats_to_pb,
    task_to_pb,
    workers_to_pb,
)
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId
from tq.core.model import TaskState
from tq.errors import ErrorCode, ValidationError
from tq.protocol.records import QueueDepth, RetrySpec, Stats, TaskInfo, WorkerInfo

A = str(uuid.uuid4())
B = str(uuid.uuid4())


def tid(text: str) -> TaskId:
    return TaskId(uuid.UUID(text).bytes)


def test_every_task_state_has_its_own_protobuf_state_and_maps_back() -> None:
    assert set(STATE_TO_PB) == {s.value for s in TaskState}
    assert len(set(STATE_TO_PB.values())) == len(TaskState)
    assert pb.TASK_STATE_UNSPECIFIED not in STATE_FROM_PB
    assert all(STATE_FROM_PB[STATE_TO_PB[s.value]] is s for s in TaskState)


def test_an_empty_spec_takes_the_wire_defaults() -> None:
    spec = spec_from_pb(pb.TaskSpec(task_type="echo"))
    assert (spec.id, spec.queue, spec.priority, spec.payload) == (None, "default", 128, b"")
    assert (spec.retry, spec.max_retries, spec.delay, spec.tags) == (None, None, None, None)


def test_every_spec_field_is_carried() -> None:
    spec = spec_from_pb(
        pb.TaskSpec(
            id=A, task_type="t", queue="q", payload=b"\x00", priority=0, delay=0.0,
            max_retries=0, timeout=2.5, depends_on=[B], tags={"a": "b"}, idempotency_key="k",
            expires_at=9.0, retry=pb.RetryPolicy(base=1, factor=3, max_delay=9, jitter=0),
        )
    )  # fmt: skip
    assert (spec.id, spec.task_type, spec.queue, spec.payload) == (tid(A), "t", "q", b"\x00")
    assert (spec.priority, spec.delay, spec.max_retries, spec.timeout) == (0, 0.0, 0, 2.5)
    assert (spec.depends_on, spec.tags, spec.idempotency_key) == ((tid(B),), {"a": "b"}, "k")
    assert (spec.expires_at, spec.retry) == (
        9.0,
        RetrySpec(base=1, factor=3, max_delay=9, jitter=0),
    )


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        (pb.TaskSpec(task_type="t", priority=256), "tasks[3].priority"),
        (pb.TaskSpec(), "tasks[3].task_type"),
        (pb.TaskSpec(task_type="t", queue="x" * 257), "tasks[3].queue"),
        (pb.TaskSpec(task_type="t", id="nope"), "tasks[3].id"),
        (pb.TaskSpec(task_type="t", depends_on=[A, "nope"]), "tasks[3].depends_on[1]"),
        (pb.TaskSpec(task_type="t", timeout=0), "tasks[3].timeout"),
        (pb.TaskSpec(task_type="t", scheduled_at=float("nan")), "tasks[3].scheduled_at"),
        (pb.TaskSpec(task_type="t", retry=pb.RetryPolicy(factor=0.5)), "tasks[3].retry.factor"),
        (pb.TaskSpec(task_type="t", delay=1, scheduled_at=1), "tasks[3]"),
        (pb.TaskSpec(task_type="t", idempotency_key=""), "tasks[3].idempotency_key"),
    ],
)
def test_a_bad_spec_is_a_validation_error_naming_the_field(spec: pb.TaskSpec, names: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec_from_pb(spec, "tasks[3]")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert names in info.value.message


def test_ids_are_read_in_any_uuid_form_and_refused_naming_the_index() -> None:
    assert parse_ids([A.upper(), uuid.UUID(B).hex]) == [tid(A), tid(B)]
    with pytest.raises(ValidationError, match=r"ids\[1\] is required"):
        parse_ids([A, ""])


def test_a_priority_tier_narrows_the_priority_range() -> None:
    f = list_query(pb.TaskFilter(priority_tier=pb.PRIORITY_TIER_NORMAL, priority_min=150)).filter
    assert (f.priority_min, f.priority_max) == (150, 199)
    f = list_query(pb.TaskFilter(priority_tier=pb.PRIORITY_TIER_LOW)).filter
    assert (f.priority_min, f.priority_max) == (0, 99)


def test_a_listing_query_carries_every_filter_and_defaults_the_limit() -> None:
    f = pb.TaskFilter(
        state=pb.TASK_STATE_DEAD_LETTER, queue="q", task_type="t", created_after=1.0,
        created_before=2.0,
    )  # fmt: skip
    q = list_query(f, b"cur", 0)
    g = q.filter
    assert (g.state, g.queue, g.task_type) == (TaskState.DEAD_LETTER, "q", "t")
    assert (g.created_after, g.created_before, q.cursor, q.limit) == (1.0, 2.0, b"cur", 100)
    assert list_query(pb.TaskFilter()).cursor is None


@pytest.mark.parametrize(
    ("f", "limit", "names"),
    [
        (pb.TaskFilter(), 1001, "limit 1001"),
        (pb.TaskFilter(state=42), 0, "filter.state 42"),  # type: ignore[arg-type]
        (pb.TaskFilter(priority_tier=7), 0, "filter.priority_tier 7"),  # type: ignore[arg-type]
        (pb.TaskFilter(priority_max=300), 0, "filter.priority_max"),
        (pb.TaskFilter(queue=""), 0, "filter.queue"),
        (pb.TaskFilter(created_after=-1), 0, "filter.created_after"),
    ],
)
def test_a_bad_filter_is_a_validation_error_naming_the_field(
    f: pb.TaskFilter, limit: int, names: str
) -> None:
    with pytest.raises(ValidationError) as info:
        list_query(f, b"", limit)
    assert names in info.value.message


def test_a_task_carries_its_fields_and_leaves_absent_ones_unset() -> None:
    info = TaskInfo(
        id=tid(A), task_type="t", queue="q", priority=7, state="completed", created_at=1.0,
        updated_at=2.0, max_retries=3, depends_on=[tid(B)], result=b"r", tags={"k": "v"},
        completed_at=2.0, worker_id="w",
    )  # fmt: skip
    t = task_to_pb(info)
    assert (t.id, t.state, t.priority, list(t.depends_on)) == (A, pb.TASK_STATE_COMPLETED, 7, [B])
    assert (t.result, t.worker_id, t.completed_at, dict(t.tags)) == (b"r", "w", 2.0, {"k": "v"})
    for absent in ("payload", "error", "scheduled_at", "timeout", "lease_expires_at", "started_at"):
        assert not t.HasField(absent), absent


def test_a_state_unknown_to_this_version_is_reported_unspecified() -> None:
    info = TaskInfo(id=tid(A), task_type="t", queue="q", state="paused", created_at=1.0,
                    updated_at=1.0, max_retries=0)  # fmt: skip
    assert task_to_pb(info).state == pb.TASK_STATE_UNSPECIFIED


def test_an_event_carries_its_fields() -> None:
    ev = TaskEvent(tid(A), TaskState.FAILED, "q", "t", 5.0, 2, error="boom", error_type="E",
                   progress=40)  # fmt: skip
    p = event_to_pb(ev)
    assert (p.id, p.state, p.queue, p.task_type, p.at, p.attempts) == (
        A, pb.TASK_STATE_FAILED, "q", "t", 5.0, 2,
    )  # fmt: skip
    assert (p.error, p.error_type, p.progress) == ("boom", "E", 40)
    assert not p.HasField("result")


def test_stats_and_workers_carry_their_fields() -> None:
    stats = Stats(pending=3, queues={"b": QueueDepth(high=1), "a": QueueDepth(low=2)},
                  totals={"submitted": 9}, node_id="n")  # fmt: skip
    p = stats_to_pb(stats, 12.0)
    assert [(q.name, q.low, q.high) for q in p.queues] == [("a", 2, 0), ("b", 0, 1)]
    assert (p.pending, dict(p.totals), p.node_id, p.at) == (3, {"submitted": 9}, "n", 12.0)
    w = WorkerInfo(id="w1", name="n", queues=["q"], registered_at=1.0, last_heartbeat=2.0,
                   alive=False, running=2)  # fmt: skip
    [pw] = workers_to_pb([w])
    assert (pw.id, pw.name, list(pw.queues), pw.alive, pw.running) == ("w1", "n", ["q"], False, 2)
