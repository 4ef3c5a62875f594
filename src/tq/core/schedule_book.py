"""The state machine's table of schedules and the rules of their commands (create, pause,
resume, delete, fire).

A firing applies only if it answers the schedule's due time (``Firing.due == next_at``): a
duplicate or a firing planned before a change is a no-op. That, with the firing's tasks and
the new ``next_at`` written in one batch, is what makes exactly one task per firing hold
across restarts and failover. The tasks go through the machine's own submit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import msgspec

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId
from tq.core.layout import Family, encode
from tq.core.replies import DONE, Done, ItemCodes
from tq.core.schedules import (
    TAG_FIRE_TIME,
    TAG_SCHEDULE,
    Schedule,
    schedule_key,
    validate_schedule,
)
from tq.core.times import format_rfc3339
from tq.errors import ConflictError, ErrorCode, NotFoundError, TqError

OK = 0
#: Submits the tasks of one firing, all or none (the machine's submit); raises its refusal.
Submit = Callable[[c.SubmitTasks, Effects], object]


class ScheduleBook:
    def __init__(self, schedules: Iterable[Schedule] = ()) -> None:
        self.by_name: dict[str, Schedule] = {s.name: s for s in schedules}

    def get(self, name: str) -> Schedule | None:
        return self.by_name.get(name)

    def all(self) -> list[Schedule]:
        return [self.by_name[n] for n in sorted(self.by_name)]

    def next_at(self) -> float | None:
        """The earliest next firing time of a schedule not paused (None: nothing to fire)."""
        return min(
            (s.next_at for s in self.by_name.values() if s.next_at is not None), default=None
        )

    def _put(self, s: Schedule, fx: Effects) -> None:
        self.by_name[s.name] = s
        fx.put(Family.METADATA, schedule_key(s.name), encode(s))

    def _found(self, name: str) -> Schedule:
        s = self.by_name.get(name)
        if s is None:
            raise NotFoundError(f"no schedule named {name!r}", ErrorCode.SCHEDULE_NOT_FOUND)
        return s

    def create(self, cmd: c.CreateSchedule, fx: Effects) -> Done:
        new = cmd.schedule
        validate_schedule(new)
        old = self.by_name.get(new.name)
        if old is not None:
            if not cmd.replace:
                raise ConflictError(
                    f"a schedule named {new.name!r} already exists (replace it, or delete it "
                    "first)",
                    ErrorCode.SCHEDULE_ALREADY_EXISTS,
                )
            if old.same_definition(new):
                return DONE
            paused = old.paused or new.paused  # a pause is lifted by resume only
            new = msgspec.structs.replace(
                new, paused=paused, next_at=None if paused else new.next_at,
                last_fired_at=old.last_fired_at, fired=old.fired, created_at=old.created_at,
                updated_at=cmd.now,
            )  # fmt: skip
        else:
            new = msgspec.structs.replace(new, created_at=cmd.now, updated_at=cmd.now)
        self._put(new, fx)
        return DONE

    def pause(self, cmd: c.PauseSchedule, fx: Effects) -> Done:
        s = self._found(cmd.name)
        if not s.paused:
            self._put(msgspec.structs.replace(s, paused=True, next_at=None, updated_at=cmd.now), fx)
        return DONE

    def resume(self, cmd: c.ResumeSchedule, fx: Effects) -> Done:
        s = self._found(cmd.name)
        if s.paused:
            new = msgspec.structs.replace(s, paused=False, next_at=cmd.next_at, updated_at=cmd.now)
            self._put(new, fx)
        return DONE

    def delete(self, cmd: c.DeleteSchedule, fx: Effects) -> Done:
        self._found(cmd.name)
        del self.by_name[cmd.name]
        fx.delete(Family.METADATA, schedule_key(cmd.name))
        return DONE

    def fire(self, cmd: c.FireSchedules, fx: Effects, submit: Submit) -> ItemCodes:
        codes: list[int] = []
        for f in cmd.firings:
            s = self.by_name.get(f.name)
            code = _refusal(s, f, cmd.now)
            if code or s is None:
                codes.append(code)
                continue
            if f.times:
                tasks = tuple(
                    _task(s, when, task_id, cmd.default_max_retries)
                    for when, task_id in zip(f.times, f.task_ids, strict=True)
                )
                try:  # refused whole, having changed nothing (the schedule stays due)
                    submit(c.SubmitTasks(cmd.now, tasks, cmd.max_queued), fx)
                except TqError as e:
                    codes.append(e.code)
                    continue
            last = f.times[-1] if f.times else s.last_fired_at
            self._put(
                msgspec.structs.replace(
                    s, next_at=f.next_at, last_fired_at=last, fired=s.fired + len(f.times)
                ),
                fx,
            )
            codes.append(OK)
        return ItemCodes(codes)


def _refusal(s: Schedule | None, f: c.Firing, now: float) -> int:
    """Why firing ``f`` does not apply (0: it does)."""
    if s is None:
        return ErrorCode.SCHEDULE_NOT_FOUND
    if s.paused or s.next_at != f.due:
        return ErrorCode.INVALID_STATE
    times = f.times
    if f.due > now or len(times) != len(f.task_ids):
        return ErrorCode.INVALID_ARGUMENT
    if any(b <= a for a, b in itertools.pairwise(times)):
        return ErrorCode.INVALID_ARGUMENT
    if times and (times[0] < f.due or times[-1] > now):
        return ErrorCode.INVALID_ARGUMENT
    if f.next_at is not None and f.next_at <= (times[-1] if times else f.due):
        return ErrorCode.INVALID_ARGUMENT
    return OK


def _task(s: Schedule, when: float, task_id: TaskId, default_max_retries: int) -> c.NewTask:
    t = s.template
    tags = {**t.tags, TAG_SCHEDULE: s.name, TAG_FIRE_TIME: format_rfc3339(when)}
    return c.NewTask(
        id=task_id,
        task_type=t.task_type,
        queue=t.queue,
        payload=t.payload,
        priority=t.priority,
        max_retries=default_max_retries if t.max_retries is None else t.max_retries,
        scheduled_at=when,
        timeout=t.timeout,
        retry=t.retry,
        tags=tags,
        expires_at=None if t.expires_after is None else when + t.expires_after,
    )
