"""Commands: every change of broker state, as data.

Rules: a command carries everything non-deterministic its application needs (the time ``now``,
new task ids, random draws for jitter, limits from configuration), so applying the same
command stream to two fresh machines gives identical state. Commands are msgspec Structs in a
tagged union encoded as compact MessagePack arrays: the replication log (later: etcd) stores
exactly these bytes. Fields are only ever appended, with defaults.
"""

from __future__ import annotations

import msgspec

from tq.core.aging import AgingPolicy
from tq.core.control import OrderAction
from tq.core.ids import TaskId, WorkerId
from tq.core.layout import ApiKey, WorkerStats
from tq.core.model import RetryPolicy, Task, TaskState
from tq.core.schedules import Schedule


class _Command(msgspec.Struct, array_like=True, frozen=True, tag_field="t"):
    now: float


class NewTask(msgspec.Struct, array_like=True, frozen=True):
    """A fully resolved submission: defaults applied and the id assigned by the caller."""

    id: TaskId
    task_type: str
    queue: str
    payload: bytes
    priority: int
    max_retries: int
    scheduled_at: float | None = None
    timeout: float | None = None
    retry: RetryPolicy | None = None
    depends_on: tuple[TaskId, ...] = ()
    tags: dict[str, str] = {}
    idempotency_key: str | None = None
    expires_at: float | None = None
    result_ttl: float | None = None
    failure_ttl: float | None = None
    aging: bool = True  # False: the task keeps its priority however long it waits


class SubmitTasks(_Command, frozen=True, tag=1):
    """Admit tasks, all or none. ``known`` holds the terminal state of every referenced id
    (dependency or client-chosen id) that is not live, as found in storage by the caller."""

    tasks: tuple[NewTask, ...]
    max_queued: int  # backpressure threshold: refuse if queued tasks would exceed it
    idempotency_window: float = 86400.0
    known: dict[TaskId, TaskState] = {}


class ClaimTasks(_Command, frozen=True, tag=2):
    """Hand out up to ``max_tasks`` tasks whose records (``sizes.claimed_size``) fit in
    ``max_bytes`` together (0: no byte budget). A task that does not fit stays where it is
    and ends the claim: it waits for a claim with room, never skipped by a smaller one."""

    worker_id: WorkerId
    queues: tuple[str, ...]
    max_tasks: int
    lease_duration: float
    max_bytes: int = 0
    #: Priority aging as configured when the claim was made; None: off (compare by the
    #: submitted priority). ``now`` is the time tasks' waits are measured at.
    aging: AgingPolicy | None = None


class CompletedItem(msgspec.Struct, array_like=True, frozen=True):
    task_id: TaskId
    lease_token: int
    result: bytes | None = None


class CompleteTasks(_Command, frozen=True, tag=3):
    items: tuple[CompletedItem, ...]


class FailedItem(msgspec.Struct, array_like=True, frozen=True):
    task_id: TaskId
    lease_token: int
    error: str
    retry: bool = True  # False: the handler asked not to retry; dead-letter now
    jitter: float = 0.5  # the random draw in [0, 1) for backoff jitter, made by the caller
    error_type: str | None = None


class FailTasks(_Command, frozen=True, tag=4):
    items: tuple[FailedItem, ...]
    #: Backoff for tasks submitted without a policy of their own (from configuration).
    default_retry: RetryPolicy = RetryPolicy()


class CancelTasks(_Command, frozen=True, tag=5):
    task_ids: tuple[TaskId, ...]


class ReleasedItem(msgspec.Struct, array_like=True, frozen=True):
    task_id: TaskId
    lease_token: int


class ReleaseTasks(_Command, frozen=True, tag=6):
    """A worker hands back tasks it claimed but never started (graceful shutdown, prefetch).

    Each item quotes the lease token of its claim, as results do: a release that comes late
    (the lease expired and the task was claimed again, maybe by the same worker) must not
    free the later attempt. Replaced ``task_ids`` before any command log was kept.
    """

    worker_id: WorkerId
    items: tuple[ReleasedItem, ...]


class ExtendLeases(_Command, frozen=True, tag=7):
    """Extend the leases this worker holds (all of them when ``task_ids`` is None)."""

    worker_id: WorkerId
    lease_duration: float
    task_ids: tuple[TaskId, ...] | None = None


