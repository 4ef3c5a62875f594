"""Group commit: many commands' mutations, one write, one WAL fsync, off the event loop.

Theory of operation: ``write()`` applies a batch at once (visible, not yet durable; RocksDB
takes ~0.5 us per operation, cheap enough for the loop thread). ``durable()`` returns when
every write made before the call is on disk. At most one fsync runs at a time, in a private
thread (``flush_wal(sync=True)`` releases the GIL, so the loop keeps working meanwhile).
A caller arriving while an fsync is in flight cannot ride on it (its write may have come
after that fsync started), so it waits for the *next* one, which starts as soon as the
current one ends and covers everyone who arrived meanwhile. Under load, each fsync therefore
covers all the writes of the previous fsync's duration.

In relaxed mode ``durable()`` does not wait; ``run_relaxed_sync()`` fsyncs every interval, so
a power loss can lose the last interval (a process crash loses nothing: writes are in the OS).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from tq.core.layout import Mutation
from tq.errors import StorageError
from tq.storage.base import Store


class GroupCommit:
    def __init__(self, store: Store, *, relaxed: bool = False) -> None:
        self._store = store
        self.relaxed = relaxed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tq-fsync")
        self._inflight: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None
        self._dirty = False
        self._failed: BaseException | None = None
        #: Counters for metrics: batches written, fsyncs completed.
        self.writes = 0
        self.syncs = 0

    def write(self, mutations: Iterable[Mutation]) -> None:
        """Apply one batch atomically; visible at once, durable after ``durable()``."""
        if self._failed is not None:
            raise StorageError(f"storage failed earlier; refusing writes: {self._failed}")
        self._store.write(mutations)
        self._dirty = True
        self.writes += 1

    async def durable(self) -> None:
        """Return once every write made before this call is durable (fsync'd)."""
        if self._failed is not None:
            raise StorageError(f"storage failed earlier: {self._failed}")
        if self.relaxed:
            return
        if not self._dirty:
            # Every write so far came before the running fsync started (or a finished one).
            if self._inflight is not None:
                await asyncio.shield(self._inflight)
            return
        if self._inflight is None:
            fut = self._start_sync()
        else:
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            fut = self._next
        await asyncio.shield(fut)

    def _start_sync(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self._dirty = False
        done = loop.create_future()
        self._inflight = done
        job = loop.run_in_executor(self._executor, self._store.sync_wal)
        job.add_done_callback(lambda j: self._synced(j, done))
        return done

    def _synced(self, job: asyncio.Future[None], done: asyncio.Future[None]) -> None:
        self._inflight = None
        exc = job.exception()
        if exc is not None:
            self._failed = exc
            err = StorageError(f"WAL fsync failed: {exc}")
            for fut in (done, self._next):
                if fut is not None and not fut.done():
                    fut.set_exception(err)
                    fut.exception()  # retrieved: waiters re-raise it; no "never retrieved" noise
            self._next = None
            return
        self.syncs += 1
        done.set_result(None)
        waiting, self._next = self._next, None
        if waiting is not None:
            self._start_sync().add_done_callback(lambda f: _chain(f, waiting))

    async def run_relaxed_sync(self, interval: float) -> None:
        """Relaxed mode's background job: fsync every ``interval`` seconds while dirty."""
        while True:
            await asyncio.sleep(interval)
            if self._dirty and self._inflight is None:
                await asyncio.shield(self._start_sync())

    async def close(self) -> None:
        """Make everything durable, then stop the fsync thread."""
        if self._dirty and self._failed is None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._store.sync_wal)
            self._dirty = False
        self._executor.shutdown(wait=True)


def _chain(src: asyncio.Future[None], dst: asyncio.Future[None]) -> None:
    if dst.done():
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(None)
