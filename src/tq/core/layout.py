"""The storage layout: every column family, key and value format tq writes. One place only.

The state machine produces its storage mutations in these terms; ``tq.storage`` stores opaque
bytes and never interprets them, and recovery reads them back through this module.

Column families and keys (all task keys are the 16 raw bytes of the task id)::

    pending      task_id -> Task (msgpack array)   states pending and scheduled
    in_progress  task_id -> Task                   state in_progress (lease fields set)
    failed       task_id -> Task                   state failed (retry due at scheduled_at)
    completed    task_id -> Task                   states completed and cancelled (retention)
    dead_letter  task_id -> Task                   state dead_letter
    metadata     b"machine"            -> MachineMeta (counters, next seq / lease token)
                 b"worker/" + id utf8  -> WorkerRecord
                 b"idem/" + key utf8   -> IdempotencyRecord (task id, window end)
                 b"key/" + id utf8     -> ApiKey (bcrypt hash of the secret, never the secret)
                 b"schedule/" + name   -> Schedule (``tq.core.schedules``)
                 b"cluster/applied"    -> AppliedMark (a cluster node: last log entry applied)
                 b"ttl/" + purge time (8-byte big-endian double) + task id -> state (utf8):
                                          the result-lifetime index, in purge-time order
                 b"ttl-revived/" + purge time + task id -> b"": an index entry whose task was
                                          retried since (``tq.core.lifetimes``)
                 b"queue/" + name utf8 -> QueuePause (only while the queue is paused)
                 b"limit/" + scope utf8 + b"/" + name utf8 -> FlowLimit (its token bucket too)

Why this layout: a task lives in exactly one family, so a state change is one delete plus one
put (about 1 us in total with time-ordered UUIDv7 keys), and a submit is one put. The
machine's scalars are written once per group-commit batch, not per command.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

import msgspec

from tq.core.control import WorkerOrder
from tq.core.ids import TaskId, WorkerId
from tq.core.model import TaskState


class Family(IntEnum):
    """Column families, by index (cheap to carry in mutation tuples)."""

    PENDING = 0
    IN_PROGRESS = 1
    FAILED = 2
    COMPLETED = 3
    DEAD_LETTER = 4
    METADATA = 5

    @property
    def cf_name(self) -> str:
        return self.name.lower()


ALL_FAMILIES: Final = tuple(Family)
TASK_FAMILIES: Final = (
    Family.PENDING,
    Family.IN_PROGRESS,
    Family.FAILED,
    Family.COMPLETED,
    Family.DEAD_LETTER,
)

FAMILY_OF_STATE: Final[dict[TaskState, Family]] = {
    TaskState.PENDING: Family.PENDING,
    TaskState.SCHEDULED: Family.PENDING,
    TaskState.IN_PROGRESS: Family.IN_PROGRESS,
    TaskState.FAILED: Family.FAILED,
    TaskState.COMPLETED: Family.COMPLETED,
    TaskState.CANCELLED: Family.COMPLETED,
    TaskState.DEAD_LETTER: Family.DEAD_LETTER,
}

#: Families whose tasks are live (kept in memory and rebuilt on recovery).
LIVE_FAMILIES: Final = (Family.PENDING, Family.IN_PROGRESS, Family.FAILED)

MACHINE_KEY: Final = b"machine"
WORKER_PREFIX: Final = b"worker/"
IDEM_PREFIX: Final = b"idem/"
KEY_PREFIX: Final = b"key/"
#: A cluster node's place in the replicated log, written in the same batch as the entry's data.
APPLIED_KEY: Final = b"cluster/applied"
#: The result-lifetime index (``tq.core.lifetimes``), and its entries whose task was retried.
TTL_PREFIX: Final = b"ttl/"
TTL_REVIVED_PREFIX: Final = b"ttl-revived/"
QUEUE_PREFIX: Final = b"queue/"
LIMIT_PREFIX: Final = b"limit/"

#: A storage mutation: (family, key, value); value None means delete.
Mutation = tuple[Family, bytes, bytes | None]


class Counters(msgspec.Struct, array_like=True):
    """Lifetime totals (never decrease); gauges are derived from live state instead."""

    submitted: int = 0
    claimed: int = 0
    completed: int = 0
    failed_attempts: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    leases_expired: int = 0
    purged: int = 0
    #: Finished tasks deleted when their result_ttl or failure_ttl ran out.
    results_expired: int = 0
    #: Tasks ended (cancelled) because their expires_at passed before they ran.
    expired: int = 0


class MachineMeta(msgspec.Struct, array_like=True):
    next_seq: int = 1
    next_lease_token: int = 1
    counters: Counters = msgspec.field(default_factory=Counters)
    #: Broker starts so far; lease tokens of each start begin at ``epoch << 40``.
    epoch: int = 0
    #: The number the next worker order takes (``tq.core.control``): never goes back.
    next_order: int = 1
    #: The latest ``Task.queued_at`` given: a clock that goes back between commands must not
    #: make a later place in line look older (``tq.core.aging`` relies on it).
    last_queued_at: float = 0.0


class WorkerStats(msgspec.Struct, array_like=True, frozen=True):
    cpu_percent: float = 0.0
    memory_rss: int = 0
    running: int = 0


class WorkerRecord(msgspec.Struct, array_like=True):
    id: WorkerId
    name: str
    queues: tuple[str, ...]
    concurrency: int
    registered_at: float
    last_heartbeat: float
    hostname: str = ""
    pid: int = 0
    stats: WorkerStats = WorkerStats()
    #: Of the tasks it holds, those it runs (its last heartbeat said): the rest are reserved.
    started: tuple[TaskId, ...] = ()
    #: Its last heartbeat said it drains (stopped claiming, finishing what runs).
    draining: bool = False
    #: Orders given and not yet acknowledged, oldest first (``tq.core.control``).
    orders: tuple[WorkerOrder, ...] = ()


class IdempotencyRecord(msgspec.Struct, array_like=True, frozen=True):
    task_id: bytes
    until: float


class RateLimit(msgspec.Struct, array_like=True, frozen=True):
    """A token bucket: ``rate`` tokens per second refill it, up to ``burst`` tokens."""

    rate: float
    burst: int


class ApiKey(msgspec.Struct, array_like=True, frozen=True):
    """An API key as stored: its public id and rules, and the bcrypt hash of its whole secret
    string (``tq_<id>_<secret>``). Revoked keys stay (``revoked_at`` set), so an id is never
    reused and ``tq keys list`` shows what was revoked when."""

    id: str
    name: str
    permissions: tuple[str, ...]
    queues: tuple[str, ...] | None  # None: every queue
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    hash: bytes
    #: Per permission class, overriding ``auth.rate_limits`` for this key (None: the defaults).
    rate_limits: dict[str, RateLimit] | None = None


class AppliedMark(msgspec.Struct, array_like=True, frozen=True):
    """The last replicated log entry a node's store holds: its index and its leader's epoch
    (index 0: none yet). Stored atomically with that entry's mutations."""

    index: int = 0
    epoch: int = 0


