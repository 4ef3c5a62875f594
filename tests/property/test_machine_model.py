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
from tq.core.control import MAX_PENDING_ORDERS, OrderAction
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.layout import (
    FAMILY_OF_STATE,
    IDEM_PREFIX,
    KEY_PREFIX,
    LIMIT_PREFIX,
    LIVE_FAMILIES,
    MACHINE_KEY,
    QUEUE_PREFIX,
    TTL_PREFIX,
    TTL_REVIVED_PREFIX,
    WORKER_PREFIX,
    ApiKey,
    Family,
    RateLimit,
    decode_api_key,
    decode_idem,
    decode_limit,
    decode_meta,
    decode_queue_pause,
    decode_worker,
    parse_ttl_key,
)
from tq.core.machine import Machine
from tq.core.model import RetryPolicy, TaskState, decode_task
from tq.core.replies import Affected, ClaimReply, HeartbeatReply, ItemCodes, OrdersReply
from tq.core.schedules import (
    SCHEDULE_PREFIX,
    Missed,
    Schedule,
    TaskTemplate,
    decode_schedule,
)
from tq.errors import ErrorCode, TqError

S = TaskState
LEASE = 10.0
DEAD_AFTER = 25.0
POLICY = RetryPolicy(base=1.0, factor=2.0, max_delay=8.0, jitter=0.25)
QUEUES = ("a", "b")
TYPES = ("job", "mail")
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
    expires_at: float | None = None
    result_ttl: float | None = None
    failure_ttl: float | None = None
    purge_at: float | None = None  # when it ended with a TTL
    gone: bool = False  # its record was deleted by its TTL
    task_type: str = "job"
    aging: bool = True
    queued_at: float = 0.0  # when it took its FIFO place (kept with it, as ``order`` is)


@dataclass
class RefLimit:
    """A task type's limit as the reference keeps it: a plain token bucket."""

    rate: float | None
    burst: int
    cap: int | None
    tokens: float
    at: float

    def tokens_now(self, now: float) -> float:
        assert self.rate is not None
        return self.tokens if now <= self.at else min(
            float(self.burst), self.tokens + (now - self.at) * self.rate
        )  # fmt: skip


@dataclass
class RefWorker:
    """A worker's queues and its orders not yet acknowledged: (seq, action, queue)."""

    queues: list[str]
    orders: list[tuple[int, OrderAction, str]] = field(default_factory=list)
    draining: bool = False

    def will_consume(self) -> list[str]:
        queues = list(self.queues)
        for _, action, queue in self.orders:
            if action is OrderAction.CONSUME and queue not in queues:
                queues.append(queue)
            elif action is OrderAction.STOP_CONSUMING and queue in queues:
                queues.remove(queue)
        return queues

    def ack(self, acked: int) -> None:
        self.orders = [o for o in self.orders if o[0] > acked]


