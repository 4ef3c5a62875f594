"""Call tasks from Python: with `make run` (or `tq dev examples.tasks`) running, the
repository root's `python examples/quickstart.py` prints 5, 49 and the failing task's error."""

import os

from tasks import add, fail, slow_square

import tq

with tq.Client(os.environ.get("TQ_BROKER_URL", "tq://127.0.0.1:7420")) as client:
    tq.set_default_client(client)
    handle = add.submit(2, 3)  # arguments type-checked against add(x: int, y: int)
    print(handle.result(timeout=10))
    print(slow_square.submit(7).result(timeout=10))
    try:
        fail.submit("no luck").result(timeout=10)
    except tq.TaskFailedError as exc:
        print(f"failed: {exc.message}")
