"""Translation between the gRPC messages of ``tq.v1`` and tq's records, in both directions.

Pure functions: no I/O, no clock. Input from a client is validated here with the same
``msgspec`` constraints as the TCP protocol, and a bad value becomes a ``ValidationError``
that names the field (``tasks[2].priority``), never a protobuf or msgspec exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from tq.api._pb import tq_pb2 as pb
from tq.broker.requests import ListQuery, TaskFilter
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, format_task_id, parse_task_id
from tq.core.model import PriorityTier, TaskState
from tq.errors import ValidationError
from tq.protocol.records import (
    ClusterStatus,
    Name,
    Priority,
    QueueDepth,
    Stats,
    TaskInfo,
    TaskSpec,
    Timestamp,
    WorkerInfo,
)

STATE_TO_PB: Final[dict[str, pb.TaskState]] = {
    TaskState.PENDING.value: pb.TASK_STATE_PENDING,
    TaskState.SCHEDULED.value: pb.TASK_STATE_SCHEDULED,
    TaskState.IN_PROGRESS.value: pb.TASK_STATE_IN_PROGRESS,
    TaskState.COMPLETED.value: pb.TASK_STATE_COMPLETED,
    TaskState.FAILED.value: pb.TASK_STATE_FAILED,
    TaskState.DEAD_LETTER.value: pb.TASK_STATE_DEAD_LETTER,
    TaskState.CANCELLED.value: pb.TASK_STATE_CANCELLED,
}
STATE_FROM_PB: Final[dict[int, TaskState]] = {v: TaskState(k) for k, v in STATE_TO_PB.items()}
TIER_FROM_PB: Final[dict[int, PriorityTier]] = {
    pb.PRIORITY_TIER_LOW: PriorityTier.LOW,
    pb.PRIORITY_TIER_NORMAL: PriorityTier.NORMAL,
    pb.PRIORITY_TIER_HIGH: PriorityTier.HIGH,
}
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
_SPEC_OPTIONAL: Final = (
    "queue", "priority", "delay", "scheduled_at", "max_retries", "timeout",
    "idempotency_key", "expires_at", "result_ttl", "failure_ttl", "aging",
)  # fmt: skip
_FILTER_OPTIONAL: Final = (
    "queue", "task_type", "priority_min", "priority_max", "created_after", "created_before",
)  # fmt: skip


def parse_id(text: str, field: str = "id") -> TaskId:
    if not text:
        raise ValidationError(f"{field} is required (a task id as a UUID string)")
    try:
        return parse_task_id(text)
    except ValidationError:
        raise ValidationError(f"{field} {text!r} is not a UUID") from None


def parse_ids(texts: Iterable[str], field: str = "ids") -> list[TaskId]:
    return [parse_id(t, f"{field}[{i}]") for i, t in enumerate(texts)]


def convert_checked(fields: Mapping[str, Any], cls: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(fields, cls)
    except msgspec.ValidationError as e:
        # msgspec names the path as `$.field`; report it under the request's field name.
        raise ValidationError(str(e).replace("$.", f"{where}.").replace("$", where)) from None


def spec_from_pb(spec: pb.TaskSpec, where: str = "task") -> TaskSpec:
    if spec.HasField("delay") and spec.HasField("scheduled_at"):
        raise ValidationError(f"{where}: give delay or scheduled_at, not both")
    fields: dict[str, Any] = {
        "task_type": spec.task_type,
        "payload": spec.payload,
        "depends_on": parse_ids(spec.depends_on, f"{where}.depends_on"),
    }
    for name in _SPEC_OPTIONAL:
        if spec.HasField(name):
            fields[name] = getattr(spec, name)
    if spec.HasField("id"):
        fields["id"] = parse_id(spec.id, f"{where}.id")
    if spec.HasField("retry"):
        r = spec.retry
        fields["retry"] = {
            "base": r.base, "factor": r.factor, "max_delay": r.max_delay, "jitter": r.jitter,
        }  # fmt: skip
    if spec.tags:
        fields["tags"] = dict(spec.tags)
    result: TaskSpec = convert_checked(fields, TaskSpec, where)
    return result


class _FilterIn(msgspec.Struct, kw_only=True, frozen=True):
    """A filter's fields with the TCP protocol's constraints, so errors name the field."""

    queue: Name | None = None
    task_type: Name | None = None
    priority_min: Priority | None = None
    priority_max: Priority | None = None
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None


def task_filter(f: pb.TaskFilter) -> TaskFilter:
    """The service's filter of a gRPC one (``filter.*`` names a bad field)."""
    fields = {name: getattr(f, name) for name in _FILTER_OPTIONAL if f.HasField(name)}
    checked: _FilterIn = convert_checked(fields, _FilterIn, "filter")
    state = None
    if f.state:
        state = STATE_FROM_PB.get(f.state)
        if state is None:
            raise ValidationError(f"filter.state {f.state} is not a known TaskState")
    tier = None
    if f.priority_tier:
        tier = TIER_FROM_PB.get(f.priority_tier)
        if tier is None:
            raise ValidationError(f"filter.priority_tier {f.priority_tier} is not a known tier")
    return TaskFilter.build(
        state=state, queue=checked.queue, task_type=checked.task_type, tier=tier,
        priority_min=checked.priority_min, priority_max=checked.priority_max,
        created_after=checked.created_after, created_before=checked.created_before,
    )  # fmt: skip


