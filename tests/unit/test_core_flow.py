"""Flow control in the core machine, command by command: lanes keep each type's order and give
it back when a limit is lifted, a token bucket refills from each claim's own time (never
backwards), the next refill time is exact, and with everything lifted flow control is off."""

from __future__ import annotations

import pytest

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.machine import Machine
from tq.errors import ErrorCode, TqError

W = WorkerId("w")


class Rig:
    def __init__(self) -> None:
        self.m = Machine()
        self.n = 0

    def apply(self, cmd: c.Command) -> object:
        fx = Effects()
        reply = self.m.apply(cmd, fx)
        self.m.end_batch(fx)
        return reply

    def submit(
        self, now: float, *types: str, queue: str = "q", priority: int = 128
    ) -> list[TaskId]:
        ids = []
        for _ in types:
            self.n += 1
            ids.append(make_task_id(1_000 + self.n, self.n))
        new = tuple(
            c.NewTask(i, t, queue, b"", priority, 0) for i, t in zip(ids, types, strict=True)
        )
        self.apply(c.SubmitTasks(now, new, 10**6))
        return ids

    def claim(self, now: float, n: int = 100, queue: str = "q") -> list[TaskId]:
        reply = self.apply(c.ClaimTasks(now, W, (queue,), n, 30.0))
        return [t.id for t in reply.tasks]  # type: ignore[attr-defined]


def test_a_capped_type_is_skipped_and_its_order_comes_back_when_the_cap_is_lifted() -> None:
    r = Rig()
    a1, b1, a2, b2, a3 = r.submit(1.0, "a", "b", "a", "b", "a")
    r.apply(c.SetLimit(1.0, "type", "a", concurrency=1))
    assert r.claim(2.0, n=3) == [a1, b1, b2]  # a2, a3 wait behind the cap, b's pass them
    r.apply(c.ClearLimit(3.0, "type", "a"))
    assert r.m.snapshot()["queues"] == {"q": [a2, a3]}  # merged back, in their order
    assert r.claim(3.0) == [a2, a3]
    assert not r.m.flow_active


def test_a_bucket_refills_from_each_claims_time_and_never_backwards() -> None:
    r = Rig()
    ids = r.submit(10.0, *["t"] * 6)
    r.apply(c.SetLimit(10.0, "type", "t", rate=2.0, burst=2))
    assert r.claim(10.0) == ids[:2]
    assert r.claim(10.4) == []  # 0.8 tokens
    assert r.m.next_refill_at(10.4) == pytest.approx(10.5)
    assert r.claim(9.0) == []  # a clock that went back refills nothing
    assert r.claim(10.5) == ids[2:3]
    assert r.claim(20.0) == ids[3:5]  # at most the burst, however long the wait
    (limit,) = r.m.limits()
    assert (limit.tokens, limit.refilled_at) == (0.0, 20.0)


def test_a_paused_queue_hands_out_nothing_and_wakes_its_claims_on_resume() -> None:
    r = Rig()
    (i,) = r.submit(1.0, "t")
    r.apply(c.PauseQueue(1.0, "q"))
    assert r.claim(2.0) == []
    assert not r.m.claimable_in("q", 2.0)
    assert r.m.pending_in("q") == 1
    r.apply(c.ResumeQueue(3.0, "q"))
    assert set(r.m.take_flow_ready()) == {"q"}
    assert r.m.claimable_in("q", 3.0)
    assert r.claim(3.0) == [i]


def test_a_finished_task_frees_its_slot_for_parked_claims() -> None:
    r = Rig()
    r.apply(c.SetLimit(1.0, "queue", "q", concurrency=1))
    r.submit(1.0, "t", "t")
    reply = r.apply(c.ClaimTasks(2.0, W, ("q",), 5, 30.0))
    (task,) = reply.tasks  # type: ignore[attr-defined]
    r.m.take_flow_ready()
    r.apply(c.CompleteTasks(3.0, (c.CompletedItem(task.id, task.lease_token),)))
    assert set(r.m.take_flow_ready()) == {"q"}
    assert len(r.claim(3.0)) == 1


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (c.SetLimit(1.0, "queue", "q", rate=1.0, burst=1), "a queue takes a concurrency cap"),
        (c.SetLimit(1.0, "type", "t"), "a rate, a concurrency cap, or both"),
        (c.SetLimit(1.0, "type", "t", burst=2, concurrency=1), "burst 2 given without a rate"),
        (c.SetLimit(1.0, "type", "t", rate=1.0, burst=0), "burst must be within 1.."),
        (c.SetLimit(1.0, "type", "t", rate=float("nan"), burst=1), "rate must be within"),
        (c.SetLimit(1.0, "type", "t", concurrency=0), "concurrency must be within 1.."),
        (c.SetLimit(1.0, "host", "t", concurrency=1), "scope must be queue or type"),
        (c.SetLimit(1.0, "type", "", concurrency=1), "task type must not be empty"),
        (c.PauseQueue(1.0, ""), "queue must not be empty"),
    ],
)
def test_a_bad_flow_command_is_refused_naming_what_is_wrong_and_changes_nothing(
    cmd: c.Command, message: str
) -> None:
    r = Rig()
    before = r.m.snapshot()
    with pytest.raises(TqError, match=message) as e:
        r.apply(cmd)
    assert e.value.code is ErrorCode.INVALID_ARGUMENT
    assert r.m.snapshot() == before
