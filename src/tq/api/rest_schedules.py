"""Cron and interval schedules over REST: ``POST /v1/schedules`` (create, or replace),
``GET /v1/schedules``, ``GET`` and ``DELETE /v1/schedules/{name}``, ``POST
/v1/schedules/{name}/pause`` and ``.../resume``. Thin adapters over the service's schedule
use cases, which check the caller's permission and judge the cron expression and time zone
(a bad one is a 422 naming the field).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import available_timezones

from fastapi import APIRouter, Depends, Path
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from tq.api.fields import (
    NUMBER,
    Base64,
    Count,
    Name,
    PositiveSeconds,
    Priority,
    Text,
    not_both,
)
from tq.api.http_auth import Caller
from tq.api.responses import ErrorResponse, rfc3339, text_and_base64
from tq.api.rest import Service, errors
from tq.api.rest_contract import known_query
from tq.api.schemas import RetryIn
from tq.broker.cron import check_cron
from tq.core.schedules import CRON, NAME
from tq.core.times import format_rfc3339
from tq.errors import ValidationError
from tq.protocol.records import MAX_SECONDS, RetrySpec, ScheduleInfo, ScheduleSpec

router = APIRouter(dependencies=[Depends(known_query)])
NAME_PATTERN = f"^{NAME.pattern}$"
ScheduleName = Annotated[str, Field(pattern=NAME_PATTERN)]
Interval = Annotated[float, Field(ge=1, le=MAX_SECONDS), NUMBER]


def _cron(expr: str) -> str:
    try:
        check_cron(expr)
    except ValidationError as e:
        raise ValueError(e.message) from None
    return expr


#: Checked by the broker's own rules (the message names what is wrong); the schema publishes
#: the grammar (``tq.core.schedules.CRON``) as a pattern.
CronText = Annotated[
    str,
    AfterValidator(_cron),
    WithJsonSchema({"type": "string", "pattern": f"^{CRON.pattern}$"}),
]
#: The zones this broker's tz database holds: the schema names exactly what is accepted.
ZONES: Final = frozenset(available_timezones() | {"UTC"})


def _known_zone(name: str) -> str:
    if name not in ZONES:
        raise ValueError(f"timezone: unknown time zone {name!r} (an IANA name such as UTC)")
    return name


Zone = Annotated[
    str,
    AfterValidator(_known_zone),
    WithJsonSchema({"type": "string", "enum": sorted(ZONES)}),
]
#: Exactly one of cron and interval (null counts as not given); an interval takes no zone.
_ONE_TIMING: dict[str, Any] = {
    "oneOf": [
        {"required": ["cron"], "properties": {"cron": {"type": "string"},
                                              "interval": {"type": "null"}}},
        {"required": ["interval"], "properties": {"interval": {"type": "number"},
                                                  "cron": {"type": "null"},
                                                  "timezone": {"const": "UTC"}}},
    ]
}  # fmt: skip


class ScheduleCreate(BaseModel):
    """A schedule: exactly one of ``cron`` (read in ``timezone``) and ``interval`` (seconds);
    the task each firing submits (``payload`` UTF-8 text or ``payload_base64``, not both); what
    a broker that was down does with the firings it missed (``missed``); ``replace``: replace
    a schedule of that name (one whose definition is unchanged keeps its next run time)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        frozen=True,
        json_schema_extra={"allOf": [not_both("payload", "payload_base64"), _ONE_TIMING]},
    )

    name: ScheduleName
    cron: CronText | None = Field(
        None,
        description='a cron expression (not with interval): "*/5 * * * *", "0 3 * * 1-5", '
        "@hourly; one naming no date that exists (0 0 30 2 *) never fires",
    )
    interval: Interval | None = Field(
        None, description="seconds between firings, at least 1 (not with cron)"
    )
    timezone: Zone = Field(
        "UTC", description="IANA time zone of the cron expression, e.g. Europe/Berlin"
    )
    task_type: Name
    queue: Name = "default"
    payload: Text | None = None
    payload_base64: Base64 | None = None
    priority: Priority = 128
    max_retries: Count | None = None
    timeout: PositiveSeconds | None = None
    retry: RetryIn | None = None
    tags: Annotated[dict[Name, Text], Field(max_length=64)] | None = None
    expires_after: PositiveSeconds | None = Field(
        None, description="each task expires this long after its scheduled time"
    )
    missed: Literal["skip", "once", "all"] = Field(
        "skip",
        description="firings missed while the broker was down: skip them, fire once (the "
        "latest), or fire all (the latest broker.schedule_catch_up_max)",
    )
    # Strict: a JSON boolean, not 0 or "true" (the schema says boolean).
    paused: StrictBool = False
    replace: StrictBool = False

    @model_validator(mode="after")
    def _one_payload(self) -> Self:
        if self.payload is not None and self.payload_base64 is not None:
            raise ValueError("give payload or payload_base64, not both")
        if (self.cron is None) == (self.interval is None):
            raise ValueError(
                "cron, interval: give exactly one of a cron expression or an interval in seconds"
            )
        if self.interval is not None and self.timezone != "UTC":
            raise ValueError(
                "timezone: applies to cron schedules only (an interval counts elapsed seconds)"
            )
        return self

    def spec(self) -> ScheduleSpec:
        if self.payload_base64 is not None:
            payload = base64.b64decode(self.payload_base64)
        else:
            payload = (self.payload or "").encode()
        r = self.retry
        return ScheduleSpec(
            name=self.name, cron=self.cron, interval=self.interval, timezone=self.timezone,
            task_type=self.task_type, queue=self.queue, payload=payload,
            priority=self.priority, max_retries=self.max_retries, timeout=self.timeout,
            retry=None if r is None else RetrySpec(
                base=r.base, factor=r.factor, max_delay=r.max_delay, jitter=r.jitter
            ),
            tags=self.tags, expires_after=self.expires_after, missed=self.missed,
            paused=self.paused,
        )  # fmt: skip


