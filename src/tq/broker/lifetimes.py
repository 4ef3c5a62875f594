"""Background jobs of result lifetimes and expiry: each state change they make is a command.

``result_purger`` reads the due part of the result-lifetime index (``tq.storage.lifetimes``)
off the loop thread and applies ``PurgeResults``; ``expirer`` sleeps until the machine's
earliest ``expires_at`` and applies ``ExpireTasks``. Both tick at most every
``broker.scheduler_interval_s``, so a task ends within that of its time; like every job they
skip their turn while storage refuses writes or on a cluster node that does not lead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from tq.broker.service import BrokerService
from tq.core import commands as c
from tq.core.replies import Affected
from tq.errors import TqError
from tq.storage.lifetimes import due_results

log = logging.getLogger(__name__)

#: Entries one PurgeResults carries (its log entry stays small; the rest go next turn).
PURGE_SLICE: Final = 1000
#: Tasks one ExpireTasks ends at most: a burst expiring at once is spread over loop turns.
EXPIRE_SLICE: Final = 1000
#: How far before the last purged entry a scan starts again, rather than at the start of the
#: index, where the deletes of every purge lie until compaction (a scan would wade through
#: them): room for entries of a batch not yet written when the last scan ran.
RESCAN_MARGIN_S: Final = 5.0
#: How often a scan starts at the start of the index anyway, for an entry written earlier
#: than the margin (a TTL of 0 and a clock stepped back).
FULL_RESCAN_S: Final = 300.0


async def result_purger(service: BrokerService) -> None:
    """Delete finished tasks whose result_ttl or failure_ttl ran out."""
    interval = service.settings.broker.scheduler_interval_s
    since, full_at = 0.0, time.monotonic() + FULL_RESCAN_S
    while True:
        more = False
        if time.monotonic() >= full_at:
            since, full_at = 0.0, time.monotonic() + FULL_RESCAN_S
        if service.may_write():
            try:
                more, last = await purge_due(service, since)
            except TqError as e:  # an outage began meanwhile (the guard reports it): next turn
                log.warning("lifetimes.purge_failed error=%s", e)
            else:
                if last is not None:
                    since = max(since, last - RESCAN_MARGIN_S)
        if not more:
            await asyncio.sleep(interval)


async def purge_due(service: BrokerService, since: float = 0.0) -> tuple[bool, float | None]:
    """Apply one slice of what is due and wait until it is durable (a scan before that would
    read the same entries again). Returns whether more is due now, and the last purge time."""
    found = await asyncio.to_thread(
        due_results, service.store, time.time(), since=since, limit=PURGE_SLICE
    )
    if not found.entries and not found.orphans:
        return False, None
    cmd = c.PurgeResults(time.time(), found.entries, found.orphans)
    reply, durable = service.run(cmd, Affected)
    await service.confirmed(durable)
    if reply.task_ids:
        log.info("lifetimes.purged count=%d", len(reply.task_ids))
    return found.more, max(e.purge_at for e in (*found.entries, *found.orphans))


async def expirer(service: BrokerService) -> None:
    """End waiting tasks whose expires_at passed: sleeps until the earliest one."""
    interval = service.settings.broker.scheduler_interval_s
    while True:
        due = service.machine.next_expiry_at()
        wait = interval  # also while writes are refused: a past expiry stays due, do not spin
        if due is not None and service.may_write():
            wait = min(interval, max(0.0, due - time.time()))
        await asyncio.sleep(wait)
        expired = 0
        while (
            (due := service.machine.next_expiry_at()) is not None
            and due <= time.time()
            and service.may_write()
        ):
            reply, _ = service.run(c.ExpireTasks(time.time(), EXPIRE_SLICE), Affected)
            expired += len(reply.task_ids)
            await asyncio.sleep(0)  # let the loop turn (and write the batch) between slices
        if expired:
            log.info("lifetimes.expired count=%d", expired)
