"""Ready queues: highest priority first, FIFO (by ``seq``) within a priority.

Theory of operation:
- One ``ReadyQueue`` per queue name holds a lane of buckets, one bucket per priority (0-255),
  with a 256-bit mask of non-empty buckets, so the best bucket is ``mask.bit_length() - 1``:
  O(1).
- A bucket is a deque for tasks arriving in ``seq`` order (the common case: new submits and
  retries take the next seq) plus a small heap for tasks re-entering with an *old* seq (a lease
  expired, a task handed back): they regain their original place. Pop compares the two heads.
  Push/pop are O(1) for the deque and O(log k) for the k re-entered tasks.
- Removal of a pending task (cancel) is lazy: it leaves its entry behind and ``discard`` only
  fixes the counts; ``_valid`` skips entries whose task is no longer pending here. A Task object
  is pending in at most one place, so a stale entry can never be mistaken for a live one.
- Priority aging (``tq.core.aging``): a task's wait counts from when it took its seq, so within
  a bucket the head has waited longest and ages most; the best aged task is among the bucket
  heads (``heads``). Tasks that opted out of aging (``Task.aging`` False) live in a second lane,
  created on the first such task, so a head of the first lane is always the most aged of its
  bucket. Without any opted-out task, peek and pop cost what they did before aging existed.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator

from tq.core.model import PriorityTier, Task, TaskState

_PENDING = TaskState.PENDING
#: Sources of ``ReadyQueue.head_of`` besides a priority bucket.
FIXED = -1  # the tasks that opted out of aging
WHOLE = -2  # the whole queue, by submitted priority
_TIER = tuple(int(PriorityTier.of(p)) for p in range(256))  # indexing beats a call per push


class _Bucket:
    __slots__ = ("fifo", "late")

    def __init__(self) -> None:
        self.fifo: deque[Task] = deque()
        self.late: list[tuple[int, Task]] = []  # heap of (seq, task) re-entering out of order


class _Lane:
    """Buckets by priority of one queue's pending tasks (those that age, or those that do not)."""

    __slots__ = ("buckets", "mask", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets: dict[int, _Bucket] = {}
        self.mask = 0

    def push(self, task: Task) -> None:
        p = task.priority
        bucket = self.buckets.get(p)
        if bucket is None:
            bucket = self.buckets[p] = _Bucket()
        fifo = bucket.fifo
        if not fifo or fifo[-1].seq < task.seq:
            fifo.append(task)
        else:
            heapq.heappush(bucket.late, (task.seq, task))
        self.mask |= 1 << p

    def _valid(self, task: Task, p: int) -> bool:
        return task.state is _PENDING and task.priority == p and task.queue == self.name

    def head(self, p: int) -> Task | None:
        """Best valid task of bucket ``p`` (stale entries dropped), or None if it is empty."""
        bucket = self.buckets[p]
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
        del self.buckets[p]
        self.mask &= ~(1 << p)
        return None

    def top(self) -> Task | None:
        while self.mask:
            task = self.head(self.mask.bit_length() - 1)
            if task is not None:
                return task
        return None

    def heads(self) -> Iterator[Task]:
        """The head of every non-empty bucket, highest priority first."""
        mask = self.mask
        while mask:
            p = mask.bit_length() - 1
            mask &= ~(1 << p)
            task = self.head(p)
            if task is not None:
                yield task

    def take(self, task: Task) -> None:
        """Remove ``task``, which ``head`` just returned for its bucket."""
        bucket = self.buckets[task.priority]
        if bucket.late and bucket.late[0][1] is task:
            heapq.heappop(bucket.late)
        else:
            bucket.fifo.popleft()

    def live(self) -> Iterator[Task]:
        for p, b in self.buckets.items():
            for t in (*b.fifo, *(t for _, t in b.late)):
                if self._valid(t, p):
                    yield t


def _before(a: Task, b: Task) -> bool:
    """Whether ``a`` goes before ``b`` by submitted priority (FIFO within it)."""
    return a.priority > b.priority or (a.priority == b.priority and a.seq < b.seq)


class ReadyQueue:
    """Pending tasks of one named queue."""

    __slots__ = ("_fixed", "_lane", "_tier_counts", "name", "size")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lane = _Lane(name)
        self._fixed: _Lane | None = None  # tasks that opted out of aging, once there is one
        self.size = 0
        self._tier_counts = [0, 0, 0]

    def push(self, task: Task) -> None:
        """Add a pending task at the place its ``seq`` gives it."""
        if task.aging:
            self._lane.push(task)
        else:
            if self._fixed is None:
                self._fixed = _Lane(self.name)
            self._fixed.push(task)
        self.size += 1
        self._tier_counts[_TIER[task.priority]] += 1

    def discard(self, task: Task) -> None:
        """Account for a task that left the pending state other than by ``pop`` (lazy)."""
        self.size -= 1
        self._tier_counts[_TIER[task.priority]] -= 1

    def peek(self) -> Task | None:
        """The task ``pop`` would return, without removing it."""
        task = self._lane.top()
        if self._fixed is None:
            return task
        other = self._fixed.top()
        if task is None or (other is not None and _before(other, task)):
            return other
        return task

    def pop(self) -> Task | None:
        if self._fixed is not None:
            task = self.peek()
            if task is not None:
                self.take(task)
            return task
        lane = self._lane  # the common case, inlined: no task opted out of aging
        task = lane.top()
        if task is not None:
            lane.take(task)
            self.size -= 1
            self._tier_counts[_TIER[task.priority]] -= 1
        return task

    def heads(self) -> Iterator[tuple[int, Task]]:
        """The candidates for the best task by aged priority, each with its source for
        ``head_of``: the head of every bucket of tasks that age (source: its priority), and
        the best task of those that do not (source ``FIXED``)."""
        for task in self._lane.heads():
            yield task.priority, task
        if self._fixed is not None and (best := self._fixed.top()) is not None:
            yield FIXED, best

    def head_of(self, source: int) -> Task | None:
        """The next candidate of a source ``heads`` named, once its head was taken; with
        source ``WHOLE``, the queue's best task by submitted priority (``peek``)."""
        if source >= 0:
            return self._lane.head(source) if source in self._lane.buckets else None
        if source == FIXED:
            return None if self._fixed is None else self._fixed.top()
        return self.peek()

    def take(self, task: Task) -> None:
        """Remove ``task``, just returned by ``peek`` or ``heads`` (nothing changed since)."""
        fixed = self._fixed
        (self._lane if task.aging or fixed is None else fixed).take(task)
        self.size -= 1
        self._tier_counts[_TIER[task.priority]] -= 1

    def tier_counts(self) -> tuple[int, int, int]:
        """Pending tasks per tier (low, normal, high), by submitted priority."""
        low, normal, high = self._tier_counts
        return low, normal, high

    def ordered(self) -> Iterator[Task]:
        """Every live pending task in pop order (for snapshots and listings; O(n log n))."""
        live = list(self._lane.live())
        if self._fixed is not None:
            live += self._fixed.live()
        live.sort(key=lambda t: (-t.priority, t.seq))
        return iter(live)
