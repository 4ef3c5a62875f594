"""Flow control: paused queues, rate limits and concurrency caps, enforced when tasks are claimed.

Theory of operation:
- A paused queue is no claim's candidate: its tasks stay pending, submits go on.
- A task type with a limit has a lane per queue: a ``ReadyQueue`` of that type's pending
  tasks in that queue, made when the limit is set and merged back when it is cleared. A
  claim picks the best task among its candidates (each open queue's own ReadyQueue, plus the
  lanes whose type has room now: a token, a running slot), so a type at its limit is skipped
  without blocking the tasks behind it and without looking at a single pending task.
- A queue's cap counts its tasks in progress (the machine's per-queue counts); a type's limit
  counts its own in ``running`` (rebuilt from the live tasks when set or restored).
- A token bucket is machine state: ``tokens`` as of ``refilled_at``. A claim refills it from
  the command's ``now`` only when it spends a token, and the record is written then, so the
  log replays, and storage restores, to the same bits. With nothing configured ``active`` is
  False and the machine skips all of this.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.layout import (
    Family,
    FlowLimit,
    QueuePause,
    encode,
    limit_key,
    queue_pause_key,
)
from tq.core.model import Task, TaskState
from tq.core.queue import ReadyQueue
from tq.errors import ErrorCode, NotFoundError, ValidationError

QUEUE, TYPE = "queue", "type"
SCOPES = (QUEUE, TYPE)
#: The most a limit may say (rates in tasks per second, bursts and caps in tasks).
MAX_RATE = 1e6
MAX_COUNT = 2**31 - 1
_IN_PROGRESS = TaskState.IN_PROGRESS


def tokens_at(limit: FlowLimit, now: float) -> float:
    """The tokens of a rate-limited bucket at ``now`` (a clock that went back refills none)."""
    assert limit.rate is not None
    if now <= limit.refilled_at:
        return limit.tokens
    return min(float(limit.burst), limit.tokens + (now - limit.refilled_at) * limit.rate)


class Flow:
    """The flow-control state of one machine (the machine owns it and calls it)."""

    __slots__ = ("active", "lanes", "paused", "queue_caps", "ready", "running", "spent", "types")

    def __init__(self) -> None:
        self.paused: dict[str, float] = {}  # queue -> paused at
        self.queue_caps: dict[str, FlowLimit] = {}
        self.types: dict[str, FlowLimit] = {}  # limited task types
        self.lanes: dict[str, dict[str, ReadyQueue]] = {}  # type -> queue -> its lane
        self.running: dict[str, int] = {}  # limited type -> its tasks in progress
        #: Queues where claims may find tasks again (resumed, a slot freed, a limit lifted)
        #: since the broker last took them (``take_ready``): its parked claims are served.
        self.ready: set[str] = set()
        self.spent: dict[str, FlowLimit] = {}  # buckets spent in this claim: to be written
        self.active = False

    def _changed(self) -> None:
        self.active = bool(self.paused or self.queue_caps or self.types)

    # ------------------------------------------------------------------ routing and claims

    def lane(self, task: Task) -> ReadyQueue | None:
        """The lane a pending task of a limited type lives in (None: its queue's own)."""
        lanes = self.lanes.get(task.task_type)
        if lanes is None:
            return None
        lane = lanes.get(task.queue)
        if lane is None:
            lane = lanes[task.queue] = ReadyQueue(task.queue)
        return lane

    def _type_open(self, task_type: str, limit: FlowLimit, now: float) -> bool:
        if limit.concurrency is not None and self.running[task_type] >= limit.concurrency:
            return False
        return limit.rate is None or tokens_at(limit, now) >= 1.0

    def _queue_open(self, name: str, running_in: Callable[[str], int]) -> bool:
        if name in self.paused:
            return False
        cap = self.queue_caps.get(name)
        return cap is None or cap.concurrency is None or running_in(name) < cap.concurrency

    def candidates(
        self,
        names: Iterable[str],
        queues: dict[str, ReadyQueue],
        running_in: Callable[[str], int],
        now: float,
    ) -> list[ReadyQueue]:
        """The ReadyQueues a claim on ``names`` may take from now (cost: the lanes, never
        the tasks)."""
        out: list[ReadyQueue] = []
        for name in names:
            if not self._queue_open(name, running_in):
                continue
            q = queues.get(name)
            if q is not None:
                out.append(q)
            for task_type, lanes in self.lanes.items():
                lane = lanes.get(name)
                if (
                    lane is not None
                    and lane.size
                    and self._type_open(task_type, self.types[task_type], now)
                ):
                    out.append(lane)
        return out

    def claimable(
        self,
        name: str,
        queues: dict[str, ReadyQueue],
        running_in: Callable[[str], int],
        now: float,
    ) -> bool:
        """Whether a claim on ``name`` would find a task now."""
        return any(q.size for q in self.candidates((name,), queues, running_in, now))

    def took(self, task: Task, now: float) -> None:
        """``task`` was claimed: count it, spend a token of its type."""
        limit = self.types.get(task.task_type)
        if limit is None:
            return
        self.running[task.task_type] += 1
        if limit.rate is not None:
            limit.tokens = tokens_at(limit, now) - 1.0
            limit.refilled_at = max(now, limit.refilled_at)
            self.spent[task.task_type] = limit

    def write_spent(self, fx: Effects) -> None:
        for limit in self.spent.values():
            fx.put(Family.METADATA, limit_key(TYPE, limit.name), encode(limit))
        self.spent.clear()

    def left(self, task: Task) -> None:
        """``task`` leaves the in-progress state: its slot frees (parked claims may take
        the next task of its type or queue)."""
        task_type = task.task_type
        if task_type in self.types:
            self.running[task_type] -= 1
            if self.types[task_type].concurrency is not None:
                self.ready.update(q for q, lane in self.lanes[task_type].items() if lane.size)
        cap = self.queue_caps.get(task.queue)
        if cap is not None and cap.concurrency is not None:
            self.ready.add(task.queue)

    def take_ready(self) -> set[str]:
        ready, self.ready = self.ready, set()
        return ready

    def next_refill_at(
        self, queues: dict[str, ReadyQueue], running_in: Callable[[str], int], now: float
    ) -> float | None:
        """When the earliest bucket that alone holds back pending tasks of an open queue
        has a token again (None: no such bucket)."""
        best: float | None = None
        for task_type, limit in self.types.items():
            if limit.rate is None or tokens_at(limit, now) >= 1.0:
                continue
            if limit.concurrency is not None and self.running[task_type] >= limit.concurrency:
                continue  # its cap holds it back: a finishing task marks its queues ready
            if not any(
                lane.size and self._queue_open(q, running_in)
                for q, lane in self.lanes[task_type].items()
            ):
                continue
            at = limit.refilled_at + (1.0 - limit.tokens) / limit.rate
            best = at if best is None else min(best, at)
        return best

    # ------------------------------------------------------------------ commands

    def pause(self, cmd: c.PauseQueue, fx: Effects) -> None:
        _check_name("queue", cmd.queue)
        if cmd.queue not in self.paused:
            self.paused[cmd.queue] = cmd.now
            fx.put(
                Family.METADATA, queue_pause_key(cmd.queue), encode(QueuePause(cmd.queue, cmd.now))
            )
            self._changed()

    def resume(self, cmd: c.ResumeQueue, fx: Effects) -> None:
        _check_name("queue", cmd.queue)
        if self.paused.pop(cmd.queue, None) is not None:
            fx.delete(Family.METADATA, queue_pause_key(cmd.queue))
            self.ready.add(cmd.queue)
            self._changed()

    def set_limit(
        self, cmd: c.SetLimit, queues: dict[str, ReadyQueue], live: Iterable[Task], fx: Effects
    ) -> None:
        limit = _validated(cmd)
        if cmd.scope == QUEUE:
            self.queue_caps[cmd.name] = limit
            self.ready.add(cmd.name)
        else:
            if cmd.name not in self.types:
                self.lanes[cmd.name] = _split(queues, cmd.name)
                self.running[cmd.name] = sum(
                    1 for t in live if t.task_type == cmd.name and t.state is _IN_PROGRESS
                )
            self.types[cmd.name] = limit
            self.ready.update(q for q, lane in self.lanes[cmd.name].items() if lane.size)
        fx.put(Family.METADATA, limit_key(cmd.scope, cmd.name), encode(limit))
        self._changed()

    def clear_limit(self, cmd: c.ClearLimit, queues: dict[str, ReadyQueue], fx: Effects) -> None:
        _check_scope(cmd.scope)
        held = self.queue_caps if cmd.scope == QUEUE else self.types
        if cmd.name not in held:
            raise NotFoundError(f"no limit on {cmd.scope} {cmd.name!r}", ErrorCode.LIMIT_NOT_FOUND)
        del held[cmd.name]
        if cmd.scope == QUEUE:
            self.ready.add(cmd.name)
        else:
            del self.running[cmd.name]
            self.ready.update(_merge(queues, self.lanes.pop(cmd.name)))
        fx.delete(Family.METADATA, limit_key(cmd.scope, cmd.name))
        self._changed()

    # ------------------------------------------------------------------ recovery and views

    def restore(self, pauses: Iterable[QueuePause], limits: Iterable[FlowLimit]) -> None:
        """Load stored records (before the pending tasks are pushed: they go to the lanes)."""
        for p in pauses:
            self.paused[p.queue] = p.paused_at
        for limit in limits:
            if limit.scope == QUEUE:
                self.queue_caps[limit.name] = limit
            else:
                self.types[limit.name] = limit
                self.lanes[limit.name] = {}
                self.running[limit.name] = 0
        self._changed()

    def restored_running(self, task: Task) -> None:
        if task.task_type in self.running:
            self.running[task.task_type] += 1

    def limits(self) -> list[FlowLimit]:
        """Every limit, queues first, by name (the records themselves: never mutate them)."""
        return [self.queue_caps[n] for n in sorted(self.queue_caps)] + [
            self.types[n] for n in sorted(self.types)
        ]

    def snapshot(self) -> dict[str, object]:
        return {
            "paused": sorted(self.paused.items()),
            "limits": [encode(limit) for limit in self.limits()],
            "running": sorted(self.running.items()),
            "lanes": {
                f"{q}/{t}": order
                for t, lanes in sorted(self.lanes.items())
                for q, lane in sorted(lanes.items())
                if (order := [task.id for task in lane.ordered()])
            },
        }


def _split(queues: dict[str, ReadyQueue], task_type: str) -> dict[str, ReadyQueue]:
    """Move the pending tasks of ``task_type`` out of each queue into a lane of their own."""
    lanes: dict[str, ReadyQueue] = {}
    for name in sorted(queues):
        tasks = list(queues[name].ordered())
        if not any(t.task_type == task_type for t in tasks):
            continue
        main, lane = ReadyQueue(name), ReadyQueue(name)
        for t in tasks:
            (lane if t.task_type == task_type else main).push(t)
        queues[name] = main
        lanes[name] = lane
    return lanes


def _merge(queues: dict[str, ReadyQueue], lanes: dict[str, ReadyQueue]) -> list[str]:
    """Put the lanes' tasks back in their queues, each at the place its seq gives it."""
    merged: list[str] = []
    for name in sorted(lanes):
        lane = lanes[name]
        if not lane.size:
            continue
        main = queues.get(name)
        tasks = [*lane.ordered(), *(main.ordered() if main is not None else ())]
        tasks.sort(key=lambda t: (-t.priority, t.seq))
        q = queues[name] = ReadyQueue(name)
        for t in tasks:
            q.push(t)
        merged.append(name)
    return merged


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValidationError(f"limit scope must be queue or type, got {scope!r}")


def _check_name(what: str, name: str) -> None:
    if not name:
        raise ValidationError(f"{what} must not be empty")


def _validated(cmd: c.SetLimit) -> FlowLimit:
    _check_scope(cmd.scope)
    _check_name("queue" if cmd.scope == QUEUE else "task type", cmd.name)
    rate, burst, cap = cmd.rate, cmd.burst, cmd.concurrency
    if rate is None and cap is None:
        raise ValidationError("a limit needs a rate, a concurrency cap, or both")
    if rate is not None:
        if cmd.scope == QUEUE:
            raise ValidationError("rate limits are per task type: a queue takes a concurrency cap")
        if not (math.isfinite(rate) and 0 < rate <= MAX_RATE):
            raise ValidationError(f"rate must be within (0, {MAX_RATE:g}] tasks/s, got {rate}")
        if not 1 <= burst <= MAX_COUNT:
            raise ValidationError(f"burst must be within 1..{MAX_COUNT}, got {burst}")
    elif burst:
        raise ValidationError(f"burst {burst} given without a rate")
    if cap is not None and not 1 <= cap <= MAX_COUNT:
        raise ValidationError(f"concurrency must be within 1..{MAX_COUNT}, got {cap}")
    tokens = float(burst) if rate is not None else 0.0
    return FlowLimit(cmd.scope, cmd.name, cmd.now, rate, burst, cap, tokens, cmd.now)