class ExpireLeases(_Command, frozen=True, tag=8):
    """Return tasks whose lease ended at or before ``now`` to the queue (attempt counted)."""


class RegisterWorker(_Command, frozen=True, tag=9):
    worker_id: WorkerId
    name: str
    queues: tuple[str, ...]
    concurrency: int
    hostname: str = ""
    pid: int = 0
    #: Every order numbered up to this one was carried out (``tq.core.control``).
    acked: int = 0


class DeregisterWorker(_Command, frozen=True, tag=10):
    worker_id: WorkerId


class Heartbeat(_Command, frozen=True, tag=11):
    """Worker liveness + stats; registers an unknown worker; extends the leases it lists in
    ``running`` (a held task not listed keeps its expiry)."""

    worker_id: WorkerId
    lease_duration: float
    stats: WorkerStats = WorkerStats()
    running: tuple[TaskId, ...] = ()
    #: Of ``running``, those started (the rest are reserved: claimed, not started).
    started: tuple[TaskId, ...] = ()
    #: The worker drains: it claims no more, finishing what it runs.
    draining: bool = False
    #: Every order numbered up to this one was carried out.
    acked: int = 0


class ReportProgress(_Command, frozen=True, tag=12):
    task_id: TaskId
    lease_token: int
    percent: int
    message: str | None = None


class PromoteDue(_Command, frozen=True, tag=13):
    """Scheduled and failed tasks whose time came become pending; expired idempotency keys
    are forgotten."""


class ReapDeadWorkers(_Command, frozen=True, tag=14):
    """Forget workers silent for longer than ``dead_after``; their tasks return to the queue."""

    dead_after: float


class PurgeTasks(_Command, frozen=True, tag=15):
    """Delete terminal tasks past retention. The caller finds them by scanning storage (the
    machine keeps no terminal tasks in memory); every replica deletes the same ids."""

    task_ids: tuple[TaskId, ...]
    states: tuple[TaskState, ...]


class BrokerStarted(_Command, frozen=True, tag=16):
    """After recovery: every known worker gets a fresh heartbeat clock (it could not reach a
    broker that was down), so none is declared dead before it had a chance to reconnect; and
    lease tokens move to a new epoch, so none handed out before a crash is ever reissued."""


class RetryTasks(_Command, frozen=True, tag=17):
    """Requeue dead-lettered tasks as fresh attempts. The machine keeps no finished task in
    memory, so the caller reads their records from storage and the command carries them
    (every replica then requeues exactly the same tasks)."""

    tasks: tuple[Task, ...]


class CreateKey(_Command, frozen=True, tag=18):
    """Store a new API key. Its secret was drawn and bcrypt-hashed by the caller: the command
    carries only the hash, so replaying it gives the same key on every replica."""

    key: ApiKey


class RevokeKey(_Command, frozen=True, tag=19):
    """Revoke an API key at ``now`` (the record stays, marked; revoking twice keeps the first
    time)."""

    key_id: str


class ResultEntry(msgspec.Struct, array_like=True, frozen=True):
    """One entry of the result-lifetime index (``tq.core.lifetimes``): the task, the time it
    falls due and the terminal state it was written in (which family holds its record)."""

    task_id: TaskId
    purge_at: float
    state: TaskState


class PurgeResults(_Command, frozen=True, tag=30):
    """Delete finished tasks whose ``result_ttl`` or ``failure_ttl`` ran out, with their index
    entries. The caller reads the due entries from storage (the index is not kept in memory);
    an entry whose task was retried since it was written deletes only itself. ``orphans``:
    due entries whose task the caller found gone already (deleted, or retried): only the
    entries are deleted, and they are not counted."""

    entries: tuple[ResultEntry, ...]
    orphans: tuple[ResultEntry, ...] = ()


class ExpireTasks(_Command, frozen=True, tag=31):
    """End pending, scheduled and failed tasks whose ``expires_at`` is at or before ``now``:
    cancelled, as a claim that meets one does; their dependants follow as for any cancel.
    At most ``max_tasks`` (0: all), earliest first, so a burst is spread over loop turns."""

    max_tasks: int = 0


