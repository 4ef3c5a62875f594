"""The leader's appender against a real 3-member etcd: batches arriving while an append is in
flight ride in the next entry, each batch is answered once its entry is committed and written
locally (in order), the store holds the applied mark with the data, and a deposed leader's
batches are refused (not applied) with every later one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.etcd_procs import EtcdCluster, run_bounded
from tests.cluster.test_etcd_log import leader
from tq.cluster.entry import decode_entry
from tq.cluster.leader import Replicator
from tq.cluster.replica import applied_mark
from tq.core import commands as c
from tq.core.layout import Family, Mutation
from tq.errors import NotLeaderError, StorageError
from tq.storage.memory import MemoryStore


def batch(n: int) -> tuple[list[c.Command], list[Mutation]]:
    commands: list[c.Command] = [c.PromoteDue(1000.0 + n)]
    return commands, [(Family.METADATA, f"test/{n}".encode(), str(n).encode())]


def test_batches_in_flight_coalesce_and_are_answered_in_order_once_logged(
    etcd: EtcdCluster,
) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        store = MemoryStore()
        failures: list[BaseException] = []
        rep = Replicator(log, election.epoch, store.write, failures.append)
        rep.start()
        answered: list[int] = []
        done = asyncio.Event()

        def answer(n: int):  # type: ignore[no-untyped-def]
            def cb(err: BaseException | None) -> None:
                assert err is None, err
                # Answered only once the data is in the store, in submit order.
                assert store.get(Family.METADATA, f"test/{n}".encode()) == str(n).encode()
                answered.append(n)
                if len(answered) == 200:
                    done.set()

            return cb

        for n in range(200):
            rep.submit(*batch(n), answer(n))
            if n % 20 == 0:
                await asyncio.sleep(0)  # some turns apart, as a broker's loop turns
        await asyncio.wait_for(done.wait(), 20)
        assert answered == list(range(200))
        assert failures == []
        entries = await log.read(1, limit=1000)
        assert len(entries) == rep.appends < 200  # coalesced: fewer entries than batches
        commands = [cmd for i, data in entries for cmd in decode_entry(i, data).commands]
        assert [cmd.now for cmd in commands] == [1000.0 + n for n in range(200)]
        mark = applied_mark(store)
        assert (mark.index, mark.epoch) == (entries[-1][0], election.epoch)
        await rep.stop()
        await election.resign()
        await client.close()

    run_bounded(main())


def test_a_deposed_leaders_batches_are_refused_and_it_is_told_once(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        store = MemoryStore()
        failures: list[BaseException] = []
        rep = Replicator(log, election.epoch, store.write, failures.append)
        rep.start()
        first: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        rep.submit(*batch(1), first.set_result)
        assert await asyncio.wait_for(first, 10) is None
        await election.resign()  # another node may now lead: this epoch is over
        other_client, other, _ = await leader(etcd, "b")
        results: list[BaseException | None] = []
        for n in range(2, 6):
            rep.submit(*batch(n), results.append)
        deadline = asyncio.get_running_loop().time() + 10
        while len(results) < 4 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # polling a condition with a deadline
        assert len(results) == 4
        assert all(isinstance(r, NotLeaderError) for r in results), results
        assert len(failures) == 1 and isinstance(failures[0], NotLeaderError)
        assert store.get(Family.METADATA, b"test/2") is None  # nothing of them written
        late: list[BaseException | None] = []
        rep.submit(*batch(9), late.append)  # refused at once, never sent
        assert isinstance(late[0], NotLeaderError)
        assert await log.last_index() == 1
        await rep.stop()
        await other.resign()
        await other_client.close()
        await client.close()

    run_bounded(main())


def test_one_batch_above_the_entry_limit_ends_the_leadership(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        failures: list[BaseException] = []
        rep = Replicator(log, election.epoch, MemoryStore().write, failures.append,
                         max_entry_bytes=4096)  # fmt: skip
        rep.start()
        big: list[c.Command] = [c.PromoteDue(float(i)) for i in range(2000)]
        got: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        rep.submit(big, [], got.set_result)
        err = await asyncio.wait_for(got, 10)
        assert isinstance(err, NotLeaderError)
        assert len(failures) == 1 and isinstance(failures[0], StorageError)
        assert "above the 4096 byte limit" in str(failures[0])
        assert await log.last_index() == 0
        await rep.stop()
        await election.resign()
        await client.close()

    run_bounded(main())


pytestmark = pytest.mark.timeout(120)
