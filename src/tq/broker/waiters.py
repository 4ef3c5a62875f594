"""Long-poll claims: workers parked until tasks arrive or their wait ends. No busy polling.

Theory of operation: a parked claim stands in the line of each queue it names. At the end of a
loop turn the service names the queues where tasks became pending (or where flow control lets
claims through again: a queue resumed, a capped slot freed, a limit lifted, a rate limit's next
token, ``tq.broker.flow``); only their lines are walked, oldest claim first (so workers share
the work), and a line is left as soon as its queue has nothing a claim may take, so serving
costs in proportion to the queues that got work and the claims served, never to every parked
claim. A claim with a byte budget is served only while its budget is positive (its connection
takes its replies), and with no more than that budget of tasks; met with a budget of 0 it is
*held*: out of the lines until its owner (the connection) takes its output again and calls
``wake``. A claim still parked at its deadline is answered with no tasks. Parked claims and the
queues they name are counted per owner, for the service's caps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable

from tq.core.ids import WorkerId
from tq.core.replies import ClaimedTask

Respond = Callable[[list[ClaimedTask]], None]
#: Bytes a claim's reply may carry now; 0: not now.
Budget = Callable[[], int]
#: Claim for (worker, queues, max tasks, max bytes; 0: no byte budget).
ClaimFn = Callable[[WorkerId, tuple[str, ...], int, int], list[ClaimedTask]]
#: Pending tasks of a queue.
PendingFn = Callable[[str], int]


class _Waiter:
    __slots__ = (
        "budget", "done", "held", "max_tasks", "owner", "queues", "respond", "timer", "worker_id",
    )  # fmt: skip

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
        self.held = False  # out of the lines until its owner calls ``wake``
        self.timer: asyncio.TimerHandle | None = None

    def room(self) -> int:
        """The byte budget now: 0 when its connection takes no replies; -1 when unbudgeted."""
        return -1 if self.budget is None else self.budget()


class ClaimWaiters:
    def __init__(self) -> None:
        #: Per queue, the claims waiting on it, oldest first (a dict: ordered, O(1) removal).
        self._lines: dict[str, dict[_Waiter, None]] = {}
        #: Per owner, its parked claims (held ones too), oldest first.
        self._owners: dict[object, dict[_Waiter, None]] = {}
        #: Per owner, the queue names its parked claims hold (a name counted per claim).
        self._owner_queues: dict[object, int] = {}
        self._count = 0

    def __bool__(self) -> bool:
        return self._count > 0

    def __len__(self) -> int:
        return self._count

    @property
    def queues(self) -> Collection[str]:
        """The queues some parked claim waits on (a live view)."""
        return self._lines.keys()

    def parked(self, owner: object) -> tuple[int, int]:
        """How many claims ``owner`` has parked, and how many queue names they hold."""
        mine = self._owners.get(owner)
        return (0, 0) if mine is None else (len(mine), self._owner_queues[owner])

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
        self._owners.setdefault(owner, {})[w] = None
        self._owner_queues[owner] = self._owner_queues.get(owner, 0) + len(queues)
        self._count += 1
        if w.room() == 0:
            w.held = True
        else:
            self._line_up(w)

    def _line_up(self, w: _Waiter) -> None:
        for q in w.queues:
            line = self._lines.get(q)
            if line is None:
                line = self._lines[q] = {}
            line[w] = None

    def _leave_lines(self, w: _Waiter) -> None:
        for q in w.queues:
            line = self._lines.get(q)
            if line is not None:
                line.pop(w, None)
                if not line:
                    del self._lines[q]

    def _forget(self, w: _Waiter) -> None:
        """``w`` is answered, expired or dropped: out of every index."""
        w.done = True
        if w.timer is not None:
            w.timer.cancel()
        if not w.held:
            self._leave_lines(w)
        mine = self._owners.get(w.owner)
        if mine is not None and w in mine:
            del mine[w]
            self._count -= 1
            self._owner_queues[w.owner] -= len(w.queues)
            if not mine:
                del self._owners[w.owner]
                del self._owner_queues[w.owner]

    def _expire(self, w: _Waiter) -> None:
        if not w.done:
            self._forget(w)
            w.respond([])

    def serve(self, ready: Iterable[str], pending: PendingFn, claim: ClaimFn) -> None:
        """Hand the pending tasks of the ``ready`` queues to the claims waiting on them."""
        for q in ready:
            line = self._lines.get(q)
            if line is None:
                continue
            leaving: list[_Waiter] = []
            for w in line:  # the line is changed only after the walk
                if pending(q) <= 0:
                    break
                room = w.room()
                if room == 0:
                    leaving.append(w)  # its connection is not taking its replies: held
                    continue
                tasks = claim(w.worker_id, w.queues, w.max_tasks, max(room, 0))
                if tasks:
                    leaving.append(w)
                    w.done = True  # answered now: its reply counts against the next budgets
                    w.respond(tasks)
            for w in leaving:
                if w.done:
                    self._forget(w)
                else:
                    self._leave_lines(w)
                    w.held = True

    def wake(self, owner: object, pending: PendingFn, claim: ClaimFn) -> None:
        """``owner`` takes its replies again: its held claims claim now, or line up again
        (at the back: they lost their place while their connection did not read)."""
        mine = self._owners.get(owner)
        if mine is None:
            return
        for w in [w for w in mine if w.held]:
            room = w.room()
            if room == 0:
                return  # full again: the next wake goes on
            w.held = False
            if any(pending(q) > 0 for q in w.queues):
                tasks = claim(w.worker_id, w.queues, w.max_tasks, max(room, 0))
                if tasks:
                    self._forget(w)
                    w.respond(tasks)
                    continue
            self._line_up(w)

    def drop(self, owner: object) -> None:
        """Forget the claims of a closed connection (never answered: nobody would read it)."""
        for w in list(self._owners.get(owner, ())):
            self._forget(w)

    def cancel_all(self) -> None:
        """Answer every parked claim with no tasks (shutdown, storage outage)."""
        for mine in list(self._owners.values()):
            for w in list(mine):
                self._forget(w)
                w.respond([])
