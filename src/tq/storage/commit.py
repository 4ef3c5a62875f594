"""Group commit: many commands' mutations, one write, one WAL fsync, off the event loop.

Theory of operation: ``write()`` applies a batch at once (visible, not yet durable; RocksDB
takes ~0.5 us per operation, cheap enough for the loop thread). ``when_durable(callback)``
calls back on the loop once every write made before it is on disk; ``durable()`` is the
awaitable form. At most one fsync runs at a time, on a private thread (``flush_wal(sync=True)``
releases the GIL, so the loop keeps working meanwhile). A caller arriving while an fsync is
in flight cannot ride on it (its write may have come after that fsync started), so it waits
for the *next* one, which starts as soon as the current one ends and covers everyone who
arrived meanwhile. Under load, each fsync therefore covers all the writes of the previous
fsync's duration. Callbacks, not tasks: one thread hop and one loop callback per fsync is all
the machinery an acknowledgement pays.

In relaxed mode nothing waits; ``run_relaxed_sync()`` fsyncs every interval, so a power loss
can lose the last interval (a process crash loses nothing: writes are in the OS).

Metrics read the counters (``writes``, ``syncs``, ``mutations``) at scrape time; ``on_sync``,
when set, hears once per fsync how many mutations it made durable and how long it took.

After a failed write or fsync every later write is refused, until the broker has waited for
``idle()`` (no fsync left running) and ``rebind()``-ed this object to the data dir reopened:
the counters carry on over the new store (Prometheus counters never go down).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Collection

from tq.core.layout import Mutation
from tq.errors import StorageError
from tq.storage.base import Store

#: Called on the loop thread: None once durable, or the StorageError that prevented it.
Callback = Callable[[StorageError | None], None]


class GroupCommit:
    def __init__(self, store: Store, *, relaxed: bool = False) -> None:
        self._store = store
        self.relaxed = relaxed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._syncing = False
        self._covered: list[Callback] = []  # waiting for the fsync in flight
        self._next: list[Callback] = []  # waiting for an fsync that has not started
        self._dirty = False
        self._failed: BaseException | None = None
        #: Counters for metrics: batches written, fsyncs completed, mutations written.
        self.writes = 0
        self.syncs = 0
        self.mutations = 0
        self._synced_upto = 0  # ``mutations`` when the latest fsync started
        self._in_flight = 0  # mutations the running fsync covers
        self._idle: list[asyncio.Future[None]] = []  # waiting for the running fsync to end
        self._held: list[Callback] = []  # asked after a failure: answered by rebind or close
        #: Called on the loop after each fsync: (mutations it made durable, its seconds);
        #: it must not raise (it runs before the waiters are told).
        self.on_sync: Callable[[int, float], None] | None = None

    def write(self, mutations: Collection[Mutation]) -> None:
        """Apply one batch atomically; visible at once, durable after ``durable()``."""
        if self._failed is not None:
            raise StorageError(f"storage failed earlier; refusing writes: {self._failed}")
        try:
            self._store.write(mutations)
        except StorageError as e:
            self._failed = e
            raise
        self._dirty = True
        self.writes += 1
        self.mutations += len(mutations)

    def when_durable(self, callback: Callback) -> None:
        """Call ``callback`` on the loop once every write made so far is durable.

        After a failure, the answer waits for ``rebind``: a caller that read something (a
        finished task, to push its outcome) learns it is durable once the store is reopened,
        which holds exactly what the disk kept; ``close`` fails the callbacks still waiting.
        """
        if self._failed is not None:
            self._held.append(callback)
        elif self.relaxed:
            callback(None)
        elif self._dirty:
            self._next.append(callback)
            if not self._syncing:
                self._start_sync()
        elif self._syncing:
            # Every write so far came before the running fsync started.
            self._covered.append(callback)
        else:
            callback(None)

    async def durable(self) -> None:
        """Return once every write made before this call is durable (fsync'd)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle(err: StorageError | None) -> None:
            if fut.done():
                return
            if err is None:
                fut.set_result(None)
            else:
                fut.set_exception(err)

        self.when_durable(settle)
        await fut

    def _start_sync(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._fsyncs, name="tq-fsync", daemon=True)
            self._thread.start()
        self._syncing = True
        self._dirty = False
        self._covered, self._next = self._next, []
        self._in_flight, self._synced_upto = self.mutations - self._synced_upto, self.mutations
        self._requests.put(True)

    def _fsyncs(self) -> None:
        """The fsync thread: one ``sync_wal`` per request, the outcome posted to the loop."""
        loop = self._loop
        assert loop is not None
        while self._requests.get():
            error: BaseException | None = None
            t0 = time.perf_counter()
            try:
                self._store.sync_wal()
            except BaseException as e:  # noqa: BLE001 - handed to the loop, which fails loudly
                error = e
            seconds = time.perf_counter() - t0
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(self._synced, error, seconds)

    def _synced(self, error: BaseException | None, seconds: float) -> None:
        self._syncing = False
        done, self._covered = self._covered, []
        if error is not None:
            self._failed = error
            err = StorageError(f"WAL fsync failed: {error}")
            waiting, self._next = self._next, []
            for cb in (*done, *waiting):
                cb(err)
            self._now_idle()
            return
        self.syncs += 1
        if self.on_sync is not None:
            self.on_sync(self._in_flight, seconds)
        for cb in done:
            cb(None)
        if self._next:
            self._start_sync()
        else:
            self._now_idle()

    def _now_idle(self) -> None:
        if not self._syncing:
            waiting, self._idle = self._idle, []
            for fut in waiting:
                if not fut.done():
                    fut.set_result(None)

    async def idle(self) -> None:
        """Return once no fsync is running, so the store can be swapped and closed (a close
        must not race a call)."""
        while self._syncing:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(fut)
            await fut

    def rebind(self, store: Store) -> None:
        """Carry on over ``store`` (the data dir reopened after a failure): writes are accepted
        again and the counters keep counting. Only while ``idle()``: no fsync may be running."""
        if self._syncing:
            raise StorageError("cannot rebind group commit while an fsync is running")
        self._store = store
        self._failed = None
        self._dirty = False
        self._covered, self._next = [], []
        self._synced_upto = self.mutations
        held, self._held = self._held, []
        for callback in held:
            self.when_durable(callback)

    async def run_relaxed_sync(self, interval: float) -> None:
        """Relaxed mode's background job: fsync every ``interval`` seconds while dirty."""
        while True:
            await asyncio.sleep(interval)
            if self._dirty and not self._syncing and self._failed is None:
                covered, self._synced_upto = self.mutations - self._synced_upto, self.mutations
                # Cleared before the fsync: a write landing while it runs stays dirty and is
                # covered by the next interval's fsync.
                self._dirty = False
                t0 = time.perf_counter()
                self._syncing = True  # for idle(): the store must not close under this fsync
                try:
                    await asyncio.to_thread(self._store.sync_wal)
                except StorageError as e:
                    # Nothing waits on a relaxed fsync: the next write is refused instead, and
                    # that is how the broker learns of the failure.
                    self._failed = e
                    continue
                finally:
                    self._syncing = False
                    self._now_idle()
                self.syncs += 1
                if self.on_sync is not None:
                    self.on_sync(covered, time.perf_counter() - t0)

    async def close(self) -> None:
        """Make everything durable, then stop the fsync thread."""
        held, self._held = self._held, []
        for callback in held:
            callback(StorageError(f"storage failed and the broker is stopping: {self._failed}"))
        if self._failed is None:
            if self.relaxed and self._dirty:
                await asyncio.to_thread(self._store.sync_wal)
                self._dirty = False
            elif self._dirty or self._syncing:
                with contextlib.suppress(StorageError):
                    await self.durable()
        if self._thread is not None:
            self._requests.put(False)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
