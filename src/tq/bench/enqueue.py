"""The enqueue scenario, and the batched fill the drain, memory and restart scenarios use.

Three phases of ``tasks`` each, from one client and one connection. Pipelined single submits:
``window`` loops, each awaiting its own ``submit`` (the broker acks after the fsync'd group
commit), so ``window`` submits are always in flight. The same through ``submit_nowait`` (the
client's pipelining fast path: a future per task, ``window`` unacked). Batches:
``submit_many`` of ``batch`` tasks, ``ceil(window / batch)`` calls in flight.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tq.bench.config import QUEUE, TASK_TYPE, BenchConfig
from tq.bench.measure import Meter, latency_summary, per_second, rounded
from tq.bench.procs import Target, process_cpu
from tq.client import AsyncClient, task_spec

#: Cancelled per request when the bench cleans up after itself on an external broker.
_CANCEL_CHUNK = 1000


async def pipelined_submits(
    client: AsyncClient,
    n: int,
    payload: bytes,
    window: int,
    meter: Meter,
    ids: list[str] | None = None,
) -> tuple[float, list[float]]:
    """Submit ``n`` tasks one per request, ``window`` at a time; (seconds, ack latencies)."""
    latencies: list[float] = []
    issued = 0
    clock = time.perf_counter

    async def loop() -> None:
        nonlocal issued
        while issued < n:
            issued += 1
            t0 = clock()
            task_id = await client.submit(TASK_TYPE, payload, queue=QUEUE)
            latencies.append(clock() - t0)
            meter.done += 1
            if ids is not None:
                ids.append(task_id)

    start = clock()
    async with asyncio.TaskGroup() as tg:
        for _ in range(min(window, n)):
            tg.create_task(loop())
    return clock() - start, latencies


async def nowait_submits(
    client: AsyncClient,
    n: int,
    payload: bytes,
    window: int,
    meter: Meter,
    ids: list[str] | None = None,
) -> tuple[float, list[float]]:
    """Submit ``n`` tasks with ``submit_nowait``, at most ``window`` unacked; (seconds, ack
    latencies)."""
    spec = task_spec(TASK_TYPE, payload, queue=QUEUE)
    latencies: list[float] = []
    clock = time.perf_counter
    in_flight: collections.deque[asyncio.Future[str]] = collections.deque()

    def acked(t0: float) -> Callable[[asyncio.Future[str]], None]:
        def done(_: asyncio.Future[str]) -> None:
            latencies.append(clock() - t0)
            meter.done += 1

        return done

    async def settle(future: asyncio.Future[str]) -> None:
        task_id = await future
        if ids is not None:
            ids.append(task_id)

    await client.connect()
    start = clock()
    for _ in range(n):
        if len(in_flight) >= window:
            await settle(in_flight.popleft())
        future = client.submit_nowait(spec)
        future.add_done_callback(acked(clock()))
        in_flight.append(future)
    while in_flight:
        await settle(in_flight.popleft())
    elapsed = clock() - start
    # A future awaited after it was done may not have run its done callback yet: let the
    # queued callbacks run (they are already scheduled) so that every latency is recorded.
    for _ in range(n):
        if len(latencies) >= n:
            break
        await asyncio.sleep(0)
    return elapsed, latencies


async def batch_submits(
    client: AsyncClient,
    n: int,
    payload: bytes,
    batch: int,
    in_flight: int,
    meter: Meter,
    ids: list[str] | None = None,
) -> tuple[float, list[float]]:
    """Submit ``n`` tasks in ``submit_many`` calls of ``batch``, ``in_flight`` calls at once;
    (seconds, latency of each call)."""
    spec = task_spec(TASK_TYPE, payload, queue=QUEUE)
    latencies: list[float] = []
    left = n
    clock = time.perf_counter

    async def loop() -> None:
        nonlocal left
        while left > 0:
            size = min(batch, left)
            left -= size
            t0 = clock()
            got = await client.submit_many([spec] * size)
            latencies.append(clock() - t0)
            meter.done += size
            if ids is not None:
                ids.extend(got)

    start = clock()
    async with asyncio.TaskGroup() as tg:
        for _ in range(max(1, min(in_flight, math.ceil(n / batch)))):
            tg.create_task(loop())
    return clock() - start, latencies


def batches_in_flight(cfg: BenchConfig) -> int:
    return max(1, math.ceil(cfg.window / cfg.batch))


async def fill(
    client: AsyncClient, cfg: BenchConfig, n: int, payload: bytes, meter: Meter
) -> float:
    """Queue ``n`` tasks as fast as batches go; the seconds it took."""
    meter.reset(f"fill {n:,} tasks", n)
    seconds, _ = await batch_submits(client, n, payload, cfg.batch, batches_in_flight(cfg), meter)
    return seconds


async def cancel_all(client: AsyncClient, ids: list[str]) -> None:
    """Cancel what the bench queued on a broker it does not own (no worker may serve it)."""
    for i in range(0, len(ids), _CANCEL_CHUNK):
        await client.cancel_many(ids[i : i + _CANCEL_CHUNK])


Phase = Callable[[list[str] | None], Awaitable[tuple[float, list[float]]]]


async def run(target: Target, cfg: BenchConfig, meter: Meter) -> dict[str, Any]:
    """Pipelined single submits, the same through submit_nowait, then batches; the rate,
    ack latencies and CPU per task (client, broker) of each phase."""
    n, payload, window = cfg.tasks, cfg.payload, cfg.window
    pid = target.broker_pid
    ids: list[str] | None = None if target.broker is not None else []
    out: dict[str, Any] = {"tasks": n, "window": window, "batch": cfg.batch}
    async with target.client() as client:
        await client.ping()
        before = await client.stats()
        phases: list[tuple[str, str, str, Phase]] = [
            ("single", "single_submit_", f"single submits, window {window}",
             lambda keep: pipelined_submits(client, n, payload, window, meter, keep)),
            ("nowait", "nowait_submit_", f"submit_nowait, window {window}",
             lambda keep: nowait_submits(client, n, payload, window, meter, keep)),
            ("batch", "batch_call_", f"batches of {cfg.batch}",
             lambda keep: batch_submits(
                 client, n, payload, cfg.batch, batches_in_flight(cfg), meter, keep)),
        ]  # fmt: skip
        for name, prefix, label, phase in phases:
            meter.reset(f"enqueue: {n:,} {label}", n)
            cpu0, broker0 = time.process_time(), process_cpu(pid)
            seconds, latencies = await phase(ids)
            cpu1, broker1 = time.process_time(), process_cpu(pid)
            out[f"{name}_s"] = rounded(seconds, 4)
            out[f"{name}_per_s"] = per_second(n, seconds)
            out.update(latency_summary(latencies, prefix))
            out[f"{name}_client_cpu_us_per_task"] = rounded((cpu1 - cpu0) / n * 1e6, 2)
            out[f"{name}_broker_cpu_us_per_task"] = _per_task_us(broker0, broker1, n)
        out["batches_in_flight"] = batches_in_flight(cfg)
        after = await client.stats()
        if ids:
            await cancel_all(client, ids)
    out["submitted"] = after.totals.get("submitted", 0) - before.totals.get("submitted", 0)
    out["lost"] = len(phases) * n - out["submitted"]
    return out


def _per_task_us(a: float | None, b: float | None, n: int) -> float | None:
    return None if a is None or b is None else rounded((b - a) / n * 1e6, 2)
