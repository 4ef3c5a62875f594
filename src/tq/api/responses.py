"""JSON shapes the HTTP API answers with (REST responses, error bodies) and their mapping
from the service's records: ids as canonical UUID text; times as ``<name>`` in unix seconds
(exact, what programs compare) plus ``<name>_rfc3339`` (UTC text with the date, as the CLI
shows it); bytes as ``<name>`` (text, when valid UTF-8) plus ``<name>_base64`` (always, exact).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tq.core.ids import format_task_id
from tq.core.model import TaskState
from tq.core.times import format_rfc3339
from tq.errors import ErrorCode
from tq.protocol.records import ClusterStatus, Stats, TaskInfo, WorkerInfo


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


def text_and_base64(data: bytes | None) -> tuple[str | None, str | None]:
    """Bytes as (UTF-8 text or None, base64): text for people, base64 for exactness."""
    if data is None:
        return None, None
    try:
        text: str | None = data.decode()
    except UnicodeDecodeError:
        text = None
    return text, base64.b64encode(data).decode()


def task_id_text(task_id: bytes) -> str:
    return format_task_id(task_id)


def rfc3339(unix: float | None) -> str | None:
    return None if unix is None else format_rfc3339(unix)


def _rfc3339_of(unix_field: str, *, always: bool = False) -> Any:
    described = f"{unix_field} as RFC 3339 text (UTC, to the millisecond)"
    return Field(description=described) if always else Field(None, description=described)


class ErrorBody(_Out):
    code: int = Field(description="stable tq error code (tq.errors.ErrorCode)")
    name: str = Field(description="the code's name, e.g. TASK_NOT_FOUND")
    message: str

    @classmethod
    def of(cls, code: ErrorCode, message: str | None = None) -> ErrorBody:
        return cls(code=int(code), name=code.name, message=message or code.description)


class ErrorResponse(_Out):
    error: ErrorBody


class UnavailableBody(ErrorBody):
    leader: str | None = Field(
        None,
        description="with code 6000 NOT_LEADER: host:port of the TCP door of the node that "
        "leads now, null while none is known (the request was not applied: retry it there, "
        "or through that node's own REST door)",
    )


class UnavailableResponse(_Out):
    """A 503's body: the error, and with NOT_LEADER where the leader is (``leader``)."""

    error: UnavailableBody


class RateLimitedBody(ErrorBody):
    retry_after: float = Field(description="seconds until the call would be allowed")


class RateLimitedResponse(_Out):
    """A 429's body: the error with the seconds to wait (the Retry-After header, rounded up)."""

    error: RateLimitedBody


class Submitted(_Out):
    id: str
    created: bool = Field(description="false: an idempotency-key duplicate of an existing task")


class SubmittedBatch(_Out):
    tasks: list[Submitted]


class TaskOut(_Out):
    id: str
    task_type: str
    queue: str
    state: TaskState
    priority: int
    created_at: float
    created_at_rfc3339: str = _rfc3339_of("created_at", always=True)
    updated_at: float
    updated_at_rfc3339: str = _rfc3339_of("updated_at", always=True)
    scheduled_at: float | None = None
    scheduled_at_rfc3339: str | None = _rfc3339_of("scheduled_at")
    attempts: int
    max_retries: int
    timeout: float | None = None
    depends_on: list[str] = []
    payload: str | None = Field(None, description="with include_payload, if valid UTF-8")
    payload_base64: str | None = Field(None, description="with include_payload")
    result: str | None = Field(None, description="the result if it is valid UTF-8")
    result_base64: str | None = None
    error: str | None = None
    error_type: str | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    lease_expires_at_rfc3339: str | None = _rfc3339_of("lease_expires_at")
    progress: int = 0
    progress_message: str | None = None
    tags: dict[str, str] = {}
    idempotency_key: str | None = None
    expires_at: float | None = None
    expires_at_rfc3339: str | None = _rfc3339_of("expires_at")
    started_at: float | None = None
    started_at_rfc3339: str | None = _rfc3339_of("started_at")
    completed_at: float | None = None
    completed_at_rfc3339: str | None = _rfc3339_of("completed_at")
    truncated: bool = Field(
        False,
        description="in a listing: result, error, error_type, progress_message and tags were "
        "left out, as this record alone is larger than a page may be (GET the task for them)",
    )
    result_ttl: float | None = None
    failure_ttl: float | None = None
    purge_at: float | None = Field(default=None, description="when this finished task is deleted")
    purge_at_rfc3339: str | None = _rfc3339_of("purge_at")
    aging: bool = Field(True, description="false: the task opted out of priority aging")
    effective_priority: int | None = Field(
        None,
        description="a pending task's priority as a claim compares it now (raised by priority "
        "aging); null unless pending",
    )

    @classmethod
    def of(cls, t: TaskInfo) -> TaskOut:
        payload, payload_b64 = text_and_base64(t.payload)
        result, result_b64 = text_and_base64(t.result)
        return cls(
            id=task_id_text(t.id), task_type=t.task_type, queue=t.queue,
            state=TaskState(t.state), priority=t.priority,
            created_at=t.created_at, created_at_rfc3339=format_rfc3339(t.created_at),
            updated_at=t.updated_at, updated_at_rfc3339=format_rfc3339(t.updated_at),
            scheduled_at=t.scheduled_at, scheduled_at_rfc3339=rfc3339(t.scheduled_at),
            attempts=t.attempts, max_retries=t.max_retries, timeout=t.timeout,
            depends_on=[task_id_text(d) for d in t.depends_on], payload=payload,
            payload_base64=payload_b64, result=result, result_base64=result_b64,
            error=t.error, error_type=t.error_type, worker_id=t.worker_id,
            lease_expires_at=t.lease_expires_at,
            lease_expires_at_rfc3339=rfc3339(t.lease_expires_at),
            progress=t.progress, progress_message=t.progress_message, tags=t.tags,
            idempotency_key=t.idempotency_key,
            expires_at=t.expires_at, expires_at_rfc3339=rfc3339(t.expires_at),
            started_at=t.started_at, started_at_rfc3339=rfc3339(t.started_at),
            completed_at=t.completed_at, completed_at_rfc3339=rfc3339(t.completed_at),
            truncated=t.truncated, result_ttl=t.result_ttl, failure_ttl=t.failure_ttl,
            purge_at=t.purge_at, purge_at_rfc3339=rfc3339(t.purge_at),
            aging=t.aging, effective_priority=t.effective_priority,
        )  # fmt: skip


