"""Steer a running worker from Python: see what it runs, make it consume another queue, prove
it with a task there, then undo the order. With `tq dev` running (or any broker and worker:
set TQ_BROKER_URL), `python examples/workers.py` prints the worker's queues before, during
and after, and "reports: hello". Orders need an admin key when the broker has auth on."""

import time

import tq

QUEUE = "reports"


def wait_until(client: tq.Client, worker_id: str, consumes: bool) -> list[str]:
    """The worker's queues, once it carried the order out (its record shows it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = client.inspect_worker(worker_id)
        if (QUEUE in found.worker.queues) is consumes and not found.orders:
            return found.worker.queues
        time.sleep(0.1)
    raise SystemExit(f"worker {worker_id} did not carry the order out within 30 s")


with tq.Client() as client:
    live = [w for w in client.workers() if w.alive and not w.draining]
    if not live:
        raise SystemExit("no live worker: start one (tq dev, or tq worker MODULE)")
    worker = live[0]
    found = client.inspect_worker(worker.id)
    print(f"{worker.id}: consumes {','.join(worker.queues)}", end="; ")
    print(f"runs {len(found.running)} tasks, reserved {len(found.reserved)}")

    client.consume(worker.id, QUEUE)  # returns once the broker stored the order
    print(f"{worker.id}: consumes {','.join(wait_until(client, worker.id, True))}")
    task_id = client.submit("echo", b"hello", queue=QUEUE)
    print(f"{QUEUE}: {client.result(task_id, timeout=30).decode()}")

    client.stop_consuming(worker.id, QUEUE)
    print(f"{worker.id}: consumes {','.join(wait_until(client, worker.id, False))}")
