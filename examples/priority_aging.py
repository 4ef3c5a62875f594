"""Priority aging: a waiting task's priority rises until it is served, however much
higher-priority work keeps arriving. Start a broker that ages tasks by 50 every second, up
to 200:

    tq broker --set broker.priority_aging_interval_s=1 --set broker.priority_aging_step=50 \
        --set broker.priority_aging_max=200

then run `python examples/priority_aging.py`: it claims the tasks itself (no worker needed)."""

import os
import time

import tq
from tq.protocol import TaskOutcome

QUEUE = "aging-demo"

with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
    low = client.submit("echo", b"low", queue=QUEUE, priority=0)
    pinned = client.submit("echo", b"pinned", queue=QUEUE, priority=0, aging=False)
    deadline = time.monotonic() + 30
    while (client.status(low).effective_priority or 0) < 200:  # four steps of 50
        if time.monotonic() > deadline:
            raise SystemExit("the broker does not age tasks: start it as shown above")
        time.sleep(0.1)
    high = client.submit("echo", b"high", queue=QUEUE, priority=200)
    for task_id in (low, pinned, high):
        info = client.status(task_id, include_payload=True)
        name = (info.payload or b"").decode()
        print(f"{name}: priority {info.priority}, effective {info.effective_priority}")
    claimed = client.claim("aging-demo-worker", [QUEUE], max_tasks=3)
    print("claimed:", " ".join(t.payload.decode() for t in claimed))
    client.report([TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True) for t in claimed])
