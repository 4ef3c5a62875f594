"""Behaviour of the state machine, one rule at a time (the property test covers mixtures)."""

from __future__ import annotations

import itertools

import pytest

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, format_task_id, make_task_id
from tq.core.layout import Family
from tq.core.machine import Machine
from tq.core.model import RetryPolicy, TaskState, decode_task
from tq.core.replies import (
    Affected,
    ClaimedTask,
    ClaimReply,
    HeartbeatReply,
    ItemCodes,
    SubmitReply,
)
from tq.errors import ConflictError, ErrorCode, QueueFullError, ValidationError

W = WorkerId("w1")
_ids = itertools.count(1)


def new_id() -> TaskId:
    return make_task_id(1_700_000_000_000, next(_ids))


def spec(**kw: object) -> c.NewTask:
    fields: dict[str, object] = {
        "id": new_id(),
        "task_type": "job",
        "queue": "default",
        "payload": b"{}",
        "priority": 128,
        "max_retries": 3,
    }
    fields.update(kw)
    return c.NewTask(**fields)  # type: ignore[arg-type]


class Harness:
    def __init__(self) -> None:
        self.m = Machine()
        self.fx = Effects()

    def submit(self, *specs: c.NewTask, now: float = 0.0, **kw: object) -> SubmitReply:
        cmd = c.SubmitTasks(now, specs, kw.pop("max_queued", 1000), **kw)  # type: ignore[arg-type]
        r = self.m.apply(cmd, self.fx)
        assert isinstance(r, SubmitReply)
        return r

    def claim(
        self,
        n: int = 1,
        now: float = 1.0,
        worker: WorkerId = W,
        queues: tuple[str, ...] = ("default",),
    ) -> ClaimReply:
        r = self.m.apply(c.ClaimTasks(now, worker, queues, n, 30.0), self.fx)
        assert isinstance(r, ClaimReply)
        return r

    def codes(self, cmd: c.Command) -> list[int]:
        r = self.m.apply(cmd, self.fx)
        assert isinstance(r, ItemCodes)
        return r.codes

    def state(self, task_id: TaskId) -> TaskState | None:
        t = self.m.get(task_id)
        if t is not None:
            return t.state
        states = [e.state for e in self.fx.events if e.task_id == task_id]
        return states[-1] if states else None


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_higher_priority_tiers_are_claimed_first_and_fifo_within_a_priority(h: Harness) -> None:
    low1, norm1, high1, low2, norm2, high2 = (
        spec(priority=p) for p in (10, 150, 220, 10, 150, 220)
    )
    h.submit(low1, norm1, high1, low2, norm2, high2)
    got = [t.id for t in h.claim(6).tasks]
    assert got == [high1.id, high2.id, norm1.id, norm2.id, low1.id, low2.id]


def test_claims_across_queues_take_the_best_task_of_all_of_them(h: Harness) -> None:
    a, b = spec(queue="a", priority=100), spec(queue="b", priority=200)
    h.submit(a, b)
    assert [t.id for t in h.claim(2, queues=("a", "b")).tasks] == [b.id, a.id]


def test_a_failing_task_retries_with_backoff_then_lands_in_dead_letter(h: Harness) -> None:
    policy = RetryPolicy(base=2.0, factor=3.0, max_delay=100.0, jitter=0.0)
    t = spec(max_retries=2)
    h.submit(t)
    now = 1.0
    delays = []
    for attempt in (1, 2, 3):
        claimed = h.claim(now=now).tasks
        assert [x.id for x in claimed] == [t.id]
        assert claimed[0].attempts == attempt
        item = c.FailedItem(t.id, claimed[0].lease_token, "boom")
        assert h.codes(c.FailTasks(now, (item,), policy)) == [0]
        task = h.m.get(t.id)
        if attempt <= 2:
            assert task is not None and task.state is TaskState.FAILED
            assert task.scheduled_at is not None
            delays.append(task.scheduled_at - now)
            assert h.claim(now=now).tasks == []  # not before its retry time
            now = task.scheduled_at
            h.m.apply(c.PromoteDue(now), h.fx)
    assert delays == [2.0, 6.0]
    assert h.state(t.id) is TaskState.DEAD_LETTER
    dead = [v for f, k, v in h.fx.mutations if f is Family.DEAD_LETTER and k == t.id]
    assert dead and dead[-1] is not None and decode_task(dead[-1]).error == "boom"