class QueuePause(msgspec.Struct, array_like=True, frozen=True):
    """A paused queue: it takes submits and hands out nothing until resumed."""

    queue: str
    paused_at: float


class FlowLimit(msgspec.Struct, array_like=True):
    """A rate limit and/or concurrency cap on a queue (``scope`` "queue": a cap only) or a
    task type (``scope`` "type"), with its token bucket: ``tokens`` as of ``refilled_at``,
    refilled at ``rate`` per second up to ``burst``. Mutable: claims spend its tokens."""

    scope: str
    name: str
    set_at: float
    rate: float | None = None
    burst: int = 0
    concurrency: int | None = None
    tokens: float = 0.0
    refilled_at: float = 0.0


def queue_pause_key(queue: str) -> bytes:
    return QUEUE_PREFIX + queue.encode()


def limit_key(scope: str, name: str) -> bytes:
    return LIMIT_PREFIX + scope.encode() + b"/" + name.encode()


def worker_key(worker_id: str) -> bytes:
    return WORKER_PREFIX + worker_id.encode()


def idem_key(key: str) -> bytes:
    return IDEM_PREFIX + key.encode()


def api_key_key(key_id: str) -> bytes:
    return KEY_PREFIX + key_id.encode()


def ttl_key(purge_at: float, task_id: bytes, prefix: bytes = TTL_PREFIX) -> bytes:
    """An index key that sorts by purge time: a non-negative IEEE double's big-endian bytes
    order as its value does, so a scan from the prefix meets the earliest first."""
    return prefix + _TTL_TIME.pack(purge_at) + task_id


def parse_ttl_key(key: bytes, prefix: bytes = TTL_PREFIX) -> tuple[float, bytes]:
    """``(purge_at, task_id)`` of a key made by ``ttl_key``."""
    n = len(prefix)
    (purge_at,) = _TTL_TIME.unpack_from(key, n)
    return purge_at, key[n + _TTL_TIME.size :]


_TTL_TIME: Final = struct.Struct(">d")
_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(MachineMeta)
_worker_dec = msgspec.msgpack.Decoder(WorkerRecord)
_idem_dec = msgspec.msgpack.Decoder(IdempotencyRecord)
_key_dec = msgspec.msgpack.Decoder(ApiKey)
_applied_dec = msgspec.msgpack.Decoder(AppliedMark)
_pause_dec = msgspec.msgpack.Decoder(QueuePause)
_limit_dec = msgspec.msgpack.Decoder(FlowLimit)


def encode(obj: msgspec.Struct) -> bytes:
    return _enc.encode(obj)


def decode_meta(data: bytes) -> MachineMeta:
    return _meta_dec.decode(data)


def decode_worker(data: bytes) -> WorkerRecord:
    return _worker_dec.decode(data)


def decode_idem(data: bytes) -> IdempotencyRecord:
    return _idem_dec.decode(data)


def decode_api_key(data: bytes) -> ApiKey:
    return _key_dec.decode(data)


def decode_applied(data: bytes) -> AppliedMark:
    return _applied_dec.decode(data)


def decode_queue_pause(data: bytes) -> QueuePause:
    return _pause_dec.decode(data)


def decode_limit(data: bytes) -> FlowLimit:
    return _limit_dec.decode(data)
