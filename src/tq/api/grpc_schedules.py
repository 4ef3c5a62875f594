"""Schedules between protobuf and the service's records (``CreateSchedule``, ``ListSchedules``,
``GetSchedule``, ``PauseSchedule``, ``ResumeSchedule``, ``DeleteSchedule``): a request is
checked against ``ScheduleSpec``'s constraints, so a bad field is INVALID_ARGUMENT naming it,
as over the other doors.
"""

from __future__ import annotations

from typing import Any, Final

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc_convert import convert_checked
from tq.protocol.records import ScheduleInfo, ScheduleSpec

_OPTIONAL: Final = (
    "cron", "interval", "timezone", "queue", "priority", "max_retries", "timeout",
    "expires_after", "missed",
)  # fmt: skip


def schedule_spec_from_pb(spec: pb.ScheduleSpec) -> ScheduleSpec:
    fields: dict[str, Any] = {
        "name": spec.name,
        "task_type": spec.task_type,
        "payload": spec.payload,
        "paused": spec.paused,
    }
    for name in _OPTIONAL:
        if spec.HasField(name):
            fields[name] = getattr(spec, name)
    if spec.HasField("retry"):
        r = spec.retry
        fields["retry"] = {
            "base": r.base, "factor": r.factor, "max_delay": r.max_delay, "jitter": r.jitter,
        }  # fmt: skip
    if spec.tags:
        fields["tags"] = dict(spec.tags)
    result: ScheduleSpec = convert_checked(fields, ScheduleSpec, "schedule")
    return result


def schedule_to_pb(s: ScheduleInfo) -> pb.Schedule:
    r = s.retry
    spec = pb.ScheduleSpec(
        name=s.name, cron=s.cron, interval=s.interval, timezone=s.timezone,
        task_type=s.task_type, queue=s.queue, payload=s.payload, priority=s.priority,
        max_retries=s.max_retries, timeout=s.timeout,
        retry=None if r is None else pb.RetryPolicy(
            base=r.base, factor=r.factor, max_delay=r.max_delay, jitter=r.jitter
        ),
        tags=s.tags or {}, expires_after=s.expires_after, missed=s.missed, paused=s.paused,
    )  # fmt: skip
    return pb.Schedule(
        spec=spec, next_at=s.next_at, last_fired_at=s.last_fired_at, fired=s.fired,
        created_at=s.created_at, updated_at=s.updated_at,
    )  # fmt: skip
