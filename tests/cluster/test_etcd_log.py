"""The replicated log against a real 3-member etcd: contiguous fenced appends, a follower that
sees every entry in order (across a member's death), recovery from what etcd holds, trim."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cluster.etcd_procs import EtcdCluster, run_bounded
from tq.cluster.election import Election
from tq.cluster.etcd import Etcd
from tq.cluster.log import ReplicatedLog
from tq.errors import LogTrimmedError, NotLeaderError, UnavailableError, ValidationError


async def leader(etcd: EtcdCluster, node: str = "a") -> tuple[Etcd, Election, ReplicatedLog]:
    client = Etcd(etcd.endpoints, timeout_s=2.0)
    election = Election(client, "t", node, f"{node}:7420", ttl_s=2)
    await election.campaign(timeout_s=20)
    return client, election, ReplicatedLog(client, "t")


async def collect(log: ReplicatedLog, from_index: int, count: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    async for item in log.follow(from_index, idle_s=0.5):
        got.append(item)
        if len(got) == count:
            break
    return got


def test_appends_are_contiguous_and_a_follower_sees_each_in_order(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        follower = ReplicatedLog(Etcd(list(reversed(etcd.endpoints))), "t")
        seen = asyncio.create_task(collect(follower, 1, 60))
        entries = [os.urandom(16) + bytes([i]) for i in range(60)]
        # Concurrent callers still append one at a time, each at the next index.
        indexes = await asyncio.gather(*(log.append(e, epoch=election.epoch) for e in entries))
        assert sorted(indexes) == list(range(1, 61))
        by_index = dict(zip(indexes, entries, strict=True))
        got = await asyncio.wait_for(seen, 20)
        assert got == sorted(by_index.items())
        assert await log.read(10, limit=3) == [(i, by_index[i]) for i in (10, 11, 12)]
        assert await log.last_index() == 60
        await election.resign()
        await client.close()
        await follower.etcd.close()

    run_bounded(main())


def test_a_deposed_leaders_append_is_refused(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        old = election.epoch
        assert await log.append(b"one", epoch=old) == 1
        await election.resign()
        second_client, second, _ = await leader(etcd, "b")
        assert second.epoch is not None
        assert second.epoch > old
        with pytest.raises(NotLeaderError):
            await log.append(b"stale", epoch=old)
        assert await log.append(b"two", epoch=second.epoch) == 2
        assert await log.read(1) == [(1, b"one"), (2, b"two")]
        with pytest.raises(ValidationError):
            await log.append(b"x" * (log.max_entry_bytes + 1), epoch=second.epoch)
        await second.resign()
        await second_client.close()
        await client.close()

    run_bounded(main())


def test_a_new_writer_continues_after_what_etcd_holds(etcd: EtcdCluster) -> None:
    """The next index comes from etcd, not from the writer that appended before."""

    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        for i in range(5):
            await log.append(b"%d" % i, epoch=election.epoch)
        again = ReplicatedLog(client, "t")
        assert await again.append(b"next", epoch=election.epoch) == 6
        # The first writer's idea of its next index is stale now: the txn sees the key taken.
        with pytest.raises(Exception, match="already holds another entry"):
            await log.append(b"clash", epoch=election.epoch)
        assert await log.append(b"after", epoch=election.epoch) == 7
        await election.resign()
        await client.close()

    run_bounded(main())


def test_trim_keeps_the_tail_and_a_reader_below_it_is_told(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        for i in range(1, 21):
            await log.append(b"e%d" % i, epoch=election.epoch)
        assert await log.trim(15) == 15
        assert await log.trim(5) == 15  # already trimmed further: says where the log starts
        assert await log.first_index() == 15
        assert [i for i, _ in await log.read(15)] == list(range(15, 21))
        with pytest.raises(LogTrimmedError) as trimmed:
            await log.read(3)
        assert trimmed.value.first_index == 15
        # Trimming past the end keeps the last entry, so the next index is still known.
        assert await log.trim(1000) == 20
        assert await log.read(20) == [(20, b"e20")]
        assert await log.append(b"e21", epoch=election.epoch) == 21
        assert await collect(log, 20, 2) == [(20, b"e20"), (21, b"e21")]
        await election.resign()
        await client.close()

    run_bounded(main())


def test_no_endpoint_answering_names_every_endpoint_tried(etcd: EtcdCluster) -> None:
    async def main() -> None:
        for i in range(etcd.size):
            etcd.kill(i)
        client = Etcd(etcd.endpoints, timeout_s=0.5)
        with pytest.raises(UnavailableError) as failed:
            await ReplicatedLog(client, "t").last_index()
        for endpoint in etcd.endpoints:
            assert endpoint in failed.value.message
        await client.close()

    run_bounded(main())


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=0, max_value=4096), min_size=1, max_size=12))
def test_any_entries_read_back_byte_for_byte(etcd: EtcdCluster, sizes: list[int]) -> None:
    async def main() -> None:
        client = Etcd(etcd.endpoints)
        election = Election(client, "p", "a", "a:1", ttl_s=2)
        epoch = await election.campaign(timeout_s=20)
        log = ReplicatedLog(client, "p")
        start = await log.last_index() + 1
        entries = [os.urandom(n) for n in sizes]
        for entry in entries:
            await log.append(entry, epoch=epoch)
        assert await log.read(start, limit=len(entries)) == list(
            zip(range(start, start + len(entries)), entries, strict=True)
        )
        await election.resign()
        await client.close()

    run_bounded(main())


def test_a_leader_notices_at_once_when_its_key_is_taken_away(etcd: EtcdCluster) -> None:
    """Not only a failed keepalive: the leader key deleted (an operator, a bug) ends the
    leadership too, well before the lease would expire."""

    async def main() -> None:
        lost: list[str] = []
        client = Etcd(etcd.endpoints)
        election = Election(client, "k", "a", "a:1", ttl_s=30, on_lost=lost.append)
        epoch = await election.campaign(timeout_s=20)
        seen = await election.observe()
        assert seen is not None
        assert (seen.node_id, seen.address, seen.epoch) == ("a", "a:1", epoch)
        await client.delete_range(election.key, election.key + b"\0")
        await asyncio.wait_for(election.lost.wait(), 5)
        assert not election.is_leader
        assert lost == ["leader key gone or taken by another node"]
        assert await election.observe() is None
        with pytest.raises(NotLeaderError):
            await ReplicatedLog(client, "k").append(b"late", epoch=epoch)
        await election.resign()
        await client.close()

    run_bounded(main())


def test_a_follower_resumes_in_order_when_its_etcd_member_dies(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client, election, log = await leader(etcd)
        assert election.epoch is not None
        # The follower talks to a member that is not the Raft leader, then loses it.
        victim = next(i for i in range(etcd.size) if i != etcd.raft_leader())
        others = [e for i, e in enumerate(etcd.endpoints) if i != victim]
        follower = ReplicatedLog(Etcd([etcd.endpoints[victim], *others], timeout_s=1.0), "t")
        seen = asyncio.create_task(collect(follower, 1, 200))
        for i in range(200):
            if i == 100:
                etcd.kill(victim)
            await log.append(b"%d" % i, epoch=election.epoch)
        got = await asyncio.wait_for(seen, 30)
        assert got == [(i + 1, b"%d" % i) for i in range(200)]
        assert follower.etcd.endpoint != etcd.endpoints[victim]
        await election.resign()
        await client.close()
        await follower.etcd.close()

    run_bounded(main())
