"""Dead-lettered tasks made fast for tests: submitted in batches, then claimed and failed
without retry by the test itself playing a worker (a thousand per claim and per report)."""

from __future__ import annotations

import time

from tq.client import Client, TaskOutcome
from tq.core.ids import format_task_id

#: Tasks per SUBMIT_TASK, CLAIM_TASK and TASK_RESULT while making dead letters.
BATCH = 1000


def dead_lettered(
    client: Client,
    queue: str,
    n: int,
    *,
    task_type: str = "flaky",
    error: str = "boom",
    timeout: float = 60.0,
) -> list[str]:
    """Submit ``n`` tasks to ``queue`` (which no worker serves) and fail each at once without
    retry, as ``error_type`` ValueError: their ids, all in dead letter on return."""
    ids: list[str] = []
    for start in range(0, n, BATCH):
        specs = [client.spec(task_type, b"{}", queue=queue)] * min(BATCH, n - start)
        ids += client.submit_many(specs)
    left = set(ids)
    deadline = time.monotonic() + timeout
    while left:
        assert time.monotonic() < deadline, f"{len(left)} of {n} tasks never claimed"
        claimed = client.claim("dead-letterer", [queue], max_tasks=BATCH, wait=1.0)
        outcomes = [
            TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=False, error=error,
                        error_type="ValueError", retry=False)
            for t in claimed
        ]  # fmt: skip
        assert set(client.report(outcomes)) <= {0}
        left -= {format_task_id(t.id) for t in claimed}
    return ids
