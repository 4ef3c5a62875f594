"""The memory and restart scenarios: what ``stored`` pending tasks cost the broker.

memory: the broker's RSS (psutil, on its PID) before and after queueing the tasks with
100-byte payloads; the delta per task, the absolute RSS and the data dir's size on disk.
restart: the tasks are queued, the broker is SIGKILLed (a crash: nothing is flushed on the way
out) and started again on the same data dir; the time from the spawn until it answers a ping,
beside the same time for an empty data dir, and a recount of the recovered tasks.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tq.bench.config import MEMORY_PAYLOAD, BenchConfig, payload_of
from tq.bench.enqueue import fill
from tq.bench.measure import Meter, per_second, rounded
from tq.bench.procs import MiB, Target, rss
from tq.client import AsyncClient
from tq.errors import TqError
from tq.testing import BrokerProcess

SETTLE_S = 0.5
START_TIMEOUT_S = 120.0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _mib(value: int | None) -> float | None:
    return None if value is None else rounded(value / MiB, 1)


async def run_memory(target: Target, cfg: BenchConfig, meter: Meter) -> dict[str, Any]:
    n, pid = cfg.stored_tasks, target.broker_pid
    async with target.client() as client:
        await client.ping()
        await asyncio.sleep(SETTLE_S)
        before = rss(pid)
        fill_s = await fill(client, cfg, n, payload_of(MEMORY_PAYLOAD), meter)
        pending = (await client.stats()).pending
        await asyncio.sleep(SETTLE_S)
        after = rss(pid)
    delta = None if before is None or after is None else (after - before) / n
    assert target.broker is not None  # memory never runs against an external broker
    return {
        "tasks": n,
        "payload_size": MEMORY_PAYLOAD,
        "fill_per_s": per_second(n, fill_s),
        "pending": pending,
        "lost": n - pending,
        "rss_before_mib": _mib(before),
        "rss_after_mib": _mib(after),
        "rss_bytes_per_task": rounded(delta, 1),
        "rss_projected_1m_mib": None
        if delta is None or before is None
        else rounded((before + delta * 1_000_000) / MiB, 1),
        "data_dir_mib": _mib(dir_bytes(target.broker.data_dir)),
    }


async def time_to_ping(broker: BrokerProcess) -> tuple[float, float]:
    """Spawn ``broker`` and ping it; (seconds to its ready file, seconds to its first pong),
    both from the spawn."""
    t0 = time.perf_counter()
    await asyncio.to_thread(broker.start, START_TIMEOUT_S)
    t_ready = time.perf_counter()
    key = broker.env.get("TQ_BOOTSTRAP_API_KEY")
    tls = broker.client_tls()
    async with AsyncClient(
        broker.url, connect_timeout=START_TIMEOUT_S, api_key=key, tls=tls
    ) as client:
        await client.ping()
    return t_ready - t0, time.perf_counter() - t0


async def run_restart(target: Target, cfg: BenchConfig, meter: Meter) -> dict[str, Any]:
    n, old = cfg.stored_tasks, target.broker
    assert old is not None  # restart never runs against an external broker
    async with target.client() as client:
        fill_s = await fill(client, cfg, n, cfg.payload, meter)
        stored = (await client.stats()).pending
    meter.reset(f"restart: SIGKILL, recover {stored:,} tasks", 1)
    old.kill()
    empty = BrokerProcess(
        target.workdir / "empty-data",
        settings=old.settings,
        env=old.env,
        log_file=target.workdir / "e.log",
        tls=old.tls,
    )
    again = BrokerProcess(
        old.data_dir, settings=old.settings, env=old.env,
        log_file=target.workdir / "restart.log", tls=old.tls,
    )  # fmt: skip
    try:
        empty_ready, empty_ping = await time_to_ping(empty)
        empty.stop()
        ready_s, ping_s = await time_to_ping(again)
        async with target.client(again.url) as client:
            recovered = (await client.stats()).pending
    except TqError as exc:
        return {"tasks": n, "error": str(exc), "broker_log": again.log_tail(10)}
    finally:
        empty.stop()
        again.stop()
    meter.done = 1
    return {
        "tasks": n,
        "fill_per_s": per_second(n, fill_s),
        "stored": stored,
        "recovered": recovered,
        "lost": max(0, stored - recovered),
        "data_dir_mib": _mib(dir_bytes(old.data_dir)),
        "restart_ready_s": rounded(ready_s),
        "restart_to_ping_s": rounded(ping_s),
        "empty_start_to_ping_s": rounded(empty_ping),
        "empty_start_ready_s": rounded(empty_ready),
    }