class ScheduleOut(BaseModel):
    """A schedule as listed: its definition, ``next_at`` (null while paused), the scheduled
    time of its latest firing and how many tasks it submitted."""

    model_config = ConfigDict(frozen=True)

    name: str
    cron: str | None = None
    interval: float | None = None
    timezone: str
    task_type: str
    queue: str
    payload: str | None = Field(None, description="the payload if it is valid UTF-8")
    payload_base64: str
    priority: int
    max_retries: int | None = Field(None, description="null: the broker's default")
    timeout: float | None = None
    retry: RetryIn | None = None
    tags: dict[str, str] = {}
    expires_after: float | None = None
    missed: str
    paused: bool
    next_at: float | None = None
    next_at_rfc3339: str | None = None
    last_fired_at: float | None = None
    last_fired_at_rfc3339: str | None = None
    fired: int
    created_at: float
    created_at_rfc3339: str
    updated_at: float
    updated_at_rfc3339: str

    @classmethod
    def of(cls, s: ScheduleInfo) -> ScheduleOut:
        payload, payload_b64 = text_and_base64(s.payload)
        r = s.retry
        return cls(
            name=s.name, cron=s.cron, interval=s.interval, timezone=s.timezone,
            task_type=s.task_type, queue=s.queue, payload=payload,
            payload_base64=payload_b64 or "", priority=s.priority, max_retries=s.max_retries,
            timeout=s.timeout,
            retry=None if r is None else RetryIn(
                base=r.base, factor=r.factor, max_delay=r.max_delay, jitter=r.jitter
            ),
            tags=s.tags or {}, expires_after=s.expires_after, missed=s.missed, paused=s.paused,
            next_at=s.next_at, next_at_rfc3339=rfc3339(s.next_at),
            last_fired_at=s.last_fired_at, last_fired_at_rfc3339=rfc3339(s.last_fired_at),
            fired=s.fired, created_at=s.created_at,
            created_at_rfc3339=format_rfc3339(s.created_at), updated_at=s.updated_at,
            updated_at_rfc3339=format_rfc3339(s.updated_at),
        )  # fmt: skip


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="a schedule's name")]
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no schedule of that name"}
}


@router.post(
    "/v1/schedules",
    status_code=201,
    operation_id="create_schedule",
    responses={
        409: {"model": ErrorResponse, "description": "a schedule has that name (replace it)"},
        **errors(400, 413, 503),
    },
)
async def create_schedule(body: ScheduleCreate, service: Service, who: Caller) -> ScheduleOut:
    """Create a schedule (the submit permission on its queue), or replace one with
    ``replace``."""
    return ScheduleOut.of(await service.create_schedule(who, body.spec(), body.replace))


@router.get("/v1/schedules", operation_id="list_schedules", responses=errors())
async def list_schedules(service: Service, who: Caller) -> SchedulesOut:
    """Every schedule by name, with its next run time."""
    return SchedulesOut(schedules=[ScheduleOut.of(s) for s in service.list_schedules(who)])


@router.get("/v1/schedules/{name}", operation_id="get_schedule", responses={**_UNKNOWN, **errors()})
async def get_schedule(name: NamePath, service: Service, who: Caller) -> ScheduleOut:
    return ScheduleOut.of(service.get_schedule(who, name))


@router.delete(
    "/v1/schedules/{name}",
    operation_id="delete_schedule",
    responses={**_UNKNOWN, **errors(400, 503)},
)
async def delete_schedule(name: NamePath, service: Service, who: Caller) -> ScheduleOut:
    """Delete a schedule (the tasks it submitted stay); answers it as it was."""
    return ScheduleOut.of(await service.delete_schedule(who, name))


@router.post(
    "/v1/schedules/{name}/pause",
    operation_id="pause_schedule",
    responses={**_UNKNOWN, **errors(400, 503)},
)
async def pause_schedule(name: NamePath, service: Service, who: Caller) -> ScheduleOut:
    """No firing until resumed (pausing a paused schedule changes nothing)."""
    return ScheduleOut.of(await service.pause_schedule(who, name))


@router.post(
    "/v1/schedules/{name}/resume",
    operation_id="resume_schedule",
    responses={**_UNKNOWN, **errors(400, 503)},
)
async def resume_schedule(name: NamePath, service: Service, who: Caller) -> ScheduleOut:
    """Fire again from now (the firings missed while paused are not made)."""
    return ScheduleOut.of(await service.resume_schedule(who, name))
