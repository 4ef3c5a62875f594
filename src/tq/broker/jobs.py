"""Background jobs, each a loop owned by the broker's task group: leases, schedules, workers,
idle connections, retention and compaction (and the relaxed-mode fsync timer).

Time-driven state changes are commands like any other (``ExpireLeases``, ``PromoteDue``,
``ReapDeadWorkers``, ``PurgeTasks``), so a replica applying the log does exactly the same.
While storage refuses writes (``tq.broker.storage_guard``), or on a cluster node that does
not lead, each job skips its turn: the resume (or the new leader's first entry) expires leases
and refreshes worker clocks itself, and nothing else is late by more than one interval after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tq.broker.service import BrokerService
from tq.core import commands as c
from tq.core.layout import Family
from tq.core.replies import Affected
from tq.errors import StorageError
from tq.storage.retention import find_expired

log = logging.getLogger(__name__)


async def lease_monitor(service: BrokerService) -> None:
    """Return tasks whose lease ended to the queue (each counted as a failed attempt)."""
    interval = service.settings.broker.lease_check_interval_s
    while True:
        await asyncio.sleep(interval)
        if not service.may_write():
            continue
        reply, _ = service.run(c.ExpireLeases(time.time()), Affected)
        if reply.task_ids:
            log.warning("lease.expired count=%d", len(reply.task_ids))


async def scheduler(service: BrokerService) -> None:
    """Promote delayed and retrying tasks when due: sleeps until the earliest timer."""
    interval = service.settings.broker.scheduler_interval_s
    while True:
        due = service.machine.next_timer_at()
        now = time.time()
        wait = interval  # also while writes are refused: a past timer stays due, do not spin
        if due is not None and service.may_write():
            wait = min(interval, max(0.0, due - now))
        await asyncio.sleep(wait)
        due = service.machine.next_timer_at()
        if due is not None and due <= time.time() and service.may_write():
            service.run(c.PromoteDue(time.time()), Affected)


async def maintenance(service: BrokerService, close_idle: Callable[[float], None]) -> None:
    """Reap workers that missed their heartbeats; close idle connections (``close_idle`` is
    the TCP door's sweep, given the idle timeout)."""
    b = service.settings.broker
    while True:
        await asyncio.sleep(b.maintenance_interval_s)
        if service.may_write():
            reply, _ = service.run(c.ReapDeadWorkers(time.time(), service.dead_after), Affected)
            if reply.task_ids:
                log.warning("worker.dead requeued=%d", len(reply.task_ids))
        close_idle(b.idle_timeout_s)


async def retention(service: BrokerService) -> None:
    """Hourly: purge completed and cancelled tasks past the retention period, then compact."""
    p = service.settings.persistence
    while True:
        await asyncio.sleep(p.compaction_interval_s)
        if not service.may_write():
            continue
        try:
            await purge_once(service, time.time() - p.retention_s)
            await asyncio.to_thread(service.store.compact, None)
        except StorageError as e:  # an outage began meanwhile (the guard reports it): next turn
            log.warning("retention.failed error=%s", e)


async def purge_once(service: BrokerService, cutoff: float) -> int:
    """Scan in slices off the loop thread; each slice's deletions are one command."""
    purged = 0
    for family in (Family.COMPLETED,):  # dead letters stay until someone handles them
        cursor: bytes | None = None
        while True:
            found = await asyncio.to_thread(
                find_expired, service.store, cutoff, family=family, cursor=cursor
            )
            if found.task_ids:
                cmd = c.PurgeTasks(time.time(), found.task_ids, found.states)
                reply, durable = service.run(cmd, Affected)
                await durable
                purged += len(reply.task_ids)
            if found.cursor is None:
                break
            cursor = found.cursor
    if purged:
        log.info("retention.purged count=%d", purged)
    return purged


async def relaxed_sync(service: BrokerService) -> None:
    interval = service.settings.persistence.relaxed_sync_interval_ms / 1000
    await service.commit.run_relaxed_sync(interval)
