"""End-to-end figures through real processes: a broker (fsync-durable), W worker processes,
one client. Enqueue (pipelined single submits and batches), drain of N pre-filled no-op
tasks, and idle sequential submit->result latency.

    .venv/bin/python benchmarks/e2e_bench.py [--tasks 100000] [--workers 2] [--json]

Not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tq.client import AsyncClient, task_spec
from tq.testing import BrokerProcess

HERE = Path(__file__).resolve().parent


async def enqueue_single(client: AsyncClient, n: int, window: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, window):
        await asyncio.gather(*(client.submit("noop", b"1") for _ in range(min(window, n - start))))
    return n / (time.perf_counter() - t0)


async def enqueue_batch(client: AsyncClient, n: int, batch: int) -> float:
    spec = task_spec("noop", b"1")
    t0 = time.perf_counter()
    await asyncio.gather(
        *(client.submit_many([spec] * min(batch, n - s)) for s in range(0, n, batch))
    )
    return n / (time.perf_counter() - t0)


def start_workers(url: str, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-m", "tq", "--set", f"worker.broker_url={url}", "worker",
            "noop_tasks", "--concurrency", str(concurrency), "--log-level", "WARNING"]  # fmt: skip
    return [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


async def drain(
    client: AsyncClient, n: int, procs_out: list[subprocess.Popen[bytes]], url: str, w: int, c: int
) -> dict[str, float]:
    """Start the workers on ``n`` queued tasks; steady rate from first to last completion."""
    base = (await client.stats()).totals.get("completed", 0)
    spawned = time.perf_counter()
    procs_out += start_workers(url, w, c)
    first = last = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = (await client.stats()).totals.get("completed", 0) - base
        now = time.perf_counter()
        if done > 0 and first is None:
            first = now
        if done >= n:
            last = now
            break
        await asyncio.sleep(0.01)  # the sampling interval of the shared harness
    if first is None or last is None:
        raise RuntimeError("drain did not finish within 600 s")
    return {
        "drain_tasks_per_s_steady": n / (last - first),
        "drain_tasks_per_s_incl_startup": n / (last - spawned),
    }


async def latency(client: AsyncClient, count: int) -> dict[str, float]:
    for _ in range(20):
        await client.result(await client.submit("noop", b"1"), timeout=10)
    e2e, sub = [], []
    for _ in range(count):
        t0 = time.perf_counter()
        task_id = await client.submit("noop", b"1")
        t1 = time.perf_counter()
        await client.result(task_id, timeout=10)
        t2 = time.perf_counter()
        sub.append(t1 - t0)
        e2e.append(t2 - t0)
    q = statistics.quantiles
    return {
        "e2e_p50_ms": q(e2e, n=100)[49] * 1000,
        "e2e_p99_ms": q(e2e, n=100)[98] * 1000,
        "submit_p50_ms": q(sub, n=100)[49] * 1000,
        "submit_p99_ms": q(sub, n=100)[98] * 1000,
    }


async def run(args: argparse.Namespace, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    async with AsyncClient(url) as client:
        out["enqueue_single_tasks_per_s"] = await enqueue_single(client, args.tasks, 1000)
        out["enqueue_batch500_tasks_per_s"] = await enqueue_batch(client, args.tasks, 500)
        total = 2 * args.tasks
        procs: list[subprocess.Popen[bytes]] = []
        try:
            out.update(await drain(client, total, procs, url, args.workers, args.concurrency))
            out["drained_tasks"] = total
            out.update(await latency(client, args.latency_count))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=50_000, help="per enqueue phase (x2 drained)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency-count", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tq-e2e-"))
    settings = {"broker.backpressure_threshold": 10_000_000}
    with BrokerProcess(data / "d", settings=settings) as b:
        results = asyncio.run(run(args, b.url))
    if args.json:
        print(json.dumps(results))
        return
    for k, v in results.items():
        print(f"{k:<36} {v:>14,.2f}")


if __name__ == "__main__":
    main()