def test_backoff_jitter_stays_within_its_band_and_under_the_cap() -> None:
    p = RetryPolicy(base=1.0, factor=2.0, max_delay=10.0, jitter=0.5)
    assert p.delay(1, 0.0) == 0.5 and p.delay(1, 0.999) < 1.5
    assert p.delay(3, 0.5) == 4.0
    assert p.delay(10, 0.999) == 10.0
    assert p.delay(10_000, 0.5) == 10.0


def test_a_handler_refusing_retry_dead_letters_at_once(h: Harness) -> None:
    t = spec(max_retries=5)
    h.submit(t)
    claimed = h.claim().tasks[0]
    h.codes(c.FailTasks(1.0, (c.FailedItem(t.id, claimed.lease_token, "bad input", retry=False),)))
    assert h.state(t.id) is TaskState.DEAD_LETTER


def test_a_dependant_waits_until_all_its_dependencies_complete(h: Harness) -> None:
    a, b = spec(), spec()
    d = spec(depends_on=(a.id, b.id))
    h.submit(a, b, d)
    assert h.state(d.id) is TaskState.SCHEDULED
    first = h.claim(2).tasks
    assert {x.id for x in first} == {a.id, b.id}
    h.codes(c.CompleteTasks(2.0, (c.CompletedItem(a.id, first[0].lease_token),)))
    assert h.state(d.id) is TaskState.SCHEDULED
    h.codes(c.CompleteTasks(2.0, (c.CompletedItem(b.id, first[1].lease_token),)))
    assert h.state(d.id) is TaskState.PENDING
    assert [x.id for x in h.claim().tasks] == [d.id]


@pytest.mark.parametrize("ending", ["cancel", "dead"])
def test_a_dependency_that_ends_badly_fails_its_dependants_transitively(
    h: Harness, ending: str
) -> None:
    a = spec(max_retries=0)
    b = spec(depends_on=(a.id,))
    d = spec(depends_on=(b.id,))
    h.submit(a, b, d)
    if ending == "cancel":
        h.codes(c.CancelTasks(1.0, (a.id,)))
    else:
        tok = h.claim().tasks[0].lease_token
        h.codes(c.FailTasks(1.0, (c.FailedItem(a.id, tok, "boom"),)))
    assert h.state(b.id) is TaskState.DEAD_LETTER
    assert h.state(d.id) is TaskState.DEAD_LETTER
    errors = {e.task_id: e.error or "" for e in h.fx.events}
    assert format_task_id(a.id) in errors[b.id]
    assert format_task_id(b.id) in errors[d.id]


def test_dependencies_found_finished_in_storage_are_honoured(h: Harness) -> None:
    done, dead = new_id(), new_id()
    ok = spec(depends_on=(done,))
    doomed = spec(depends_on=(dead,))
    known = {done: TaskState.COMPLETED, dead: TaskState.DEAD_LETTER}
    h.submit(ok, doomed, known=known)
    assert h.state(ok.id) is TaskState.PENDING
    assert h.state(doomed.id) is TaskState.DEAD_LETTER


def test_an_unknown_dependency_is_refused_and_nothing_changes(h: Harness) -> None:
    good, bad = spec(), spec(depends_on=(new_id(),))
    with pytest.raises(ConflictError) as e:
        h.submit(good, bad)
    assert e.value.code is ErrorCode.DEPENDENCY_NOT_FOUND
    assert h.m.get(good.id) is None and h.fx.mutations == []


