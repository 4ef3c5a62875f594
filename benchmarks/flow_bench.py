"""What flow control costs the state machine's task lifecycle (submit, claim, complete):
with nothing configured, with a paused queue and a capped type that the tasks do not touch,
and with the tasks' own type rate-limited (a rate so high it never holds them back).

    .venv/bin/python benchmarks/flow_bench.py [--tasks N] [--repeat R] [--json]

Each figure is the best of ``--repeat`` runs (the machine is shared; the best run is the
least disturbed). Not a test: nothing here asserts a number. With nothing configured the
claim and submit paths make the same Python calls per task as before flow control (count
them with cProfile): the difference is a few attribute checks.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import WorkerId, make_task_id
from tq.core.machine import Machine
from tq.core.replies import ClaimReply

SETUPS: dict[str, tuple[c.Command, ...]] = {
    "nothing configured": (),
    "unrelated pause and cap": (
        c.PauseQueue(1.0, "elsewhere"),
        c.SetLimit(1.0, "type", "other", concurrency=5),
    ),
    "own type rate-limited": (c.SetLimit(1.0, "type", "job", rate=1e6, burst=10**9),),
}


def lifecycle(n: int, setup: tuple[c.Command, ...]) -> float:
    """Seconds for ``n`` tasks to be submitted (batches of 500), claimed (50 at a time) and
    completed."""
    m = Machine()
    for cmd in setup:
        m.apply(cmd, Effects())
    ids = [make_task_id(1_700_000_000_000 + i, i) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 500):
        new = tuple(c.NewTask(t, "job", "default", b"", 128, 0) for t in ids[i : i + 500])
        m.apply(c.SubmitTasks(2.0, new, 10**9), Effects())
    while True:
        reply = m.apply(c.ClaimTasks(2.0, WorkerId("w"), ("default",), 50, 30.0), Effects())
        assert isinstance(reply, ClaimReply)
        if not reply.tasks:
            break
        done = tuple(c.CompletedItem(t.id, t.lease_token) for t in reply.tasks)
        m.apply(c.CompleteTasks(2.0, done), Effects())
    return time.perf_counter() - start


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates = {
        name: args.tasks / best(args.repeat, functools.partial(lifecycle, args.tasks, setup))
        for name, setup in SETUPS.items()
    }
    if args.json:
        print(json.dumps({"tasks": args.tasks, "lifecycle_per_s": rates}))
        return
    for name, rate in rates.items():
        print(f"{name:26s} {rate:>10,.0f} tasks/s (submit + claim + complete)")


if __name__ == "__main__":
    main()
