"""Priority aging: a pending task gains ``step`` priority every ``interval`` seconds it waits.

The effective priority is computed when a claim compares tasks, never stored: rewriting a
million pending tasks every interval would cost more than the claims it serves. Within one
priority bucket the head has waited longest (``Task.queued_at`` never decreases with
``seq``), so the best task of a queue is among its bucket heads (at most 256), each compared
by ``(effective priority, -seq)``: FIFO among equals, whatever their submitted priority.
"""

from __future__ import annotations

import math

import msgspec

from tq.core.model import PRIORITY_MAX, Task
from tq.core.queue import ReadyQueue
from tq.errors import ValidationError


class AgingPolicy(msgspec.Struct, array_like=True, frozen=True):
    """What a claim ages by; carried in ``ClaimTasks`` (the machine reads no configuration).

    ``cap``: aging raises a priority up to this, never beyond (a task submitted above it keeps
    its own). ``exempt_queues``: queues of this claim whose tasks do not age.
    """

    interval: float
    step: int
    cap: int = PRIORITY_MAX
    exempt_queues: tuple[str, ...] = ()

    def validate(self) -> None:
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise ValidationError(f"aging interval must be > 0 seconds, got {self.interval}")
        if not 1 <= self.step <= PRIORITY_MAX:
            raise ValidationError(f"aging step must be within 1..255, got {self.step}")
        if not 0 <= self.cap <= PRIORITY_MAX:
            raise ValidationError(f"aging cap must be within 0..255, got {self.cap}")


def effective_priority(task: Task, policy: AgingPolicy | None, now: float) -> int:
    """``min(cap, priority + step * floor(waited / interval))`` for a pending task that ages;
    its submitted priority otherwise (and never less)."""
    p = task.priority
    if policy is None or not task.aging or p >= policy.cap:
        return p
    since = task.queued_at if task.queued_at is not None else task.updated_at
    waited = now - since
    if waited < policy.interval:
        return p
    return min(policy.cap, p + policy.step * int(waited // policy.interval))


def pop_best_aged(queues: list[ReadyQueue], policy: AgingPolicy, now: float) -> Task | None:
    """Pop the best task across queues by effective priority, then lowest seq (oldest).

    O(non-empty buckets) per task: each queue's bucket heads are compared, the best task of
    an exempt queue alone (its order is the submitted one)."""
    best: ReadyQueue | None = None
    best_task: Task | None = None
    best_key = (-1, 0)
    exempt = policy.exempt_queues
    for q in queues:
        if q.name in exempt:
            t = q.peek()
            if t is not None and (t.priority, -t.seq) > best_key:
                best, best_task, best_key = q, t, (t.priority, -t.seq)
            continue
        for t in q.heads():
            key = (effective_priority(t, policy, now), -t.seq)
            if key > best_key:
                best, best_task, best_key = q, t, key
    if best is None or best_task is None:
        return None
    best.take(best_task)
    return best_task