class Reference:
    def __init__(self) -> None:
        self.tasks: dict[TaskId, Ref] = {}
        self.next_order = 1
        self.next_token = 1
        self.heartbeat: dict[WorkerId, float] = {}
        #: The result-lifetime index: (purge time, id) of every entry written, until processed.
        self.entries: set[tuple[float, TaskId]] = set()
        self.results_expired = 0
        self.expired = 0
        self.paused: set[str] = set()
        self.queue_caps: dict[str, int] = {}
        self.type_limits: dict[str, RefLimit] = {}
        self.workers: dict[WorkerId, RefWorker] = {}
        self.next_seq = 1  # worker orders: one sequence for every worker
        self.now = 0.0  # the latest time seen: a place taken later never looks older

    def running(self, *, queue: str | None = None, task_type: str | None = None) -> int:
        return sum(
            1
            for t in self.tasks.values()
            if t.state is S.IN_PROGRESS
            and (queue is None or t.queue == queue)
            and (task_type is None or t.task_type == task_type)
        )

    def may_run(self, t: Ref, now: float) -> bool:
        """Flow control, asked of each pending task with a linear scan."""
        if t.queue in self.paused:
            return False
        cap = self.queue_caps.get(t.queue)
        if cap is not None and self.running(queue=t.queue) >= cap:
            return False
        lim = self.type_limits.get(t.task_type)
        if lim is None:
            return True
        if lim.cap is not None and self.running(task_type=t.task_type) >= lim.cap:
            return False
        return lim.rate is None or lim.tokens_now(now) >= 1.0

    def order(self, worker: WorkerId, action: OrderAction, queue: str) -> ErrorCode | int:
        """The order's number, 0 when it changes nothing, or the error refusing it."""
        w = self.workers.get(worker)
        if w is None:
            return ErrorCode.WORKER_NOT_FOUND
        stopping = w.draining or any(a is OrderAction.SHUTDOWN for _, a, _ in w.orders)
        if action is OrderAction.SHUTDOWN:
            if stopping:
                return 0
        elif stopping:
            return ErrorCode.INVALID_STATE
        else:
            queues = w.will_consume()
            if (queue in queues) is (action is OrderAction.CONSUME):
                return 0
            if action is OrderAction.STOP_CONSUMING and queues == [queue]:
                return ErrorCode.INVALID_ARGUMENT
        if len(w.orders) >= MAX_PENDING_ORDERS:
            return ErrorCode.TOO_MANY_ORDERS
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        w.orders.append((seq, action, queue))
        return seq

    def register(self, now: float, worker: WorkerId, queues: list[str], acked: int) -> None:
        self.heartbeat[worker] = now
        old = self.workers.get(worker)
        self.workers[worker] = w = RefWorker(queues, old.orders if old else [])
        w.ack(acked)

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
        ttl = {S.COMPLETED: t.result_ttl, S.DEAD_LETTER: t.failure_ttl}.get(state)
        if ttl is not None:
            t.purge_at = now + ttl
            self.entries.add((t.purge_at, t.id))
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
            t = Ref(
                s.id, s.queue, s.priority, s.max_retries, S.SCHEDULED, due=s.scheduled_at,
                expires_at=s.expires_at, result_ttl=s.result_ttl, failure_ttl=s.failure_ttl,
            )  # fmt: skip
            t.task_type = s.task_type
            t.aging = s.aging
            self.tasks[s.id] = t
            dep_states = [self.tasks[d].state for d in s.depends_on]
            if any(x in (S.DEAD_LETTER, S.CANCELLED) for x in dep_states):
                self._end(t, S.DEAD_LETTER, now)
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
        self.workers.setdefault(worker, RefWorker(list(queues)))
        out: list[TaskId] = []
        while len(out) < k:
            ready = [
                t
                for t in self.tasks.values()
                if t.state is S.PENDING and t.queue in queues and self.may_run(t, now)
            ]
            if not ready:
                break
            t = max(ready, key=lambda x: (self.aged(x, aging, now), -(x.order or 0)))
            if t.expires_at is not None and t.expires_at <= now:  # met by the claim
                self.expired += 1
                self._end(t, S.CANCELLED, now)
                continue
            lim = self.type_limits.get(t.task_type)
            if lim is not None and lim.rate is not None:
                lim.tokens, lim.at = lim.tokens_now(now) - 1.0, max(now, lim.at)
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

    def expire_waiting(self, now: float, limit: int = 0) -> list[TaskId]:
        """Tasks still waiting to run when their expires_at passes are cancelled (the first
        ``limit`` of them by expiry time, if given)."""
        out: list[TaskId] = []
        for t in sorted(
            (
                t
                for t in self.tasks.values()
                if t.state in (S.PENDING, S.SCHEDULED, S.FAILED)
                and t.expires_at is not None
                and t.expires_at <= now
            ),
            key=lambda x: (x.expires_at or 0.0, x.id),
        ):
            if limit and len(out) == limit:
                break
            if t.state in (S.PENDING, S.SCHEDULED, S.FAILED):  # not ended by an earlier one
                t.deps.clear()
                self.expired += 1
                self._end(t, S.CANCELLED, now)
                out.append(t.id)
        return out

    def due_entries(self, now: float) -> list[tuple[float, TaskId]]:
        return sorted(e for e in self.entries if e[0] <= now)

    def purge_results(self, entries: list[tuple[float, TaskId]]) -> list[TaskId]:
        """Process index entries: one deletes its task only if it is still the entry the
        task's current record was given (not one left behind by a retry)."""
        gone = []
        for purge_at, task_id in entries:
            self.entries.discard((purge_at, task_id))
            t = self.tasks[task_id]
            if t.state.is_terminal and t.purge_at == purge_at and not t.gone:
                t.gone = True
                gone.append(task_id)
        self.results_expired += len(gone)
        return gone

    def retry(self, task_id: TaskId) -> None:
        t = self.tasks[task_id]
        t.attempts, t.worker, t.due, t.purge_at = 0, None, None, None
        t.deps.clear()
        self._pend(t)

    def release(self, worker: WorkerId, task_id: TaskId, token: int) -> bool:
        t = self._holds(task_id, token)
        if t is None or t.worker != worker:
            return False
        t.attempts -= 1
        t.worker = None
        self._pend(t, keep_order=True)
        return True

    def beat(
        self, now: float, worker: WorkerId, listed: set[TaskId], draining: bool, acked: int
    ) -> None:
        """Only the listed leases are extended: a held task the worker does not list (its
        claim's reply was lost) keeps its expiry."""
        self.heartbeat[worker] = now
        w = self.workers.setdefault(worker, RefWorker([]))
        w.draining = draining
        w.ack(acked)
        for t in self.tasks.values():
            if t.state is S.IN_PROGRESS and t.worker == worker and t.id in listed:
                t.lease_until = now + LEASE

    def reap(self, now: float) -> None:
        for w in sorted(w for w, hb in self.heartbeat.items() if hb + DEAD_AFTER < now):
            del self.heartbeat[w]
            del self.workers[w]
            for t in sorted(
                (t for t in self.tasks.values() if t.state is S.IN_PROGRESS and t.worker == w),
                key=lambda x: x.id,
            ):
                self._lost(t, now)


