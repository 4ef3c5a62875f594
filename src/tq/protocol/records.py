"""Value records carried inside protocol messages (task specs, claimed tasks, task info, stats).

Rules: every wire struct is a MessagePack *map* keyed by field name, defaults are omitted on
encode, unknown keys are ignored on decode (forward compatibility), and the range and length
constraints live here as ``msgspec.Meta`` so a bad value is refused at decode with its path.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from tq.core.ids import TASK_ID_LEN, TaskId
from tq.core.keys import MAX_NAME as MAX_KEY_NAME
from tq.core.times import MAX_INSTANT  # 9999-12-31T23:59:59Z

# --- constrained scalar types shared by records and messages -------------------------------

#: A task id on the wire: exactly 16 raw bytes (MessagePack bin), never text.
TaskIdBytes = Annotated[TaskId, Meta(min_length=TASK_ID_LEN, max_length=TASK_ID_LEN)]
#: Unsigned; MessagePack cannot carry more than 64 bits, so the upper bound is implicit.
RequestId = Annotated[int, Meta(ge=0)]
Count = Annotated[int, Meta(ge=0)]
#: Retries of one task: a 32-bit signed bound, as REST's and gRPC's integers carry.
Retries = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Priority = Annotated[int, Meta(ge=0, le=255)]
Percent = Annotated[int, Meta(ge=0, le=100)]
#: Longest duration any field may carry (~317 years): far beyond a real delay or timeout,
#: far below float trouble (``now + MAX_SECONDS`` is still exact to the microsecond).
MAX_SECONDS: Final = 1e10
#: Largest backoff growth factor of a RetrySpec.
MAX_BACKOFF_FACTOR: Final = 1000.0
#: Largest cpu_percent of a HEARTBEAT (100 per core: a machine of 10,000 cores).
MAX_CPU_PERCENT: Final = 1e6
#: Unix seconds. Every float has both bounds: a lower one refuses NaN (which would poison
#: every ordering comparison), an upper one refuses +inf and values no clock will reach.
#: REST and gRPC import these bounds too, so every door refuses the same values.
Timestamp = Annotated[float, Meta(ge=0, le=MAX_INSTANT)]
Seconds = Annotated[float, Meta(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
CpuPercent = Annotated[float, Meta(ge=0, le=MAX_CPU_PERCENT)]
#: Task types, queue and worker ids: non-empty and short, since they become index keys.
NAME_MAX_LEN: Final = 256
Name = Annotated[str, Meta(min_length=1, max_length=NAME_MAX_LEN)]
ShortText = Annotated[str, Meta(max_length=NAME_MAX_LEN)]

DEFAULT_QUEUE: Final = "default"
DEFAULT_PRIORITY: Final = 128


class WireStruct(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    frozen=True,
    forbid_unknown_fields=False,
    gc=False,
):
    """Base of every wire struct: the encoding rules above, in one place.

    ``gc=False``: wire structs hold only scalars, bytes and containers of other wire structs,
    so they cannot form reference cycles, and a 500-task frame need not add 500 objects to the
    collector's work. Frozen keeps a decoded message safe to hand to several consumers.
    Subclasses repeat ``kw_only=True, frozen=True``: msgspec does not inherit ``kw_only``, and
    mypy does not see an inherited ``frozen``.
    """


class RetrySpec(WireStruct, kw_only=True, frozen=True):
    """Backoff for one task: ``min(max_delay, base * factor ** (attempt - 1))`` ± jitter."""

    base: Seconds = 1.0
    factor: Annotated[float, Meta(ge=1, le=MAX_BACKOFF_FACTOR)] = 2.0
    max_delay: Seconds = 300.0
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.1


class TaskSpec(WireStruct, kw_only=True, frozen=True):
    """One task to submit. ``id`` None: the broker assigns a UUIDv7."""

    id: TaskIdBytes | None = None
    task_type: Name
    queue: Name = DEFAULT_QUEUE
    payload: bytes = b""
    priority: Priority = DEFAULT_PRIORITY
    delay: Seconds | None = None
    scheduled_at: Timestamp | None = None
    max_retries: Retries | None = None
    timeout: PositiveSeconds | None = None
    retry: RetrySpec | None = None
    # A tuple and None, not [] and {}: a decoded empty default then allocates nothing, which
    # was ~40% of decoding a 500-task frame.
    depends_on: tuple[TaskIdBytes, ...] = ()
    tags: dict[str, str] | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=NAME_MAX_LEN)] | None = None
    expires_at: Timestamp | None = None
    #: Seconds the task is kept once completed / dead-lettered (None: the broker's default).
    result_ttl: Seconds | None = None
    failure_ttl: Seconds | None = None
    #: False: the task keeps its priority however long it waits (no priority aging).
    aging: bool = True


class ClaimedTask(WireStruct, kw_only=True, frozen=True):
    """A task handed to a worker; ``lease_token`` must be quoted back with its outcome."""

    id: TaskIdBytes
    task_type: str
    queue: str
    payload: bytes = b""
    priority: Priority = DEFAULT_PRIORITY
    attempts: Count
    max_retries: Count
    timeout: PositiveSeconds | None = None
    lease_token: Count
    lease_expires_at: Timestamp
    created_at: Timestamp
    tags: dict[str, str] = {}


class TaskOutcome(WireStruct, kw_only=True, frozen=True):
    """How one claimed task ended. ``retry`` False sends a failure to dead_letter at once."""

    task_id: TaskIdBytes
    lease_token: Count
    ok: bool
    result: bytes | None = None
    error: str | None = None
    error_type: str | None = None
    retry: bool = True


class TaskLease(WireStruct, kw_only=True, frozen=True):
    """One claim a worker hands back unstarted: the task and the ``lease_token`` it was
    claimed under (a stale token, of an earlier claim of the task, releases nothing)."""

    task_id: TaskIdBytes
    lease_token: Count


class TaskInfo(WireStruct, kw_only=True, frozen=True):
    """Everything known about one task (SPEC §1). ``payload`` is None unless asked for.

    ``state`` is a plain string, not an enum: a client must keep decoding when a newer broker
    reports a state it does not know yet.
    """

    id: TaskIdBytes
    task_type: str
    queue: str
    payload: bytes | None = None
    priority: Priority = DEFAULT_PRIORITY
    state: str
    created_at: Timestamp
    updated_at: Timestamp
    scheduled_at: Timestamp | None = None
    attempts: Count = 0
    max_retries: Count
    timeout: PositiveSeconds | None = None
    depends_on: list[TaskIdBytes] = []
    result: bytes | None = None
    error: str | None = None
    worker_id: str | None = None
    lease_expires_at: Timestamp | None = None
    progress: Percent = 0
    progress_message: str | None = None
    tags: dict[str, str] = {}
    idempotency_key: str | None = None
    expires_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    started_at: Timestamp | None = None
    error_type: str | None = None
    #: True: ``result``, ``error``, ``error_type``, ``progress_message`` and ``tags`` were left
    #: out, because this record alone is larger than the reply it is in may carry.
    truncated: bool = False
    result_ttl: Seconds | None = None
    failure_ttl: Seconds | None = None
    #: When this finished task is deleted, by its result_ttl or failure_ttl.
    purge_at: Timestamp | None = None
    #: False: the task opted out of priority aging.
    aging: bool = True
    #: A pending task's priority as a claim would compare it now (raised by priority aging,
    #: when the broker ages tasks); None for a task that is not pending.
    effective_priority: Priority | None = None


class ActResult(WireStruct, kw_only=True, frozen=True):
    """One task's answer to a management action: ``code`` 0 when applied, else an ErrorCode
    (TASK_NOT_FOUND, INVALID_STATE...) with ``message`` worded for that action and task."""

    task_id: TaskIdBytes
    code: Count = 0
    message: str = ""


class QueueDepth(WireStruct, kw_only=True, frozen=True):
    """Task counts of one queue: pending by priority tier, plus scheduled and running."""

    high: Count = 0
    normal: Count = 0
    low: Count = 0
    scheduled: Count = 0
    in_progress: Count = 0
    #: True: the queue takes submits but hands out nothing until resumed.
    paused: bool = False


class Stats(WireStruct, kw_only=True, frozen=True):
    """Broker-wide counters. ``totals`` holds monotonic counters (submitted, completed, ...)."""

    pending: Count = 0
    scheduled: Count = 0
    in_progress: Count = 0
    failed: Count = 0
    dead_letter: Count = 0
    workers: Count = 0
    queues: dict[str, QueueDepth] = {}
    totals: dict[str, Count] = {}
    uptime: Seconds = 0.0
    node_id: str = ""


class ClusterMember(WireStruct, kw_only=True, frozen=True):
    """One broker of a cluster, as its record in etcd says (kept alive by its lease: a node
    that stopped drops out within the lease TTL)."""

    node_id: str
    address: str = ""  #: host:port of its TCP door
    role: Literal["leader", "follower"] = "follower"
    applied_index: Count = 0  #: the last log entry its store holds
    lag: Count = 0  #: log entries it has still to apply (the log's last index minus its own)
    updated_at: Timestamp = 0.0  #: when its record was last written


class ClusterStatus(WireStruct, kw_only=True, frozen=True):
    """The cluster as the node that answers sees it. On a single broker ``enabled`` is False,
    ``role`` is ``"single"`` and the rest is empty."""

    enabled: bool = False
    name: str = ""  #: raft.cluster_name: the etcd key prefix
    node_id: str = ""  #: the node that answered
    role: Literal["single", "leader", "follower"] = "single"
    leader_id: str | None = None
    leader_address: str | None = None  #: host:port of the leader's TCP door
    epoch: Count | None = None  #: the leader's epoch (its etcd leader key's create_revision)
    applied_index: Count = 0  #: the last log entry the answering node applied
    log_first_index: Count = 0  #: the oldest entry still held in etcd (older ones were trimmed)
    log_last_index: Count = 0  #: the newest entry, as last read by the answering node
    leader_changes: Count = 0  #: times the answering node became leader since it started
    nodes: list[ClusterMember] = []


class WorkerInfo(WireStruct, kw_only=True, frozen=True):
    """One registered worker as the broker sees it. ``alive`` False: heartbeats stopped."""

    id: str
    name: str = ""
    queues: list[str] = []
    concurrency: Annotated[int, Meta(ge=1)] = 1
    hostname: str = ""
    pid: Count = 0
    registered_at: Timestamp
    last_heartbeat: Timestamp
    cpu_percent: CpuPercent = 0.0
    memory_rss: Count = 0
    running: Count = 0
    alive: bool = True
    #: Of the tasks it holds, those claimed and not started (``running`` counts the others),
    #: as of its last heartbeat; ``draining``: it claims no more, finishing what it runs.
    reserved: Count = 0
    draining: bool = False
    #: Orders given and not acknowledged yet (see ``WorkerOrderInfo``).
    orders: Count = 0


#: What an order asks of a worker (docs/workers.md).
OrderActionName = Literal["shutdown", "consume", "stop_consuming"]


class WorkerOrderInfo(WireStruct, kw_only=True, frozen=True):
    """An order for a worker: ``seq`` its number (orders of a broker are numbered in one
    sequence that never goes back), ``queue`` empty for a shutdown, ``at`` when given."""

    seq: Annotated[int, Meta(ge=1)]
    #: One of ``OrderActionName`` from this broker; a worker MUST tolerate others (a newer
    #: broker's), so this is not checked on decode.
    action: ShortText
    queue: ShortText = ""
    at: Timestamp = 0.0


#: Permission classes of API keys (``admin`` implies the others), as every door spells them.
PermissionName = Literal["submit", "read", "work", "admin"]


class RateSpec(WireStruct, kw_only=True, frozen=True):
    """A token bucket: ``rate`` tokens per second, holding at most ``burst``."""

    rate: Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
    burst: Annotated[int, Meta(ge=1, le=2**31 - 1)]


class KeySpec(WireStruct, kw_only=True, frozen=True):
    """A key to create. ``queues`` None: every queue; ``rate_limits`` per permission class
    override the broker's ``auth.rate_limits`` for this key."""

    name: Annotated[str, Meta(min_length=1, max_length=MAX_KEY_NAME)]
    permissions: Annotated[list[PermissionName], Meta(min_length=1, max_length=4)]
    queues: Annotated[list[Name], Meta(min_length=1, max_length=1000)] | None = None
    expires_at: Timestamp | None = None
    rate_limits: dict[PermissionName, RateSpec] | None = None


