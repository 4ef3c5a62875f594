"""Priority aging in the core: the effective priority, the ready queue's ordering by it, and
the claim command that carries the policy (tq.core.aging, tq.core.queue, Machine._claim)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tq.core import commands as c
from tq.core.aging import AgedPicker, AgingPolicy, effective_priority
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.machine import Machine
from tq.core.model import Task, TaskState, decode_task, encode_task
from tq.core.queue import ReadyQueue
from tq.core.replies import ClaimReply
from tq.errors import ValidationError

W = WorkerId("w1")
_ids = itertools.count(1)
#: +10 every 5 s, up to 200.
POLICY = AgingPolicy(interval=5.0, step=10, cap=200)


def task(
    priority: int, seq: int, queued_at: float, *, aging: bool = True, queue: str = "q"
) -> Task:
    return Task(
        make_task_id(1_700_000_000_000, next(_ids)), "job", queue, b"", priority,
        TaskState.PENDING, queued_at, queued_at, seq=seq, aging=aging, queued_at=queued_at,
    )  # fmt: skip


def drain(queues: list[ReadyQueue], policy: AgingPolicy, now: float) -> list[int]:
    """Every task in the order one claim takes them."""
    picker = AgedPicker(queues, policy, now)
    out = []
    while (t := picker.pop()) is not None:
        out.append(t.seq)
    return out


def test_effective_priority_steps_per_whole_interval_up_to_the_cap() -> None:
    t = task(100, 1, queued_at=0.0)
    assert [effective_priority(t, POLICY, now) for now in (0.0, 4.99, 5.0, 12.0, 30.0)] == [
        100, 100, 110, 120, 160,
    ]  # fmt: skip
    assert effective_priority(t, POLICY, 1e9) == 200  # the cap
    assert effective_priority(t, None, 1e9) == 100  # aging off
    assert effective_priority(task(230, 2, 0.0), POLICY, 1e9) == 230  # above the cap: its own
    assert effective_priority(task(100, 3, 0.0, aging=False), POLICY, 1e9) == 100  # opted out


def test_a_record_from_before_aging_ages_from_its_last_change() -> None:
    t = task(100, 1, queued_at=0.0)
    t.queued_at, t.updated_at = None, 10.0
    assert effective_priority(t, POLICY, 20.0) == 120


def test_an_old_low_task_passes_newer_high_ones_and_fifo_holds_among_equals() -> None:
    q = ReadyQueue("q")
    old_low = task(100, 1, queued_at=0.0)  # at t=50: 100 + 10 * 10 = 200 (the cap)
    high_a = task(200, 2, queued_at=49.0)  # 200, but queued later: after old_low
    high_b = task(200, 3, queued_at=49.5)
    mid = task(150, 4, queued_at=30.0)  # 150 + 40 = 190
    for t in (high_b, mid, old_low, high_a):  # pushed out of order: seq decides
        q.push(t)
    assert drain([q], POLICY, now=50.0) == [1, 2, 3, 4]
    assert q.size == 0


def test_without_aging_the_submitted_priority_decides() -> None:
    q = ReadyQueue("q")
    for t in (task(100, 1, 0.0), task(200, 2, 49.0), task(150, 3, 30.0)):
        q.push(t)
    assert [q.pop().seq for _ in range(3)] == [2, 3, 1]  # type: ignore[union-attr]


def test_a_task_that_regains_its_old_place_keeps_its_age() -> None:
    q = ReadyQueue("q")
    first, second = task(100, 1, 0.0), task(100, 2, 20.0)
    q.push(second)
    q.push(first)  # re-enters with its old seq (a lease expired): into the late heap
    q.push(task(130, 3, 39.0))
    # at 40: first 100 + 80 = 180, second 100 + 40 = 140, the third 130
    assert drain([q], POLICY, now=40.0) == [1, 2, 3]


def test_tasks_that_opted_out_keep_their_priority_and_their_place() -> None:
    q = ReadyQueue("q")
    fixed_old = task(120, 1, 0.0, aging=False)
    aging_new = task(100, 2, 0.0)  # at 60: 200
    fixed_high = task(150, 3, 0.0, aging=False)
    for t in (fixed_old, aging_new, fixed_high):
        q.push(t)
    assert q.peek() is fixed_high  # by submitted priority, both lanes merged
    assert drain([q], POLICY, now=60.0) == [2, 3, 1]
    q2 = ReadyQueue("q")
    for t in (task(120, 4, 0.0, aging=False), task(120, 5, 0.0)):
        q2.push(t)
    assert [q2.pop().seq for _ in range(2)] == [4, 5]  # type: ignore[union-attr]
    assert q2.pop() is None and q2.size == 0


def test_the_best_across_queues_and_exempt_queues_do_not_age() -> None:
    a, b = ReadyQueue("a"), ReadyQueue("b")
    a.push(task(100, 1, 0.0, queue="a"))  # ages to 200 by 60
    b.push(task(100, 2, 0.0, queue="b"))
    b.push(task(190, 3, 59.0, queue="b"))
    assert drain([a, b], POLICY, now=60.0) == [1, 2, 3]
    a.push(task(100, 4, 0.0, queue="a"))
    b.push(task(190, 5, 59.0, queue="b"))
    exempt_a = AgingPolicy(5.0, 10, 200, exempt_queues=("a",))
    assert drain([a, b], exempt_a, now=60.0) == [5, 4]


def test_cancelled_heads_are_skipped() -> None:
    q = ReadyQueue("q")
    stale, live = task(100, 1, 0.0), task(100, 2, 10.0)
    q.push(stale)
    q.push(live)
    stale.state = TaskState.CANCELLED
    q.discard(stale)
    assert drain([q], POLICY, now=60.0) == [2]


def test_the_policy_is_checked_before_anything_changes() -> None:
    for bad, word in (
        (AgingPolicy(0.0, 10), "interval"),
        (AgingPolicy(float("nan"), 10), "interval"),
        (AgingPolicy(5.0, 0), "step"),
        (AgingPolicy(5.0, 10, 256), "cap"),
    ):
        with pytest.raises(ValidationError, match=word):
            Machine().apply(c.ClaimTasks(1.0, W, ("q",), 1, 30.0, aging=bad), Effects())


def new(priority: int, **kw: object) -> c.NewTask:
    tid: TaskId = make_task_id(1_700_000_000_000, next(_ids))
    return c.NewTask(tid, "job", "q", b"", priority, 3, **kw)  # type: ignore[arg-type]


def claim(m: Machine, now: float, aging: AgingPolicy | None) -> list[TaskId]:
    r = m.apply(c.ClaimTasks(now, W, ("q",), 1, 30.0, aging=aging), Effects())
    assert isinstance(r, ClaimReply)
    return [t.id for t in r.tasks]


def test_the_machine_claims_by_aged_priority_only_when_the_claim_carries_a_policy() -> None:
    m = Machine()
    low, opted_out = new(50), new(50, aging=False)
    m.apply(c.SubmitTasks(0.0, (low, opted_out), 100), Effects())
    high = [new(200) for _ in range(3)]
    m.apply(c.SubmitTasks(100.0, tuple(high), 100), Effects())
    assert claim(m, 100.0, None) == [high[0].id]
    assert claim(m, 100.0, POLICY) == [low.id]  # waited 100 s: 50 + 200 -> the cap, 200
    assert claim(m, 100.0, POLICY) == [high[1].id]  # the opted-out task stays at 50
    stored = m.get(high[2].id)
    assert stored is not None and stored.queued_at == 100.0
    assert decode_task(encode_task(stored)).queued_at == 100.0


def test_a_clock_that_goes_back_never_makes_a_later_place_look_older() -> None:
    m = Machine()
    first, second = new(100), new(100)
    m.apply(c.SubmitTasks(50.0, (first,), 100), Effects())
    m.apply(c.SubmitTasks(40.0, (second,), 100), Effects())
    t = m.get(second.id)
    assert t is not None and t.queued_at == 50.0 and m.meta.last_queued_at == 50.0


@settings(max_examples=300, deadline=None)
@given(
    tasks=st.lists(
        st.tuples(
            st.sampled_from([0, 10, 50, 99, 100, 150, 199, 200, 250, 255]),
            st.floats(0.0, 20.0),  # the wait since the previous task took its place
            st.booleans(),  # ages
            st.sampled_from(["a", "b"]),
            st.booleans(),  # cancelled while pending
        ),
        max_size=30,
    ),
    order=st.randoms(use_true_random=False),
    policy=st.builds(
        AgingPolicy,
        interval=st.sampled_from([0.5, 3.0, 20.0]),
        step=st.sampled_from([1, 7, 60, 255]),
        cap=st.sampled_from([0, 99, 200, 255]),
        exempt_queues=st.sampled_from([(), ("a",), ("b",), ("a", "b")]),
    ),
    later=st.floats(0.0, 100.0),
)
def test_popping_by_bucket_heads_agrees_with_sorting_every_task(
    tasks: list[tuple[int, float, bool, str, bool]],
    order: random.Random,
    policy: AgingPolicy,
    later: float,
) -> None:
    """Pushed in any order (old seqs re-entering), some cancelled: the pops come out as a
    sort of all live tasks by (effective priority, -seq) says."""
    queues = {"a": ReadyQueue("a"), "b": ReadyQueue("b")}
    made, at = [], 0.0
    for seq, (prio, wait, ages, queue, _) in enumerate(tasks, 1):
        at += wait
        made.append(task(prio, seq, at, aging=ages, queue=queue))
    pushed = list(made)
    order.shuffle(pushed)
    for t in pushed:
        queues[t.queue].push(t)
    for t, (*_, cancelled) in zip(made, tasks, strict=True):
        if cancelled:
            t.state = TaskState.CANCELLED
            queues[t.queue].discard(t)
    now = at + later

    def aged(t: Task) -> int:
        if t.queue in policy.exempt_queues:
            return t.priority
        return effective_priority(t, policy, now)

    live = [t for t in made if t.state is TaskState.PENDING]
    expected = [t.seq for t in sorted(live, key=lambda t: (-aged(t), t.seq))]
    assert drain(list(queues.values()), policy, now) == expected
    assert all(q.size == 0 and q.tier_counts() == (0, 0, 0) for q in queues.values())