class CreateSchedule(_Command, frozen=True, tag=20):
    """Store a schedule (``next_at`` computed by the caller, from ``now``). A name already
    taken is SCHEDULE_ALREADY_EXISTS unless ``replace``: then a definition unchanged keeps the
    stored schedule as it is (its next firing time above all: a worker declaring its periodic
    tasks on every start must neither shift nor double a firing), and a changed one takes the
    new definition and ``next_at``, keeping its history, and paused if it was or if the new
    one asks to be."""

    schedule: Schedule
    replace: bool = False


class PauseSchedule(_Command, frozen=True, tag=21):
    """No firing until resumed (pausing a paused schedule changes nothing)."""

    name: str


class ResumeSchedule(_Command, frozen=True, tag=22):
    """Fire again from ``next_at``, computed from ``now`` by the caller (so the firings
    missed while paused are not caught up); a schedule not paused is left as it is."""

    name: str
    next_at: float | None


class DeleteSchedule(_Command, frozen=True, tag=23):
    name: str


class Firing(msgspec.Struct, array_like=True, frozen=True):
    """One firing of a schedule, planned by the caller: ``due`` is the schedule's ``next_at``
    it answers (a firing for any other is stale: a duplicate, or planned before a change, and
    applies nothing); ``times`` the scheduled times it submits a task for, ascending, with one
    new id each in ``task_ids`` (empty when the missed policy skips them all); ``next_at`` the
    schedule's next firing time after it (None: there is none, the expression names no later
    date)."""

    name: str
    due: float
    times: tuple[float, ...]
    task_ids: tuple[TaskId, ...]
    next_at: float | None


class FireSchedules(_Command, frozen=True, tag=24):
    """Submit the tasks of due firings, each through the same path as a submit (backpressure,
    events, counters). Per firing: 0, SCHEDULE_NOT_FOUND, INVALID_STATE (stale or paused),
    INVALID_ARGUMENT (times not within due..now) or the submit's refusal (QUEUE_FULL: the
    schedule stays due, and is fired again later under its missed policy)."""

    firings: tuple[Firing, ...]
    max_queued: int
    #: Retries of a task whose schedule sets none (from configuration).
    default_max_retries: int = 3


class PauseQueue(_Command, frozen=True, tag=25):
    """Stop handing out tasks of ``queue`` (submits are still taken). Pausing a paused queue
    keeps its first pause time."""

    queue: str


class ResumeQueue(_Command, frozen=True, tag=26):
    """Hand out tasks of ``queue`` again (a queue that is not paused stays as it is)."""

    queue: str


class SetLimit(_Command, frozen=True, tag=27):
    """Replace the limit of a queue or task type (``scope`` "queue" or "type"): at most
    ``concurrency`` of its tasks in progress at once, cluster-wide; for a task type also at
    most ``rate`` claims per second on average, ``burst`` at once (a token bucket that starts
    full at ``now``). None: no such limit."""

    scope: str
    name: str
    rate: float | None = None
    burst: int = 0
    concurrency: int | None = None


class ClearLimit(_Command, frozen=True, tag=28):
    """Remove the limit of a queue or task type (LIMIT_NOT_FOUND if it has none)."""

    scope: str
    name: str


class OrderWorker(_Command, frozen=True, tag=32):
    """Give a worker an order (``tq.core.control``): stored on its record until it
    acknowledges it; WORKER_NOT_FOUND for a worker the broker does not know."""

    worker_id: WorkerId
    action: OrderAction
    queue: str = ""


Command = (
    SubmitTasks
    | ClaimTasks
    | CompleteTasks
    | FailTasks
    | CancelTasks
    | ReleaseTasks
    | ExtendLeases
    | ExpireLeases
    | RegisterWorker
    | DeregisterWorker
    | Heartbeat
    | ReportProgress
    | PromoteDue
    | ReapDeadWorkers
    | PurgeTasks
    | BrokerStarted
    | RetryTasks
    | CreateKey
    | RevokeKey
    | PurgeResults
    | ExpireTasks
    | CreateSchedule
    | PauseSchedule
    | ResumeSchedule
    | DeleteSchedule
    | FireSchedules
    | PauseQueue
    | ResumeQueue
    | SetLimit
    | ClearLimit
    | OrderWorker
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Command])


def encode_commands(commands: list[Command]) -> bytes:
    """One log entry: a batch of commands (what one group commit applied)."""
    return _encoder.encode(commands)


def decode_commands(data: bytes) -> list[Command]:
    result: list[Command] = _decoder.decode(data)
    return result
