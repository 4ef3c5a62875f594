"""Upper bounds of the MessagePack size of a task's records, for byte budgets.

Pure and cheap (a few ``len`` calls per task): a claim stops adding tasks, and a listing or
status reply stops adding records, before the reply passes its byte budget, without encoding
anything first. A bound is never below the real encoding (the tests encode random records to
check): names count 4 bytes per character (UTF-8's most) and every header its widest form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from tq.core.model import Task

#: A ClaimedTask's field names, map and value headers, id and numbers: everything but the
#: payload, the tags and the two names (measured at 200 bytes, rounded up).
CLAIMED_FIXED: Final = 256
#: The same for a TaskInfo (measured at 435 bytes with every field present).
INFO_FIXED: Final = 512
_ID: Final = 18  # a task id: bin 8 header + 16 bytes
_UTF8: Final = 4  # most bytes per character

_encoder = msgspec.msgpack.Encoder()


def tags_size(tags: Mapping[str, str]) -> int:
    """The exact encoded size of a tags map (0 for none: the field is then left out)."""
    return len(_encoder.encode(tags)) if tags else 0


def claimed_size(task: Task) -> int:
    """Bound of ``task`` as a ClaimedTask in a CLAIM_REPLY."""
    size = CLAIMED_FIXED + len(task.payload) + _UTF8 * (len(task.task_type) + len(task.queue))
    return size + tags_size(task.tags) if task.tags else size


def info_size(task: Task, include_payload: bool) -> int:
    """Bound of ``task`` as a TaskInfo (STATUS_REPLY, LIST_REPLY), with or without payload."""
    size = INFO_FIXED + len(task.result or b"") + _ID * len(task.depends_on)
    if include_payload:
        size += len(task.payload)
    if task.tags:
        size += tags_size(task.tags)
    texts = (
        task.task_type, task.queue, task.worker_id, task.error, task.progress_message,
        task.idempotency_key, task.error_type,
    )  # fmt: skip
    return size + _UTF8 * sum(len(t) for t in texts if t)
