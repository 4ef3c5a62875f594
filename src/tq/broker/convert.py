"""Translation between wire records and core values, with the broker's defaults and limits,
and the ids the broker assigns."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from tq.config import BrokerSettings
from tq.core import commands as c
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, format_task_id, make_task_id
from tq.core.model import NO_TAGS, RetryPolicy, Task, TaskState
from tq.core.sizes import tags_size
from tq.errors import ErrorCode, ValidationError
from tq.protocol.records import NAME_MAX_LEN, TaskInfo, TaskSpec

#: Tags per task, and the longest tag value (keys are names: 1..NAME_MAX_LEN characters).
#: Their encoded size counts within broker.max_payload_size_bytes.
MAX_TAGS: Final = 64
TAG_VALUE_MAX_LEN: Final = 1024
#: Tasks one task may depend on: each is an index entry and 16 bytes of every record.
MAX_DEPENDS_ON: Final = 1000


class IdMaker(Protocol):
    def new(self, now: float) -> TaskId: ...


def new_task(
    spec: TaskSpec, now: float, ids: IdMaker, b: BrokerSettings, index: int = 0
) -> c.NewTask:
    """A wire TaskSpec as a fully resolved NewTask (id, absolute time, defaults applied).
    ``index``: the spec's place in its request, named in errors (``tasks[3].tags``)."""
    tags = spec.tags or NO_TAGS
    tag_bytes = check_tags(tags, f"tasks[{index}]") if tags else 0
    if len(spec.payload) + tag_bytes > b.max_payload_size_bytes:
        with_tags = f" and {tag_bytes} bytes of tags" if tag_bytes else ""
        raise ValidationError(
            f"tasks[{index}].payload: {len(spec.payload)} bytes{with_tags} are above the limit of "
            f"{b.max_payload_size_bytes} bytes (broker.max_payload_size_bytes; tags count "
            "within it)",
            ErrorCode.PAYLOAD_TOO_LARGE,
        )
    if len(spec.depends_on) > MAX_DEPENDS_ON:
        raise ValidationError(
            f"tasks[{index}].depends_on names {len(spec.depends_on)} tasks; at most "
            f"{MAX_DEPENDS_ON}"
        )
    if spec.delay is not None and spec.scheduled_at is not None:
        raise ValidationError(f"tasks[{index}]: give delay or scheduled_at, not both")
    scheduled_at = spec.scheduled_at
    if spec.delay is not None and spec.delay > 0:
        scheduled_at = now + spec.delay
    retry = spec.retry
    return c.NewTask(
        id=spec.id if spec.id is not None else ids.new(now),
        # Interned: a million tasks of a few types and queues then share a few strings
        # instead of holding two decoded copies each (~100 bytes per task).
        task_type=sys.intern(spec.task_type),
        queue=sys.intern(spec.queue),
        payload=spec.payload,
        priority=spec.priority,
        max_retries=spec.max_retries if spec.max_retries is not None else b.default_max_retries,
        scheduled_at=scheduled_at,
        timeout=spec.timeout,
        retry=None
        if retry is None
        else RetryPolicy(retry.base, retry.factor, retry.max_delay, retry.jitter),
        depends_on=tuple(dict.fromkeys(spec.depends_on)),
        tags=tags,
        idempotency_key=spec.idempotency_key,
        expires_at=spec.expires_at,
        result_ttl=spec.result_ttl if spec.result_ttl is not None else b.default_result_ttl_s,
        failure_ttl=spec.failure_ttl if spec.failure_ttl is not None else b.default_failure_ttl_s,
        aging=spec.aging,
    )


def check_tags(tags: Mapping[str, str], where: str) -> int:
    """Refuse tags beyond ``MAX_TAGS`` entries, keys outside 1..``NAME_MAX_LEN`` characters
    or values above ``TAG_VALUE_MAX_LEN``; their encoded size, which counts within the
    payload limit (so a task's record stays within a frame)."""
    if not tags:
        return 0
    if len(tags) > MAX_TAGS:
        raise ValidationError(f"{where}.tags: {len(tags)} tags; at most {MAX_TAGS}")
    for key, value in tags.items():
        if not 0 < len(key) <= NAME_MAX_LEN:
            raise ValidationError(
                f"{where}.tags: key {key[:32]!r} is {len(key)} characters; keys are "
                f"1..{NAME_MAX_LEN}"
            )
        if len(value) > TAG_VALUE_MAX_LEN:
            raise ValidationError(
                f"{where}.tags[{key!r}]: value of {len(value)} characters; at most "
                f"{TAG_VALUE_MAX_LEN}"
            )
    return tags_size(tags)


