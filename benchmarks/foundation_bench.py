"""Foundation figures on this machine: the pure state machine, the codec, durable group
commit, and recovery of a large store.

    .venv/bin/python benchmarks/foundation_bench.py [--tasks N] [--recovery-tasks N] [--json]

Each figure is the best of ``--repeat`` runs (the machine is shared; the best run is the
least disturbed). Not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from itertools import count

from tq.core import commands as c
from tq.core.effects import Effects
from tq.core.ids import TaskId, WorkerId, make_task_id
from tq.core.machine import Machine
from tq.core.replies import ClaimReply
from tq.protocol import FrameDecoder, SubmitTask, TaskSpec, encode
from tq.storage import Store, open_store
from tq.storage.commit import GroupCommit
from tq.storage.recovery import recover

PAYLOAD = b"x" * 100
_seq = count()


def ids(n: int) -> list[TaskId]:
    base = 1_700_000_000_000
    return [make_task_id(base + i // 1000, next(_seq)) for i in range(n)]


def specs(n: int) -> list[c.NewTask]:
    return [c.NewTask(i, "noop", "default", PAYLOAD, 128, 3) for i in ids(n)]


def best(repeat: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(repeat))


def machine_lifecycle(n: int, batch: int) -> float:
    """submit + claim + complete through the pure machine: tasks/s."""
    m = Machine()
    todo = specs(n)
    gc.collect()
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        fx = Effects()
        m.apply(c.SubmitTasks(1.0, tuple(todo[s : s + batch]), 10**9), fx)
        claimed = m.apply(c.ClaimTasks(2.0, WorkerId("w"), ("default",), batch, 30.0), fx)
        assert isinstance(claimed, ClaimReply)
        items = tuple(c.CompletedItem(t.id, t.lease_token, b"1") for t in claimed.tasks)
        m.apply(c.CompleteTasks(3.0, items), fx)
        m.end_batch(fx)
    return n / (time.perf_counter() - t0)


def codec(n: int, tasks_per_frame: int) -> tuple[float, float]:
    """SUBMIT_TASK frames: (encode msgs/s, decode msgs/s) counted in tasks."""
    spec = TaskSpec(task_type="noop", payload=PAYLOAD)
    msg = SubmitTask(request_id=1, tasks=[spec] * tasks_per_frame)
    frames = n // tasks_per_frame
    t0 = time.perf_counter()
    for _ in range(frames):
        data = encode(msg)
    enc = frames * tasks_per_frame / (time.perf_counter() - t0)
    # Fed in 256 KiB reads, as a socket delivers them, keeping every decoded message alive.
    stream = data * frames
    chunks = [stream[i : i + 256 * 1024] for i in range(0, len(stream), 256 * 1024)]
    dec = FrameDecoder()
    kept: list[object] = []
    t0 = time.perf_counter()
    for chunk in chunks:
        kept += dec.feed(chunk)
    elapsed = time.perf_counter() - t0
    assert len(kept) == frames
    return enc, frames * tasks_per_frame / elapsed


def durable_submits(n: int, batch: int) -> float:
    """Machine submit, then GroupCommit (one write per batch, WAL fsync in its thread while
    the next batches are applied, as the broker's loop does): durable tasks/s, counted when
    the last fsync returns."""
    d = tempfile.mkdtemp(prefix="tq-bench-")

    async def run(store: Store) -> float:
        commit = GroupCommit(store)
        m = Machine()
        todo = specs(n)
        gc.collect()
        t0 = time.perf_counter()
        acks: list[asyncio.Task[None]] = []
        for s in range(0, n, batch):
            fx = Effects()
            m.apply(c.SubmitTasks(1.0, tuple(todo[s : s + batch]), 10**9), fx)
            m.end_batch(fx)
            commit.write(fx.mutations)
            acks.append(asyncio.create_task(commit.durable()))
            await asyncio.sleep(0)  # one loop turn per batch, as the broker has
        await asyncio.gather(*acks)
        elapsed = time.perf_counter() - t0
        await commit.close()
        return n / elapsed

    try:
        with open_store(d) as store:
            return asyncio.run(run(store))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def recovery(n: int) -> tuple[float, int]:
    """Fill a store with n pending tasks (100-byte payloads), reopen, rebuild: seconds."""
    d = tempfile.mkdtemp(prefix="tq-bench-")
    try:
        with open_store(d) as store:
            m = Machine()
            for s in range(0, n, 5000):
                fx = Effects()
                m.apply(c.SubmitTasks(1.0, tuple(specs(min(5000, n - s))), 10**9), fx)
                m.end_batch(fx)
                store.write(fx.mutations)
            store.sync_wal()
            del m
        gc.collect()
        t0 = time.perf_counter()
        with open_store(d) as store:
            rec = recover(store, 2.0)
        elapsed = time.perf_counter() - t0
        assert rec.machine.queued == n
        return elapsed, rec.tasks
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--recovery-tasks", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.tasks
    results: dict[str, float] = {}
    for b in (100, 500):
        results[f"machine_submit_claim_complete_tasks_per_s_batch{b}"] = best(
            args.repeat, functools.partial(machine_lifecycle, n, b)
        )
    for per in (1, 500):
        e, d = codec(n, per)
        results[f"codec_encode_tasks_per_s_frame{per}"] = e
        results[f"codec_decode_tasks_per_s_frame{per}"] = d
    for b in (500, 2000):
        results[f"durable_submit_tasks_per_s_batch{b}"] = best(
            args.repeat, functools.partial(durable_submits, n, b)
        )
    secs, found = recovery(args.recovery_tasks)
    results["recovery_seconds"] = secs
    results["recovery_tasks"] = found
    results["recovery_tasks_per_s"] = found / secs
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'figure':<52} {'value':>14}")
    for k, v in results.items():
        print(f"{k:<52} {v:>14,.2f}" if isinstance(v, float) else f"{k:<52} {v:>14,}")
    print(f"(cpu count {os.cpu_count()}, best of {args.repeat})")


if __name__ == "__main__":
    main()
