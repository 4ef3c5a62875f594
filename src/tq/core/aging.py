"""Priority aging: a pending task gains ``step`` priority every ``interval`` seconds it waits.

The effective priority is computed when a claim compares tasks, never stored: rewriting a
million pending tasks every interval would cost more than the claims it serves. Within one
priority bucket the head has waited longest (``Task.queued_at`` never decreases with
``seq``), so the best task of a queue is among its bucket heads (at most 256), each compared
by ``(effective priority, -seq)``: FIFO among equals, whatever their submitted priority. One
claim ranks those heads once (``AgedPicker``) and replaces only the head it took.
"""

from __future__ import annotations

import heapq
import math

import msgspec

from tq.core.model import PRIORITY_MAX, Task
from tq.core.queue import WHOLE, ReadyQueue
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


class AgedPicker:
    """The tasks of one claim, best first by effective priority, then lowest seq (oldest).

    Built once per claim from every bucket head of the claimed queues (O(B) for B non-empty
    buckets; an exempt queue offers its best task alone, its order being the submitted one),
    then each ``pop`` costs O(log B): the bucket it took from offers its next head. Valid for
    one command, while nothing but its own pops changes the queues (a task put back ends the
    claim)."""

    __slots__ = ("_heap", "_now", "_policy", "_queues")

    def __init__(self, queues: list[ReadyQueue], policy: AgingPolicy, now: float) -> None:
        self._queues = queues
        self._policy = policy
        self._now = now
        self._heap: list[tuple[int, int, int, int, Task]] = []
        exempt = policy.exempt_queues
        for qi, q in enumerate(queues):
            if q.name in exempt:
                self._offer(qi, WHOLE, q.peek())
            else:
                for source, task in q.heads():
                    self._offer(qi, source, task)
        heapq.heapify(self._heap)

    def _offer(self, qi: int, source: int, task: Task | None) -> None:
        if task is not None:
            rank = (
                task.priority
                if source == WHOLE
                else effective_priority(task, self._policy, self._now)
            )
            self._heap.append((-rank, task.seq, qi, source, task))

    def pop(self) -> Task | None:
        heap = self._heap
        if not heap:
            return None
        _, _, qi, source, task = heapq.heappop(heap)
        q = self._queues[qi]
        q.take(task)
        nxt = q.head_of(source)
        if nxt is not None:
            rank = (
                nxt.priority
                if source == WHOLE
                else effective_priority(nxt, self._policy, self._now)
            )
            heapq.heappush(heap, (-rank, nxt.seq, qi, source, nxt))
        return task
