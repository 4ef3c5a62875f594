"""A broker-like loop for crash tests: seeded command batches, group-committed to RocksDB.

Run as ``python crash_child.py DATA_DIR SEED``. It recovers whatever the directory holds,
then forever: build batch k from (seed, k, current state), apply it, write its mutations
plus the batch number in one write, sync the WAL, and print ``ack k``. The parent kills it
with SIGKILL and, using ``batch_commands`` with the same seed, replays what must be on disk.
"""

from __future__ import annotations

import random
import sys

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.layout import Family
from tq.core.machine import Machine
from tq.core.model import TaskState

BATCH_KEY = b"test/batch"
WORKERS = (WorkerId("w1"), WorkerId("w2"), WorkerId("w3"))


def batch_commands(seed: int, k: int, m: Machine) -> list[c.Command]:
    """Batch ``k``: a pure function of the seed, the batch number and the machine's state."""
    rng = random.Random(seed * 1_000_003 + k)
    now = 1_700_000_000.0 + k * 0.25
    live = sorted(t.id for t in m.live_tasks())
    cmds: list[c.Command] = []
    new = []
    for _ in range(rng.randint(0, 30)):
        tid = make_task_id(int(now * 1000), rng.getrandbits(74))
        deps: tuple[TaskId, ...] = ()
        if live and rng.random() < 0.1:
            deps = (rng.choice(live),)
        delay = rng.choice([None, None, None, 0.5, 3.0])
        new.append(
            c.NewTask(
                tid, "job", rng.choice(["a", "b"]), rng.randbytes(rng.randint(0, 200)),
                rng.randint(0, 255), rng.randint(0, 2),
                None if delay is None else now + delay, depends_on=deps,
                idempotency_key=f"k{rng.randint(0, 50)}" if rng.random() < 0.05 else None,
            )
        )  # fmt: skip
    if new:
        cmds.append(c.SubmitTasks(now, tuple(new), 1_000_000, 3600.0))
    for w in WORKERS:
        if rng.random() < 0.6:
            cmds.append(c.ClaimTasks(now, w, ("a", "b"), rng.randint(1, 15), 2.0))
    # Results for tasks held before this batch (their tokens are in the machine's state).
    for w in WORKERS:
        for task_id in m.held_by(w):
            task = m.get(task_id)
            roll = rng.random()
            if task is None or roll > 0.6:
                continue
            if roll < 0.4:
                item = c.CompletedItem(task_id, task.lease_token, b"ok")
                cmds.append(c.CompleteTasks(now, (item,)))
            else:
                retry = rng.random() < 0.8
                f = c.FailedItem(task_id, task.lease_token, "boom", retry, rng.random())
                cmds.append(c.FailTasks(now, (f,)))
    if live and rng.random() < 0.2:
        cmds.append(c.CancelTasks(now, (rng.choice(live),)))
    if rng.random() < 0.3:
        cmds.append(c.Heartbeat(now, rng.choice(WORKERS), 2.0))
    cmds.append(c.ExpireLeases(now))
    cmds.append(c.PromoteDue(now))
    return cmds


def apply_batch(m: Machine, cmds: list[c.Command], fx: Effects) -> None:
    for cmd in cmds:
        m.apply(cmd, fx)
    m.end_batch(fx)


def main() -> None:
    from tq.storage import open_store
    from tq.storage.recovery import recover

    data_dir, seed = sys.argv[1], int(sys.argv[2])
    store = open_store(data_dir)
    raw = store.get(Family.METADATA, BATCH_KEY)
    k = int(raw) if raw is not None else 0
    m = recover(store, 0.0).machine
    while True:
        k += 1
        fx = Effects()
        apply_batch(m, batch_commands(seed, k, m), fx)
        fx.put(Family.METADATA, BATCH_KEY, str(k).encode())
        store.write(fx.mutations)
        store.sync_wal()
        sys.stdout.write(f"ack {k} {m.counts()[TaskState.PENDING]}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
