"""Group commit over a real RocksDB store: one fsync covers many writers, none acks early."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tq.core.layout import Family
from tq.errors import StorageError
from tq.storage import MemoryBacking, MemoryStore, open_store
from tq.storage.commit import GroupCommit


class CountingStore(MemoryStore):
    """A memory store that records, for each fsync, how many writes it had seen."""

    def __init__(self) -> None:
        super().__init__()
        self.write_count = 0
        self.synced_upto: list[int] = []

    def write(self, mutations, *, sync: bool = False):  # type: ignore[no-untyped-def]
        super().write(mutations, sync=sync)
        self.write_count += 1

    def sync_wal(self) -> None:
        seen = self.write_count
        super().sync_wal()
        self.synced_upto.append(seen)


def test_every_writer_returns_only_after_an_fsync_that_covers_its_write() -> None:
    store = CountingStore()
    gc = GroupCommit(store)

    async def writer(i: int) -> None:
        await asyncio.sleep(0.0005 * (i % 7))
        gc.write([(Family.PENDING, i.to_bytes(4, "big"), b"v")])
        my_write = store.write_count
        await gc.durable()
        assert store.synced_upto, "returned before any fsync"
        assert store.synced_upto[-1] >= my_write, "returned before its write was fsync'd"

    async def main() -> None:
        async with asyncio.timeout(30):
            await asyncio.gather(*(writer(i) for i in range(300)))
        await gc.close()

    asyncio.run(main())
    assert gc.writes == 300
    assert gc.syncs < 300  # writers shared fsyncs


def test_group_commit_on_rocksdb_makes_every_write_durable(tmp_path: Path) -> None:
    async def main() -> None:
        with open_store(tmp_path) as store:
            gc = GroupCommit(store)

            async def writer(i: int) -> None:
                gc.write([(Family.PENDING, i.to_bytes(4, "big"), b"v")])
                await gc.durable()

            async with asyncio.timeout(30):
                await asyncio.gather(*(writer(i) for i in range(500)))
            await gc.close()
            assert gc.syncs < 500

    asyncio.run(main())
    with open_store(tmp_path) as store:
        assert sum(1 for _ in store.iterate(Family.PENDING)) == 500


def test_a_failed_fsync_fails_its_waiters_and_refuses_later_writes() -> None:
    class BrokenStore(MemoryStore):
        def sync_wal(self) -> None:
            raise OSError("disk on fire")

    gc = GroupCommit(BrokenStore())

    async def main() -> None:
        gc.write([(Family.PENDING, b"k", b"v")])
        with pytest.raises(StorageError, match="disk on fire"):
            await gc.durable()
        with pytest.raises(StorageError):
            gc.write([(Family.PENDING, b"k2", b"v")])

    asyncio.run(main())


def test_relaxed_mode_acknowledges_at_once_and_syncs_in_the_background() -> None:
    store = CountingStore()
    gc = GroupCommit(store, relaxed=True)

    async def main() -> None:
        syncer = asyncio.create_task(gc.run_relaxed_sync(0.01))
        gc.write([(Family.PENDING, b"k", b"v")])
        await gc.durable()
        assert store.synced_upto == []
        async with asyncio.timeout(5):
            while not store.synced_upto:
                await asyncio.sleep(0.005)
        syncer.cancel()
        await gc.close()

    asyncio.run(main())
    assert store.synced_upto[0] == 1


class FlakyStore(MemoryStore):
    """Writes and fsyncs fail while ``broken``; an fsync waits for ``gate`` when one is set."""

    def __init__(self, backing: MemoryBacking | None = None) -> None:
        super().__init__(backing)
        self.broken = False
        self.gate: threading.Event | None = None
        self.at_gate = threading.Event()

    def write(self, mutations, *, sync: bool = False):  # type: ignore[no-untyped-def]
        if self.broken:
            raise StorageError("no space left")
        super().write(mutations, sync=sync)

    def sync_wal(self) -> None:
        if self.gate is not None:
            self.at_gate.set()
            self.gate.wait(10)
        if self.broken:
            raise StorageError("no space left")
        super().sync_wal()


def test_a_failed_write_refuses_later_writes_until_rebound_to_another_store() -> None:
    first = FlakyStore()
    gc = GroupCommit(first)

    async def main() -> None:
        async with asyncio.timeout(10):
            gc.write([(Family.PENDING, b"a", b"1")])
            await gc.durable()
            first.broken = True
            with pytest.raises(StorageError, match="no space left"):
                gc.write([(Family.PENDING, b"b", b"2")])
            first.broken = False  # a store that failed stays failed (as RocksDB does) ...
            with pytest.raises(StorageError, match="failed earlier"):
                gc.write([(Family.PENDING, b"b", b"2")])
            first.close()
            second = MemoryStore(first.backing)  # ... until the data is reopened
            gc.rebind(second)
            gc.write([(Family.PENDING, b"c", b"3")])
            await gc.durable()
            assert second.get(Family.PENDING, b"c") == b"3"
            assert (gc.writes, gc.syncs, gc.mutations) == (2, 2, 2)  # counted across stores
            await gc.close()

    asyncio.run(main())


def test_idle_waits_for_the_running_fsync_and_rebind_refuses_to_race_it() -> None:
    store = FlakyStore()
    store.gate = gate = threading.Event()
    gc = GroupCommit(store)

    async def main() -> None:
        async with asyncio.timeout(10):
            gc.write([(Family.PENDING, b"a", b"1")])
            durable = asyncio.ensure_future(gc.durable())
            idle = asyncio.ensure_future(gc.idle())
            assert await asyncio.to_thread(store.at_gate.wait, 5)  # the fsync is running
            await asyncio.sleep(0)  # let idle() run up to its wait
            assert not idle.done() and not durable.done()
            with pytest.raises(StorageError, match="while an fsync is running"):
                gc.rebind(MemoryStore())
            gate.set()
            await asyncio.gather(durable, idle)
            await gc.idle()  # nothing running: returns at once
            await gc.close()

    asyncio.run(main())


def test_a_durability_question_asked_after_a_failure_is_answered_by_the_rebind() -> None:
    first = FlakyStore()
    gc = GroupCommit(first)
    heard: list[StorageError | None] = []

    async def main() -> None:
        async with asyncio.timeout(10):
            first.broken = True
            with pytest.raises(StorageError):
                gc.write([(Family.PENDING, b"a", b"1")])
            gc.when_durable(heard.append)  # e.g. the outcome of a finished task, to push
            assert heard == []  # not "failed": what was read may well be on disk
            first.close()
            second = FlakyStore(first.backing)
            gc.rebind(second)
            assert heard == [None]
            second.broken = True  # a second outage, ended by a stop this time
            with pytest.raises(StorageError):
                gc.write([(Family.PENDING, b"b", b"2")])
            gc.when_durable(heard.append)
            await gc.close()
            assert len(heard) == 2 and isinstance(heard[1], StorageError)

    asyncio.run(main())
