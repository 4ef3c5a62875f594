"""Storage outages (a full disk): the broker stays up, refuses writes with a retryable
STORAGE_ERROR, serves reads from what the disk kept, and resumes writes by itself.

Theory of operation: the service calls ``on_storage_failure`` once when a write or fsync
fails, with writes already refused (``service.failed``). The guard answers parked claims,
waits until every batch in flight is settled and no fsync runs, then rebuilds memory from the
store: it opens the data dir read-only beside the failed store (so reads never pause), runs
``recover`` and closes the failed store off the loop (RocksDB takes about a second to let go
of a store whose write failed). Commands applied after the last batch that reached the disk
are forgotten: memory never holds what the disk lost (and what it kept of batches whose fsync
failed is published then: ``BrokerService.adopt``). A probe (a file written and fsync'd in
the data dir, backoff 0.5 s -> 5 s) says when writing works again; then the store is reopened
read-write and recovered, and the start batch (repairs, ``BrokerStarted``, ``ExpireLeases``)
is made durable *before* any other write is accepted. ``BrokerStarted`` moves lease tokens to
a new epoch, so a token handed out in a lost batch (claims are answered before durability) is
never issued again, and no token of the new epoch goes out before that epoch is on disk.
Reopening and recovery run off the loop, the swap on it: reads never see a half-built machine.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time

from tq.broker.service import BrokerService
from tq.core import commands as c
from tq.core.effects import Effects
from tq.errors import StorageError
from tq.storage.base import Store
from tq.storage.recovery import Recovered, recover
from tq.storage.reopen import Opener, reason, release

log = logging.getLogger(__name__)

PROBE_FIRST_S = 0.5
PROBE_MAX_S = 5.0


class StorageOutageError(Exception):
    """Why storage refuses writes: ``service.failed`` during an outage (its text is shown to
    clients in every refusal and by ``/readyz``)."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"storage unavailable ({why}); retry later: writes resume by themselves once "
            "storage works again"
        )


