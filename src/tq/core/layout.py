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
                 b"cluster/applied"    -> AppliedMark (a cluster node: last log entry applied)

Why this layout: a task lives in exactly one family, so a state change is one delete plus one
put (about 1 us in total with time-ordered UUIDv7 keys), and a submit is one put. The
machine's scalars are written once per group-commit batch, not per command.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import msgspec

from tq.core.ids import WorkerId
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


class MachineMeta(msgspec.Struct, array_like=True):
    next_seq: int = 1
    next_lease_token: int = 1
    counters: Counters = msgspec.field(default_factory=Counters)
    #: Broker starts so far; lease tokens of each start begin at ``epoch << 40``.
    epoch: int = 0
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


def worker_key(worker_id: str) -> bytes:
    return WORKER_PREFIX + worker_id.encode()


def idem_key(key: str) -> bytes:
    return IDEM_PREFIX + key.encode()


def api_key_key(key_id: str) -> bytes:
    return KEY_PREFIX + key_id.encode()


_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(MachineMeta)
_worker_dec = msgspec.msgpack.Decoder(WorkerRecord)
_idem_dec = msgspec.msgpack.Decoder(IdempotencyRecord)
_key_dec = msgspec.msgpack.Decoder(ApiKey)
_applied_dec = msgspec.msgpack.Decoder(AppliedMark)


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
