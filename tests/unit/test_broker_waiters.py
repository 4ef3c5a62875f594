"""Parked long-poll claims: serving walks only the lines of queues that got work, a claim whose
connection takes no replies is held until that connection wakes it, and each owner's claims
and the queue names they hold are counted (and given back when answered, expired or dropped)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from tq.broker.waiters import ClaimWaiters
from tq.core.ids import WorkerId, make_task_id
from tq.core.replies import ClaimedTask


def run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(test, 10))


def task(n: int, queue: str) -> ClaimedTask:
    return ClaimedTask(
        id=make_task_id(1, n), task_type="t", queue=queue, payload=b"", priority=100,
        attempts=1, max_retries=3, timeout=None, lease_token=n, lease_expires_at=0.0,
        created_at=0.0, tags={},
    )  # fmt: skip


class Queues:
    """Pending tasks per queue, and a claim function that takes them and counts its calls."""

    def __init__(self, **pending: int) -> None:
        self.pending = dict(pending)
        self.claims: list[WorkerId] = []
        self.n = 0

    def count(self, queue: str) -> int:
        return self.pending.get(queue, 0)

    def claim(
        self, worker: WorkerId, queues: tuple[str, ...], max_tasks: int, max_bytes: int
    ) -> list[ClaimedTask]:
        self.claims.append(worker)
        out: list[ClaimedTask] = []
        for q in queues:
            while self.pending.get(q, 0) > 0 and len(out) < max_tasks:
                self.pending[q] -= 1
                self.n += 1
                out.append(task(self.n, q))
        return out


class Answers:
    def __init__(self) -> None:
        self.got: dict[str, list[ClaimedTask]] = {}

    def to(self, name: str) -> Any:
        return lambda tasks: self.got.setdefault(name, tasks)


def test_serving_walks_only_the_lines_of_queues_that_got_work() -> None:
    async def main() -> None:
        waiters, answers, owner = ClaimWaiters(), Answers(), object()
        for i in range(5000):
            waiters.park(WorkerId(f"idle-{i}"), ("empty",), 1, 30, answers.to(f"idle-{i}"), owner)
        waiters.park(WorkerId("busy"), ("other",), 1, 30, answers.to("busy"), object())
        queues = Queues(other=1)
        waiters.serve({"other"}, queues.count, queues.claim)
        assert queues.claims == ["busy"]  # not one of the 5000 claims waiting on "empty"
        assert [t.queue for t in answers.got["busy"]] == ["other"]
        assert len(waiters) == 5000
        assert waiters.queues == {"empty"}

    run(main())


def test_a_line_is_left_once_its_queue_has_nothing_pending_oldest_claims_first() -> None:
    async def main() -> None:
        waiters, answers, owner = ClaimWaiters(), Answers(), object()
        for i in range(100):
            waiters.park(WorkerId(f"w{i}"), ("q",), 1, 30, answers.to(f"w{i}"), owner)
        queues = Queues(q=3)
        waiters.serve({"q"}, queues.count, queues.claim)
        assert queues.claims == ["w0", "w1", "w2"]
        assert sorted(answers.got) == ["w0", "w1", "w2"]
        assert waiters.parked(owner) == (97, 97)

    run(main())


def test_a_claim_whose_connection_takes_no_replies_is_held_until_woken() -> None:
    async def main() -> None:
        waiters, answers, owner = ClaimWaiters(), Answers(), object()
        room = {"bytes": 1000}
        waiters.park(WorkerId("a"), ("q",), 1, 30, answers.to("a"), owner, lambda: room["bytes"])
        waiters.park(WorkerId("b"), ("q",), 1, 30, answers.to("b"), owner, lambda: room["bytes"])
        queues = Queues(q=2)

        def claim_then_fill(*args: Any) -> list[ClaimedTask]:
            got = queues.claim(*args)
            room["bytes"] = 0  # the first reply takes the connection over its mark
            return got

        waiters.serve({"q"}, queues.count, claim_then_fill)
        assert sorted(answers.got) == ["a"]
        waiters.serve({"q"}, queues.count, queues.claim)  # held: not in the line any more
        assert queues.claims == ["a"]
        waiters.wake(owner, queues.count, queues.claim)  # still full: it stays held
        assert queues.claims == ["a"]
        room["bytes"] = 1000  # the connection drained
        waiters.wake(owner, queues.count, queues.claim)
        assert sorted(answers.got) == ["a", "b"]
        assert len(waiters) == 0

    run(main())


def test_a_woken_claim_with_nothing_pending_waits_in_line_again() -> None:
    async def main() -> None:
        waiters, answers, owner = ClaimWaiters(), Answers(), object()
        room = {"bytes": 0}
        waiters.park(WorkerId("a"), ("q",), 1, 30, answers.to("a"), owner, lambda: room["bytes"])
        assert waiters.queues == set()  # parked while its connection was full: held
        room["bytes"] = 1000
        queues = Queues()
        waiters.wake(owner, queues.count, queues.claim)
        assert queues.claims == []  # nothing pending: no claim was tried
        assert waiters.queues == {"q"}
        queues.pending["q"] = 1
        waiters.serve({"q"}, queues.count, queues.claim)
        assert list(answers.got) == ["a"]

    run(main())


def test_each_owner_s_claims_and_queue_names_are_counted_and_given_back() -> None:
    async def main() -> None:
        waiters, answers = ClaimWaiters(), Answers()
        a, b = object(), object()
        waiters.park(WorkerId("a1"), ("q1", "q2"), 1, 30, answers.to("a1"), a)
        waiters.park(WorkerId("a2"), ("q3",), 1, 0.05, answers.to("a2"), a)
        waiters.park(WorkerId("b1"), ("q1",), 1, 30, answers.to("b1"), b)
        assert (waiters.parked(a), waiters.parked(b), len(waiters)) == ((2, 3), (1, 1), 3)
        async with asyncio.timeout(5):
            while "a2" not in answers.got:  # its deadline answers it, with no tasks
                await asyncio.sleep(0.01)
        assert answers.got["a2"] == []
        assert waiters.parked(a) == (1, 2)
        waiters.drop(a)  # its connection closed: never answered
        assert (waiters.parked(a), len(waiters), "a1" in answers.got) == ((0, 0), 1, False)
        assert waiters.queues == {"q1"}
        waiters.cancel_all()
        assert (answers.got["b1"], len(waiters), waiters.parked(b)) == ([], 0, (0, 0))
        assert not waiters.queues

    run(main())
