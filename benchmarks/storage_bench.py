"""Durable group-committed task writes through RocksStore, and what the GIL does meanwhile.

Measures (each in a fresh temp dir): tasks/s and us per task for batches of N with
``write(sync=False)`` + ``sync_wal()`` per batch, for submit-only and full-lifecycle patterns,
sequential (UUIDv7) vs random keys; ``write(sync=True)`` vs write + ``sync_wal()``; scan speed;
and whether a thread blocked in ``sync_wal()`` / ``write(sync=True)`` lets Python run.

    .venv/bin/python benchmarks/storage_bench.py [--tasks 200000] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tq.core.ids import make_task_id
from tq.core.layout import Family, Mutation
from tq.storage import RocksStore, open_store

P, IP, C, M = Family.PENDING, Family.IN_PROGRESS, Family.COMPLETED, Family.METADATA
VALUE = os.urandom(100) + b"x" * 100  # ~200 bytes, half compressible, like a msgpack task
IDS_PER_MS = 200  # ids minted per millisecond at ~200k tasks/s: the real UUIDv7 key order


@contextmanager
def fresh_store() -> Iterator[RocksStore]:
    with tempfile.TemporaryDirectory(prefix="tq-bench-") as tmp, open_store(tmp) as store:
        yield store


def make_keys(count: int, sequential: bool) -> list[bytes]:
    if not sequential:
        return [os.urandom(16) for _ in range(count)]
    base_ms = time.time_ns() // 1_000_000
    rand = random.getrandbits
    return [make_task_id(base_ms + i // IDS_PER_MS, rand(74)) for i in range(count)]


def batches_for(keys: list[bytes], size: int, lifecycle: bool) -> list[list[Mutation]]:
    """Submit: put pending. Lifecycle: batch b also claims b-1 and completes b-2."""
    groups = [keys[i : i + size] for i in range(0, len(keys), size)]
    out: list[list[Mutation]] = []
    for b in range(len(groups) + (2 if lifecycle else 0)):
        batch: list[Mutation] = []
        if b < len(groups):
            batch += [(P, key, VALUE) for key in groups[b]]
        if lifecycle and 0 <= b - 1 < len(groups):
            for key in groups[b - 1]:
                batch += [(P, key, None), (IP, key, VALUE)]
        if lifecycle and 0 <= b - 2 < len(groups):
            for key in groups[b - 2]:
                batch += [(IP, key, None), (C, key, VALUE)]
        batch.append((M, b"machine", b"m" * 40))
        out.append(batch)
    return out


def group_commit(tasks: int, size: int, sequential: bool, lifecycle: bool) -> dict[str, object]:
    batches = batches_for(make_keys(tasks, sequential), size, lifecycle)
    mutations = sum(len(b) for b in batches)
    with fresh_store() as store:
        write_s = sync_s = 0.0
        for batch in batches:
            t0 = time.perf_counter()
            store.write(batch)
            t1 = time.perf_counter()
            store.sync_wal()
            write_s += t1 - t0
            sync_s += time.perf_counter() - t1
    total = write_s + sync_s
    return {
        "pattern": "lifecycle" if lifecycle else "submit",
        "keys": "sequential" if sequential else "random",
        "batch": size,
        "tasks_per_s": round(tasks / total),
        "us_per_task": round(total / tasks * 1e6, 2),
        "us_per_mutation_write": round(write_s / mutations * 1e6, 3),
        "us_per_batch_sync": round(sync_s / len(batches) * 1e6, 1),
    }


def sync_modes(tasks: int, size: int) -> dict[str, object]:
    batches = batches_for(make_keys(tasks, True), size, lifecycle=False)
    result: dict[str, object] = {"batch": size}
    for mode in ("write(sync=True)", "write+sync_wal()"):
        with fresh_store() as store:
            t0 = time.perf_counter()
            for batch in batches:
                if mode == "write(sync=True)":
                    store.write(batch, sync=True)
                else:
                    store.write(batch)
                    store.sync_wal()
            elapsed = time.perf_counter() - t0
        result[mode] = {
            "tasks_per_s": round(tasks / elapsed),
            "us_per_batch": round(elapsed / len(batches) * 1e6),
        }
    return result


def scan(tasks: int) -> dict[str, object]:
    keys = make_keys(tasks, True)
    with fresh_store() as store:
        for i in range(0, tasks, 5000):
            store.write([(P, key, VALUE) for key in keys[i : i + 5000]])
        store.compact(P)
        t0 = time.perf_counter()
        count = sum(1 for _ in store.iterate(P))
        elapsed = time.perf_counter() - t0
    return {"items": count, "ns_per_item": round(elapsed / count * 1e9), "seconds": elapsed}


def count_while(work: Callable[[], None], seconds: float) -> tuple[float, float]:
    """(main-thread count/s, worker calls/s) while a worker thread loops ``work``."""
    stop = threading.Event()
    calls = [0]

    def worker() -> None:
        while not stop.is_set():
            work()
            calls[0] += 1

    thread = threading.Thread(target=worker)
    thread.start()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += 1
    stop.set()
    thread.join(timeout=30)
    elapsed = time.perf_counter() - t0
    return n / elapsed, calls[0] / elapsed


def gil(seconds: float) -> dict[str, object]:
    """Does the event-loop thread keep running while another thread waits for the disk?"""
    seq = itertools.count()
    out: dict[str, object] = {"switch_interval_s": sys.getswitchinterval()}
    with fresh_store() as store:

        def batch() -> list[Mutation]:
            return [(P, next(seq).to_bytes(16, "big"), VALUE) for _ in range(100)]

        def durable() -> None:
            store.write(batch())
            store.sync_wal()

        def synced() -> None:
            store.write(batch(), sync=True)

        alone, _ = count_while(lambda: time.sleep(0.01), seconds)
        out["main_counts_per_s_alone"] = round(alone)
        for name, work in (("write+sync_wal()", durable), ("write(sync=True)", synced)):
            counts, calls = count_while(work, seconds)
            out[name] = {
                "main_thread_speed": round(counts / alone, 2),
                "worker_batches_per_s": round(calls),
            }
        t0 = time.perf_counter()
        for _ in range(200):
            durable()
        out["write+sync_wal()_batches_per_s_unloaded"] = round(200 / (time.perf_counter() - t0))
        # A thread back from the fsync waits for the busy thread to yield the GIL, which it
        # does only every switch interval: that interval caps commits/s from a sync thread.
        default = sys.getswitchinterval()
        for interval in (0.001, 0.0002):
            sys.setswitchinterval(interval)
            try:
                counts, calls = count_while(durable, seconds)
            finally:
                sys.setswitchinterval(default)
            out[f"write+sync_wal()_switch_{interval}s"] = {
                "main_thread_speed": round(counts / alone, 2),
                "worker_batches_per_s": round(calls),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000, help="tasks per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    tasks: int = args.tasks
    report: dict[str, object] = {"tasks": tasks, "cpus": os.cpu_count()}
    groups = [
        group_commit(tasks, size, sequential, lifecycle)
        for lifecycle in (False, True)
        for sequential in (True, False)
        for size in (100, 500, 2000)
    ]
    report["group_commit"] = groups
    modes = [sync_modes(tasks // 4, size) for size in (1, 100, 2000)]
    report["sync_modes"] = modes
    report["scan"] = scan(tasks)
    report["gil"] = gil(1.0)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"group commit: write(sync=False) + sync_wal() per batch, {tasks} tasks")
    for g in groups:
        print(
            f"  {g['pattern']:9} {g['keys']:10} N={g['batch']:<5} {g['tasks_per_s']:>8} tasks/s "
            f"{g['us_per_task']:>6} us/task  write {g['us_per_mutation_write']} us/mutation  "
            f"sync {g['us_per_batch_sync']} us/batch"
        )
    print("sync=True vs write + sync_wal()  (submit, sequential keys)")
    for s in modes:
        print(f"  N={s['batch']:<5} " + "  ".join(f"{m}: {s[m]}" for m in list(s)[1:]))
    print(f"scan: {report['scan']}")
    print(f"GIL: {json.dumps(report['gil'])}")


if __name__ == "__main__":
    main()
