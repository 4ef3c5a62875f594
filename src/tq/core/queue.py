"""Ready queues: highest priority first, FIFO (by ``seq``) within a priority.

Theory of operation:
- One ``ReadyQueue`` per queue name holds a bucket per priority (0-255) and a 256-bit mask of
  non-empty buckets, so the best bucket is ``mask.bit_length() - 1``: O(1).
- A bucket is a deque for tasks arriving in ``seq`` order (the common case: new submits and
  retries take the next seq) plus a small heap for tasks re-entering with an *old* seq (a lease
  expired, a task handed back): they regain their original place. Pop compares the two heads.
  Push/pop are O(1) for the deque and O(log k) for the k re-entered tasks.
- Removal of a pending task (cancel) is lazy: it leaves its entry behind and ``discard`` only
  fixes the counts; ``_valid`` skips entries whose task is no longer pending here. A Task object
  is pending in at most one place, so a stale entry can never be mistaken for a live one.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator

from tq.core.model import PriorityTier, Task, TaskState

_PENDING = TaskState.PENDING
_TIER = tuple(int(PriorityTier.of(p)) for p in range(256))  # indexing beats a call per push


class _Bucket:
    __slots__ = ("fifo", "late")

    def __init__(self) -> None:
        self.fifo: deque[Task] = deque()
        self.late: list[tuple[int, Task]] = []  # heap of (seq, task) re-entering out of order


class ReadyQueue:
    """Pending tasks of one named queue."""

    __slots__ = ("_buckets", "_mask", "_tier_counts", "name", "size")

    def __init__(self, name: str) -> None:
        self.name = name
        self._buckets: dict[int, _Bucket] = {}
        self._mask = 0
        self.size = 0
        self._tier_counts = [0, 0, 0]

    def push(self, task: Task) -> None:
        """Add a pending task at the place its ``seq`` gives it."""
        p = task.priority
        bucket = self._buckets.get(p)
        if bucket is None:
            bucket = self._buckets[p] = _Bucket()
        fifo = bucket.fifo
        if not fifo or fifo[-1].seq < task.seq:
            fifo.append(task)
        else:
            heapq.heappush(bucket.late, (task.seq, task))
        self._mask |= 1 << p
        self.size += 1
        self._tier_counts[_TIER[p]] += 1

    def discard(self, task: Task) -> None:
        """Account for a task that left the pending state other than by ``pop`` (lazy)."""
        self.size -= 1
        self._tier_counts[_TIER[task.priority]] -= 1

    def _valid(self, task: Task, p: int) -> bool:
        return task.state is _PENDING and task.priority == p and task.queue == self.name

    def _head(self, p: int) -> Task | None:
        """Best valid task of bucket ``p`` (stale entries dropped), or None if it is empty."""
        bucket = self._buckets[p]
        fifo, late = bucket.fifo, bucket.late
        while fifo and not self._valid(fifo[0], p):
            fifo.popleft()
        while late and not self._valid(late[0][1], p):
            heapq.heappop(late)
        if fifo:
            if late and late[0][0] < fifo[0].seq:
                return late[0][1]
            return fifo[0]
        if late:
            return late[0][1]
        del self._buckets[p]
        self._mask &= ~(1 << p)
        return None

    def peek(self) -> Task | None:
        """The task ``pop`` would return, without removing it."""
        while self._mask:
            p = self._mask.bit_length() - 1
            task = self._head(p)
            if task is not None:
                return task
        return None

    def pop(self) -> Task | None:
        task = self.peek()
        if task is None:
            return None
        bucket = self._buckets[task.priority]
        if bucket.late and bucket.late[0][1] is task:
            heapq.heappop(bucket.late)
        else:
            bucket.fifo.popleft()
        self.size -= 1
        self._tier_counts[_TIER[task.priority]] -= 1
        return task

    def tier_counts(self) -> tuple[int, int, int]:
        """Pending tasks per tier: (low, normal, high)."""
        low, normal, high = self._tier_counts
        return low, normal, high

    def ordered(self) -> Iterator[Task]:
        """Every live pending task in pop order (for snapshots and listings; O(n log n))."""
        live = [
            t
            for p, b in self._buckets.items()
            for t in (*b.fifo, *(t for _, t in b.late))
            if self._valid(t, p)
        ]
        live.sort(key=lambda t: (-t.priority, t.seq))
        return iter(live)
