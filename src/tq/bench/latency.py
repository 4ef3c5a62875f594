"""The latency scenario: idle workers, one task at a time (submit, wait for the result, next).

This is the pickup latency of an idle worker, and the submitter's wait includes two fsyncs:
the submit's ack waits for its group commit, and the result is published only once the
completion is durable. The client waits the idiomatic way, ``AsyncClient.result`` (pushed,
not polled). Capped at ``MAX_S`` seconds, after 20 warm-up tasks.
"""

from __future__ import annotations

import time
from typing import Any

from tq.bench.config import QUEUE, TASK_TYPE, BenchConfig
from tq.bench.measure import Meter, latency_summary, rounded
from tq.bench.procs import Target, WorkerGroup, wait_for_workers
from tq.client import AsyncClient
from tq.errors import TqError

WARMUP = 20
MAX_S = 60.0
RESULT_TIMEOUT_S = 10.0


async def sequential(
    client: AsyncClient, count: int, payload: bytes, limit_s: float, meter: Meter | None = None
) -> tuple[list[float], list[float], int]:
    """Up to ``count`` sequential round trips within ``limit_s``; (submit latencies,
    submit->result latencies, failures)."""
    submits: list[float] = []
    e2e: list[float] = []
    failed = 0
    clock = time.perf_counter
    stop_at = clock() + limit_s
    for _ in range(count):
        if clock() > stop_at:
            break
        t0 = clock()
        task_id = await client.submit(TASK_TYPE, payload, queue=QUEUE)
        t1 = clock()
        try:
            ok = await client.result(task_id, timeout=RESULT_TIMEOUT_S) == payload
        except TqError:
            ok = False
        t2 = clock()
        if ok:
            submits.append(t1 - t0)
            e2e.append(t2 - t0)
        else:
            failed += 1
        if meter is not None:
            meter.done += 1
    return submits, e2e, failed


async def run(target: Target, cfg: BenchConfig, meter: Meter) -> dict[str, Any]:
    count, payload = cfg.latency_count, cfg.payload
    async with target.client() as client:
        with WorkerGroup(
            target.url,
            cfg.workers,
            cfg.concurrency,
            target.workdir / "latency-workers",
            target.api_key,
            tls=target.tls,
        ) as group:
            meter.reset(f"latency: starting {cfg.workers} workers", count)
            await wait_for_workers(client, group)
            _, _, warm_failed = await sequential(client, WARMUP, payload, 20.0)
            meter.reset(f"latency: {count:,} sequential submit->result", count)
            started = time.perf_counter()
            submits, e2e, failed = await sequential(client, count, payload, MAX_S, meter)
            wall = time.perf_counter() - started
    return {
        "requested": count,
        "done": len(e2e) + failed,
        "failed": failed + warm_failed,
        "wall_s": rounded(wall),
        **latency_summary(e2e, "e2e_"),
        **latency_summary(submits, "submit_"),
    }
