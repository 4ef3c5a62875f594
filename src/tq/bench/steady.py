"""The steady scenario: an open-loop offered rate with workers running.

Send ``k`` is due at ``start + k / rate`` (``measure.Schedule``). One pacer issues every due
send with ``submit_nowait`` (no coroutine per task, so the measuring client stays cheap) and
sleeps until the next is due; at most ``window`` sends wait for their acks, so a broker that
cannot keep up makes sends late (``send_lag``) and the achieved rate fall below the offered
one. Completions come from ONE subscription to the bench queue's events on a second
connection, matched to the submits by task id. Latencies run from the actual submit call.
``unfinished`` counts submits the broker had not completed (its counter) a while after the
last send (a backlog, not a loss: they stay queued); ``unobserved`` counts
completions whose event the bench never saw (its subscription buffer overflowed), which
leaves them out of the completion percentiles.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

from tq.bench.config import QUEUE, TASK_TYPE, BenchConfig
from tq.bench.latency import WARMUP, sequential
from tq.bench.measure import Meter, Schedule, latency_summary, per_second, rounded
from tq.bench.procs import Target, WorkerGroup, process_cpu, wait_for_workers
from tq.client import AsyncClient, Subscription, task_spec
from tq.core.ids import format_task_id

#: Seconds to wait, after the last send, for the completions still outstanding (at least;
#: a longer run waits as long as it sent for, so a backlog it built can drain).
SETTLE_S = 10.0
#: The pacer's shortest sleep: the event loop's timers have millisecond resolution, and a
#: shorter sleep would spin. Sends due within a tick go out together (lag <= ~1 ms).
TICK_S = 0.001


@dataclass
class Tracker:
    """Submits in flight by id, and the latencies measured so far."""

    meter: Meter
    sent_at: dict[str, float] = field(default_factory=dict)
    early: dict[str, float] = field(default_factory=dict)
    submit: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    unacked: int = 0
    failed: int = 0
    last_send: float = 0.0
    last_completion: float = 0.0
    acked_one: asyncio.Event = field(default_factory=asyncio.Event)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)
    sending: bool = True

    def acked(self, t0: float, future: asyncio.Future[str]) -> None:
        """Done callback of a submit issued at ``t0``."""
        self.unacked -= 1
        self.acked_one.set()
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
            return
        self.submit.append(time.perf_counter() - t0)
        self.meter.done += 1
        task_id = future.result()
        done_at = self.early.pop(task_id, None)
        if done_at is None:
            self.sent_at[task_id] = t0
        else:  # the completion event overtook the ack: possible, though not expected
            self.complete.append(done_at - t0)

    def completed(self, task_id: str, now: float) -> None:
        t0 = self.sent_at.pop(task_id, None)
        if t0 is None:
            self.early[task_id] = now
            return
        self.complete.append(now - t0)
        self.last_completion = now
        if not self.sending and not self.unacked and not self.sent_at:
            self.all_done.set()


async def consume(events: Subscription, tracker: Tracker) -> None:
    clock = time.perf_counter
    async for event in events:
        if event.state == "completed":  # pending and in_progress events are skipped cheaply
            tracker.completed(format_task_id(event.task_id), clock())


async def send(
    client: AsyncClient, schedule: Schedule, payload: bytes, window: int, tracker: Tracker
) -> None:
    """Every send of ``schedule``, each once due, with at most ``window`` unacked."""
    spec = task_spec(TASK_TYPE, payload, queue=QUEUE)
    clock = time.perf_counter
    total, sent = schedule.total, 0
    await client.connect()
    while sent < total:
        due = schedule.due_by(clock())
        while sent < due and tracker.unacked < window:
            t0 = clock()
            tracker.lag.append(t0 - schedule.due(sent))
            future = client.submit_nowait(spec)
            future.add_done_callback(functools.partial(tracker.acked, t0))
            tracker.unacked += 1
            tracker.last_send = t0
            sent += 1
        if sent >= total:
            break
        if tracker.unacked >= window:
            tracker.acked_one.clear()
            await tracker.acked_one.wait()
        else:
            await asyncio.sleep(max(TICK_S, schedule.due(sent) - clock()))


async def settle(client: AsyncClient, tracker: Tracker, base: int, limit: float) -> int:
    """Wait (up to ``limit`` seconds) until the broker counts every acked submit completed and
    their events are in; the broker's count of completions since ``base``."""
    tracker.sending = False
    done = 0
    try:
        async with asyncio.timeout(limit):
            while not tracker.all_done.is_set():
                done = (await client.stats()).totals.get("completed", 0) - base
                if not tracker.unacked and done >= len(tracker.submit):
                    # every completion happened; its event may still be on the way, or lost
                    # to an overflowing subscription buffer (counted as unobserved)
                    await asyncio.sleep(0.2)
                    break
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    return (await client.stats()).totals.get("completed", 0) - base


async def run(target: Target, cfg: BenchConfig, meter: Meter) -> dict[str, Any]:
    payload = cfg.payload
    pid = target.broker_pid
    tracker = Tracker(meter)
    async with (
        target.client() as client,
        target.client() as listener,
    ):
        with WorkerGroup(
            target.url,
            cfg.workers,
            cfg.concurrency,
            target.workdir / "steady-workers",
            target.api_key,
            tls=target.tls,
        ) as group:
            meter.reset(f"steady: starting {cfg.workers} workers", 1)
            await wait_for_workers(client, group)
            await sequential(client, WARMUP, payload, 20.0)
            base = (await client.stats()).totals.get("completed", 0)
            async with listener.subscribe(queues=[QUEUE]) as events:
                consumer = asyncio.create_task(consume(events, tracker))
                schedule = Schedule(cfg.rate, cfg.duration, time.perf_counter() + 0.05)
                meter.reset(
                    f"steady: {cfg.rate:,.0f} tasks/s for {cfg.duration:g} s", schedule.total
                )
                cpu0, client0 = process_cpu(pid), time.process_time()
                await send(client, schedule, payload, cfg.window, tracker)
                cpu1, client1 = process_cpu(pid), time.process_time()
                limit = max(SETTLE_S, cfg.duration)
                completed = await settle(client, tracker, base, limit)
                consumer.cancel()
                dropped = events.dropped
    sent = len(tracker.lag)
    span = tracker.last_send - schedule.start

    def busy(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or span <= 0 else rounded((b - a) / span * 100, 1)

    return {
        "offered_per_s": cfg.rate,
        "duration_s": cfg.duration,
        "window": cfg.window,
        "sent": sent,
        "achieved_per_s": per_second(sent, span if sent > 1 else None),
        "acked": len(tracker.submit),
        "failed": tracker.failed,
        "completed": completed,
        "completed_per_s": per_second(
            len(tracker.complete), tracker.last_completion - schedule.start
        ),
        "settle_limit_s": limit,
        "unfinished": max(0, sent - tracker.failed - completed),
        "observed": len(tracker.complete),
        "unobserved": max(0, completed - len(tracker.complete)),
        "events_dropped": dropped,
        **latency_summary(tracker.submit, "submit_"),
        **latency_summary(tracker.complete, "complete_"),
        **{k: v for k, v in latency_summary(tracker.lag, "send_lag_").items() if "count" not in k},
        "broker_cpu_percent": busy(cpu0, cpu1),
        "client_cpu_percent": busy(client0, client1),
    }
