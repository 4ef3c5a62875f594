"""JSON shapes the HTTP API accepts (REST bodies and query filters, WebSocket control
messages) and their mapping to the service's records. Ids are UUID text; times are unix
seconds or ISO 8601 (naive: UTC); a payload is ``payload`` (UTF-8 text) or ``payload_base64``.
Every bound the core enforces is repeated here, so bad input is a 422 that names the field.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from tq.broker.requests import MAX_BULK
from tq.core.ids import TaskId
from tq.core.model import TaskState
from tq.protocol.records import (
    MAX_BACKOFF_FACTOR,
    MAX_INSTANT,
    MAX_SECONDS,
    NAME_MAX_LEN,
    RetrySpec,
    TaskSpec,
)

MAX_BATCH = 1000  #: tasks per POST /v1/tasks/batch
_MAX_INT = 2**31 - 1
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _no_surrogates(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


def _instant(value: object) -> object:
    """Unix seconds from a number, a numeric string or an ISO 8601 text (naive: UTC)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            value = _DATETIME.validate_python(value)
        except ValueError:  # pydantic's ValidationError is one
            raise ValueError("expected unix seconds or an ISO 8601 date-time") from None
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            return when.timestamp()
        except (OverflowError, OSError):
            raise ValueError("date-time out of range") from None
    return value


Text = Annotated[str, AfterValidator(_no_surrogates)]
Name = Annotated[Text, Field(min_length=1, max_length=NAME_MAX_LEN)]
Int = Annotated[int, Field(ge=0, le=_MAX_INT)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
Instant = Annotated[
    float,
    BeforeValidator(_instant),
    Field(ge=0, le=MAX_INSTANT),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "format": "date-time"}]}
    ),
]


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
    factor: Annotated[float, Field(ge=1, le=MAX_BACKOFF_FACTOR)] = 2.0
    max_delay: Seconds = 300.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1


class TaskSubmit(_In):
    """One task to submit; ``payload`` (UTF-8 text) or ``payload_base64``, not both."""

    id: UUID | None = None
    task_type: Name
    queue: Name = "default"
    payload: Text | None = None
    payload_base64: str | None = None
    priority: Annotated[int, Field(ge=0, le=255)] = 128
    delay: Seconds | None = None
    scheduled_at: Instant | None = None
    max_retries: Int | None = None
    timeout: Annotated[float, Field(gt=0, le=MAX_SECONDS)] | None = None
    retry: RetryIn | None = None
    depends_on: Annotated[list[UUID], Field(max_length=MAX_BATCH)] = []
    tags: Annotated[dict[Name, Text], Field(max_length=64)] | None = None
    idempotency_key: Name | None = None
    expires_at: Instant | None = None

    @field_validator("payload_base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("payload_base64 is not valid base64") from None
        return value

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
    priority_min: Annotated[int, Field(ge=0, le=255)] | None = None
    priority_max: Annotated[int, Field(ge=0, le=255)] | None = None
    created_after: Instant | None = None
    created_before: Instant | None = None


class TaskFilter(_Filter):
    model_config = ConfigDict(extra="forbid")


class TaskQuery(_Filter):
    """GET /v1/tasks: filters plus paging (follow ``next_cursor`` until it is null)."""

    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Annotated[str, Field(max_length=200)] | None = None


class BulkAction(StrEnum):
    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"


class BulkIn(_In):
    """Either ``ids`` or ``filter`` (resolved to at most ``limit`` tasks)."""

    ids: Annotated[list[UUID], Field(max_length=MAX_BULK)] | None = None
    filter: TaskFilter | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_BULK)] = 1000

    @model_validator(mode="after")
    def _one_selector(self) -> Self:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or filter")
        return self


# ---------------------------------------------------------------------- responses


# ---------------------------------------------------------------------- WebSocket control


class SubscribeOp(_In):
    op: Literal["subscribe", "unsubscribe"]
    task_ids: Annotated[list[UUID], Field(max_length=MAX_BULK)] = []
    queues: Annotated[list[Name], Field(max_length=1000)] = []
    all: bool = False


class StatsOp(_In):
    op: Literal["stats"]
    interval: Annotated[float, Field(ge=0, le=3600)] | None = Field(
        None, description="seconds between stats messages (at least 0.1); 0 or null: stop"
    )


class PingOp(_In):
    op: Literal["ping"]


Control = Annotated[SubscribeOp | StatsOp | PingOp, Field(discriminator="op")]
CONTROL: TypeAdapter[SubscribeOp | StatsOp | PingOp] = TypeAdapter(Control)


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
