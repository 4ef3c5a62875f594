"""Recovery: rebuild the state machine from a store (queues, schedules, leases, workers, keys,
paused queues and flow limits).

Only live families are read in full (pending, in_progress, failed) plus the metadata family;
finished tasks stay on disk and are looked up one by one, only for dependencies that are not
live. Leases are not judged here: the broker applies ``BrokerStarted`` and ``ExpireLeases``
right after, as commands, so tasks whose lease is gone return to pending through the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from tq.core.effects import Effects
from tq.core.ids import TaskId, format_task_id
from tq.core.layout import (
    IDEM_PREFIX,
    KEY_PREFIX,
    LIMIT_PREFIX,
    LIVE_FAMILIES,
    MACHINE_KEY,
    QUEUE_PREFIX,
    TASK_FAMILIES,
    WORKER_PREFIX,
    ApiKey,
    Family,
    FlowLimit,
    IdempotencyRecord,
    QueuePause,
    WorkerRecord,
    decode_api_key,
    decode_idem,
    decode_limit,
    decode_meta,
    decode_queue_pause,
    decode_worker,
)
from tq.core.machine import Machine
from tq.core.model import Task, TaskState, decode_task
from tq.core.schedules import SCHEDULE_PREFIX, Schedule, decode_schedule
from tq.errors import StorageError
from tq.storage.base import Store
from tq.storage.lifetimes import revived_entries

T = TypeVar("T")


@dataclass(frozen=True)
class Recovered:
    machine: Machine
    #: Mutations that repair inconsistencies found on disk; write them before serving.
    repairs: Effects
    tasks: int


def recover(store: Store, now: float) -> Recovered:
    """Rebuild the machine as it was when the last durable batch was written."""
    count = 0

    def tasks() -> Iterator[Task]:
        nonlocal count
        for family in LIVE_FAMILIES:
            for key, value in store.iterate(family):
                count += 1
                yield _decode(decode_task, value, family, key)

    meta_raw = store.get(Family.METADATA, MACHINE_KEY)
    fx = Effects()
    machine = Machine.restore(
        meta=_decode(decode_meta, meta_raw, Family.METADATA, MACHINE_KEY) if meta_raw else None,
        workers=list(_workers(store)),
        idempotency=list(_idempotency(store)),
        tasks=tasks(),
        terminal_state=lambda task_id: terminal_state(store, task_id),
        now=now,
        fx=fx,
        keys=list(_keys(store)),
        revived=revived_entries(store),
        schedules=list(_schedules(store)),
        pauses=list(_pauses(store)),
        limits=list(_limits(store)),
    )
    return Recovered(machine, fx, count)


def terminal_state(store: Store, task_id: TaskId) -> TaskState | None:
    """The state of a task that is not live, read from storage (None if unknown or purged)."""
    for family in (Family.COMPLETED, Family.DEAD_LETTER):
        raw = store.get(family, task_id)
        if raw is not None:
            return _decode(decode_task, raw, family, task_id).state
    return None


def read_task(store: Store, task_id: TaskId) -> Task | None:
    """A task as stored, in whichever family holds it."""
    for family in (Family.COMPLETED, Family.DEAD_LETTER, *LIVE_FAMILIES):
        raw = store.get(family, task_id)
        if raw is not None:
            return _decode(decode_task, raw, family, task_id)
    return None


def _workers(store: Store) -> Iterator[WorkerRecord]:
    for key, value in store.iterate(Family.METADATA, prefix=WORKER_PREFIX):
        yield _decode(decode_worker, value, Family.METADATA, key)


def _idempotency(store: Store) -> Iterator[tuple[str, IdempotencyRecord]]:
    for key, value in store.iterate(Family.METADATA, prefix=IDEM_PREFIX):
        rec = _decode(decode_idem, value, Family.METADATA, key)
        yield key[len(IDEM_PREFIX) :].decode(), rec


def _keys(store: Store) -> Iterator[ApiKey]:
    for key, value in store.iterate(Family.METADATA, prefix=KEY_PREFIX):
        yield _decode(decode_api_key, value, Family.METADATA, key)


def _schedules(store: Store) -> Iterator[Schedule]:
    for key, value in store.iterate(Family.METADATA, prefix=SCHEDULE_PREFIX):
        yield _decode(decode_schedule, value, Family.METADATA, key)


def _pauses(store: Store) -> Iterator[QueuePause]:
    for key, value in store.iterate(Family.METADATA, prefix=QUEUE_PREFIX):
        yield _decode(decode_queue_pause, value, Family.METADATA, key)


def _limits(store: Store) -> Iterator[FlowLimit]:
    for key, value in store.iterate(Family.METADATA, prefix=LIMIT_PREFIX):
        yield _decode(decode_limit, value, Family.METADATA, key)


def _decode(fn: Callable[[bytes], T], raw: bytes, family: Family, key: bytes) -> T:
    try:
        return fn(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        # A task's key is its id: named as every interface shows ids, not as 32 hex digits.
        where = f"task {format_task_id(key)}" if family in TASK_FAMILIES else f"key {key.hex()}"
        raise StorageError(f"corrupt record in family {family.cf_name} under {where}: {e}") from e