class KeyInfo(WireStruct, kw_only=True, frozen=True):
    """An API key as ``tq keys list`` shows it: never its secret, nor its hash."""

    id: str
    name: str
    permissions: list[str]
    queues: list[str] | None = None
    created_at: Timestamp
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None
    rate_limits: dict[str, RateSpec] | None = None


# --- schedules ----------------------------------------------------------------------------

#: A schedule's name (``tq.core.schedules.NAME`` checks its alphabet).
ScheduleName = Annotated[str, Meta(min_length=1, max_length=200)]
#: A cron expression, a macro such as ``@hourly`` included.
CronText = Annotated[str, Meta(min_length=1, max_length=200)]
IntervalSeconds = Annotated[float, Meta(ge=1, le=MAX_SECONDS)]
ZoneName = Annotated[str, Meta(min_length=1, max_length=64)]
MissedPolicy = Literal["skip", "once", "all"]
DEFAULT_MISSED: Final = "skip"


class ScheduleSpec(WireStruct, kw_only=True, frozen=True):
    """A schedule to create: exactly one of ``cron`` (read in ``timezone``) and ``interval``
    (seconds), the task each firing submits, what to do with firings missed while the broker
    was down (``missed``), and whether it starts paused."""

    name: ScheduleName
    cron: CronText | None = None
    interval: IntervalSeconds | None = None
    timezone: ZoneName = "UTC"
    task_type: Name
    queue: Name = DEFAULT_QUEUE
    payload: bytes = b""
    priority: Priority = DEFAULT_PRIORITY
    max_retries: Retries | None = None
    timeout: PositiveSeconds | None = None
    retry: RetrySpec | None = None
    tags: dict[str, str] | None = None
    #: Each task expires this long after its scheduled time (never started after it).
    expires_after: PositiveSeconds | None = None
    missed: MissedPolicy = DEFAULT_MISSED
    paused: bool = False


