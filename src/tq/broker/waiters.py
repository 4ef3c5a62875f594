"""Long-poll claims: workers parked until tasks arrive or their wait ends. No busy polling.

A parked claim is served at the end of a later loop turn that left pending tasks (oldest
waiter first, so workers share the work), or answered with no tasks at its deadline. A claim
with a byte budget is served only while its budget is positive (its connection takes its
replies), and with no more than that budget of tasks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from tq.core.ids import WorkerId
from tq.core.replies import ClaimedTask

Respond = Callable[[list[ClaimedTask]], None]
#: Bytes a claim's reply may carry now; 0: not now.
Budget = Callable[[], int]
#: Claim for (worker, queues, max tasks, max bytes; 0: no byte budget).
ClaimFn = Callable[[WorkerId, tuple[str, ...], int, int], list[ClaimedTask]]


class _Waiter:
    __slots__ = ("budget", "done", "max_tasks", "owner", "queues", "respond", "timer", "worker_id")

    def __init__(
        self,
        worker_id: WorkerId,
        queues: tuple[str, ...],
        max_tasks: int,
        respond: Respond,
        owner: object,
        budget: Budget | None,
    ) -> None:
        self.worker_id = worker_id
        self.queues = queues
        self.max_tasks = max_tasks
        self.respond = respond
        self.owner = owner
        self.budget = budget
        self.done = False
        self.timer: asyncio.TimerHandle | None = None


class ClaimWaiters:
    def __init__(self) -> None:
        self._waiting: deque[_Waiter] = deque()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)

    def park(
        self,
        worker_id: WorkerId,
        queues: tuple[str, ...],
        max_tasks: int,
        wait: float,
        respond: Respond,
        owner: object,
        budget: Budget | None = None,
    ) -> None:
        w = _Waiter(worker_id, queues, max_tasks, respond, owner, budget)
        w.timer = asyncio.get_running_loop().call_later(wait, self._expire, w)
        self._waiting.append(w)

    def _expire(self, w: _Waiter) -> None:
        if not w.done:
            w.done = True
            w.respond([])
        self._compact()

    def serve(self, claim: ClaimFn) -> None:
        """Hand pending tasks to parked claims, oldest first, until tasks or waiters run out."""
        still: deque[_Waiter] = deque()
        while self._waiting:
            w = self._waiting.popleft()
            if w.done:
                continue
            room = 0 if w.budget is None else w.budget()
            if w.budget is not None and room <= 0:
                still.append(w)  # its connection is not taking its replies: not now
                continue
            tasks = claim(w.worker_id, w.queues, w.max_tasks, room)
            if not tasks:
                still.append(w)
                continue
            w.done = True
            if w.timer is not None:
                w.timer.cancel()
            w.respond(tasks)
        self._waiting = still

    def drop(self, owner: object) -> None:
        """Forget the waiters of a closed connection (their claims were never made)."""
        for w in self._waiting:
            if w.owner is owner and not w.done:
                w.done = True
                if w.timer is not None:
                    w.timer.cancel()
        self._compact()

    def cancel_all(self) -> None:
        for w in self._waiting:
            if not w.done:
                w.done = True
                if w.timer is not None:
                    w.timer.cancel()
                w.respond([])
        self._waiting.clear()

    def _compact(self) -> None:
        if any(w.done for w in self._waiting):
            self._waiting = deque(w for w in self._waiting if not w.done)
