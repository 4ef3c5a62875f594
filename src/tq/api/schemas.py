"""JSON shapes the HTTP API accepts (REST bodies and query filters, WebSocket control
messages) and their mapping to the service's records. Ids are UUID text; a payload is
``payload`` (UTF-8 text) or ``payload_base64``. Times are unix seconds (a JSON number) or
RFC 3339 text with an offset, and a listing filter also takes an age ("10m": ten minutes
ago), as the CLI does (``tq.api.fields``). Every bound the core enforces is repeated here and
the OpenAPI schema says exactly what is accepted (exclusive fields too), so bad input is a 422
naming the field and input valid by the schema is not refused for its shape.
"""

from __future__ import annotations

import base64
import math
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic_core import ErrorDetails

from tq.api.fields import (
    NUMBER,
    Base64,
    Count,
    Cursor,
    Factor,
    Fraction,
    Instant,
    Name,
    PositiveSeconds,
    Priority,
    QueryPriority,
    QuerySince,
    Seconds,
    Since,
    Text,
    not_both,
)
from tq.broker.requests import MAX_BULK
from tq.core.ids import TaskId
from tq.core.model import TaskState
from tq.protocol.records import RetrySpec, TaskSpec

MAX_BATCH = 1000  #: tasks per POST /v1/tasks/batch


class Tier(StrEnum):
    """Priority tiers by name; their ranges are ``tq.core.model.PriorityTier``'s."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


# ---------------------------------------------------------------------- requests


class RetryIn(_In):
    base: Seconds = 1.0
    factor: Factor = 2.0
    max_delay: Seconds = 300.0
    jitter: Fraction = 0.1


class TaskSubmit(_In):
    """One task to submit; ``payload`` (UTF-8 text) or ``payload_base64``, not both;
    ``delay`` (seconds from now) or ``scheduled_at``, not both. For a time relative to now,
    ``delay``: ``scheduled_at`` and ``expires_at`` take no age, as "10m" means ten minutes
    *ago* where ages are taken (listing filters)."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [not_both("payload", "payload_base64"), not_both("delay", "scheduled_at")]
        }
    )

    id: UUID | None = None
    task_type: Name
    queue: Name = "default"
    payload: Text | None = None
    payload_base64: Base64 | None = None
    priority: Priority = 128
    delay: Seconds | None = None
    scheduled_at: Instant | None = None
    max_retries: Count | None = None
    timeout: PositiveSeconds | None = None
    retry: RetryIn | None = None
    depends_on: Annotated[list[UUID], Field(max_length=MAX_BATCH)] = []
    tags: Annotated[dict[Name, Text], Field(max_length=64)] | None = None
    idempotency_key: Name | None = None
    expires_at: Instant | None = None
    result_ttl: Seconds | None = Field(
        default=None, description="seconds the task and its result are kept once completed"
    )
    failure_ttl: Seconds | None = Field(
        default=None, description="seconds the task is kept once dead-lettered"
    )
    aging: Annotated[
        bool,
        Field(strict=True, description="false: the task keeps its priority however long it waits"),
    ] = True

    @model_validator(mode="after")
    def _one_payload(self) -> Self:
        if self.payload is not None and self.payload_base64 is not None:
            raise ValueError("give payload or payload_base64, not both")
        return self

    def spec(self) -> TaskSpec:
        if self.payload_base64 is not None:
            payload = base64.b64decode(self.payload_base64)
        else:
            payload = (self.payload or "").encode()
        r = self.retry
        return TaskSpec(
            id=None if self.id is None else TaskId(self.id.bytes),
            task_type=self.task_type, queue=self.queue, payload=payload,
            priority=self.priority, delay=self.delay, scheduled_at=self.scheduled_at,
            max_retries=self.max_retries, timeout=self.timeout,
            retry=None if r is None else RetrySpec(
                base=r.base, factor=r.factor, max_delay=r.max_delay, jitter=r.jitter
            ),
            depends_on=tuple(TaskId(d.bytes) for d in self.depends_on),
            tags=self.tags, idempotency_key=self.idempotency_key, expires_at=self.expires_at,
            result_ttl=self.result_ttl, failure_ttl=self.failure_ttl,
            aging=self.aging,
        )  # fmt: skip


class TaskBatch(_In):
    tasks: Annotated[list[TaskSubmit], Field(min_length=1, max_length=MAX_BATCH)]