class ScheduleInfo(WireStruct, kw_only=True, frozen=True):
    """A schedule as ``tq schedules list`` shows it: its definition, its next firing time
    (None while paused), the scheduled time of its latest firing and how many tasks it made."""

    name: str
    cron: str | None = None
    interval: IntervalSeconds | None = None
    timezone: str = "UTC"
    task_type: str
    queue: str = DEFAULT_QUEUE
    payload: bytes = b""
    priority: Priority = DEFAULT_PRIORITY
    max_retries: Count | None = None
    timeout: PositiveSeconds | None = None
    retry: RetrySpec | None = None
    tags: dict[str, str] | None = None
    expires_after: PositiveSeconds | None = None
    missed: str = DEFAULT_MISSED
    paused: bool = False
    next_at: Timestamp | None = None
    last_fired_at: Timestamp | None = None
    fired: Count = 0
    created_at: Timestamp
    updated_at: Timestamp


# --- flow control ---------------------------------------------------------------------------

#: What a limit applies to: every task of a queue, or every task of a type (in any queue).
LimitScope = Literal["queue", "type"]
#: Most tasks per second a rate limit may allow, and most tasks a burst or a cap may count.
MAX_LIMIT_RATE: Final = 1e6
MAX_LIMIT_COUNT: Final = 2**31 - 1
LimitRate = Annotated[float, Meta(gt=0, le=MAX_LIMIT_RATE)]
LimitCount = Annotated[int, Meta(ge=1, le=MAX_LIMIT_COUNT)]


class LimitSpec(WireStruct, kw_only=True, frozen=True):
    """A limit to set, replacing the one ``scope``/``name`` had: at most ``rate`` tasks per
    second (task types only; ``burst`` at once after a quiet spell, by default the rate
    rounded up), at most ``concurrency`` in progress at once. At least one of the two."""

    scope: LimitScope
    name: Name
    rate: LimitRate | None = None
    burst: LimitCount | None = None
    concurrency: LimitCount | None = None


class LimitInfo(WireStruct, kw_only=True, frozen=True):
    """A limit as set, with what it counts now: tasks in progress (``running``) and, for a
    rate, the tokens its bucket holds (claims it would allow at once)."""

    scope: LimitScope
    name: str
    rate: LimitRate | None = None
    burst: LimitCount | None = None
    concurrency: LimitCount | None = None
    running: Count = 0
    tokens: Annotated[float, Meta(ge=0, le=MAX_LIMIT_COUNT)] | None = None
    set_at: Timestamp = 0.0


class QueueState(WireStruct, kw_only=True, frozen=True):
    """A queue's pause state: ``paused_at`` set while paused."""

    queue: str
    paused: bool = False
    paused_at: Timestamp | None = None
