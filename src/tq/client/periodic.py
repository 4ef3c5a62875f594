"""``@tq.periodic``: run a task on a cron expression or a fixed interval.

``@tq.periodic("*/5 * * * *")`` (or ``interval=30``) over a ``@tq.task`` (or a plain function,
made a task with the defaults) attaches a schedule to it; the worker serving the task declares
it with the broker when it starts, replacing any schedule of the same name. A declaration
whose definition is unchanged keeps the broker's next firing time, so restarting workers (or
running several) neither shifts nor doubles a firing. The schedule's name is the task's type
unless given; a task with two schedules names them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, ParamSpec, TypeVar, overload

from tq.client.schedules import ScheduleCalls, schedule_spec
from tq.client.task import AsyncTaskFunction, SyncTaskFunction, TaskFunction, task
from tq.protocol import ScheduleInfo, ScheduleSpec

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=TaskFunction[Any, Any])


class _Periodic:
    def __init__(self, make: Callable[[TaskFunction[Any, Any]], ScheduleSpec]) -> None:
        self.make = make

    @overload
    def __call__(self, fn: T, /) -> T: ...
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
    def __call__(
        self, fn: TaskFunction[Any, Any] | Callable[..., Any], /
    ) -> TaskFunction[Any, Any]:
        made: TaskFunction[Any, Any] = fn if isinstance(fn, TaskFunction) else task(fn)
        spec = self.make(made)
        taken = [s.name for s in made.schedules]
        if spec.name in taken:
            raise ValueError(
                f"task {made.name} has a schedule named {spec.name!r} already: give each "
                "@tq.periodic of one task its own name=..."
            )
        made.schedules = (*made.schedules, spec)
        return made


def periodic(
    cron: str | None = None,
    *,
    interval: float | None = None,
    timezone: str = "UTC",
    name: str | None = None,
    args: Sequence[object] = (),
    kwargs: Mapping[str, object] | None = None,
    missed: Literal["skip", "once", "all"] = "skip",
    expires_after: float | None = None,
    tags: Mapping[str, str] | None = None,
) -> _Periodic:
    """Submit the task at every ``cron`` time (in ``timezone``) or every ``interval`` seconds,
    called with ``args`` and ``kwargs``; ``missed``: what a broker that was down does with the
    firings it missed (skip them, fire once, fire all). The broker judges the expression and
    the zone when the worker declares the schedule (a bad one stops the worker, naming it)."""
    if (cron is None) == (interval is None):
        raise ValueError("@tq.periodic: give a cron expression or interval=..., exactly one")

    def make(t: TaskFunction[Any, Any]) -> ScheduleSpec:
        o = t.submit_options
        return schedule_spec(
            name or t.name, t.name, t.encode_args(args, kwargs or {}), cron=cron,
            interval=interval, timezone=timezone, queue=o.get("queue", "default"),
            priority=o.get("priority", 128), max_retries=o.get("max_retries"),
            timeout=o.get("timeout"), retry=o.get("retry"), tags=tags,
            expires_after=expires_after, missed=missed,
        )  # fmt: skip

    return _Periodic(make)


async def declare(client: ScheduleCalls, tasks: Sequence[object]) -> list[ScheduleInfo]:
    """Declare the schedules of ``tasks`` (those that are ``TaskFunction``s with some),
    replacing schedules of the same names: what a worker does when it starts."""
    declared: list[ScheduleInfo] = []
    for t in tasks:
        if isinstance(t, TaskFunction):
            for spec in t.schedules:
                declared.append(await client.create_schedule(spec, replace=True))
    return declared
