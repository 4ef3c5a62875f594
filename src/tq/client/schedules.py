"""Schedules on AsyncClient: create, list, show, pause, resume, delete (one message each).

The broker judges every field (a bad cron expression, an unknown time zone, both or neither
of ``cron`` and ``interval``: ValidationError naming it). Each call reconnects until its
deadline; all but create are sent again after a lost connection (a create with ``replace``
is too: replacing with the same definition changes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from tq.client.session import Session
from tq.errors import ValidationError
from tq.protocol import (
    RetrySpec,
    ScheduleCreate,
    ScheduleDelete,
    ScheduleGet,
    ScheduleInfo,
    ScheduleList,
    ScheduleListReply,
    SchedulePause,
    ScheduleReply,
    ScheduleResume,
    ScheduleSpec,
)
from tq.protocol.records import DEFAULT_PRIORITY, DEFAULT_QUEUE


def schedule_spec(
    name: str,
    task_type: str,
    payload: bytes = b"",
    *,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str = "UTC",
    queue: str = DEFAULT_QUEUE,
    priority: int = DEFAULT_PRIORITY,
    max_retries: int | None = None,
    timeout: float | None = None,
    retry: RetrySpec | None = None,
    tags: Mapping[str, str] | None = None,
    expires_after: float | None = None,
    missed: Literal["skip", "once", "all"] = "skip",
    paused: bool = False,
) -> ScheduleSpec:
    """A schedule to create: every ``cron`` time (in ``timezone``) or every ``interval``
    seconds, submit ``task_type`` with ``payload`` and the task options; ``missed`` says what
    a broker that was down does with the firings it missed (skip, once, all)."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ValidationError(f"payload of {name!r} must be bytes, got {type(payload).__name__}")
    return ScheduleSpec(
        name=name, cron=cron, interval=None if interval is None else float(interval),
        timezone=timezone, task_type=task_type, queue=queue, payload=bytes(payload),
        priority=priority, max_retries=max_retries, timeout=timeout, retry=retry,
        tags=dict(tags) if tags else None, expires_after=expires_after, missed=missed,
        paused=paused,
    )  # fmt: skip


class ScheduleCalls:
    """Mixed into AsyncClient."""

    _session: Session

    async def create_schedule(self, spec: ScheduleSpec, *, replace: bool = False) -> ScheduleInfo:
        """Create a schedule (``schedule_spec`` makes one). SCHEDULE_ALREADY_EXISTS if its name
        is taken, unless ``replace``: a definition unchanged then keeps its next firing time."""
        reply = await self._session.call(
            lambda rid: ScheduleCreate(request_id=rid, schedule=spec, replace=replace),
            ScheduleReply,
            retry=replace,
        )
        return reply.schedule

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name, with its next firing time."""
        reply = await self._session.call(
            lambda rid: ScheduleList(request_id=rid), ScheduleListReply, retry=True
        )
        return list(reply.schedules)

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule (SCHEDULE_NOT_FOUND if there is none of that name)."""
        reply = await self._session.call(
            lambda rid: ScheduleGet(request_id=rid, name=name), ScheduleReply, retry=True
        )
        return reply.schedule

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """No firing until resumed."""
        reply = await self._session.call(
            lambda rid: SchedulePause(request_id=rid, name=name), ScheduleReply, retry=True
        )
        return reply.schedule

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire again, from now on (the firings missed while paused are not made)."""
        reply = await self._session.call(
            lambda rid: ScheduleResume(request_id=rid, name=name), ScheduleReply, retry=True
        )
        return reply.schedule

    async def delete_schedule(self, name: str) -> ScheduleInfo:
        """Delete a schedule (the tasks it submitted stay); returns it as it was."""
        reply = await self._session.call(
            lambda rid: ScheduleDelete(request_id=rid, name=name), ScheduleReply
        )
        return reply.schedule