def task_info(
    t: Task, include_payload: bool, *, truncated: bool = False, effective: int | None = None
) -> TaskInfo:
    """``t`` as a TaskInfo; ``truncated``: without its result, error, error type, progress
    message and tags (a record too large for the reply it goes in); ``effective``: its
    priority as a claim would compare it now (``tq.broker.aging``)."""
    if truncated:
        return _truncated_info(t, include_payload, effective)
    return TaskInfo(
        id=t.id,
        task_type=t.task_type,
        queue=t.queue,
        payload=t.payload if include_payload else None,
        priority=t.priority,
        state=t.state.value,
        created_at=t.created_at,
        updated_at=t.updated_at,
        scheduled_at=t.scheduled_at,
        attempts=t.attempts,
        max_retries=t.max_retries,
        timeout=t.timeout,
        depends_on=list(t.depends_on),
        result=t.result,
        error=t.error,
        worker_id=t.worker_id,
        lease_expires_at=t.lease_expires_at,
        progress=t.progress,
        progress_message=t.progress_message,
        tags=t.tags,
        idempotency_key=t.idempotency_key,
        expires_at=t.expires_at,
        completed_at=t.completed_at,
        started_at=t.started_at,
        error_type=t.error_type,
        result_ttl=t.result_ttl,
        failure_ttl=t.failure_ttl,
        purge_at=t.purge_at,
        aging=t.aging,
        effective_priority=effective,
    )


def _truncated_info(t: Task, include_payload: bool, effective: int | None) -> TaskInfo:
    return TaskInfo(
        id=t.id, task_type=t.task_type, queue=t.queue,
        payload=t.payload if include_payload else None, priority=t.priority,
        state=t.state.value, created_at=t.created_at, updated_at=t.updated_at,
        scheduled_at=t.scheduled_at, attempts=t.attempts, max_retries=t.max_retries,
        timeout=t.timeout, depends_on=list(t.depends_on), worker_id=t.worker_id,
        lease_expires_at=t.lease_expires_at, progress=t.progress,
        idempotency_key=t.idempotency_key, expires_at=t.expires_at,
        completed_at=t.completed_at, started_at=t.started_at, truncated=True,
        result_ttl=t.result_ttl, failure_ttl=t.failure_ttl, purge_at=t.purge_at, aging=t.aging,
        effective_priority=effective,
    )  # fmt: skip


def state_event(t: Task) -> TaskEvent:
    """The event a task's current state published (as ``Effects.event`` made it), for whoever
    missed it: a late subscriber of a finished task, or everyone after a failed batch."""
    return TaskEvent(
        task_id=t.id, state=t.state, queue=t.queue, task_type=t.task_type, at=t.updated_at,
        attempts=t.attempts, result=t.result if t.state is TaskState.COMPLETED else None,
        error=t.error, worker_id=t.worker_id, error_type=t.error_type,
    )  # fmt: skip


class IdSource:
    """UUIDv7 ids, monotonic within a millisecond (keys stay in insertion order)."""

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(16))
        self._last_ms = -1
        self._last_rand = 0

    def new(self, now: float) -> TaskId:
        ms = int(now * 1000)
        if ms <= self._last_ms:
            ms, rand = self._last_ms, self._last_rand + 1
        else:
            rand = self._rng.getrandbits(73)  # top bit clear: room to count up within the ms
        self._last_ms, self._last_rand = ms, rand
        return make_task_id(ms, rand)


def status_too_large(
    task_ids: Sequence[TaskId], index: int, include_payload: bool, max_bytes: int
) -> ValidationError:
    payloads = " with their payloads" if include_payload else ""
    if index == 0:
        what = f"task {format_task_id(task_ids[0])}{payloads.replace('their', 'its')} alone"
    else:
        what = f"the first {index + 1} of the {len(task_ids)} tasks asked for{payloads}"
    without = ", or without include_payload" if include_payload else ""
    return ValidationError(
        f"{what} would take more than the {max_bytes} bytes one reply may carry (the "
        f"client's frame limit): ask for fewer ids at a time{without}",
        ErrorCode.REPLY_TOO_LARGE,
    )