def list_query(f: pb.TaskFilter, cursor: bytes = b"", limit: int = 0) -> ListQuery:
    """A validated listing query."""
    if limit > MAX_LIMIT:
        raise ValidationError(f"limit {limit} is above {MAX_LIMIT}")
    if len(cursor) > 64:
        raise ValidationError("cursor is not a next_cursor value")
    return ListQuery(task_filter(f), cursor or None, limit or DEFAULT_LIMIT)


def task_to_pb(t: TaskInfo) -> pb.Task:
    return pb.Task(
        id=format_task_id(t.id), task_type=t.task_type, queue=t.queue, payload=t.payload,
        priority=t.priority, state=STATE_TO_PB.get(t.state, pb.TASK_STATE_UNSPECIFIED),
        created_at=t.created_at, updated_at=t.updated_at, scheduled_at=t.scheduled_at,
        attempts=t.attempts, max_retries=t.max_retries, timeout=t.timeout,
        depends_on=[format_task_id(d) for d in t.depends_on], result=t.result, error=t.error,
        error_type=t.error_type, worker_id=t.worker_id, lease_expires_at=t.lease_expires_at,
        progress=t.progress, progress_message=t.progress_message, tags=t.tags,
        idempotency_key=t.idempotency_key, expires_at=t.expires_at, started_at=t.started_at,
        completed_at=t.completed_at, truncated=t.truncated, result_ttl=t.result_ttl,
        failure_ttl=t.failure_ttl, purge_at=t.purge_at, aging=t.aging,
        effective_priority=t.effective_priority,
    )  # fmt: skip


def event_to_pb(ev: TaskEvent) -> pb.TaskEvent:
    return pb.TaskEvent(
        id=format_task_id(ev.task_id), state=STATE_TO_PB[ev.state.value], queue=ev.queue,
        task_type=ev.task_type, at=ev.at, attempts=ev.attempts, result=ev.result,
        error=ev.error, error_type=ev.error_type, worker_id=ev.worker_id,
        progress=ev.progress, progress_message=ev.progress_message,
    )  # fmt: skip


def queues_to_pb(queues: Mapping[str, QueueDepth]) -> list[pb.QueueDepth]:
    return [_queue(name, q) for name, q in sorted(queues.items())]


def _queue(name: str, q: QueueDepth) -> pb.QueueDepth:
    return pb.QueueDepth(
        name=name, high=q.high, normal=q.normal, low=q.low, scheduled=q.scheduled,
        in_progress=q.in_progress, paused=q.paused,
    )  # fmt: skip


def stats_to_pb(s: Stats, at: float) -> pb.Stats:
    return pb.Stats(
        pending=s.pending, scheduled=s.scheduled, in_progress=s.in_progress, failed=s.failed,
        dead_letter=s.dead_letter, workers=s.workers, queues=queues_to_pb(s.queues),
        totals=s.totals, uptime=s.uptime, node_id=s.node_id, at=at,
    )  # fmt: skip


def cluster_to_pb(s: ClusterStatus) -> pb.ClusterStatus:
    nodes = [
        pb.ClusterMember(
            node_id=n.node_id, address=n.address, role=n.role, applied_index=n.applied_index,
            lag=n.lag, updated_at=n.updated_at,
        )
        for n in s.nodes
    ]  # fmt: skip
    return pb.ClusterStatus(
        enabled=s.enabled, name=s.name, node_id=s.node_id, role=s.role, leader_id=s.leader_id,
        leader_address=s.leader_address, epoch=s.epoch, applied_index=s.applied_index,
        log_first_index=s.log_first_index, log_last_index=s.log_last_index,
        leader_changes=s.leader_changes, nodes=nodes,
    )  # fmt: skip


def workers_to_pb(workers: Sequence[WorkerInfo]) -> list[pb.Worker]:
    return [_worker(w) for w in workers]


def _worker(w: WorkerInfo) -> pb.Worker:
    return pb.Worker(
        id=w.id, name=w.name, queues=w.queues, concurrency=w.concurrency, hostname=w.hostname,
        pid=w.pid, registered_at=w.registered_at, last_heartbeat=w.last_heartbeat,
        cpu_percent=w.cpu_percent, memory_rss=w.memory_rss, running=w.running, alive=w.alive,
        reserved=w.reserved, draining=w.draining, orders=w.orders,
    )  # fmt: skip