class TaskPage(_Out):
    tasks: list[TaskOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: done")


class BulkItem(_Out):
    id: str
    ok: bool
    error: ErrorBody | None = None


class BulkOut(_Out):
    results: list[BulkItem]
    succeeded: int
    failed: int
    truncated: bool = Field(description="the filter may match more tasks: repeat the call")
    next_cursor: str | None = Field(
        default=None,
        description="pass as cursor with the same filter to go on after the tasks selected; "
        "null: no more match",
    )


class QueueDepthOut(_Out):
    high: int = 0
    normal: int = 0
    low: int = 0
    scheduled: int = 0
    in_progress: int = 0
    paused: bool = Field(False, description="takes submits, hands out nothing until resumed")


class StatsOut(_Out):
    pending: int
    scheduled: int
    in_progress: int
    failed: int
    dead_letter: int
    workers: int
    queues: dict[str, QueueDepthOut]
    totals: dict[str, int]
    uptime: float
    node_id: str

    @classmethod
    def of(cls, s: Stats) -> StatsOut:
        queues = {n: QueueDepthOut(**_fields(q)) for n, q in s.queues.items()}
        return cls(**{**_fields(s), "queues": queues})


class ClusterMemberOut(_Out):
    node_id: str
    address: str = Field(description="host:port of the node's TCP door")
    role: Literal["leader", "follower"]
    applied_index: int = Field(description="the last log entry its store holds")
    lag: int = Field(description="log entries it has still to apply")
    updated_at: float = Field(description="when its record was last written (unix seconds)")


class ClusterOut(_Out):
    """The cluster as the node asked sees it; a single broker answers ``enabled: false``."""

    enabled: bool
    name: str = Field(description="raft.cluster_name")
    node_id: str = Field(description="the node that answered")
    role: Literal["single", "leader", "follower"]
    leader_id: str | None
    leader_address: str | None = Field(description="host:port of the leader's TCP door")
    epoch: int | None = Field(description="the leader's epoch")
    applied_index: int
    log_first_index: int
    log_last_index: int
    leader_changes: int
    nodes: list[ClusterMemberOut]

    @classmethod
    def of(cls, s: ClusterStatus) -> ClusterOut:
        nodes = [ClusterMemberOut(**_fields(n)) for n in s.nodes]
        return cls(**{**_fields(s), "nodes": nodes})


class QueueOut(QueueDepthOut):
    name: str
    pending: int = Field(description="high + normal + low")


class QueuesOut(_Out):
    queues: list[QueueOut]


class WorkerOut(_Out):
    id: str
    name: str
    queues: list[str]
    concurrency: int
    hostname: str
    pid: int
    registered_at: float
    registered_at_rfc3339: str = _rfc3339_of("registered_at", always=True)
    last_heartbeat: float
    last_heartbeat_rfc3339: str = _rfc3339_of("last_heartbeat", always=True)
    cpu_percent: float
    memory_rss: int
    running: int = Field(description="tasks it runs (started, its last heartbeat said)")
    alive: bool
    reserved: int = Field(0, description="tasks it claimed and has not started")
    draining: bool = Field(False, description="shutting down: it claims no more")
    orders: int = Field(0, description="orders it has not carried out yet")

    @classmethod
    def of(cls, w: WorkerInfo) -> WorkerOut:
        return cls(
            **_fields(w),
            registered_at_rfc3339=format_rfc3339(w.registered_at),
            last_heartbeat_rfc3339=format_rfc3339(w.last_heartbeat),
        )


class WorkersOut(_Out):
    workers: list[WorkerOut]


class Status(_Out):
    status: str


def _fields(record: Any) -> dict[str, Any]:
    return {f: getattr(record, f) for f in record.__struct_fields__}
