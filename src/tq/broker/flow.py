"""Flow control for every door: pause and resume a queue, set, clear and list the rate limits
and concurrency caps (as ``SetLimit``/``ClearLimit`` commands of ``tq.core.flow``), and wake
long-poll claims when flow control, not a new task, lets them take work: a queue resumed, a
capped slot freed, a limit lifted (the machine's ready queues), a rate-limited bucket refilled
(a timer at the machine's next refill time). The service checks permissions before these.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tq.core import commands as c
from tq.core.flow import QUEUE, tokens_at
from tq.core.layout import FlowLimit
from tq.core.machine import Machine
from tq.protocol.records import LimitInfo, LimitSpec, QueueState

if TYPE_CHECKING:
    from tq.broker.service import BrokerService

#: A refill timer fires this long after the computed instant, so the claim it triggers finds
#: the token there despite float rounding (else it would find none and re-arm at once).
REFILL_SLACK_S = 0.001
#: The longest a refill timer waits before the next refill time is computed again.
MAX_REFILL_WAIT_S = 3600.0


def queue_state(machine: Machine, queue: str) -> QueueState:
    at = machine.paused().get(queue)
    return QueueState(queue=queue, paused=at is not None, paused_at=at)


async def pause(service: BrokerService, queue: str, paused: bool) -> QueueState:
    """Pause (or resume) ``queue`` once durable; pausing twice keeps the first time."""
    now = time.time()
    cmd = c.PauseQueue(now, queue) if paused else c.ResumeQueue(now, queue)
    _, durable = service.apply(cmd)
    state = queue_state(service.machine, queue)
    await service.confirmed(durable)
    return state


def default_burst(rate: float) -> int:
    """A second's worth of tasks, at least one: what ``burst`` means when not given."""
    return max(1, math.ceil(rate))


async def set_limit(service: BrokerService, spec: LimitSpec) -> LimitInfo:
    burst = 0
    if spec.rate is not None:
        burst = default_burst(spec.rate) if spec.burst is None else spec.burst
    elif spec.burst is not None:
        burst = spec.burst  # refused by the machine, naming it
    cmd = c.SetLimit(time.time(), spec.scope, spec.name, spec.rate, burst, spec.concurrency)
    _, durable = service.apply(cmd)
    info = limit_info(service.machine, _limit_of(service.machine, spec.scope, spec.name), cmd.now)
    await service.confirmed(durable)
    return info


async def clear_limit(service: BrokerService, scope: str, name: str) -> None:
    _, durable = service.apply(c.ClearLimit(time.time(), scope, name))
    await service.confirmed(durable)


def _limit_of(machine: Machine, scope: str, name: str) -> FlowLimit:
    return next(x for x in machine.limits() if x.scope == scope and x.name == name)


def limit_info(machine: Machine, limit: FlowLimit, now: float) -> LimitInfo:
    if limit.scope == QUEUE:
        running = machine.running_in(limit.name)
    else:
        running = machine.running_of_type(limit.name) or 0
    return LimitInfo(
        scope="queue" if limit.scope == QUEUE else "type",
        name=limit.name,
        rate=limit.rate,
        burst=limit.burst if limit.rate is not None else None,
        concurrency=limit.concurrency,
        running=running,
        tokens=None if limit.rate is None else round(tokens_at(limit, now), 3),
        set_at=limit.set_at,
    )


def limit_infos(machine: Machine, queues: frozenset[str] | None) -> list[LimitInfo]:
    """Every limit, queues first, by name; ``queues``: only the queue limits of those (the
    limits of task types span every queue, so a scoped key sees them too)."""
    now = time.time()
    return [
        limit_info(machine, x, now)
        for x in machine.limits()
        if queues is None or x.scope != QUEUE or x.name in queues
    ]


class RefillTimer:
    """One timer at the next refill time of a bucket that holds parked claims back."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, at: float | None, fire: Callable[[], None]) -> None:
        """Fire at ``at`` (unix seconds; a moment later, see ``REFILL_SLACK_S``), replacing
        the timer set for another time; None: no timer."""
        if at == self._at:
            return
        self.cancel()
        if at is None:
            return
        self._at = at
        # Capped: a bucket that refills slowly (or not within a float) is looked at again.
        delay = min(max(0.0, at - time.time()), MAX_REFILL_WAIT_S) + REFILL_SLACK_S
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire, fire)

    def _fire(self, fire: Callable[[], None]) -> None:
        self._timer = self._at = None
        fire()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._at = None
