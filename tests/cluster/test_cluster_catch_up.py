"""A node brought back after the log was trimmed past it catches up through a checkpoint, with
every piece real: a 3-member etcd holding the log and the membership records, the leader's
trim, a node's RocksDB served over its HTTP door, the fetch, the swap, then following the log
again; it ends identical to the node that never stopped. A checkpoint whose last entry the log
does not hold (a deposed leader's uncommitted batch) is refused."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.etcd_procs import EtcdCluster, run_bounded
from tests.replication import Led, contents, lead
from tests.unit.test_cluster_replica import BUSY
from tq.api.http import HttpServer
from tq.broker.service import BrokerService
from tq.cluster.checkpoint import Snapshot, take_checkpoint_async
from tq.cluster.election import Election
from tq.cluster.entry import encode_entry
from tq.cluster.etcd import Etcd
from tq.cluster.fetch import check_committed, checkpoint_url, fetch_committed
from tq.cluster.install import CheckpointError, swap_in
from tq.cluster.log import ReplicatedLog
from tq.cluster.members import Membership, Role
from tq.cluster.replica import Replica
from tq.cluster.trim import LogTrimmer, TrimPolicy
from tq.config import load
from tq.core.layout import APPLIED_KEY, AppliedMark, Family, encode
from tq.errors import LogTrimmedError
from tq.storage.recovery import recover
from tq.storage.rocksdb import RocksStore


@pytest.fixture(scope="module")
def led(tmp_path_factory: pytest.TempPathFactory) -> Led:
    return lead(tmp_path_factory.mktemp("leader") / "db", BUSY, restart_at=17)


async def apply_all(log: ReplicatedLog, replica: Replica, upto: int) -> None:
    """Follow ``log`` into ``replica`` until it applied entry ``upto``."""
    if replica.applied_index >= upto:
        return
    async with contextlib.aclosing(log.follow(replica.applied_index + 1, idle_s=0.5)) as entries:
        async for index, data in entries:
            replica.apply_entry(index, data)
            if index == upto:
                return


@contextlib.asynccontextmanager
async def serving(store: RocksStore, work: Path) -> AsyncIterator[str]:
    """``store`` behind an HTTP door that serves its checkpoints: the endpoint's URL."""
    settings = load(env={}, overrides={"api.rest_port": 0, "api.grpc_enabled": False})
    service = BrokerService(settings, store, recover(store, time.time()).machine)

    async def source() -> Snapshot:
        return await take_checkpoint_async(store, work)

    door = HttpServer(service, settings, checkpoint=source)
    port = await door.start()
    try:
        yield checkpoint_url(f"127.0.0.1:{port}")
    finally:
        await door.stop()
        await service.close()


def test_a_node_behind_the_trimmed_log_installs_a_checkpoint_and_follows_on(
    etcd: EtcdCluster, led: Led, tmp_path: Path
) -> None:
    later = 2  # entries appended after the node behind installed its checkpoint
    assert len(led.entries) >= 7  # so that the trim takes entries the node behind needs
    first_part, last_part = led.entries[:-later], led.entries[-later:]

    async def main() -> None:
        client = Etcd(etcd.endpoints, timeout_s=2.0)
        election = Election(client, "t", "a", "127.0.0.1:1", ttl_s=5)
        epoch = await election.campaign(timeout_s=20)
        log = ReplicatedLog(client, "t")
        for data in first_part:
            await log.append(data, epoch=epoch)

        # Node a applies everything; node b stops after 2 entries, and its record lapses.
        store_a = RocksStore(tmp_path / "a")
        replica_a = Replica.open(store_a)
        await apply_all(log, replica_a, len(first_part))
        with RocksStore(tmp_path / "b") as store_b:
            replica_b = Replica.open(store_b)
            await apply_all(log, replica_b, 2)
        member_a = Membership(client, "t", "a", "127.0.0.1:1")
        member_a.update(applied_index=replica_a.applied_index, role=Role.LEADER)
        await member_a.start()
        policy = TrimPolicy(keep_entries=2, max_lag=10_000, absent_grace_s=0.0)
        decision = await LogTrimmer(client, "t", log, ["a", "b"], policy).run_once()
        assert decision.let_go == ("b",)
        first = await log.first_index()
        assert first == len(first_part) - 1

        # b comes back: the log no longer holds what it needs next; a's door serves it.
        with pytest.raises(LogTrimmedError) as trimmed:
            await log.read(3)
        assert trimmed.value.first_index == first
        async with serving(store_a, tmp_path / "a-checkpoints") as url:
            manifest = await fetch_committed(
                log, url, tmp_path / "b", have=AppliedMark(2, replica_b.applied_epoch)
            )
        assert manifest.applied_index == len(first_part)
        swap_in(tmp_path / "b")

        for data in last_part:
            await log.append(data, epoch=epoch)
        await apply_all(log, replica_a, len(led.entries))
        with RocksStore(tmp_path / "b") as store_b:
            replica_b = Replica.open(store_b)
            assert replica_b.applied_index == len(first_part)
            await apply_all(log, replica_b, len(led.entries))
            assert contents(store_b) == contents(store_a) == led.contents
            assert replica_b.machine.snapshot() == replica_a.machine.snapshot()
            assert (replica_b.applied_index, replica_b.applied_epoch) == (
                replica_a.applied_index,
                replica_a.applied_epoch,
            )
        store_a.close()
        await member_a.stop()
        await election.resign()
        await client.close()

    run_bounded(main(), 120)


def test_a_checkpoint_whose_last_entry_the_log_does_not_hold_is_refused(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    async def main() -> None:
        client = Etcd(etcd.endpoints, timeout_s=2.0)
        election = Election(client, "t", "a", "a:1", ttl_s=5)
        epoch = await election.campaign(timeout_s=20)
        log = ReplicatedLog(client, "t")
        for i in range(1, 6):
            await log.append(encode_entry(i, 9, []), epoch=epoch)
        await check_committed(log, AppliedMark(5, 9))
        await check_committed(log, AppliedMark(0, 0))
        with pytest.raises(CheckpointError, match="never committed"):
            await check_committed(log, AppliedMark(6, 9))
        with pytest.raises(CheckpointError, match="epoch 8, the log holds it of epoch 9"):
            await check_committed(log, AppliedMark(5, 8))
        await log.trim(4)
        await check_committed(log, AppliedMark(2, 3))  # trimmed: committed long ago

        # Served by a node whose store holds an entry the log never took: nothing is left.
        with RocksStore(tmp_path / "deposed") as store:
            store.write([(Family.METADATA, APPLIED_KEY, encode(AppliedMark(6, 9)))])
            async with serving(store, tmp_path / "work") as url:
                with pytest.raises(CheckpointError, match="never committed"):
                    await fetch_committed(log, url, tmp_path / "node" / "db")
        assert list((tmp_path / "node").iterdir()) == []
        await election.resign()
        await client.close()

    run_bounded(main())
