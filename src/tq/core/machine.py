"""The broker state machine: the one place where task and worker state changes.

(Longer than our usual module on purpose: every state change of the product is here, in one
file, so that determinism and the transition rules can be checked by reading one place.)

Theory of operation:
- ``apply(command, fx)`` validates the command first and raises a ``TqError`` having changed
  nothing, or applies it fully; it returns a reply and appends storage mutations and task
  events to ``fx``. ``end_batch(fx)`` adds the machine's own record (counters, next seq and
  lease token) once per group commit. Nothing else mutates state.
- Determinism: no clock, no randomness, no hash-order iteration (bytes hashes are salted per
  process): groups of tasks are processed in sorted or insertion order, so every replica that
  applies the same commands reaches the same state, byte for byte.
- Memory holds the live tasks only (pending, scheduled, in progress, failed). Terminal tasks
  are written to storage and forgotten; a caller that needs one reads storage.
- Attempts are counted when a task is claimed, so a worker that crashes mid-task has used an
  attempt. A failed attempt retries after backoff while ``attempts <= max_retries``; a lost
  lease returns the task to its old place in the queue under the same rule.
- Flow control (``tq.core.flow``): paused queues, rate limits and concurrency caps decide
  which ReadyQueues a claim may take from (a limited task type's pending tasks live in lanes
  of their own); with none configured, claims and submits never consult it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable

import msgspec

from tq.core import commands as c
from tq.core import control
from tq.core.aging import AgedPicker
from tq.core.effects import Effects
from tq.core.flow import Flow
from tq.core.ids import TaskId, WorkerId, format_task_id
from tq.core.keys import validate_key
from tq.core.layout import (
    FAMILY_OF_STATE,
    MACHINE_KEY,
    TTL_REVIVED_PREFIX,
    ApiKey,
    Family,
    FlowLimit,
    IdempotencyRecord,
    MachineMeta,
    QueuePause,
    WorkerRecord,
    api_key_key,
    encode,
    idem_key,
    ttl_key,
    worker_key,
)
from tq.core.lifetimes import EXPIRABLE, EXPIRED_ERROR, expiry_error, ttl_of, validate_lifetimes
from tq.core.model import PRIORITY_MAX, PRIORITY_MIN, Lifetime, Task, TaskState, encode_task
from tq.core.queue import ReadyQueue
from tq.core.replies import (
    DONE,
    Affected,
    ClaimedTask,
    ClaimReply,
    HeartbeatReply,
    ItemCodes,
    OrdersReply,
    Reply,
    SubmitReply,
)
from tq.core.schedule_book import ScheduleBook
from tq.core.schedules import Schedule
from tq.core.sizes import claimed_size
from tq.errors import ConflictError, ErrorCode, NotFoundError, QueueFullError, ValidationError

PENDING, SCHEDULED, IN_PROGRESS = TaskState.PENDING, TaskState.SCHEDULED, TaskState.IN_PROGRESS
COMPLETED, FAILED, DEAD, CANCELLED = (
    TaskState.COMPLETED,
    TaskState.FAILED,
    TaskState.DEAD_LETTER,
    TaskState.CANCELLED,
)
OK = 0
_DELAYED = (SCHEDULED, FAILED)
_STATE_INDEX = {state: i for i, state in enumerate(TaskState)}
_RUNNING = _STATE_INDEX[IN_PROGRESS]


class Machine:
    def __init__(self) -> None:
        self._tasks: dict[TaskId, Task] = {}
        self._queues: dict[str, ReadyQueue] = {}
        self._timers: list[tuple[float, TaskId]] = []  # heap; stale entries skipped lazily
        self._expiries: list[tuple[float, TaskId]] = []  # heap of expires_at, likewise
        #: Result-lifetime index entries whose task was retried since (``tq.core.lifetimes``).
        self._revived: dict[tuple[float, TaskId], None] = {}
        self._waiting: dict[TaskId, dict[TaskId, None]] = {}  # task -> unfinished deps
        self._dependants: dict[TaskId, list[TaskId]] = {}
        self._workers: dict[WorkerId, WorkerRecord] = {}
        self._held: dict[WorkerId, dict[TaskId, None]] = {}  # in-progress tasks per worker
        self._idem: dict[str, IdempotencyRecord] = {}
        self._keys: dict[str, ApiKey] = {}  # API keys by id, revoked ones included
        self._schedules = ScheduleBook()
        self._counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self._queue_counts: dict[str, list[int]] = {}  # live tasks per queue, by _STATE_INDEX
        self.meta = MachineMeta()
        self._flow = Flow()  # paused queues, rate limits, caps (tq.core.flow)
        self._handlers: dict[type, Callable[[c.Command, Effects], Reply]] = {
            c.SubmitTasks: self._submit,  # type: ignore[dict-item]
            c.ClaimTasks: self._claim,  # type: ignore[dict-item]
            c.CompleteTasks: self._complete,  # type: ignore[dict-item]
            c.FailTasks: self._fail,  # type: ignore[dict-item]
            c.CancelTasks: self._cancel,  # type: ignore[dict-item]
            c.ReleaseTasks: self._release,  # type: ignore[dict-item]
            c.ExtendLeases: self._extend,  # type: ignore[dict-item]
            c.ExpireLeases: self._expire,  # type: ignore[dict-item]
            c.RegisterWorker: self._register,  # type: ignore[dict-item]
            c.DeregisterWorker: self._deregister,  # type: ignore[dict-item]
            c.Heartbeat: self._heartbeat,  # type: ignore[dict-item]
            c.ReportProgress: self._progress,  # type: ignore[dict-item]
            c.PromoteDue: self._promote,  # type: ignore[dict-item]
            c.ReapDeadWorkers: self._reap,  # type: ignore[dict-item]
            c.PurgeTasks: self._purge,  # type: ignore[dict-item]
            c.BrokerStarted: self._started,  # type: ignore[dict-item]
            c.RetryTasks: self._retry,  # type: ignore[dict-item]
            c.CreateKey: self._create_key,  # type: ignore[dict-item]
            c.RevokeKey: self._revoke_key,  # type: ignore[dict-item]
            c.PurgeResults: self._purge_results,  # type: ignore[dict-item]
            c.ExpireTasks: self._expire_tasks,  # type: ignore[dict-item]
            c.CreateSchedule: self._schedules.create,  # type: ignore[dict-item]
            c.PauseSchedule: self._schedules.pause,  # type: ignore[dict-item]
            c.ResumeSchedule: self._schedules.resume,  # type: ignore[dict-item]
            c.DeleteSchedule: self._schedules.delete,  # type: ignore[dict-item]
            c.FireSchedules: self._fire_schedules,  # type: ignore[dict-item]
            c.PauseQueue: self._pause,  # type: ignore[dict-item]
            c.ResumeQueue: self._resume,  # type: ignore[dict-item]
            c.SetLimit: self._set_limit,  # type: ignore[dict-item]
            c.ClearLimit: self._clear_limit,  # type: ignore[dict-item]
            c.OrderWorker: self._order,  # type: ignore[dict-item]
        }

    # ------------------------------------------------------------------ public API

    def apply(self, command: c.Command, fx: Effects) -> Reply:
        return self._handlers[type(command)](command, fx)

    def end_batch(self, fx: Effects) -> None:
        fx.put(Family.METADATA, MACHINE_KEY, encode(self.meta))

    def get(self, task_id: TaskId) -> Task | None:
        """A live task (the object itself: read it, never mutate it)."""
        return self._tasks.get(task_id)

    def count(self, state: TaskState) -> int:
        """Live tasks in ``state`` (no copy: cheap enough to ask every loop turn)."""
        return self._counts[state]

    def pending_in(self, queue: str) -> int:
        """Pending tasks of ``queue``: what a claim could take now."""
        q = self._queues.get(queue)
        n = 0 if q is None else q.size
        for lanes in self._flow.lanes.values():
            if (lane := lanes.get(queue)) is not None:
                n += lane.size
        return n

    def counts(self) -> dict[TaskState, int]:
        """Live tasks per state (terminal states are always 0: they are not kept)."""
        return dict(self._counts)

    @property
    def queued(self) -> int:
        """Tasks waiting to run: the figure backpressure compares with its threshold."""
        n = self._counts
        return n[PENDING] + n[SCHEDULED] + n[FAILED]

    def queue_depths(self) -> dict[str, tuple[int, int, int]]:
        """Pending tasks per queue and tier (low, normal, high)."""
        depths = {name: q.tier_counts() for name, q in self._queues.items() if q.size}
        for lanes in self._flow.lanes.values():
            for name, lane in lanes.items():
                if lane.size:
                    low, normal, high = depths.get(name, (0, 0, 0))
                    a, b, c_ = lane.tier_counts()
                    depths[name] = (low + a, normal + b, high + c_)
        return depths

    def queue_counts(self) -> dict[str, dict[TaskState, int]]:
        """Live tasks per queue and state."""
        return {
            queue: {s: n for s, i in _STATE_INDEX.items() if (n := counts[i])}
            for queue, counts in sorted(self._queue_counts.items())
            if any(counts)
        }

    def workers(self) -> list[WorkerRecord]:
        return list(self._workers.values())

    def worker(self, worker_id: WorkerId) -> WorkerRecord | None:
        """A worker's record (the object itself: read it, never mutate it)."""
        return self._workers.get(worker_id)

    def held_by(self, worker_id: WorkerId) -> list[TaskId]:
        """Ids of the tasks the worker holds, sorted (canonical across restarts)."""
        return sorted(self._held.get(worker_id, ()))

    def key(self, key_id: str) -> ApiKey | None:
        """An API key by id, revoked or not (a cheap dict lookup: asked on every request)."""
        return self._keys.get(key_id)

    def api_keys(self) -> list[ApiKey]:
        """Every API key, revoked ones included, by id."""
        return [self._keys[k] for k in sorted(self._keys)]

    def schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        return self._schedules.all()

    def schedule(self, name: str) -> Schedule | None:
        return self._schedules.get(name)

    def next_schedule_at(self) -> float | None:
        """When the earliest schedule not paused fires next (None: none to fire)."""
        return self._schedules.next_at()

    def live_tasks(self) -> Iterable[Task]:
        return self._tasks.values()

    # ------------------------------------------------------------------ flow control

    @property
    def flow_active(self) -> bool:
        """Whether any queue is paused or any limit set (else claims skip flow control)."""
        return self._flow.active

    def paused(self) -> dict[str, float]:
        """Paused queues and when each was paused (a copy)."""
        return dict(self._flow.paused)

    def limits(self) -> list[FlowLimit]:
        """Every limit, queues first (the records themselves: read them, never mutate them)."""
        return self._flow.limits()

    def running_of_type(self, task_type: str) -> int | None:
        """Tasks of a limited type in progress (None: the type has no limit)."""
        return self._flow.running.get(task_type)

    def running_in(self, queue: str) -> int:
        counts = self._queue_counts.get(queue)
        return 0 if counts is None else counts[_RUNNING]

    def claimable_in(self, queue: str, now: float) -> bool:
        """Whether a claim on ``queue`` at ``now`` would find a task (pause, caps and rate
        limits considered)."""
        if not self._flow.active:
            return self.pending_in(queue) > 0
        return self._flow.claimable(queue, self._queues, self.running_in, now)

    def take_flow_ready(self) -> Collection[str]:
        """Queues where claims may find tasks again since last asked (resumed, a capped
        slot freed, a limit changed or lifted): the broker serves claims parked on them."""
        return self._flow.take_ready() if self._flow.ready else ()

    def next_refill_at(self, now: float) -> float | None:
        """When a rate-limited task type that alone holds back pending tasks may be claimed
        again (None: none is held back by its rate alone)."""
        if not self._flow.types:
            return None
        return self._flow.next_refill_at(self._queues, self.running_in, now)

    def next_timer_at(self) -> float | None:
        """When the earliest scheduled or failed task becomes due (may be stale-early)."""
        return self._timers[0][0] if self._timers else None

    def next_expiry_at(self) -> float | None:
        """When the earliest waiting task with ``expires_at`` expires (may be stale-early)."""
        return self._expiries[0][0] if self._expiries else None

    # ------------------------------------------------------------------ recovery

    @classmethod
    def restore(
        cls,
        *,
        meta: MachineMeta | None,
        workers: Iterable[WorkerRecord],
        idempotency: Iterable[tuple[str, IdempotencyRecord]],
        tasks: Iterable[Task],
        terminal_state: Callable[[TaskId], TaskState | None],
        now: float,
        fx: Effects,
        keys: Iterable[ApiKey] = (),
        revived: Iterable[tuple[float, TaskId]] = (),
        schedules: Iterable[Schedule] = (),
        pauses: Iterable[QueuePause] = (),
        limits: Iterable[FlowLimit] = (),
    ) -> Machine:
        """Rebuild from stored records (live tasks, workers, keys, the machine record).

        ``terminal_state`` looks up a task that is not live (a finished dependency). The
        result is the state the machine had when those records were written; leases are not
        judged here (the broker applies ``ExpireLeases`` next, a command like any other).
        Repairs, if storage holds a dependant of a failed task, go to ``fx``. ``revived``:
        the ``ttl-revived/`` entries (purge time, task id) of the result-lifetime index.
        """
        m = cls()
        m._revived = dict.fromkeys(sorted(revived))
        if meta is not None:
            m.meta = meta
        for rec in workers:
            m._workers[rec.id] = rec
            m._held[rec.id] = {}
        for key, idem in sorted(idempotency, key=lambda kv: (kv[1].until, kv[0])):
            m._idem[key] = idem
        for api_key in keys:
            m._keys[api_key.id] = api_key
        m._schedules.by_name.update((s.name, s) for s in schedules)
        m._flow.restore(pauses, limits)
        pending: list[Task] = []
        waiting_deps: list[Task] = []
        for task in tasks:
            m._tasks[task.id] = task
            m._bump(task.queue, task.state, 1)
            state = task.state
            if task.expires_at is not None and state in EXPIRABLE:
                m._expiries.append((task.expires_at, task.id))
            if state is PENDING:
                pending.append(task)
            elif state is IN_PROGRESS:
                if task.worker_id is not None:
                    m._held.setdefault(task.worker_id, {})[task.id] = None
                m._flow.restored_running(task)
            else:
                if task.scheduled_at is not None:
                    m._timers.append((task.scheduled_at, task.id))
                if state is SCHEDULED and task.depends_on:
                    waiting_deps.append(task)
        pending.sort(key=_seq_of)  # keys come in id order: nearly seq order, so timsort is ~O(n)
        for task in pending:
            m._ready(task).push(task)
        heapq.heapify(m._timers)
        heapq.heapify(m._expiries)
        failed: list[tuple[Task, TaskId, TaskState]] = []
        for task in waiting_deps:
            waiting: dict[TaskId, None] = {}
            for dep in task.depends_on:
                if dep in m._tasks:
                    waiting[dep] = None
                    continue
                st = terminal_state(dep)
                if st is not None and st is not COMPLETED:
                    failed.append((task, dep, st))
            if waiting:
                m._waiting[task.id] = waiting
                for dep in waiting:
                    m._dependants.setdefault(dep, []).append(task.id)
        for deps in m._dependants.values():
            deps.sort()
        for task, dep, st in failed:  # cannot happen unless storage was edited: repair it
            if task.id in m._tasks and task.state is SCHEDULED:
                m._waiting.pop(task.id, None)
                task.error = f"dependency {format_task_id(dep)} ended {st.value}"
                task.completed_at = now
                m._set(task, DEAD, now)
                m._finish(task, now, fx, old=Family.PENDING)
        return m

    def snapshot(self) -> dict[str, object]:
        """A canonical, comparable picture of the whole state (tests and replica checks)."""
        timers = sorted(
            {
                (due, i)
                for due, i in self._timers
                if (t := self._tasks.get(i)) is not None
                and t.state in _DELAYED
                and t.scheduled_at == due
                and i not in self._waiting  # their timer may have fired already: not state
            }
        )
        return {
            "tasks": sorted((i, encode_task(t)) for i, t in self._tasks.items()),
            "queues": {
                name: order
                for name, q in sorted(self._queues.items())
                if (order := [t.id for t in q.ordered()])
            },
            "timers": timers,
            "waiting": sorted((i, sorted(w)) for i, w in self._waiting.items()),
            "expiries": sorted(
                {
                    (at, i)
                    for at, i in self._expiries
                    if (t := self._tasks.get(i)) is not None
                    and t.state in EXPIRABLE
                    and t.expires_at == at
                }
            ),
            "revived": sorted(self._revived),
            "workers": sorted(encode(w) for w in self._workers.values()),
            "held": sorted((w, sorted(h)) for w, h in self._held.items() if h),
            "idempotency": sorted((k, encode(r)) for k, r in self._idem.items()),
            "keys": sorted((k, encode(r)) for k, r in self._keys.items()),
            "schedules": [encode(s) for s in self._schedules.all()],
            "counts": sorted((s.value, n) for s, n in self._counts.items()),
            "queue_counts": {
                q: sorted((s.value, n) for s, n in by_state.items())
                for q, by_state in self.queue_counts().items()
            },
            "meta": encode(self.meta),
            "flow": self._flow.snapshot(),
        }

    # ------------------------------------------------------------------ submit

    def _submit(self, cmd: c.SubmitTasks, fx: Effects) -> SubmitReply:
        now, tasks, known = cmd.now, self._tasks, cmd.known
        dup_of: dict[int, TaskId] = {}
        batch: dict[TaskId, None] = {}
        batch_keys: dict[str, TaskId] = {}
        for i, t in enumerate(cmd.tasks):
            key = t.idempotency_key
            if key is not None:
                rec = self._idem.get(key)
                if rec is not None and rec.until > now:
                    dup_of[i] = TaskId(rec.task_id)
                    continue
                if key in batch_keys:
                    dup_of[i] = batch_keys[key]
                    continue
                batch_keys[key] = t.id
            _validate_new(t)
            if t.id in tasks or t.id in batch or t.id in known:
                raise ConflictError(
                    f"tasks[{i}].id: a task with id {format_task_id(t.id)} already exists",
                    ErrorCode.TASK_ALREADY_EXISTS,
                )
            for dep in t.depends_on:
                if dep not in tasks and dep not in batch and dep not in known:
                    raise ConflictError(
                        f"tasks[{i}].depends_on: no task with id {format_task_id(dep)}",
                        ErrorCode.DEPENDENCY_NOT_FOUND,
                    )
            batch[t.id] = None
        if self.queued + len(batch) > cmd.max_queued:
            raise QueueFullError(
                f"{self.queued} tasks queued; {len(batch)} more would pass the "
                f"backpressure threshold of {cmd.max_queued}"
            )
        ids: list[TaskId] = []
        created: list[bool] = []
        ended: dict[TaskId, TaskState] = {}  # tasks of this batch that ended while admitted
        for i, t in enumerate(cmd.tasks):
            if i in dup_of:
                ids.append(dup_of[i])
                created.append(False)
                continue
            self._admit(t, cmd, ended, fx)
            ids.append(t.id)
            created.append(True)
        self.meta.counters.submitted += len(batch)
        return SubmitReply(ids, created)

    def _admit(
        self, t: c.NewTask, cmd: c.SubmitTasks, ended: dict[TaskId, TaskState], fx: Effects
    ) -> None:
        now = cmd.now
        task = Task(
            t.id, t.task_type, t.queue, t.payload, t.priority, PENDING, now, now,
            scheduled_at=t.scheduled_at, max_retries=t.max_retries, timeout=t.timeout,
            retry=t.retry, depends_on=t.depends_on, tags=t.tags,
            idempotency_key=t.idempotency_key, expires_at=t.expires_at, aging=t.aging,
            lifetime=None if t.result_ttl is None and t.failure_ttl is None
            else Lifetime(t.result_ttl, t.failure_ttl),
        )  # fmt: skip
        self._tasks[t.id] = task
        if t.idempotency_key is not None:
            rec = IdempotencyRecord(t.id, now + cmd.idempotency_window)
            self._idem[t.idempotency_key] = rec
            fx.put(Family.METADATA, idem_key(t.idempotency_key), encode(rec))
        waiting: dict[TaskId, None] = {}
        if t.depends_on:
            # A dependency that is not live ended before: known from storage, or earlier in
            # this very batch (a task admitted straight into dead letter).
            finished = {
                d: ended.get(d) or cmd.known[d] for d in t.depends_on if d not in self._tasks
            }
            failed_dep = next((d for d, st in finished.items() if st is not COMPLETED), None)
            if failed_dep is not None:
                task.state = DEAD
                task.error = (
                    f"dependency {format_task_id(failed_dep)} ended {finished[failed_dep].value}"
                )
                ended[t.id] = DEAD
                self._bump(task.queue, DEAD, 1)
                self._finish(task, now, fx)
                return
            waiting = {d: None for d in t.depends_on if d in self._tasks}
            for d in waiting:
                self._dependants.setdefault(d, []).append(t.id)
            if waiting:
                self._waiting[t.id] = waiting
        due_later = t.scheduled_at is not None and t.scheduled_at > now
        if t.scheduled_at is not None and due_later:
            heapq.heappush(self._timers, (t.scheduled_at, t.id))
        if waiting or due_later:
            task.state = SCHEDULED
        else:
            self._enqueue(task, now)
        if t.expires_at is not None:
            heapq.heappush(self._expiries, (t.expires_at, t.id))
        self._bump(task.queue, task.state, 1)
        fx.mutations.append((Family.PENDING, task.id, encode_task(task)))
        fx.event(task)

    # ------------------------------------------------------------------ claim / results

    def _claim(self, cmd: c.ClaimTasks, fx: Effects) -> ClaimReply:
        now = cmd.now
        if cmd.max_tasks < 1:
            raise ValidationError(f"max_tasks must be >= 1, got {cmd.max_tasks}")
        if cmd.aging is not None:
            cmd.aging.validate()
        held = self._ensure_worker(cmd.worker_id, cmd.queues, now, fx)
        flow = self._flow
        if flow.active:
            queues = flow.candidates(cmd.queues, self._queues, self.running_in, now)
        else:
            queues = [q for name in cmd.queues if (q := self._queues.get(name)) is not None]
        out: list[ClaimedTask] = []
        token = self.meta.next_lease_token
        lease_until = now + cmd.lease_duration
        add = fx.mutations.append
        room = cmd.max_bytes if cmd.max_bytes > 0 else -1  # -1: no byte budget
        aged = None if cmd.aging is None else AgedPicker(queues, cmd.aging, now)
        while len(out) < cmd.max_tasks:
            task = _pop_best(queues) if aged is None else aged.pop()
            if task is None:
                break
            if room >= 0 and not (task.expires_at is not None and task.expires_at <= now):
                size = claimed_size(task)
                if size > room:
                    self._ready(task).push(task)  # back in its place (same seq)
                    break
                room -= size
            self._bump(task.queue, PENDING, -1)
            if task.expires_at is not None and task.expires_at <= now:
                task.error = EXPIRED_ERROR
                task.completed_at = now
                self._bump(task.queue, CANCELLED, 1)
                self.meta.counters.cancelled += 1
                self.meta.counters.expired += 1
                task.transition(CANCELLED, now)
                self._finish(task, now, fx, old=Family.PENDING)
                continue
            task.transition(IN_PROGRESS, now)
            task.attempts += 1
            task.worker_id = cmd.worker_id
            task.lease_expires_at = lease_until
            task.lease_token = token
            task.started_at = now
            task.progress = 0
            task.progress_message = None
            token += 1
            held[task.id] = None
            self._bump(task.queue, IN_PROGRESS, 1)
            if flow.active:  # its type or queue may have reached a limit: ask again
                flow.took(task, now)
                queues = flow.candidates(cmd.queues, self._queues, self.running_in, now)
                if aged is not None and cmd.aging is not None:  # rank the new candidates
                    aged = AgedPicker(queues, cmd.aging, now)
            add((Family.PENDING, task.id, None))
            add((Family.IN_PROGRESS, task.id, encode_task(task)))
            fx.event(task)
            out.append(
                ClaimedTask(
                    task.id,
                    task.task_type,
                    task.queue,
                    task.payload,
                    task.priority,
                    task.attempts,
                    task.max_retries,
                    task.timeout,
                    task.lease_token,
                    lease_until,
                    task.created_at,
                    task.tags,
                )
            )
        if flow.spent:
            flow.write_spent(fx)
        self.meta.next_lease_token = token
        self.meta.counters.claimed += len(out)
        return ClaimReply(out)

    def _leased(self, task_id: TaskId, token: int) -> Task | int:
        task = self._tasks.get(task_id)
        if task is None:
            return ErrorCode.TASK_NOT_FOUND
        if task.state is not IN_PROGRESS or task.lease_token != token:
            return ErrorCode.LEASE_MISMATCH
        return task

    def _complete(self, cmd: c.CompleteTasks, fx: Effects) -> ItemCodes:
        now, codes = cmd.now, list[int]()
        for item in cmd.items:
            task = self._leased(item.task_id, item.lease_token)
            if isinstance(task, int):
                codes.append(task)
                continue
            self._unhold(task)
            task.result = item.result
            task.completed_at = now
            task.lease_expires_at = None
            task.progress = 100
            self._set(task, COMPLETED, now)
            self._finish(task, now, fx, old=Family.IN_PROGRESS)
            self.meta.counters.completed += 1
            codes.append(OK)
        return ItemCodes(codes)

    def _fail(self, cmd: c.FailTasks, fx: Effects) -> ItemCodes:
        now, codes = cmd.now, list[int]()
        for item in cmd.items:
            task = self._leased(item.task_id, item.lease_token)
            if isinstance(task, int):
                codes.append(task)
                continue
            self._unhold(task)
            task.error = item.error
            task.error_type = item.error_type
            task.lease_expires_at = None
            self.meta.counters.failed_attempts += 1
            if item.retry and task.attempts <= task.max_retries:
                policy = task.retry or cmd.default_retry
                task.scheduled_at = now + policy.delay(task.attempts, item.jitter)
                self._set(task, FAILED, now)
                fx.delete(Family.IN_PROGRESS, task.id)
                fx.put_task(Family.FAILED, task)
                fx.event(task)
                heapq.heappush(self._timers, (task.scheduled_at, task.id))
                if task.expires_at is not None:  # its entry may have been met while it ran
                    heapq.heappush(self._expiries, (task.expires_at, task.id))
                self.meta.counters.retried += 1
            else:
                task.completed_at = now
                self._set(task, DEAD, now)
                self._finish(task, now, fx, old=Family.IN_PROGRESS)
            codes.append(OK)
        return ItemCodes(codes)

    def _cancel(self, cmd: c.CancelTasks, fx: Effects) -> ItemCodes:
        now, codes = cmd.now, list[int]()
        for task_id in cmd.task_ids:
            task = self._tasks.get(task_id)
            if task is None:
                codes.append(ErrorCode.TASK_NOT_FOUND)
                continue
            old = task.state
            if old is PENDING:
                self._ready(task).discard(task)
            elif old is IN_PROGRESS:
                self._unhold(task)
                task.lease_expires_at = None
            self._waiting.pop(task_id, None)
            task.completed_at = now
            self._set(task, CANCELLED, now)
            self._finish(task, now, fx, old=FAMILY_OF_STATE[old])
            self.meta.counters.cancelled += 1
            codes.append(OK)
        return ItemCodes(codes)

    def _release(self, cmd: c.ReleaseTasks, fx: Effects) -> ItemCodes:
        now, codes = cmd.now, list[int]()
        held = self._held.get(cmd.worker_id, {})
        for item in cmd.items:
            task = self._leased(item.task_id, item.lease_token)
            if isinstance(task, int):
                codes.append(task)
            elif item.task_id not in held:
                codes.append(ErrorCode.LEASE_MISMATCH)
            else:
                task.attempts -= 1  # never started: the attempt does not count
                self._requeue(task, now, fx)
                codes.append(OK)
        return ItemCodes(codes)

    def _progress(self, cmd: c.ReportProgress, fx: Effects) -> Reply:
        if not 0 <= cmd.percent <= 100:
            raise ValidationError(f"progress must be within 0..100, got {cmd.percent}")
        task = self._leased(cmd.task_id, cmd.lease_token)
        if isinstance(task, int):
            raise ConflictError(
                f"task {format_task_id(cmd.task_id)} is not running under lease {cmd.lease_token}",
                ErrorCode(task),
            )
        task.progress = cmd.percent
        task.progress_message = cmd.message
        task.updated_at = cmd.now
        fx.put_task(Family.IN_PROGRESS, task)
        fx.event(task, progress=True)
        return DONE

    # ------------------------------------------------------------------ leases and workers

    def _extend(self, cmd: c.ExtendLeases, fx: Effects) -> ItemCodes:
        held = self._held.get(cmd.worker_id, {})
        ids = held if cmd.task_ids is None else cmd.task_ids
        codes: list[int] = []
        until = cmd.now + cmd.lease_duration
        for task_id in ids:
            if task_id not in held:
                codes.append(ErrorCode.LEASE_MISMATCH)
                continue
            task = self._tasks[task_id]
            task.lease_expires_at = until
            fx.put_task(Family.IN_PROGRESS, task)
            codes.append(OK)
        return ItemCodes(codes)

    def _expire(self, cmd: c.ExpireLeases, fx: Effects) -> Affected:
        now = cmd.now
        expired = sorted(
            (t.lease_expires_at, t.id)
            for held in self._held.values()
            for i in held
            if (t := self._tasks[i]).lease_expires_at is not None and t.lease_expires_at <= now
        )
        for _, task_id in expired:
            self._lease_lost(self._tasks[task_id], now, fx, "lease expired")
        return Affected([i for _, i in expired])

    def _lease_lost(self, task: Task, now: float, fx: Effects, why: str) -> None:
        self.meta.counters.leases_expired += 1
        self.meta.counters.failed_attempts += 1
        task.error = f"{why} (worker {task.worker_id}, attempt {task.attempts})"
        if task.attempts <= task.max_retries:
            self._requeue(task, now, fx)
        else:
            self._unhold(task)
            task.lease_expires_at = None
            task.completed_at = now
            self._set(task, DEAD, now)
            self._finish(task, now, fx, old=Family.IN_PROGRESS)

    def _requeue(self, task: Task, now: float, fx: Effects) -> None:
        """In progress -> pending at its old place (same seq)."""
        self._unhold(task)
        task.worker_id = None
        task.lease_expires_at = None
        self._set(task, PENDING, now)
        self._ready(task).push(task)
        if task.expires_at is not None:  # its entry may have been met while it ran
            heapq.heappush(self._expiries, (task.expires_at, task.id))
        fx.delete(Family.IN_PROGRESS, task.id)
        fx.put_task(Family.PENDING, task)
        fx.event(task)

    def _ensure_worker(
        self, worker_id: WorkerId, queues: tuple[str, ...], now: float, fx: Effects
    ) -> dict[TaskId, None]:
        if worker_id not in self._workers:
            rec = WorkerRecord(worker_id, worker_id, queues, 0, now, now)
            self._workers[worker_id] = rec
            fx.put(Family.METADATA, worker_key(worker_id), encode(rec))
        return self._held.setdefault(worker_id, {})

    def _register(self, cmd: c.RegisterWorker, fx: Effects) -> Reply:
        if cmd.concurrency < 1:
            raise ValidationError(f"concurrency must be >= 1, got {cmd.concurrency}")
        old = self._workers.get(cmd.worker_id)
        rec = WorkerRecord(
            cmd.worker_id, cmd.name, cmd.queues, cmd.concurrency,
            old.registered_at if old else cmd.now, cmd.now, cmd.hostname, cmd.pid,
        )  # fmt: skip
        if old is not None:  # orders outlive a new registration (a broker restart makes one)
            rec.orders = old.orders
            control.acknowledge(rec, cmd.acked)
        self._workers[cmd.worker_id] = rec
        self._held.setdefault(cmd.worker_id, {})
        fx.put(Family.METADATA, worker_key(cmd.worker_id), encode(rec))
        return OrdersReply(None, rec.orders)

    def _heartbeat(self, cmd: c.Heartbeat, fx: Effects) -> HeartbeatReply:
        held = self._ensure_worker(cmd.worker_id, (), cmd.now, fx)
        rec = self._workers[cmd.worker_id]
        rec.last_heartbeat = cmd.now
        rec.stats = cmd.stats
        rec.started = control.started_of(cmd.started, held) if cmd.started else ()
        rec.draining = cmd.draining
        control.acknowledge(rec, cmd.acked)
        fx.put(Family.METADATA, worker_key(cmd.worker_id), encode(rec))
        # Only the leases it lists: a task held but not listed was claimed by a request
        # whose reply never reached the worker (lost with a connection, or a failover); it
        # keeps its expiry and returns to the queue then, instead of staying leased for as
        # long as the worker lives.
        listed = tuple(i for i in cmd.running if i in held)
        if listed:
            self._extend(c.ExtendLeases(cmd.now, cmd.worker_id, cmd.lease_duration, listed), fx)
        unknown = [i for i in cmd.running if i not in held]
        return HeartbeatReply(cmd.now + cmd.lease_duration, unknown, rec.orders)

    def _order(self, cmd: c.OrderWorker, fx: Effects) -> OrdersReply:
        rec = self._workers.get(cmd.worker_id)
        if rec is None:
            raise NotFoundError(f"no worker with id {cmd.worker_id!r}", ErrorCode.WORKER_NOT_FOUND)
        order = control.new_order(rec, cmd.action, cmd.queue, self.meta.next_order, cmd.now)
        if order is not None:
            self.meta.next_order += 1
            rec.orders = (*rec.orders, order)
            fx.put(Family.METADATA, worker_key(cmd.worker_id), encode(rec))
        return OrdersReply(order, rec.orders)

    def _drop_worker(self, worker_id: WorkerId, now: float, fx: Effects, why: str) -> list[TaskId]:
        ids = sorted(self._held.get(worker_id, ()))
        for task_id in ids:
            self._lease_lost(self._tasks[task_id], now, fx, why)
        self._held.pop(worker_id, None)
        del self._workers[worker_id]
        fx.delete(Family.METADATA, worker_key(worker_id))
        return ids

    def _deregister(self, cmd: c.DeregisterWorker, fx: Effects) -> Affected:
        if cmd.worker_id not in self._workers:
            return Affected([])
        return Affected(self._drop_worker(cmd.worker_id, cmd.now, fx, "worker deregistered"))

    def _reap(self, cmd: c.ReapDeadWorkers, fx: Effects) -> Affected:
        dead = sorted(
            w for w, rec in self._workers.items() if rec.last_heartbeat + cmd.dead_after < cmd.now
        )
        lost: list[TaskId] = []
        for worker_id in dead:
            lost += self._drop_worker(worker_id, cmd.now, fx, "worker stopped heartbeating")
        return Affected(lost)

    def _started(self, cmd: c.BrokerStarted, fx: Effects) -> Reply:
        # A claim may have been handed out before its batch was durable, then lost in a crash;
        # a new epoch of tokens keeps its token from being issued again (fencing holds).
        self.meta.epoch += 1
        self.meta.next_lease_token = max(self.meta.next_lease_token, self.meta.epoch << 40)
        for worker_id in sorted(self._workers):
            rec = self._workers[worker_id]
            rec.last_heartbeat = max(rec.last_heartbeat, cmd.now)
            fx.put(Family.METADATA, worker_key(worker_id), encode(rec))
        return DONE

    # ------------------------------------------------------------------ time-driven

    def _promote(self, cmd: c.PromoteDue, fx: Effects) -> Affected:
        now, timers, promoted = cmd.now, self._timers, []
        while timers and timers[0][0] <= now:
            due, task_id = heapq.heappop(timers)
            task = self._tasks.get(task_id)
            if (
                task is None
                or task.state not in _DELAYED
                or task.scheduled_at != due
                or task_id in self._waiting
            ):
                continue
            old = task.state
            self._set(task, PENDING, now)
            self._enqueue(task, now)
            if old is FAILED:
                fx.delete(Family.FAILED, task_id)
            fx.put_task(Family.PENDING, task)
            fx.event(task)
            promoted.append(task_id)
        idem = self._idem
        while idem:
            key = next(iter(idem))
            if idem[key].until > now:
                break
            del idem[key]
            fx.delete(Family.METADATA, idem_key(key))
        return Affected(promoted)

    def _retry(self, cmd: c.RetryTasks, fx: Effects) -> ItemCodes:
        """Dead letter -> pending with a fresh retry budget, at the back of its priority."""
        now, codes = cmd.now, list[int]()
        for stored in cmd.tasks:
            if stored.id in self._tasks:
                codes.append(ErrorCode.INVALID_STATE)  # already live again
                continue
            if stored.state is not DEAD:
                codes.append(ErrorCode.INVALID_STATE)
                continue
            task = msgspec.structs.replace(
                stored, attempts=0, error=None, error_type=None, worker_id=None,
                lease_expires_at=None, completed_at=None, started_at=None, progress=0,
                progress_message=None, scheduled_at=None,
            )  # fmt: skip
            if stored.lifetime is not None and stored.lifetime.purge_at is not None:
                task.lifetime = msgspec.structs.replace(stored.lifetime, purge_at=None)
                # Its index entry stays (the purge job may have read it already): marked, it
                # will delete only itself when due, never the record this attempt leaves.
                entry = (stored.lifetime.purge_at, task.id)
                self._revived[entry] = None
                fx.put(Family.METADATA, ttl_key(*entry, TTL_REVIVED_PREFIX), b"")
            if task.expires_at is not None:
                heapq.heappush(self._expiries, (task.expires_at, task.id))
            self._tasks[task.id] = task
            self._bump(task.queue, DEAD, 1)
            self._set(task, PENDING, now)
            self._enqueue(task, now)
            fx.delete(Family.DEAD_LETTER, task.id)
            fx.put_task(Family.PENDING, task)
            fx.event(task)
            self.meta.counters.retried += 1
            codes.append(OK)
        return ItemCodes(codes)

    def _purge(self, cmd: c.PurgeTasks, fx: Effects) -> Affected:
        if len(cmd.task_ids) != len(cmd.states):
            raise ValidationError("purge: task_ids and states differ in length")
        purged = []
        for task_id, state in zip(cmd.task_ids, cmd.states, strict=True):
            if not state.is_terminal:
                raise ValidationError(f"purge: {state.value} is not a terminal state")
            if task_id in self._tasks:  # revived since the caller scanned (retried): keep
                continue
            fx.delete(FAMILY_OF_STATE[state], task_id)
            purged.append(task_id)
        self.meta.counters.purged += len(purged)
        return Affected(purged)

    def _purge_results(self, cmd: c.PurgeResults, fx: Effects) -> Affected:
        for e in (*cmd.entries, *cmd.orphans):
            if e.state is not COMPLETED and e.state is not DEAD:
                raise ValidationError(
                    f"purge results: {e.state.value} tasks have no result lifetime"
                )
        purged: list[TaskId] = []
        for n, e in enumerate((*cmd.orphans, *cmd.entries)):
            entry = (e.purge_at, e.task_id)
            fx.delete(Family.METADATA, ttl_key(*entry))
            if entry in self._revived:  # retried since: a later record may stand there now
                del self._revived[entry]
                fx.delete(Family.METADATA, ttl_key(*entry, TTL_REVIVED_PREFIX))
                continue
            # An orphan's record is gone already; a live task with an entry not marked
            # revived cannot happen unless storage was edited: keep it.
            if n < len(cmd.orphans) or e.task_id in self._tasks:
                continue
            fx.delete(FAMILY_OF_STATE[e.state], e.task_id)
            purged.append(e.task_id)
        self.meta.counters.results_expired += len(purged)
        return Affected(purged)

    def _expire_tasks(self, cmd: c.ExpireTasks, fx: Effects) -> Affected:
        now, heap, expired = cmd.now, self._expiries, list[TaskId]()
        limit = cmd.max_tasks if cmd.max_tasks > 0 else -1
        while heap and heap[0][0] <= now and len(expired) != limit:
            at, task_id = heapq.heappop(heap)
            task = self._tasks.get(task_id)
            if task is None or task.state not in EXPIRABLE or task.expires_at != at:
                continue  # ended, or running: a running task runs to its end
            old = task.state
            if old is PENDING:
                self._ready(task).discard(task)
            self._waiting.pop(task_id, None)
            task.error = expiry_error(task)
            task.completed_at = now
            self._set(task, CANCELLED, now)
            self._finish(task, now, fx, old=FAMILY_OF_STATE[old])
            self.meta.counters.cancelled += 1
            self.meta.counters.expired += 1
            expired.append(task_id)
        return Affected(expired)

    # ------------------------------------------------------------------ API keys

    def _create_key(self, cmd: c.CreateKey, fx: Effects) -> Reply:
        key = cmd.key
        validate_key(key)
        if key.id in self._keys:
            raise ConflictError(
                f"an API key with id {key.id} already exists", ErrorCode.KEY_ALREADY_EXISTS
            )
        self._keys[key.id] = key
        fx.put(Family.METADATA, api_key_key(key.id), encode(key))
        return DONE

    def _revoke_key(self, cmd: c.RevokeKey, fx: Effects) -> Reply:
        key = self._keys.get(cmd.key_id)
        if key is None:
            raise NotFoundError(f"no API key with id {cmd.key_id!r}", ErrorCode.KEY_NOT_FOUND)
        if key.revoked_at is None:
            key = msgspec.structs.replace(key, revoked_at=cmd.now)
            self._keys[key.id] = key
            fx.put(Family.METADATA, api_key_key(key.id), encode(key))
        return DONE

    # ------------------------------------------------------------------ schedules

    def _fire_schedules(self, cmd: c.FireSchedules, fx: Effects) -> ItemCodes:
        return self._schedules.fire(cmd, fx, self._submit)

    # ------------------------------------------------------------------ flow control

    def _pause(self, cmd: c.PauseQueue, fx: Effects) -> Reply:
        self._flow.pause(cmd, fx)
        return DONE

    def _resume(self, cmd: c.ResumeQueue, fx: Effects) -> Reply:
        self._flow.resume(cmd, fx)
        return DONE

    def _set_limit(self, cmd: c.SetLimit, fx: Effects) -> Reply:
        self._flow.set_limit(cmd, self._queues, self._tasks.values(), fx)
        return DONE

    def _clear_limit(self, cmd: c.ClearLimit, fx: Effects) -> Reply:
        self._flow.clear_limit(cmd, self._queues, fx)
        return DONE

    # ------------------------------------------------------------------ helpers

    def _ready(self, task: Task) -> ReadyQueue:
        """The ReadyQueue a pending task lives in: its queue's, or its limited type's lane."""
        if self._flow.lanes:
            lane = self._flow.lane(task)
            if lane is not None:
                return lane
        return self._queue(task.queue)

    def _queue(self, name: str) -> ReadyQueue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = ReadyQueue(name)
        return q

    def _enqueue(self, task: Task, now: float) -> None:
        """Enter the pending queue at the back of its priority (a fresh seq), its aging wait
        starting now (or at the latest start given, should the clock have gone back)."""
        meta = self.meta
        task.seq = meta.next_seq
        meta.next_seq += 1
        meta.last_queued_at = max(meta.last_queued_at, now)
        task.queued_at = meta.last_queued_at
        if self._flow.lanes:
            self._ready(task).push(task)
        else:  # the submit path: no call more than before flow control
            self._queue(task.queue).push(task)

    def _set(self, task: Task, state: TaskState, now: float) -> None:
        if self._flow.active and task.state is IN_PROGRESS:
            self._flow.left(task)
        self._bump(task.queue, task.state, -1)
        task.transition(state, now)
        self._bump(task.queue, state, 1)

    def _bump(self, queue: str, state: TaskState, delta: int) -> None:
        self._counts[state] += delta
        per_queue = self._queue_counts.get(queue)
        if per_queue is None:
            per_queue = self._queue_counts[queue] = [0] * len(_STATE_INDEX)
        per_queue[_STATE_INDEX[state]] += delta

    def _unhold(self, task: Task) -> None:
        if task.worker_id is not None:
            held = self._held.get(task.worker_id)
            if held is not None:
                held.pop(task.id, None)

    def _index_result(self, task: Task, life: Lifetime, purge_at: float, fx: Effects) -> None:
        """Give a finished task its purge time and its entry in the result-lifetime index."""
        task.lifetime = msgspec.structs.replace(life, purge_at=purge_at)
        entry = (purge_at, task.id)
        fx.put(Family.METADATA, ttl_key(*entry), task.state.value.encode())
        if entry in self._revived:  # the same key again: from now on it stands for this record
            del self._revived[entry]
            fx.delete(Family.METADATA, ttl_key(*entry, TTL_REVIVED_PREFIX))

    def _finish(self, task: Task, now: float, fx: Effects, old: Family | None = None) -> None:
        """Write a task that reached a terminal state, forget it, and settle its dependants
        (they become ready, or fail in turn: a worklist, so long chains cannot recurse)."""
        work = [(task, old)]
        add = fx.mutations.append
        while work:
            t, old_family = work.pop()
            if old_family is not None:
                add((old_family, t.id, None))
            if (life := t.lifetime) is not None and (ttl := ttl_of(t)) is not None:
                self._index_result(t, life, now + ttl, fx)
            add((FAMILY_OF_STATE[t.state], t.id, encode_task(t)))
            fx.event(t)
            del self._tasks[t.id]
            self._bump(t.queue, t.state, -1)  # live counts only: terminal tasks leave memory
            if t.id not in self._dependants:
                continue
            for dep_id in sorted(self._dependants.pop(t.id)):
                d = self._tasks.get(dep_id)
                waiting = self._waiting.get(dep_id)
                if d is None or waiting is None or t.id not in waiting:
                    continue
                if t.state is COMPLETED:
                    del waiting[t.id]
                    if not waiting:
                        del self._waiting[dep_id]
                        if d.scheduled_at is None or d.scheduled_at <= now:
                            self._set(d, PENDING, now)
                            self._enqueue(d, now)
                            fx.put_task(Family.PENDING, d)
                            fx.event(d)
                        else:
                            # Its timer may have fired, and been dropped, while it waited (a
                            # clock that went back between commands): due later, it needs
                            # one, as recovery would give it. A duplicate entry is harmless.
                            heapq.heappush(self._timers, (d.scheduled_at, d.id))
                else:
                    del self._waiting[dep_id]
                    d.error = f"dependency {format_task_id(t.id)} ended {t.state.value}"
                    d.completed_at = now
                    self._set(d, DEAD, now)
                    self.meta.counters.dead_lettered += 1
                    work.append((d, Family.PENDING))
        if task.state is DEAD:
            self.meta.counters.dead_lettered += 1


