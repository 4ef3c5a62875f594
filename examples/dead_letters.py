"""Dead letters from Python: with `make run` (or `tq dev`) running, the repository root's
`python examples/dead_letters.py` makes three tasks fail for good, shows why, retries them
(one by id, then every one a filter selects) and deletes them."""

import os
import time

import tq
from tq.client import BulkProgress, TaskFilter


def show(progress: BulkProgress) -> None:
    """Called after each call of a bulk action (a call takes up to 1,000 tasks)."""
    print(f"  {progress.action}: {progress.applied} done, {progress.failed} not")


with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
    start = time.time()
    # The `json` example handler rejects what is not JSON: no retry, dead letter at once.
    ids = [client.submit("json", b"{oops") for _ in range(3)]
    for task_id in ids:
        client.wait(task_id, timeout=10)

    # Inspect: our dead letters and why they failed.
    ours = TaskFilter(state="dead_letter", task_type="json", created_after=start)
    dead, _ = client.list_tasks(state="dead_letter", task_type="json", created_after=start)
    for info in dead:
        print(f"{info.state} after {info.attempts} attempt: {info.error_type}: {info.error}")

    # Retry one by id: it runs again (and, still not JSON, fails again).
    client.retry(ids[0])
    print(f"retried: {client.wait(ids[0], timeout=10).state} again")

    # Retry by filter: every dead letter it selects, page by page, however many there are.
    outcome = client.retry_where(ours, progress=show)
    print(f"retried {len(outcome.applied)}")
    for task_id in ids:
        client.wait(task_id, timeout=10)

    # Delete what has finished: one by id, the rest by filter.
    client.delete(ids[0])
    outcome = client.delete_where(ours)
    print(f"deleted {1 + len(outcome.applied)}")
    try:
        client.retry(ids[0])
    except tq.NotFoundError as exc:
        print(f"gone: {exc.message}")
