"""Schedules for every door (create, pause, resume, delete: each a command carrying the firing
times computed here) and the job that fires them, on the leader only.

The job sleeps until the earliest next firing (at most ``broker.scheduler_interval_s``) and
fires what is due in one ``FireSchedules`` command. A firing later than
``broker.schedule_misfire_grace_s`` after its time is missed (the broker was down, or
overloaded) and follows its schedule's policy: ``skip`` fires none of the missed times,
``once`` one for the latest, ``all`` each of them (the latest
``broker.schedule_catch_up_max``). A paused schedule does not fire; resumed, it fires from now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tq.broker.convert import check_tags
from tq.broker.cron import Timing
from tq.config import BrokerSettings
from tq.core import commands as c
from tq.core.ids import TaskId
from tq.core.model import NO_TAGS, RetryPolicy
from tq.core.replies import ItemCodes
from tq.core.schedules import Missed, Schedule, TaskTemplate, validate_schedule
from tq.errors import ErrorCode, NotFoundError, TqError, ValidationError
from tq.protocol.records import RetrySpec, ScheduleInfo, ScheduleSpec

if TYPE_CHECKING:
    from tq.broker.service import BrokerService

log = logging.getLogger(__name__)


def schedule_info(s: Schedule) -> ScheduleInfo:
    t = s.template
    r = t.retry
    return ScheduleInfo(
        name=s.name, cron=s.cron, interval=s.interval, timezone=s.timezone,
        task_type=t.task_type, queue=t.queue, payload=t.payload, priority=t.priority,
        max_retries=t.max_retries, timeout=t.timeout,
        retry=None if r is None else RetrySpec(
            base=r.base, factor=r.factor, max_delay=r.max_delay, jitter=r.jitter
        ),
        tags=dict(t.tags) or None, expires_after=t.expires_after, missed=s.missed.value,
        paused=s.paused, next_at=s.next_at, last_fired_at=s.last_fired_at, fired=s.fired,
        created_at=s.created_at, updated_at=s.updated_at,
    )  # fmt: skip


def new_schedule(spec: ScheduleSpec, now: float, b: BrokerSettings) -> Schedule:
    """A wire spec as a Schedule whose first firing is after ``now`` (none for a cron
    expression naming no date that exists: it never fires, as in Vixie cron); ValidationError
    naming the first bad field (cron expression, time zone, tags, payload size, ...)."""
    if spec.interval is not None and spec.timezone != "UTC":
        raise ValidationError(
            "timezone: applies to cron schedules only (an interval counts elapsed seconds)"
        )
    timing = Timing(spec.cron, spec.interval, spec.timezone)
    timing.check()
    tags = spec.tags or NO_TAGS
    tag_bytes = check_tags(tags, "schedule") if tags else 0
    if len(spec.payload) + tag_bytes > b.max_payload_size_bytes:
        raise ValidationError(
            f"payload: {len(spec.payload)} bytes (and {tag_bytes} of tags) are above the limit "
            f"of {b.max_payload_size_bytes} bytes (broker.max_payload_size_bytes)",
            ErrorCode.PAYLOAD_TOO_LARGE,
        )
    r = spec.retry
    template = TaskTemplate(
        spec.task_type, spec.queue, spec.payload, spec.priority, spec.max_retries, spec.timeout,
        None if r is None else RetryPolicy(r.base, r.factor, r.max_delay, r.jitter),
        dict(tags), spec.expires_after,
    )  # fmt: skip
    next_at = None if spec.paused else timing.first_after(now)
    s = Schedule(
        spec.name, spec.cron, spec.interval, spec.timezone, template, Missed(spec.missed),
        spec.paused, next_at, None, 0, now, now,
    )  # fmt: skip
    validate_schedule(s)
    return s


def found(service: BrokerService, name: str) -> Schedule:
    s = service.machine.schedule(name)
    if s is None:
        raise NotFoundError(f"no schedule named {name!r}", ErrorCode.SCHEDULE_NOT_FOUND)
    return s


async def create(service: BrokerService, spec: ScheduleSpec, replace: bool) -> ScheduleInfo:
    now = time.time()
    schedule = new_schedule(spec, now, service.settings.broker)
    _, durable = service.apply(c.CreateSchedule(now, schedule, replace))
    stored = found(service, spec.name)
    await service.confirmed(durable)
    return schedule_info(stored)


async def pause(service: BrokerService, name: str) -> ScheduleInfo:
    _, durable = service.apply(c.PauseSchedule(time.time(), name))
    stored = found(service, name)
    await service.confirmed(durable)
    return schedule_info(stored)


async def resume(service: BrokerService, name: str) -> ScheduleInfo:
    now = time.time()
    next_at = Timing.of(found(service, name)).first_after(now)
    _, durable = service.apply(c.ResumeSchedule(now, name, next_at))
    stored = found(service, name)
    await service.confirmed(durable)
    return schedule_info(stored)


async def delete(service: BrokerService, name: str) -> ScheduleInfo:
    last = schedule_info(found(service, name))
    _, durable = service.apply(c.DeleteSchedule(time.time(), name))
    await service.confirmed(durable)
    return last


# ---------------------------------------------------------------------------- the job


def plan(s: Schedule, now: float, b: BrokerSettings, new_id: Callable[[float], TaskId]) -> c.Firing:
    """The firing of ``s`` (due at or before ``now``) under its missed policy."""
    assert s.next_at is not None
    most = b.schedule_catch_up_max if s.missed is Missed.ALL else 1
    times, next_at = Timing.of(s).due(s.next_at, now, most)
    if s.missed is Missed.SKIP:
        times = [t for t in times if now - t <= b.schedule_misfire_grace_s]
    return c.Firing(s.name, s.next_at, tuple(times), tuple(new_id(now) for _ in times), next_at)


def fire_due(service: BrokerService, now: float) -> bool:
    """Fire every schedule due at ``now``, in one command; False if one could not fire (its
    refusal logged): the job then waits a whole interval before trying again."""
    b = service.settings.broker
    firings: list[c.Firing] = []
    ok = True
    for s in service.machine.schedules():
        if s.next_at is None or s.next_at > now:
            continue
        try:
            firings.append(plan(s, now, b, service.ids.new))
        except TqError as e:  # e.g. a zone this node's tz database lacks (after a failover)
            log.error("schedule.unplannable name=%s error=%s", s.name, e.message)
            ok = False
    if not firings:
        return ok
    cmd = c.FireSchedules(now, tuple(firings), b.backpressure_threshold, b.default_max_retries)
    reply, _ = service.run(cmd, ItemCodes)
    for f, code in zip(firings, reply.codes, strict=True):
        if code:
            log.warning("schedule.not_fired name=%s code=%s", f.name, ErrorCode(code).name)
            ok = False
        elif f.times:
            log.info("schedule.fired name=%s tasks=%d", f.name, len(f.times))
            if (ins := service.instruments) is not None:
                ins.schedule_firings += len(f.times)
    return ok


async def schedule_runner(service: BrokerService) -> None:
    """Fire schedules when due: sleeps until the earliest next firing (at most one
    scheduler interval); skips its turn unless this node may write (leader, storage up)."""
    interval = service.settings.broker.scheduler_interval_s
    ok = True
    while True:
        due = service.machine.next_schedule_at()
        wait = interval
        if ok and due is not None and service.may_write():
            wait = min(interval, max(0.0, due - time.time()))
        await asyncio.sleep(wait)
        due = service.machine.next_schedule_at()
        if due is not None and due <= time.time() and service.may_write():
            ok = fire_due(service, time.time())
