"""The drain scenario: ``tasks`` queued first, then ``workers`` worker processes started.

Completions are read from the broker's ``completed`` counter every 10 ms (the sampling of the
shared peer harness). The steady rate runs from the first completion seen to the last, so it
excludes interpreter start-up; the rate including start-up runs from the spawn. A drain with
no progress for ``STALL_S`` seconds, or past its deadline, stops and reports ``timed_out``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from tq.bench.config import BenchConfig
from tq.bench.enqueue import fill
from tq.bench.measure import Meter, per_second, rounded, steady_rate
from tq.bench.procs import MiB, Sampler, Target, WorkerGroup, cpu_seconds
from tq.client import AsyncClient

POLL_S = 0.01
STALL_S = 30.0


@dataclass
class Progress:
    """What the watch loop saw: first and last completion, and the worker CPU at the first."""

    done: int = 0
    t_first: float | None = None
    done_at_first: int = 0
    cpu_at_first: float | None = None
    t_last: float | None = None
    timed_out: bool = False
    workers_died: bool = False


def deadline_for(n: int) -> float:
    """Seconds a drain of ``n`` tasks may take before it is abandoned (>= 500 tasks/s)."""
    return max(60.0, n / 500)


async def watch(
    client: AsyncClient, base: int, n: int, group: WorkerGroup, meter: Meter, limit: float
) -> Progress:
    """Poll the completed counter until ``n`` more tasks completed, or give up."""
    seen = Progress()
    clock = time.perf_counter
    deadline = clock() + limit
    last_progress = clock()
    while True:
        done = (await client.stats()).totals.get("completed", 0) - base
        now = clock()
        if done > 0 and seen.t_first is None:
            seen.t_first, seen.done_at_first = now, done
            seen.cpu_at_first = cpu_seconds(group.tree())
        if done != seen.done:
            seen.done, last_progress = done, now
            meter.done = min(done, n)
        if done >= n:
            seen.t_last = now
            return seen
        if now > deadline or now - last_progress > STALL_S:
            seen.timed_out, seen.t_last = True, now
            return seen
        if not group.alive():
            seen.workers_died, seen.timed_out, seen.t_last = True, True, now
            return seen
        await asyncio.sleep(POLL_S)


async def run(target: Target, cfg: BenchConfig, meter: Meter) -> dict[str, Any]:
    n = cfg.tasks
    async with target.client() as client:
        fill_s = await fill(client, cfg, n, cfg.payload, meter)
        before = await client.stats()
        base = before.totals.get("completed", 0)
        meter.reset(f"drain: {n:,} tasks, {cfg.workers} workers x {cfg.concurrency}", n)
        sampler = Sampler(target.broker_pid)
        spawned = time.perf_counter()
        cpu_broker0 = sampler.broker_cpu()
        with WorkerGroup(
            target.url,
            cfg.workers,
            cfg.concurrency,
            target.workdir / "workers",
            target.api_key,
            tls=target.tls,
        ) as group:
            sampler.workers = group
            sampling = asyncio.create_task(sampler.run())
            try:
                seen = await watch(client, base, n, group, meter, deadline_for(n))
            finally:
                sampling.cancel()
            sampler.sample()
            cpu_workers = cpu_seconds(group.tree())
            cpu_broker1 = sampler.broker_cpu()
            tails = group.log_tail() if seen.timed_out else []
        after = await client.stats()
    completed = after.totals.get("completed", 0) - base
    steady_cpu = None if seen.cpu_at_first is None else cpu_workers - seen.cpu_at_first
    steady_n = n - seen.done_at_first
    out: dict[str, Any] = {
        "tasks": n,
        "workers": cfg.workers,
        "concurrency": cfg.concurrency,
        "fill_per_s": per_second(n, fill_s),
        "startup_s": rounded(None if seen.t_first is None else seen.t_first - spawned),
        "done_at_first_observation": seen.done_at_first,
        "steady_s": rounded(_span(seen.t_first, seen.t_last)),
        "steady_per_s": steady_rate(n, seen.done_at_first, seen.t_first, seen.t_last),
        "wall_s": rounded(_span(spawned, seen.t_last)),
        "per_s_incl_startup": per_second(min(seen.done, n), _span(spawned, seen.t_last)),
        "completed": completed,
        "lost": max(0, n - completed),
        "timed_out": seen.timed_out,
        "workers_died": seen.workers_died,
        "pending_after": after.pending,
        "in_progress_after": after.in_progress,
        "dead_lettered": after.totals.get("dead_lettered", 0)
        - before.totals.get("dead_lettered", 0),
        "broker_peak_rss_mib": rounded(sampler.broker_peak / MiB, 1) if sampler.broker else None,
        "workers_peak_rss_mib": rounded(sampler.workers_peak / MiB, 1),
        "worker_cpu_us_per_task": rounded(steady_cpu / steady_n * 1e6, 1)
        if steady_cpu is not None and steady_n > 0
        else None,
        "broker_cpu_us_per_task": None
        if cpu_broker0 is None or cpu_broker1 is None
        else rounded((cpu_broker1 - cpu_broker0) / n * 1e6, 1),
    }
    if tails:
        out["worker_log_tails"] = tails
    return out


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a
