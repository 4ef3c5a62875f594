"""Result lifetimes and expiry: with `make run` (or `tq dev examples.tasks`) running, the
repository root's `python examples/result_lifetimes.py` shows a result kept for 2 seconds, a
dead letter kept for 2 seconds, and a task that expired in a queue no worker serves."""

import os
import time

from tasks import add, fail

import tq


def gone_within(client: tq.Client, task_id: str, seconds: float) -> bool:
    """Whether the task is deleted (a lookup finds nothing) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.status(task_id)
        except tq.NotFoundError:
            return True
        time.sleep(0.2)
    return False


with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
    tq.set_default_client(client)

    # Keep the result for 2 seconds once the task completed (RQ's result_ttl).
    done = add.options(result_ttl=2).submit(2, 3)
    print("result:", done.result(timeout=10))
    info = done.status()  # purge_at: when the broker deletes it
    print(f"{info.state}, deleted {(info.purge_at or 0) - (info.completed_at or 0):g} s later")
    print("deleted:", gone_within(client, done.id, 10))

    # Keep a dead letter for 2 seconds (RQ's failure_ttl), instead of until someone acts.
    failing = fail.options(failure_ttl=2).submit("no luck")
    failed = failing.wait(timeout=10)
    print(f"{failed.state}: {failed.error}")
    print("deleted:", gone_within(client, failing.id, 10))

    # A task that must start within 1 second or not at all, in a queue nobody serves:
    # the broker cancels it at its time, not when a worker happens to come by.
    late = client.submit("examples.add", queue="nobody-serves-this", expires_at=time.time() + 1)
    ended = client.wait(late, timeout=10)
    print(f"{ended.state}: {ended.error}")

    totals = client.stats().totals
    print("results_expired:", totals["results_expired"] >= 2, "expired:", totals["expired"] >= 1)
