"""The handler ``tq bench`` workers serve: ``python -m tq worker tq.bench.tasks``.

``noop`` returns its payload, so a benchmark measures tq's own path (submit, claim, complete,
result) and nothing else. It is ``async``: the asyncio pool runs it on the worker's loop with
no thread hop, which is how a no-op I/O-bound task runs in tq.
"""

from __future__ import annotations

from tq.bench.config import TASK_TYPE
from tq.client.task import handler


@handler(TASK_TYPE)
async def noop(payload: bytes) -> bytes:
    """Return the payload unchanged."""
    return payload