def test_a_duplicate_task_id_is_refused(h: Harness) -> None:
    t = spec()
    h.submit(t)
    with pytest.raises(ConflictError) as e:
        h.submit(spec(id=t.id))
    assert e.value.code is ErrorCode.TASK_ALREADY_EXISTS


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("priority", 256, "priority"),
        ("priority", -1, "priority"),
        ("max_retries", -1, "max_retries"),
        ("task_type", "", "task_type"),
        ("timeout", 0.0, "timeout"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    h: Harness, field: str, value: object, needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        h.submit(spec(**{field: value}))
    assert h.m.queued == 0


def test_submits_above_the_backpressure_threshold_get_queue_full(h: Harness) -> None:
    h.submit(spec(), spec(), max_queued=3)
    with pytest.raises(QueueFullError):
        h.submit(spec(), spec(), max_queued=3)
    assert h.m.queued == 2
    h.submit(spec(), max_queued=3)
    assert h.m.queued == 3


def test_an_idempotency_key_returns_the_existing_task_within_its_window(h: Harness) -> None:
    first = spec(idempotency_key="order-7")
    r1 = h.submit(first, now=0.0, idempotency_window=60.0)
    r2 = h.submit(spec(idempotency_key="order-7"), now=30.0, idempotency_window=60.0)
    assert r1.created == [True] and r2.created == [False] and r2.ids == [first.id]
    h.m.apply(c.PromoteDue(61.0), h.fx)
    later = spec(idempotency_key="order-7")
    r3 = h.submit(later, now=61.0, idempotency_window=60.0)
    assert r3.created == [True] and r3.ids == [later.id]


def test_a_task_past_its_expiry_is_never_started(h: Harness) -> None:
    stale, fresh = spec(expires_at=5.0), spec()
    h.submit(stale, fresh)
    assert [t.id for t in h.claim(2, now=6.0).tasks] == [fresh.id]
    assert h.state(stale.id) is TaskState.CANCELLED


def test_a_delayed_task_is_not_claimed_before_its_time(h: Harness) -> None:
    t = spec(scheduled_at=10.0)
    h.submit(t, now=0.0)
    assert h.claim(now=9.0).tasks == []
    assert h.m.next_timer_at() == 10.0
    r = h.m.apply(c.PromoteDue(10.0), h.fx)
    assert isinstance(r, Affected) and r.task_ids == [t.id]
    assert [x.id for x in h.claim(now=10.0).tasks] == [t.id]


def test_a_delayed_dependant_keeps_its_timer_when_its_dependency_completes_first(
    h: Harness,
) -> None:
    # Commands carry their own clocks, which need not agree (another node, an adjusted
    # clock): the dependant's timer fires while it still waits and is dropped; its dependency
    # then completes at an earlier time. The dependant must still be promoted at its time.
    a = spec()
    d = spec(depends_on=(a.id,), scheduled_at=10.0)
    h.submit(a, d, now=0.0)
    lease = h.claim(now=1.0).tasks[0].lease_token
    h.m.apply(c.PromoteDue(11.0), h.fx)  # d's timer fires while d waits on a
    h.codes(c.CompleteTasks(5.0, (c.CompletedItem(a.id, lease),)))
    assert h.state(d.id) is TaskState.SCHEDULED
    assert h.m.next_timer_at() == 10.0
    r = h.m.apply(c.PromoteDue(10.0), h.fx)
    assert isinstance(r, Affected) and r.task_ids == [d.id]
    assert [x.id for x in h.claim(now=10.0).tasks] == [d.id]


def test_a_result_under_a_stale_lease_is_rejected_after_reassignment(h: Harness) -> None:
    t = spec()
    h.submit(t)
    old = h.claim(now=1.0).tasks[0]
    h.m.apply(c.ExpireLeases(100.0), h.fx)
    new = h.claim(now=100.0, worker=WorkerId("w2")).tasks[0]
    assert new.lease_token != old.lease_token and new.attempts == 2
    assert h.codes(c.CompleteTasks(101.0, (c.CompletedItem(t.id, old.lease_token),))) == [
        ErrorCode.LEASE_MISMATCH
    ]
    assert h.codes(c.CompleteTasks(101.0, (c.CompletedItem(t.id, new.lease_token),))) == [0]


def test_a_lost_lease_returns_the_task_to_its_old_place(h: Harness) -> None:
    first, second = spec(), spec()
    h.submit(first, second)
    h.claim(now=1.0)
    h.m.apply(c.ExpireLeases(31.0), h.fx)
    assert [t.id for t in h.claim(2, now=31.0).tasks] == [first.id, second.id]


def test_expired_leases_past_max_retries_go_to_dead_letter(h: Harness) -> None:
    t = spec(max_retries=0)
    h.submit(t)
    h.claim(now=1.0)
    h.m.apply(c.ExpireLeases(31.0), h.fx)
    assert h.state(t.id) is TaskState.DEAD_LETTER


def released(*claimed: ClaimedTask) -> tuple[c.ReleasedItem, ...]:
    return tuple(c.ReleasedItem(t.id, t.lease_token) for t in claimed)


def test_released_tasks_keep_their_place_and_their_attempt(h: Harness) -> None:
    a, b = spec(), spec()
    h.submit(a, b)
    first, second = h.claim(2).tasks
    assert h.codes(c.ReleaseTasks(2.0, W, released(second, first))) == [0, 0]
    again = h.claim(2).tasks
    assert [t.id for t in again] == [a.id, b.id] and again[0].attempts == 1


def test_a_stale_release_cannot_free_a_later_attempt_of_the_same_worker(h: Harness) -> None:
    t = spec()
    h.submit(t)
    (old,) = h.claim(now=1.0).tasks
    h.m.apply(c.ExpireLeases(31.0), h.fx)  # the lease ran out; the same worker claims again
    (new,) = h.claim(now=32.0).tasks
    assert new.id == old.id and new.lease_token != old.lease_token
    assert h.codes(c.ReleaseTasks(33.0, W, released(old))) == [ErrorCode.LEASE_MISMATCH]
    assert h.state(t.id) is TaskState.IN_PROGRESS
    assert h.codes(c.ReleaseTasks(34.0, W, released(new))) == [0]
    assert h.state(t.id) is TaskState.PENDING


def test_a_release_by_another_worker_or_of_an_unknown_task_is_refused(h: Harness) -> None:
    t = spec()
    h.submit(t)
    (claimed,) = h.claim().tasks
    other = WorkerId("other")
    assert h.codes(c.ReleaseTasks(2.0, other, released(claimed))) == [ErrorCode.LEASE_MISMATCH]
    unknown = c.ReleasedItem(TaskId(b"\x09" * 16), 1)
    assert h.codes(c.ReleaseTasks(2.0, W, (unknown,))) == [ErrorCode.TASK_NOT_FOUND]
    assert h.state(t.id) is TaskState.IN_PROGRESS


def test_heartbeats_extend_leases_and_name_tasks_the_worker_no_longer_holds(h: Harness) -> None:
    t, gone = spec(), spec()
    h.submit(t, gone)
    h.claim(2, now=1.0)
    h.codes(c.CancelTasks(2.0, (gone.id,)))
    r = h.m.apply(c.Heartbeat(20.0, W, 30.0, running=(t.id, gone.id)), h.fx)
    assert isinstance(r, HeartbeatReply)
    assert r.unknown == [gone.id] and r.lease_expires_at == 50.0
    h.m.apply(c.ExpireLeases(45.0), h.fx)
    assert h.state(t.id) is TaskState.IN_PROGRESS


def test_a_dead_worker_is_reaped_and_its_tasks_requeued(h: Harness) -> None:
    t = spec()
    h.submit(t)
    h.m.apply(c.RegisterWorker(0.0, W, "w", ("default",), 4), h.fx)
    h.claim(now=1.0)
    r = h.m.apply(c.ReapDeadWorkers(40.0, 30.0), h.fx)
    assert isinstance(r, Affected) and r.task_ids == [t.id]
    assert h.m.workers() == [] and h.state(t.id) is TaskState.PENDING


def test_broker_restart_gives_workers_a_fresh_heartbeat_clock(h: Harness) -> None:
    h.m.apply(c.RegisterWorker(0.0, W, "w", ("default",), 4), h.fx)
    h.m.apply(c.BrokerStarted(100.0), h.fx)
    r = h.m.apply(c.ReapDeadWorkers(120.0, 30.0), h.fx)
    assert isinstance(r, Affected) and [w.id for w in h.m.workers()] == [W]


def test_purge_deletes_finished_tasks_but_never_a_live_one(h: Harness) -> None:
    done, live = spec(), spec()
    h.submit(done, live)
    tok = h.claim().tasks[0].lease_token
    h.codes(c.CompleteTasks(1.0, (c.CompletedItem(done.id, tok),)))
    h.fx.clear()
    states = (TaskState.COMPLETED, TaskState.COMPLETED)
    r = h.m.apply(c.PurgeTasks(2.0, (done.id, live.id), states), h.fx)
    assert isinstance(r, Affected) and r.task_ids == [done.id]
    assert h.fx.mutations == [(Family.COMPLETED, done.id, None)]


def test_progress_is_recorded_only_under_the_current_lease(h: Harness) -> None:
    t = spec()
    h.submit(t)
    tok = h.claim().tasks[0].lease_token
    h.m.apply(c.ReportProgress(2.0, t.id, tok, 40, "halfway"), h.fx)
    task = h.m.get(t.id)
    assert task is not None and (task.progress, task.progress_message) == (40, "halfway")
    with pytest.raises(ConflictError):
        h.m.apply(c.ReportProgress(2.0, t.id, tok + 1, 50), h.fx)
    with pytest.raises(ValidationError):
        h.m.apply(c.ReportProgress(2.0, t.id, tok, 101), h.fx)


def test_a_task_cancelled_while_running_refuses_its_result(h: Harness) -> None:
    t = spec()
    h.submit(t)
    tok = h.claim().tasks[0].lease_token
    assert h.codes(c.CancelTasks(2.0, (t.id,))) == [0]
    assert h.codes(c.CompleteTasks(3.0, (c.CompletedItem(t.id, tok),))) == [
        ErrorCode.TASK_NOT_FOUND
    ]
    assert h.codes(c.CancelTasks(4.0, (t.id,))) == [ErrorCode.TASK_NOT_FOUND]


def test_each_state_change_is_one_delete_and_one_put(h: Harness) -> None:
    t = spec()
    h.submit(t)
    assert [(f, v is None) for f, _, v in h.fx.mutations] == [(Family.PENDING, False)]
    h.fx.clear()
    tok = h.claim().tasks[0].lease_token
    assert [(f, v is None) for f, _, v in h.fx.mutations] == [
        (Family.METADATA, False),  # the worker's first appearance registers it
        (Family.PENDING, True),
        (Family.IN_PROGRESS, False),
    ]
    h.fx.clear()
    h.codes(c.CompleteTasks(2.0, (c.CompletedItem(t.id, tok, b"5"),)))
    assert [(f, v is None) for f, _, v in h.fx.mutations] == [
        (Family.IN_PROGRESS, True),
        (Family.COMPLETED, False),
    ]


def test_lease_tokens_of_a_new_broker_start_never_repeat_earlier_ones(h: Harness) -> None:
    h.submit(spec(), spec())
    first = h.claim().tasks[0].lease_token
    h.m.apply(c.BrokerStarted(5.0), h.fx)
    second = h.claim(now=6.0).tasks[0].lease_token
    assert second >= 1 << 40
    assert second != first


def test_a_dead_lettered_task_can_be_retried_with_a_fresh_budget(h: Harness) -> None:
    t = spec(max_retries=0)
    h.submit(t)
    tok = h.claim().tasks[0].lease_token
    h.codes(c.FailTasks(1.0, (c.FailedItem(t.id, tok, "boom"),)))
    record = next(
        v for f, k, v in reversed(h.fx.mutations) if f is Family.DEAD_LETTER and k == t.id
    )
    assert record is not None
    dead = decode_task(record)
    assert h.codes(c.RetryTasks(2.0, (dead,))) == [0]
    again = h.claim(now=3.0).tasks
    assert [x.id for x in again] == [t.id]
    assert again[0].attempts == 1
    assert h.codes(c.RetryTasks(4.0, (dead,))) == [ErrorCode.INVALID_STATE]  # live again


def test_a_task_depending_on_a_batch_mate_that_was_dead_lettered_is_dead_lettered_too(
    h: Harness,
) -> None:
    dead = new_id()
    a = spec(depends_on=(dead,), idempotency_key="k1")
    b = spec(depends_on=(a.id,))
    r = h.submit(a, b, known={dead: TaskState.DEAD_LETTER})
    assert r.created == [True, True]
    assert h.state(a.id) is TaskState.DEAD_LETTER
    assert h.state(b.id) is TaskState.DEAD_LETTER
    errors = {e.task_id: e.error or "" for e in h.fx.events}
    assert format_task_id(a.id) in errors[b.id]