class _Filter(BaseModel):
    """Filters of a listing, ANDed; ``priority`` (a tier) intersects priority_min/max."""

    model_config = ConfigDict(allow_inf_nan=False, frozen=True)

    state: TaskState | None = None
    queue: Name | None = None
    task_type: Name | None = None
    priority: Tier | None = None
    priority_min: Priority | None = None
    priority_max: Priority | None = None
    created_after: Since | None = Field(default=None, description="created at or after")
    created_before: Since | None = Field(default=None, description="created before")


def _narrowing(schema: dict[str, Any]) -> None:
    """JSON Schema of a filter that narrows: a field set, a priority bound that excludes."""
    given = {"not": {"type": "null"}}
    schema["anyOf"] = [
        *[
            {"required": [f], "properties": {f: given}}
            for f in ("state", "queue", "task_type", "priority", "created_after", "created_before")
        ],
        {
            "required": ["priority_min"],
            "properties": {"priority_min": {"type": "integer", "minimum": 1}},
        },
        {
            "required": ["priority_max"],
            "properties": {"priority_max": {"type": "integer", "maximum": 254}},
        },
    ]


class TaskFilter(_Filter):
    """A bulk action's filter: it must narrow the selection (the service refuses a filter
    of every task), which the schema says as "one field set that narrows it"."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_narrowing)


class TaskQuery(_Filter):
    """GET /v1/tasks: filters plus paging (follow ``next_cursor`` until it is null). Unknown
    parameters are refused (``tq.api.rest``), as unknown fields of a body are; numbers are
    query text here."""

    priority_min: QueryPriority | None = None
    priority_max: QueryPriority | None = None
    created_after: QuerySince | None = Field(default=None, description="created at or after")
    created_before: QuerySince | None = Field(default=None, description="created before")
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Cursor | None = None


class BulkAction(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"


class BulkIn(_In):
    """Either ``ids`` or ``filter`` (resolved to at most ``limit`` tasks after ``cursor``, the
    ``next_cursor`` of the previous call)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {  # a cursor goes with a filter only
                    "required": ["ids"],
                    "properties": {
                        "ids": {"type": "array"},
                        "filter": {"type": "null"},
                        "cursor": {"type": "null"},
                    },
                },
                {
                    "required": ["filter"],
                    "properties": {"filter": {"type": "object"}, "ids": {"type": "null"}},
                },
            ]
        }
    )

    ids: Annotated[list[UUID], Field(max_length=MAX_BULK)] | None = None
    filter: TaskFilter | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_BULK), NUMBER] = 1000
    cursor: Cursor | None = Field(default=None, description="with filter: go on from here")

    @model_validator(mode="after")
    def _one_selector(self) -> Self:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or filter")
        if self.cursor is not None and self.filter is None:
            raise ValueError("cursor goes with filter (the next_cursor of a call by filter)")
        return self


# ---------------------------------------------------------------------- WebSocket control


class SubscribeOp(_In):
    op: Literal["subscribe", "unsubscribe"]
    task_ids: Annotated[list[UUID], Field(max_length=MAX_BULK)] = []
    queues: Annotated[list[Name], Field(max_length=1000)] = []
    all: bool = False


class StatsOp(_In):
    op: Literal["stats"]
    interval: Annotated[float, Field(ge=0, le=3600), NUMBER] | None = Field(
        None, description="seconds between stats messages (at least 0.1); 0 or null: stop"
    )


class PingOp(_In):
    op: Literal["ping"]


class AuthOp(_In):
    """The API key of a socket whose upgrade carried none (browsers cannot set headers):
    read as the first message only (``tq.api.ws_auth``); later, it is answered, not read."""

    op: Literal["auth"]
    api_key: Annotated[str, Field(max_length=256)]


Control = Annotated[SubscribeOp | StatsOp | PingOp | AuthOp, Field(discriminator="op")]
CONTROL: TypeAdapter[SubscribeOp | StatsOp | PingOp | AuthOp] = TypeAdapter(Control)


def describe_errors(errors: list[ErrorDetails], limit: int = 3) -> str:
    """Pydantic errors as one line naming each bad field: ``body.priority: ... (got 300)``."""
    parts = []
    for e in errors[:limit]:
        where = ".".join(str(p) for p in e["loc"]) or "message"
        got = e.get("input")
        shown = "" if got is None or isinstance(got, dict) else f" (got {_short(got)})"
        parts.append(f"{where}: {e['msg']}{shown}")
    more = len(errors) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
