"""The form any language can use: bytes in, bytes out, by task type. With `make run` (or
`tq dev`: its worker serves tq.worker.examples) running, `python examples/raw_submit.py`
prints the payload."""

import os

import tq

with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
    task_id = client.submit("echo", payload=b'{"hello": "world"}', priority=200)
    print(client.result(task_id, timeout=10).decode())