class StorageGuard:
    """Rides out storage outages for one service (see the module docstring)."""

    def __init__(
        self,
        service: BrokerService,
        opener: Opener,
        *,
        probe_first_s: float = PROBE_FIRST_S,
        probe_max_s: float = PROBE_MAX_S,
    ) -> None:
        self.service = service
        self.opener = opener
        self.probe_first_s = probe_first_s
        self.probe_max_s = probe_max_s
        self._outage = asyncio.Event()  # set while writes are refused
        self._rebuilt = True  # memory matches the store currently open
        self._writable = True  # that store was opened read-write
        self._repairs = Effects()  # what recovery from that store found to repair
        self._since = 0.0  # when the outage began (monotonic)
        self._quiet = False  # a repeated failure to reopen was already logged
        service.on_storage_failure = self._on_failure

    async def start(self, repairs: Effects, read_only_because: str | None = None) -> None:
        """Right after recovery at start: make the start batch durable, or begin in an outage
        when the store could only be opened read-only (``read_only_because`` says why)."""
        self._repairs, self._writable = repairs, read_only_because is None
        if read_only_because is not None:
            self._refuse(read_only_because, rebuilt=True)
            return
        try:
            await self._write_start_batch(repairs)
        except StorageError as e:
            self._refuse(reason(e), rebuilt=False)

    async def run(self) -> None:
        """Rebuild, probe and resume after each outage; a task of the broker's group."""
        while True:
            await self._outage.wait()
            await self._ride_out()

    # ------------------------------------------------------------------ the outage

    def _on_failure(self, error: BaseException) -> None:
        self._refuse(reason(error), rebuilt=False)

    def _refuse(self, why: str, *, rebuilt: bool) -> None:
        s = self.service
        s.failed = StorageOutageError(why)
        s.storage_failures += 1
        self._rebuilt = rebuilt
        self._since = time.monotonic()
        self._quiet = False
        s.waiters.cancel_all()  # parked claims get their empty answer now, not at their deadline
        log.error(
            "storage.unavailable reason=%s: writes refused (STORAGE_ERROR, retryable), reads "
            "served; writes resume by themselves once storage works again",
            why,
        )
        self._outage.set()

    async def _ride_out(self) -> None:
        delay = self.probe_first_s
        while True:
            if not self._rebuilt:
                await self._settle()
                await self._rebuild()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.probe_max_s)
            try:
                await asyncio.to_thread(self.opener.probe)
            except StorageError as e:
                log.debug("storage.probe_failed error=%s", e)
                continue
            if await self._resume():
                return

    async def _settle(self) -> None:
        """Every batch answered and no fsync running: only then may the store be closed."""
        await self.service.drain()
        await self.service.commit.idle()

    async def _rebuild(self) -> None:
        """Memory from what the disk kept, on a store opened read-only beside the failed one."""
        old = self.service.store
        if await self._adopt(read_only=True):
            await self._release(old)
            return
        # Nothing opens beside it: close it first (reads fail meanwhile), then try again.
        await self._release(old)
        if not await self._adopt(read_only=False):
            await self._adopt(read_only=True)

    async def _adopt(self, *, read_only: bool) -> bool:
        """Open the store and recover memory from it (off the loop: reads go on being served
        from the current store meanwhile), then make both the service's; False (logged once
        per outage) when either fails, the service's store left as it was."""
        s = self.service
        t0 = time.perf_counter()
        try:
            store, rec = await asyncio.to_thread(_open_and_recover, self.opener, read_only)
        except StorageError as e:
            self._complain("reopen", e)
            return False
        s.adopt(store, rec.machine)  # publishes what the disk kept of failed batches
        self._repairs = rec.repairs
        self._writable = not read_only
        self._rebuilt = True
        log.info(
            "storage.reopened mode=%s tasks=%d seconds=%.3f",
            "read-only" if read_only else "read-write",
            rec.tasks,
            time.perf_counter() - t0,
        )
        return True

    async def _release(self, store: Store) -> None:
        failure = await asyncio.to_thread(release, store)
        if failure is not None:  # expected after a failed write: RocksDB repeats its error
            log.debug("storage.closed error=%s", failure)

    def _complain(self, step: str, error: StorageError) -> None:
        """Log a failure to reopen once per outage (the probe retries it every few seconds)."""
        level = logging.DEBUG if self._quiet else logging.WARNING
        self._quiet = True
        log.log(level, "storage.%s_failed error=%s: retrying", step, error)

    async def _resume(self) -> bool:
        s = self.service
        if not self._writable:
            old = s.store
            if not await self._adopt(read_only=False):
                return False  # still on the read-only store: reads served throughout
            await self._release(old)
        try:
            await self._write_start_batch(self._repairs)
        except StorageError as e:
            log.warning("storage.resume_failed error=%s", e)
            self._rebuilt = False  # memory holds a start batch the disk may not
            return False
        log.info("storage.resumed outage_s=%.1f", time.monotonic() - self._since)
        return True

    async def _write_start_batch(self, fx: Effects) -> None:
        """Recovery's repairs, a new lease epoch and the leases that ran out: one batch, made
        durable before writes are accepted (the service refuses them until then)."""
        s = self.service
        now = time.time()
        start: list[c.Command] = [c.BrokerStarted(now), c.ExpireLeases(now)]
        for cmd in start:
            s.machine.apply(cmd, fx)
        s.machine.end_batch(fx)
        totals = copy.copy(s.machine.meta.counters)
        s.commit.write(fx.mutations)
        s.captured(start)  # recovery's repairs are no commands: see tq.cluster.replica
        try:
            if s.commit.relaxed:  # nothing waits for an fsync in relaxed mode; this batch must
                await asyncio.to_thread(s.store.sync_wal)
            else:
                await s.commit.durable()
        except StorageError:
            s.batch_not_durable(fx.events)  # written: the disk may keep it, as any batch
            raise
        s.failed = None
        self._outage.clear()
        s.batch_durable(fx.events, totals)


def _open_and_recover(opener: Opener, read_only: bool) -> tuple[Store, Recovered]:
    """Off the loop: open the data dir and rebuild the machine from it (closed on failure)."""
    store = opener.open(read_only=read_only)
    try:
        return store, recover(store, time.time())
    except BaseException:
        release(store)
        raise