def _seq_of(task: Task) -> int:
    return task.seq


def _pop_best(queues: list[ReadyQueue]) -> Task | None:
    """Pop the best task across queues: highest priority, then lowest seq (oldest)."""
    if len(queues) == 1:
        return queues[0].pop()
    best: ReadyQueue | None = None
    best_key = (-1, 0)
    for q in queues:
        t = q.peek()
        if t is not None and (t.priority, -t.seq) > best_key:
            best, best_key = q, (t.priority, -t.seq)
    return best.pop() if best is not None else None


def _validate_new(t: c.NewTask) -> None:
    if not PRIORITY_MIN <= t.priority <= PRIORITY_MAX:
        raise ValidationError(f"priority must be within 0..255, got {t.priority}")
    if t.max_retries < 0:
        raise ValidationError(f"max_retries must be >= 0, got {t.max_retries}")
    if not t.task_type:
        raise ValidationError("task_type must not be empty")
    if not t.queue:
        raise ValidationError("queue must not be empty")
    if t.timeout is not None and t.timeout <= 0:
        raise ValidationError(f"timeout must be > 0 seconds, got {t.timeout}")
    if len(t.id) != 16:
        raise ValidationError(f"task id must be 16 bytes, got {len(t.id)}")
    if t.result_ttl is not None or t.failure_ttl is not None or t.expires_at is not None:
        validate_lifetimes(t)
