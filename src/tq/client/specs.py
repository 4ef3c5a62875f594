"""Task specs from keyword options (text ids in, wire bytes out), and batches that fit a frame.

The option names are those of ``AsyncClient.submit``; ``SubmitOptions`` types them for the
task decorator's ``options()``. Values are checked against the wire constraints when the
request is sent (``connection``), so the rules live in one place: ``tq.protocol.records``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, TypedDict

import msgspec

from tq.core.ids import TaskId, parse_task_id
from tq.errors import ErrorCode, ValidationError
from tq.protocol import RetrySpec, TaskSpec

#: SUBMIT_TASK's bytes besides its specs: type byte, map header, request id, "tasks" key and
#: array header come to under 40; the rest is margin.
_FRAME_OVERHEAD: Final = 64
#: SUBMIT_REPLY's bytes per task: a 16-byte id (bin 8) and a bool.
_REPLY_PER_TASK: Final = 19

_encoder = msgspec.msgpack.Encoder()


class SubmitOptions(TypedDict, total=False):
    """Every keyword option of ``submit`` (all optional)."""

    queue: str
    priority: int
    delay: float | None
    scheduled_at: float | None
    max_retries: int | None
    timeout: float | None
    retry: RetrySpec | None
    depends_on: Sequence[str]
    tags: Mapping[str, str] | None
    idempotency_key: str | None
    expires_at: float | None
    task_id: str | None
    result_ttl: float | None
    failure_ttl: float | None
    aging: bool


def task_ids(ids: Sequence[str] | Sequence[bytes], what: str = "task ids") -> list[TaskId]:
    """Parse text (or raw 16-byte) ids; a bare string is refused, not split into characters."""
    if isinstance(ids, str | bytes):
        raise ValidationError(f"{what} must be a sequence of ids, got one {type(ids).__name__}")
    return [parse_task_id(i) for i in ids]


def task_spec(
    task_type: str,
    payload: bytes = b"",
    *,
    queue: str = "default",
    priority: int = 128,
    delay: float | None = None,
    scheduled_at: float | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    retry: RetrySpec | None = None,
    depends_on: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    expires_at: float | None = None,
    task_id: str | None = None,
    result_ttl: float | None = None,
    failure_ttl: float | None = None,
    aging: bool = True,
) -> TaskSpec:
    """One task for ``submit_many``; the options mean what they mean for ``submit``."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ValidationError(
            f"payload of {task_type!r} must be bytes, got {type(payload).__name__}"
        )
    return TaskSpec(
        id=None if task_id is None else parse_task_id(task_id),
        task_type=task_type,
        queue=queue,
        payload=bytes(payload),
        priority=priority,
        delay=delay,
        scheduled_at=scheduled_at,
        max_retries=max_retries,
        timeout=timeout,
        retry=retry,
        depends_on=tuple(task_ids(depends_on, "depends_on")),
        tags=dict(tags) if tags else None,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        aging=aging,
    )


def batches(
    specs: Sequence[TaskSpec], max_frame_size: int, reply_frame_size: int | None = None
) -> list[Sequence[TaskSpec]]:
    """Split ``specs``, in order, into runs whose SUBMIT_TASK frames fit ``max_frame_size`` and
    whose SUBMIT_REPLY fits ``reply_frame_size`` (the broker refuses a run whose reply would
    not: 19 bytes per task)."""
    budget = max_frame_size - _FRAME_OVERHEAD
    most = (reply_frame_size or max_frame_size) - _FRAME_OVERHEAD
    max_run = max(1, most // _REPLY_PER_TASK)
    out: list[Sequence[TaskSpec]] = []
    run: list[TaskSpec] = []
    size = 0
    for i, spec in enumerate(specs):
        n = len(_encoder.encode(spec))
        if n > budget:
            raise ValidationError(
                f"tasks[{i}] ({spec.task_type!r}) encodes to {n} bytes, above the broker's "
                f"frame limit of {max_frame_size} bytes",
                ErrorCode.PAYLOAD_TOO_LARGE,
            )
        if run and (size + n > budget or len(run) >= max_run):
            out.append(run)
            run, size = [], 0
        run.append(spec)
        size += n
    if run or not out:
        out.append(run)
    return out