@dataclass
class RefSchedule:
    interval: float
    queue: str
    priority: int
    paused: bool
    next_at: float | None
    fired: int = 0
    last: float | None = None


def _schedule(name: str, interval: float, queue: str, prio: int, now: float) -> Schedule:
    template = TaskTemplate("tick", queue, b"s", prio, max_retries=1)
    return Schedule(
        name, None, interval, "UTC", template, Missed.ALL, False, now + interval, None, 0,
        now, now,
    )  # fmt: skip


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
        #: Index entries read by a purge not yet applied (a purge job between scan and apply).
        self.scanned: tuple[list[c.ResultEntry], list[c.ResultEntry]] | None = None
        self.schedules: dict[str, RefSchedule] = {}  # the reference's schedules by name

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
                st.tuples(*[st.one_of(st.none(), st.sampled_from([0.0, 1.5, 10.0, 40.0]))] * 3),
                st.sampled_from(TYPES),
                st.booleans(),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def submit(
        self,
        specs: list[
            tuple[str, int, int, float | None, list[int], tuple[float | None, ...], str, bool]
        ],
    ) -> None:
        known = sorted(self.ref.tasks)
        new: list[c.NewTask] = []
        for queue, prio, retries, delay, dep_picks, ttls, task_type, ages in specs:
            expiry, result_ttl, failure_ttl = ttls
            self.n_ids += 1
            tid = make_task_id(int(self.now * 1000), self.n_ids)
            deps = tuple(dict.fromkeys(known[i % len(known)] for i in dep_picks)) if known else ()
            due = None if delay is None else self.now + delay
            expires_at = None if expiry is None else self.now + expiry
            new.append(
                c.NewTask(
                    tid, task_type, queue, b"p", prio, retries, due, depends_on=deps,
                    expires_at=expires_at, result_ttl=result_ttl, failure_ttl=failure_ttl,
                    aging=ages,
                )
            )  # fmt: skip
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
        started = data.draw(st.lists(st.sampled_from(listed), unique=True)) if listed else []
        draining = data.draw(st.booleans())
        acked = data.draw(st.integers(0, self.ref.next_seq))
        reply = self.apply(
            c.Heartbeat(
                self.now, worker, LEASE, running=tuple(listed), started=tuple(started),
                draining=draining, acked=acked,
            )
        )  # fmt: skip
        self.ref.beat(self.now, worker, set(listed), draining, acked)
        assert isinstance(reply, HeartbeatReply)
        assert [(o.seq, o.action, o.queue) for o in reply.orders] == self.ref.workers[worker].orders
        rec = self.m.worker(worker)
        assert rec is not None and rec.started == tuple(sorted(started))

    @rule(
        worker=st.sampled_from(WORKERS),
        queues=st.sampled_from([["a"], ["b"], ["a", "b"]]),
        acked=st.integers(0, 40),
    )
    def register_worker(self, worker: WorkerId, queues: list[str], acked: int) -> None:
        reply = self.apply(
            c.RegisterWorker(self.now, worker, worker, tuple(queues), 2, acked=acked)
        )
        self.ref.register(self.now, worker, queues, acked)
        assert isinstance(reply, OrdersReply)
        assert [(o.seq, o.action, o.queue) for o in reply.pending] == self.ref.workers[
            worker
        ].orders

    @rule(
        worker=st.sampled_from((*WORKERS, WorkerId("w-unknown"))),
        action=st.sampled_from(OrderAction),
        queue=st.sampled_from(("a", "b", "c")),
    )
    def order_worker(self, worker: WorkerId, action: OrderAction, queue: str) -> None:
        queue = "" if action is OrderAction.SHUTDOWN else queue
        expected = self.ref.order(worker, action, queue)
        cmd = c.OrderWorker(self.now, worker, action, queue)
        if isinstance(expected, ErrorCode):
            with pytest.raises(TqError) as refused:
                self.apply(cmd)
            assert refused.value.code is expected
            return
        reply = self.apply(cmd)
        assert isinstance(reply, OrdersReply)
        assert (reply.order.seq if reply.order else 0) == expected

    @invariant()
    def every_worker_and_its_orders_agree(self) -> None:
        got = {
            w.id: (list(w.queues), [(o.seq, o.action, o.queue) for o in w.orders], w.draining)
            for w in self.m.workers()
        }
        assert got == {k: (w.queues, w.orders, w.draining) for k, w in self.ref.workers.items()}

    @rule(dt=st.floats(0.1, 15.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.apply(c.ExpireLeases(self.now))
        self.ref.expire(self.now)
        self.apply(c.PromoteDue(self.now))
        self.ref.promote(self.now)
        reply = self.apply(c.ExpireTasks(self.now))
        assert isinstance(reply, Affected)
        assert reply.task_ids == self.ref.expire_waiting(self.now)

    @rule(limit=st.integers(1, 3))
    def expire_a_few(self, limit: int) -> None:
        reply = self.apply(c.ExpireTasks(self.now, limit))
        assert isinstance(reply, Affected)
        assert reply.task_ids == self.ref.expire_waiting(self.now, limit)

    def scan_results(self) -> tuple[list[c.ResultEntry], list[c.ResultEntry]]:
        """What the purge job reads: the index from its start up to now, in key order, split
        into entries whose task record is where they say and the others (orphans)."""
        due = []
        for (fam, key), value in sorted(self.store.items()):
            if fam is Family.METADATA and key.startswith(TTL_PREFIX):
                purge_at, task_id = parse_ttl_key(key)
                if purge_at <= self.now:
                    due.append(c.ResultEntry(TaskId(task_id), purge_at, S(value.decode())))
        assert [(e.purge_at, e.task_id) for e in due] == self.ref.due_entries(self.now)
        present = [e for e in due if (FAMILY_OF_STATE[e.state], e.task_id) in self.store]
        return present, [e for e in due if e not in present]

    @precondition(lambda self: self.scanned is None)
    @rule()
    def purge_job_reads_the_index(self) -> None:
        self.scanned = self.scan_results()

    @rule()
    def purge_results(self) -> None:
        """Apply what the job read (maybe several steps ago), else read the index now."""
        entries, orphans = self.scanned if self.scanned is not None else self.scan_results()
        self.scanned = None
        reply = self.apply(c.PurgeResults(self.now, tuple(entries), tuple(orphans)))
        gone = self.ref.purge_results([(e.purge_at, e.task_id) for e in orphans + entries])
        assert isinstance(reply, Affected)
        assert reply.task_ids == gone

    @precondition(
        lambda self: any(t.state is S.DEAD_LETTER and not t.gone for t in self.ref.tasks.values())
    )
    @rule(data=st.data())
    def retry_dead_letter(self, data: st.DataObject) -> None:
        task_id = data.draw(
            st.sampled_from(
                sorted(
                    i for i, t in self.ref.tasks.items()
                    if t.state is S.DEAD_LETTER and not t.gone
                )
            )
        )  # fmt: skip
        stored = decode_task(self.store[(Family.DEAD_LETTER, task_id)])
        reply = self.apply(c.RetryTasks(self.now, (stored,)))
        assert isinstance(reply, ItemCodes) and reply.codes == [0]
        self.ref.retry(task_id)

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

    @rule(
        n=st.integers(0, 3),
        interval=st.sampled_from([1.0, 2.5, 7.0]),
        queue=st.sampled_from(QUEUES),
        prio=st.sampled_from([0, 128, 255]),
        replace=st.booleans(),
    )
    def create_schedule(
        self, n: int, interval: float, queue: str, prio: int, replace: bool
    ) -> None:
        name = f"s{n}"
        cmd = c.CreateSchedule(self.now, _schedule(name, interval, queue, prio, self.now), replace)
        old = self.schedules.get(name)
        if old is not None and not replace:
            with pytest.raises(TqError) as refused:
                self.apply(cmd)
            assert refused.value.code is ErrorCode.SCHEDULE_ALREADY_EXISTS
            return
        self.apply(cmd)
        if old is None:
            self.schedules[name] = RefSchedule(interval, queue, prio, False, self.now + interval)
        elif (old.interval, old.queue, old.priority) != (interval, queue, prio):
            # A changed definition: new firing times, its history and pause kept.
            old.interval, old.queue, old.priority = interval, queue, prio
            old.next_at = None if old.paused else self.now + interval

    @rule(n=st.integers(0, 3), action=st.sampled_from(["pause", "resume", "delete"]))
    def schedule_action(self, n: int, action: str) -> None:
        name = f"s{n}"
        cmd: c.Command
        if action == "pause":
            cmd = c.PauseSchedule(self.now, name)
        elif action == "resume":
            cmd = c.ResumeSchedule(self.now, name, self.now + 0.5)
        else:
            cmd = c.DeleteSchedule(self.now, name)
        ref = self.schedules.get(name)
        if ref is None:
            with pytest.raises(TqError) as refused:
                self.apply(cmd)
            assert refused.value.code is ErrorCode.SCHEDULE_NOT_FOUND
            return
        self.apply(cmd)
        if action == "delete":
            del self.schedules[name]
        elif action == "pause" and not ref.paused:
            ref.paused, ref.next_at = True, None
        elif action == "resume" and ref.paused:
            ref.paused, ref.next_at = False, self.now + 0.5

    @precondition(lambda self: bool(self.schedules))
    @rule(
        data=st.data(),
        stale=st.sampled_from([False, False, False, True]),
        full=st.sampled_from([False, False, False, True]),
        k=st.integers(0, 3),
        late=st.floats(-1.0, 8.0),
    )
    def fire_schedule(
        self, data: st.DataObject, stale: bool, full: bool, k: int, late: float
    ) -> None:
        name = data.draw(st.sampled_from(sorted(self.schedules)))
        ref = self.schedules[name]
        if ref.next_at is not None:  # the caller fires when due, or a little before, or late
            self.now = max(self.now, ref.next_at + late)
        due = (ref.next_at if ref.next_at is not None else self.now) + (1.0 if stale else 0.0)
        times = tuple(t for i in range(k) if (t := due + i * ref.interval) <= self.now)
        ids = []
        for _ in times:
            self.n_ids += 1
            ids.append(make_task_id(int(self.now * 1000), self.n_ids))
        firing = c.Firing(name, due, times, tuple(ids), due + (len(times) + 1) * ref.interval)
        queued = sum(t.state in (S.PENDING, S.SCHEDULED, S.FAILED) for t in self.ref.tasks.values())
        max_queued = queued if full else 1_000_000
        reply = self.apply(c.FireSchedules(self.now, (firing,), max_queued, 2))
        assert isinstance(reply, ItemCodes)
        if ref.paused or stale:
            assert reply.codes == [ErrorCode.INVALID_STATE]
            return
        if due > self.now:  # not due yet: a firing planned too early
            assert reply.codes == [ErrorCode.INVALID_ARGUMENT]
            return
        if full and times:
            assert reply.codes == [ErrorCode.QUEUE_FULL]
            return
        assert reply.codes == [0]
        new = [
            c.NewTask(i, "tick", ref.queue, b"s", ref.priority, 1, when)
            for when, i in zip(times, ids, strict=True)
        ]
        self.ref.submit(self.now, new)
        ref.fired += len(times)
        ref.last = times[-1] if times else ref.last
        ref.next_at = firing.next_at

    @invariant()
    def the_schedule_table_agrees(self) -> None:
        got = {s.name: (s.paused, s.next_at, s.fired, s.last_fired_at) for s in self.m.schedules()}
        want = {n: (r.paused, r.next_at, r.fired, r.last) for n, r in self.schedules.items()}
        assert got == want

    @rule(queue=st.sampled_from(QUEUES), pause=st.booleans())
    def pause_or_resume(self, queue: str, pause: bool) -> None:
        if pause:
            self.apply(c.PauseQueue(self.now, queue))
            self.ref.paused.add(queue)
        else:
            self.apply(c.ResumeQueue(self.now, queue))
            self.ref.paused.discard(queue)

    @rule(queue=st.sampled_from(QUEUES), cap=st.one_of(st.none(), st.integers(1, 3)))
    def cap_queue(self, queue: str, cap: int | None) -> None:
        if cap is None:
            if queue not in self.ref.queue_caps:
                with pytest.raises(TqError) as refused:
                    self.apply(c.ClearLimit(self.now, "queue", queue))
                assert refused.value.code is ErrorCode.LIMIT_NOT_FOUND
                return
            self.apply(c.ClearLimit(self.now, "queue", queue))
            del self.ref.queue_caps[queue]
            return
        self.apply(c.SetLimit(self.now, "queue", queue, concurrency=cap))
        self.ref.queue_caps[queue] = cap

    @rule(
        task_type=st.sampled_from(TYPES),
        rate=st.one_of(st.none(), st.sampled_from([0.1, 0.5, 1.0, 3.0])),
        burst=st.integers(1, 3),
        cap=st.one_of(st.none(), st.integers(1, 3)),
        clear=st.booleans(),
    )
    def limit_type(
        self, task_type: str, rate: float | None, burst: int, cap: int | None, clear: bool
    ) -> None:
        if clear:
            if task_type not in self.ref.type_limits:
                with pytest.raises(TqError) as refused:
                    self.apply(c.ClearLimit(self.now, "type", task_type))
                assert refused.value.code is ErrorCode.LIMIT_NOT_FOUND
                return
            self.apply(c.ClearLimit(self.now, "type", task_type))
            del self.ref.type_limits[task_type]
            return
        if rate is None and cap is None:
            with pytest.raises(TqError) as refused:
                self.apply(c.SetLimit(self.now, "type", task_type))
            assert refused.value.code is ErrorCode.INVALID_ARGUMENT
            return
        self.apply(
            c.SetLimit(self.now, "type", task_type, rate, burst if rate else 0, concurrency=cap)
        )
        tokens = float(burst) if rate is not None else 0.0
        self.ref.type_limits[task_type] = RefLimit(rate, burst, cap, tokens, self.now)

    @invariant()
    def flow_control_agrees(self) -> None:
        assert set(self.m.paused()) == self.ref.paused
        for lim in self.m.limits():
            if lim.scope == "queue":
                assert self.ref.queue_caps[lim.name] == lim.concurrency
            else:
                ref = self.ref.type_limits[lim.name]
                assert (lim.rate, lim.concurrency, lim.tokens) == (ref.rate, ref.cap, ref.tokens)
                assert self.m.running_of_type(lim.name) == self.ref.running(task_type=lim.name)
        assert len(self.m.limits()) == len(self.ref.queue_caps) + len(self.ref.type_limits)
        for q in QUEUES:
            pending = sum(
                1 for t in self.ref.tasks.values() if t.state is S.PENDING and t.queue == q
            )
            assert self.m.pending_in(q) == pending
            may = any(
                t.state is S.PENDING and t.queue == q and self.ref.may_run(t, self.now)
                for t in self.ref.tasks.values()
            )
            assert self.m.claimable_in(q, self.now) == may

    @invariant()
    def the_key_table_agrees(self) -> None:
        assert {k.id: k.revoked_at for k in self.m.api_keys()} == self.keys

    @invariant()
    def lifetime_counters_agree(self) -> None:
        counters = self.m.meta.counters
        assert (counters.results_expired, counters.expired) == (
            self.ref.results_expired,
            self.ref.expired,
        )

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
            assert where.get(task_id) is (None if r.gone else FAMILY_OF_STATE[r.state])

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
        revived=[
            (at, TaskId(i))
            for (f, k) in store
            if f is Family.METADATA and k.startswith(TTL_REVIVED_PREFIX)
            for at, i in [parse_ttl_key(k, TTL_REVIVED_PREFIX)]
        ],
        schedules=[
            decode_schedule(v)
            for (f, k), v in store.items()
            if f is Family.METADATA and k.startswith(SCHEDULE_PREFIX)
        ],
        pauses=[
            decode_queue_pause(v)
            for (f, k), v in store.items()
            if f is Family.METADATA and k.startswith(QUEUE_PREFIX)
        ],
        limits=[
            decode_limit(v)
            for (f, k), v in sorted(store.items())
            if f is Family.METADATA and k.startswith(LIMIT_PREFIX)
        ],
    )


MachineVsReference.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMachineAgainstReferenceModel = MachineVsReference.TestCase
