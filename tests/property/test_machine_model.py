"""Random command sequences against tq.core.Machine and a deliberately naive reference model.

The reference keeps every task in one dict and answers each question with a linear scan:
slow, but obviously right. After every step both must agree on every task's state; at the end
the recorded command log, replayed on a fresh machine, and the storage mutations, restored
into a fresh machine, must each reproduce the exact same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tq.core import commands as c
from tq.core.aging import AgingPolicy
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.layout import (
    FAMILY_OF_STATE,
    IDEM_PREFIX,
    KEY_PREFIX,
    LIVE_FAMILIES,
    MACHINE_KEY,
    WORKER_PREFIX,
    ApiKey,
    Family,
    RateLimit,
    decode_api_key,
    decode_idem,
    decode_meta,
    decode_worker,
)
from tq.core.machine import Machine
from tq.core.model import RetryPolicy, TaskState, decode_task
from tq.core.replies import ClaimReply, ItemCodes
from tq.errors import ErrorCode, TqError

S = TaskState
LEASE = 10.0
DEAD_AFTER = 25.0
POLICY = RetryPolicy(base=1.0, factor=2.0, max_delay=8.0, jitter=0.25)
QUEUES = ("a", "b")
WORKERS = (WorkerId("w1"), WorkerId("w2"))


@dataclass
class Ref:
    id: TaskId
    queue: str
    priority: int
    max_retries: int
    state: S
    order: int | None = None  # FIFO key while pending (kept when a task regains its place)
    attempts: int = 0
    token: int = 0
    worker: WorkerId | None = None
    lease_until: float = 0.0
    due: float | None = None
    deps: set[TaskId] = field(default_factory=set)
    aging: bool = True
    queued_at: float = 0.0  # when it took its FIFO place (kept with it, as ``order`` is)


class Reference:
    def __init__(self) -> None:
        self.tasks: dict[TaskId, Ref] = {}
        self.next_order = 1
        self.next_token = 1
        self.heartbeat: dict[WorkerId, float] = {}
        self.now = 0.0  # the latest time seen: a place taken later never looks older

    def live(self, t: Ref) -> bool:
        return not t.state.is_terminal

    def _pend(self, t: Ref, keep_order: bool = False) -> None:
        t.state = S.PENDING
        if not keep_order or t.order is None:
            t.order = self.next_order
            self.next_order += 1
            t.queued_at = self.now

    def _end(self, t: Ref, state: S, now: float) -> None:
        t.state = state
        t.worker = None
        for d in sorted(
            (x for x in self.tasks.values() if t.id in x.deps and self.live(x)),
            key=lambda x: x.id,
        ):
            d.deps.discard(t.id)
            if state is S.COMPLETED:
                if not d.deps and (d.due is None or d.due <= now):
                    self._pend(d)
            else:
                d.deps.clear()
                self._end(d, S.DEAD_LETTER, now)

    def at(self, now: float) -> None:
        self.now = max(self.now, now)

    def submit(self, now: float, specs: list[c.NewTask]) -> None:
        self.at(now)
        for s in specs:
            t = Ref(s.id, s.queue, s.priority, s.max_retries, S.SCHEDULED, due=s.scheduled_at)
            t.aging = s.aging
            self.tasks[s.id] = t
            dep_states = [self.tasks[d].state for d in s.depends_on]
            if any(x in (S.DEAD_LETTER, S.CANCELLED) for x in dep_states):
                t.state = S.DEAD_LETTER
                continue
            t.deps = {d for d in s.depends_on if self.live(self.tasks[d])}
            if not t.deps and (t.due is None or t.due <= now):
                self._pend(t)

    @staticmethod
    def aged(t: Ref, aging: AgingPolicy | None, now: float) -> int:
        """The priority a claim compares: raised by ``step`` per whole ``interval`` waited, up
        to ``cap``; the submitted one when aging is off for the task, its queue or the claim."""
        if aging is None or not t.aging or t.queue in aging.exempt_queues:
            return t.priority
        if t.priority >= aging.cap:
            return t.priority
        whole = (now - t.queued_at) // aging.interval
        return min(aging.cap, t.priority + aging.step * max(0, int(whole)))

    def claim(
        self,
        now: float,
        worker: WorkerId,
        queues: tuple[str, ...],
        k: int,
        aging: AgingPolicy | None = None,
    ) -> list[TaskId]:
        self.heartbeat.setdefault(worker, now)
        out = []
        for _ in range(k):
            ready = [t for t in self.tasks.values() if t.state is S.PENDING and t.queue in queues]
            if not ready:
                break
            t = max(ready, key=lambda x: (self.aged(x, aging, now), -(x.order or 0)))
            t.state, t.attempts, t.worker = S.IN_PROGRESS, t.attempts + 1, worker
            t.token, t.lease_until = self.next_token, now + LEASE
            self.next_token += 1
            out.append(t.id)
        return out

    def _holds(self, task_id: TaskId, token: int) -> Ref | None:
        t = self.tasks.get(task_id)
        if t is None or t.state is not S.IN_PROGRESS or t.token != token:
            return None
        return t

    def complete(self, now: float, task_id: TaskId, token: int) -> bool:
        self.at(now)
        t = self._holds(task_id, token)
        if t is not None:
            self._end(t, S.COMPLETED, now)
        return t is not None

    def fail(self, now: float, task_id: TaskId, token: int, retry: bool, u: float) -> bool:
        t = self._holds(task_id, token)
        if t is None:
            return False
        if retry and t.attempts <= t.max_retries:
            d = min(POLICY.max_delay, POLICY.base * POLICY.factor ** (t.attempts - 1))
            d = min(d * (1 - POLICY.jitter + 2 * POLICY.jitter * u), POLICY.max_delay)
            t.state, t.worker, t.due = S.FAILED, None, now + d
        else:
            self._end(t, S.DEAD_LETTER, now)
        return True

    def cancel(self, now: float, task_id: TaskId) -> bool:
        t = self.tasks.get(task_id)
        if t is None or not self.live(t):
            return False
        t.deps.clear()
        self._end(t, S.CANCELLED, now)
        return True

    def _lost(self, t: Ref, now: float) -> None:
        if t.attempts <= t.max_retries:
            t.worker = None
            self._pend(t, keep_order=True)
        else:
            self._end(t, S.DEAD_LETTER, now)

    def expire(self, now: float) -> None:
        for t in sorted(
            (t for t in self.tasks.values() if t.state is S.IN_PROGRESS and t.lease_until <= now),
            key=lambda x: (x.lease_until, x.id),
        ):
            self._lost(t, now)

    def promote(self, now: float) -> None:
        self.at(now)
        for t in sorted(
            (
                t
                for t in self.tasks.values()
                if t.state in (S.SCHEDULED, S.FAILED)
                and not t.deps
                and t.due is not None
                and t.due <= now
            ),
            key=lambda x: (x.due or 0.0, x.id),
        ):
            self._pend(t)

    def release(self, worker: WorkerId, task_id: TaskId, token: int) -> bool:
        t = self._holds(task_id, token)
        if t is None or t.worker != worker:
            return False
        t.attempts -= 1
        t.worker = None
        self._pend(t, keep_order=True)
        return True

    def beat(self, now: float, worker: WorkerId, listed: set[TaskId]) -> None:
        """Only the listed leases are extended: a held task the worker does not list (its
        claim's reply was lost) keeps its expiry."""
        self.heartbeat[worker] = now
        for t in self.tasks.values():
            if t.state is S.IN_PROGRESS and t.worker == worker and t.id in listed:
                t.lease_until = now + LEASE

    def reap(self, now: float) -> None:
        for w in sorted(w for w, hb in self.heartbeat.items() if hb + DEAD_AFTER < now):
            del self.heartbeat[w]
            for t in sorted(
                (t for t in self.tasks.values() if t.state is S.IN_PROGRESS and t.worker == w),
                key=lambda x: x.id,
            ):
                self._lost(t, now)


class MachineVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = Machine()
        self.ref = Reference()
        self.now = 1_000.0
        self.log: list[c.Command] = []
        self.store: dict[tuple[Family, bytes], bytes] = {}
        self.last_event: dict[TaskId, S] = {}
        self.n_ids = 0
        self.keys: dict[str, float | None] = {}  # the reference's key table: id -> revoked at

    def apply(self, cmd: c.Command) -> object:
        fx = Effects()
        reply = self.m.apply(cmd, fx)
        self.m.end_batch(fx)
        self.log.append(cmd)
        for fam, key, value in fx.mutations:
            if value is None:
                self.store.pop((fam, key), None)
            else:
                self.store[(fam, key)] = value
        for ev in fx.events:
            self.last_event[ev.task_id] = ev.state
        return reply

    def held(self) -> list[tuple[TaskId, int, WorkerId]]:
        return sorted(
            (t.id, t.token, t.worker)
            for t in self.ref.tasks.values()
            if t.state is S.IN_PROGRESS and t.worker is not None
        )

    @rule(
        specs=st.lists(
            st.tuples(
                st.sampled_from(QUEUES),
                st.sampled_from([0, 50, 99, 100, 150, 199, 200, 255]),
                st.integers(0, 2),
                st.one_of(st.none(), st.floats(0.0, 30.0)),
                st.lists(st.integers(0, 10_000), max_size=2),
                st.booleans(),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def submit(self, specs: list[tuple[str, int, int, float | None, list[int], bool]]) -> None:
        known = sorted(self.ref.tasks)
        new: list[c.NewTask] = []
        for queue, prio, retries, delay, dep_picks, ages in specs:
            self.n_ids += 1
            tid = make_task_id(int(self.now * 1000), self.n_ids)
            deps = tuple(dict.fromkeys(known[i % len(known)] for i in dep_picks)) if known else ()
            due = None if delay is None else self.now + delay
            new.append(
                c.NewTask(tid, "job", queue, b"p", prio, retries, due, depends_on=deps, aging=ages)
            )
        terminal = {
            d: self.last_event[d]
            for s in new
            for d in s.depends_on
            if self.m.get(d) is None and d in self.last_event
        }
        self.apply(c.SubmitTasks(self.now, tuple(new), 1_000_000, known=terminal))
        self.ref.submit(self.now, new)

    @rule(
        worker=st.sampled_from(WORKERS),
        queues=st.sampled_from([("a",), ("b",), ("a", "b"), ("b", "a")]),
        k=st.integers(1, 4),
    )
    def claim(self, worker: WorkerId, queues: tuple[str, ...], k: int) -> None:
        self.claim_with(worker, queues, k, None)

    @rule(
        worker=st.sampled_from(WORKERS),
        queues=st.sampled_from([("a",), ("b",), ("a", "b"), ("b", "a")]),
        k=st.integers(1, 4),
        aging=st.builds(
            AgingPolicy,
            interval=st.sampled_from([0.5, 3.0, 20.0]),
            step=st.sampled_from([1, 60, 255]),
            cap=st.sampled_from([99, 200, 255]),
            exempt_queues=st.sampled_from([(), (), ("a",), ("b",)]),
        ),
    )
    def claim_aged(
        self, worker: WorkerId, queues: tuple[str, ...], k: int, aging: AgingPolicy
    ) -> None:
        self.claim_with(worker, queues, k, aging)

    def claim_with(
        self, worker: WorkerId, queues: tuple[str, ...], k: int, aging: AgingPolicy | None
    ) -> None:
        reply = self.apply(c.ClaimTasks(self.now, worker, queues, k, LEASE, aging=aging))
        assert isinstance(reply, ClaimReply)
        expected = self.ref.claim(self.now, worker, queues, k, aging)
        assert [t.id for t in reply.tasks] == expected
        for t in reply.tasks:
            assert t.lease_token == self.ref.tasks[t.id].token

    @precondition(lambda self: any(True for _ in self.held()))
    @rule(data=st.data(), stale=st.booleans(), ok=st.booleans(), retry=st.booleans())
    def finish(self, data: st.DataObject, stale: bool, ok: bool, retry: bool) -> None:
        task_id, token, _ = data.draw(st.sampled_from(self.held()))
        token = token + 1000 if stale else token
        u = data.draw(st.floats(0.0, 0.999))
        if ok:
            reply = self.apply(c.CompleteTasks(self.now, (c.CompletedItem(task_id, token, b"r"),)))
            applied = self.ref.complete(self.now, task_id, token)
        else:
            item = c.FailedItem(task_id, token, "boom", retry, u)
            reply = self.apply(c.FailTasks(self.now, (item,), POLICY))
            applied = self.ref.fail(self.now, task_id, token, retry, u)
        assert isinstance(reply, ItemCodes)
        assert reply.codes == [0 if applied else ErrorCode.LEASE_MISMATCH]

    @precondition(lambda self: bool(self.ref.tasks))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.ref.tasks)))
        reply = self.apply(c.CancelTasks(self.now, (task_id,)))
        applied = self.ref.cancel(self.now, task_id)
        assert isinstance(reply, ItemCodes)
        assert reply.codes == [0 if applied else ErrorCode.TASK_NOT_FOUND]

    @precondition(lambda self: any(True for _ in self.held()))
    @rule(data=st.data(), stale=st.booleans(), other_worker=st.booleans())
    def release(self, data: st.DataObject, stale: bool, other_worker: bool) -> None:
        task_id, token, worker = data.draw(st.sampled_from(self.held()))
        # A stale token: a release sent for an earlier claim of the same task.
        token = token - 1 if stale else token
        if other_worker:
            worker = next(w for w in WORKERS if w != worker)
        reply = self.apply(c.ReleaseTasks(self.now, worker, (c.ReleasedItem(task_id, token),)))
        applied = self.ref.release(worker, task_id, token)
        assert isinstance(reply, ItemCodes)
        assert reply.codes == [0 if applied else ErrorCode.LEASE_MISMATCH]
        assert applied == (not stale and not other_worker)

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def heartbeat(self, worker: WorkerId, data: st.DataObject) -> None:
        held = sorted(
            t.id for t in self.ref.tasks.values()
            if t.state is S.IN_PROGRESS and t.worker == worker
        )  # fmt: skip
        listed = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        self.apply(c.Heartbeat(self.now, worker, LEASE, running=tuple(listed)))
        self.ref.beat(self.now, worker, set(listed))

    @rule(dt=st.floats(0.1, 15.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.apply(c.ExpireLeases(self.now))
        self.ref.expire(self.now)
        self.apply(c.PromoteDue(self.now))
        self.ref.promote(self.now)

    @rule(dt=st.sampled_from([0.7, 4.0, 25.0]))
    def a_while_later(self, dt: float) -> None:
        """Time passes with no job run yet (the lease monitor and scheduler lag behind): tasks
        submitted from now on have waited less than those already pending."""
        self.now += dt

    @rule()
    def reap_dead_workers(self) -> None:
        self.apply(c.ReapDeadWorkers(self.now, DEAD_AFTER))
        self.ref.reap(self.now)

    @rule(
        n=st.integers(0, 5),
        perms=st.lists(st.sampled_from(("submit", "read", "work", "admin")), min_size=1),
        queues=st.one_of(st.none(), st.lists(st.sampled_from(QUEUES), min_size=1)),
        rate=st.one_of(st.none(), st.floats(0.5, 100.0)),
    )
    def create_key(
        self, n: int, perms: list[str], queues: list[str] | None, rate: float | None
    ) -> None:
        key_id = f"{n:012x}"
        limits = None if rate is None else {"submit": RateLimit(rate, 3)}
        key = ApiKey(
            key_id, f"k{n}", tuple(perms), None if queues is None else tuple(queues),
            self.now, self.now + 60.0, None, b"$2b$hash", limits,
        )  # fmt: skip
        if key_id in self.keys:
            with pytest.raises(TqError) as refused:
                self.apply(c.CreateKey(self.now, key))
            assert refused.value.code is ErrorCode.KEY_ALREADY_EXISTS
            return
        self.apply(c.CreateKey(self.now, key))
        self.keys[key_id] = None

    @rule(n=st.integers(0, 5))
    def revoke_key(self, n: int) -> None:
        key_id = f"{n:012x}"
        if key_id not in self.keys:
            with pytest.raises(TqError) as refused:
                self.apply(c.RevokeKey(self.now, key_id))
            assert refused.value.code is ErrorCode.KEY_NOT_FOUND
            return
        self.apply(c.RevokeKey(self.now, key_id))
        if self.keys[key_id] is None:
            self.keys[key_id] = self.now

    @invariant()
    def the_key_table_agrees(self) -> None:
        assert {k.id: k.revoked_at for k in self.m.api_keys()} == self.keys

    @invariant()
    def every_task_agrees(self) -> None:
        for task_id, r in self.ref.tasks.items():
            live = self.m.get(task_id)
            got = live.state if live is not None else self.last_event.get(task_id)
            assert got is r.state, f"{task_id.hex()}: machine {got} reference {r.state}"
            if live is not None:
                assert live.attempts == r.attempts

    @invariant()
    def every_task_is_stored_once_in_the_family_of_its_state(self) -> None:
        where: dict[bytes, Family] = {}
        for fam, key in self.store:
            if fam is not Family.METADATA:
                assert key not in where, f"{key.hex()} stored twice"
                where[key] = fam
        for task_id, r in self.ref.tasks.items():
            assert where.get(task_id) is FAMILY_OF_STATE[r.state]

    def teardown(self) -> None:
        before = self.m.snapshot()
        replica = Machine()
        fx = Effects()
        for cmd in c.decode_commands(c.encode_commands(self.log)):
            replica.apply(cmd, fx)
        replica.end_batch(fx)
        assert replica.snapshot() == before, "replaying the command log diverged"
        restored = restore_from(self.store, self.now)
        assert restored.snapshot() == before, "restoring from storage diverged"


def restore_from(store: dict[tuple[Family, bytes], bytes], now: float) -> Machine:
    meta = store.get((Family.METADATA, MACHINE_KEY))
    terminal = {
        key: decode_task(v).state
        for (fam, key), v in store.items()
        if fam in (Family.COMPLETED, Family.DEAD_LETTER)
    }
    return Machine.restore(
        meta=decode_meta(meta) if meta is not None else None,
        workers=[
            decode_worker(v)
            for (f, k), v in store.items()
            if f is Family.METADATA and k.startswith(WORKER_PREFIX)
        ],
        idempotency=[
            (k[len(IDEM_PREFIX) :].decode(), decode_idem(v))
            for (f, k), v in store.items()
            if f is Family.METADATA and k.startswith(IDEM_PREFIX)
        ],
        tasks=[decode_task(v) for (f, k), v in sorted(store.items()) if f in LIVE_FAMILIES],
        terminal_state=terminal.get,
        now=now,
        fx=Effects(),
        keys=[
            decode_api_key(v)
            for (f, k), v in store.items()
            if f is Family.METADATA and k.startswith(KEY_PREFIX)
        ],
    )


MachineVsReference.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMachineAgainstReferenceModel = MachineVsReference.TestCase
