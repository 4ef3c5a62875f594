"""Flow control from Python: with `tq dev tq.worker.examples` running, the repository root's
`python examples/flow_control.py` pauses the default queue, rate-limits the echo task type,
caps the queue, and shows the tasks flow at the limited pace once the queue resumes."""

import os
import time

import tq
from tq.client import TaskSpec

with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
    # A paused queue takes submits and hands out nothing.
    client.pause_queue("default")
    ids = client.submit_many([TaskSpec(task_type="echo", payload=b"%d" % i) for i in range(6)])
    depth = client.stats().queues["default"]
    print(f"paused: {depth.paused}, pending: {depth.normal}")

    # At most 2 echo tasks a second (2 at once after a quiet spell), at most 4 of the
    # queue's tasks in progress at once: enforced by the broker, for every worker.
    client.set_limit(task_type="echo", rate=2, burst=2)
    client.set_limit(queue="default", concurrency=4)
    for limit in client.limits():
        print(f"{limit.scope} {limit.name}: rate {limit.rate}, concurrency {limit.concurrency}")

    started = time.monotonic()
    client.resume_queue("default")
    results = [client.wait(i, timeout=30).result for i in ids]
    took = time.monotonic() - started
    print(f"{len(results)} echoed in {took:.1f} s (2 at once, then 2 a second: about 2 s)")

    client.clear_limit(task_type="echo")
    client.clear_limit(queue="default")
    print(f"limits left: {len(client.limits())}")
