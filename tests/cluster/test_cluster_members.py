"""Membership records and the leader's trim against a real 3-member etcd: records appear, follow
a node's updates (a role change at once, applied indexes at most every half second), vanish
with their lease; a foreign record is reported; the trim holds for every live and recently
seen configured node, lets go of one gone past the grace, and compacts etcd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.cluster.etcd_procs import EtcdCluster, run_bounded
from tq.cluster.election import Election
from tq.cluster.etcd import Etcd
from tq.cluster.log import ReplicatedLog
from tq.cluster.members import (
    MIN_WRITE_INTERVAL_S,
    MemberRecord,
    Membership,
    Role,
    members,
    nodes_prefix,
    read_members,
)
from tq.cluster.trim import LogTrimmer, TrimDecision, TrimPolicy
from tq.errors import LogTrimmedError, ValidationError


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> float:
    """Seconds until ``check()`` holds; fails naming ``what`` at the deadline."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def record_of(client: Etcd, node_id: str) -> MemberRecord | None:
    return next((r for r in await members(client, "t") if r.node_id == node_id), None)


def test_records_appear_follow_updates_and_go_with_their_node(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client = Etcd(etcd.endpoints, timeout_s=2.0)
        a = Membership(client, "t", "a", "127.0.0.1:7001", http_address="127.0.0.1:8001")
        b = Membership(client, "t", "b", "127.0.0.1:7002", ttl_s=2)
        await a.start()
        await b.start()
        got = await members(client, "t")
        assert [(r.node_id, r.address, r.http_address, r.role) for r in got] == [
            ("a", "127.0.0.1:7001", "127.0.0.1:8001", Role.FOLLOWER),
            ("b", "127.0.0.1:7002", None, Role.FOLLOWER),
        ]
        assert abs(got[0].updated_at - time.time()) < 5

        async def a_leads() -> bool:
            r = await record_of(client, "a")
            return r is not None and r.role is Role.LEADER

        async def a_at_1() -> bool:
            r = await record_of(client, "a")
            return r is not None and r.applied_index == 1

        a.update(applied_index=1, applied_epoch=3)
        await until("a's applied index is written", a_at_1)
        # Right after a write: an applied index would wait out the interval, a role does not.
        a.update(role=Role.LEADER)
        assert await until("a's role change is written", a_leads) < MIN_WRITE_INTERVAL_S * 0.7

        # Many cheap updates: the record follows, in a bounded number of writes.
        revision, _ = await client.range(nodes_prefix("t"), nodes_prefix("t") + b"\xff")
        started = time.monotonic()
        for i in range(2, 202):
            a.update(applied_index=i)
            await asyncio.sleep(0.005)

        async def a_at_201() -> bool:
            r = await record_of(client, "a")
            return r is not None and (r.applied_index, r.applied_epoch) == (201, 3)

        await until("a's last applied index is written", a_at_201)
        writes = (await client.range(nodes_prefix("t"), nodes_prefix("t") + b"\xff"))[0] - revision
        assert 1 <= writes <= (time.monotonic() - started) / MIN_WRITE_INTERVAL_S + 2

        # b stops as a crash would: its record lapses with its lease; a resigns politely.
        await b.stop(remove=False)

        async def b_gone() -> bool:
            return await record_of(client, "b") is None

        assert await until("b's record lapses", b_gone) < 5
        await a.stop()
        assert await members(client, "t") == []
        await client.close()

    run_bounded(main())


def test_a_record_whose_lease_was_lost_is_written_again(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client = Etcd(etcd.endpoints, timeout_s=2.0)
        a = Membership(client, "t", "a", "127.0.0.1:7001", ttl_s=2)
        await a.start()
        entry = await client.get(a.key)
        assert entry is not None
        await client.revoke_lease(entry.lease)  # as if it expired during a partition
        assert await record_of(client, "a") is None

        async def back() -> bool:
            return await record_of(client, "a") is not None

        await until("a's record is back on a new lease", back)
        again = await client.get(a.key)
        assert again is not None
        assert again.lease != entry.lease
        await a.stop()
        await client.close()

    run_bounded(main())


def test_a_record_written_by_something_else_is_reported_not_a_crash(etcd: EtcdCluster) -> None:
    async def main() -> None:
        client = Etcd(etcd.endpoints, timeout_s=2.0)
        a = Membership(client, "t", "a", "127.0.0.1:7001")
        await a.start()
        ops = client.ops
        prefix = nodes_prefix("t")
        await client.txn([], [ops.put(prefix + b"junk", b"{not json")], [])
        await client.txn([], [ops.put(prefix + b"x", b"{}")], [])
        borrowed = await client.get(a.key)
        assert borrowed is not None
        await client.txn([], [ops.put(prefix + b"other", borrowed.value)], [])
        roster = await read_members(client, "t")
        assert [r.node_id for r in roster.records] == ["a"]
        problems = {bad.key.rsplit("/", 1)[1]: bad.problem for bad in roster.invalid}
        assert set(problems) == {"junk", "other", "x"}
        assert "names node 'a'" in problems["other"]
        assert [r.node_id for r in await members(client, "t")] == ["a"]
        with pytest.raises(ValidationError, match="without '/'"):
            Membership(client, "t", "a/b", "x:1")
        await a.stop()
        await client.close()

    run_bounded(main())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_trim_holds_for_live_and_recently_seen_nodes_and_lets_go_after(
    etcd: EtcdCluster,
) -> None:
    async def main() -> None:
        client = Etcd(etcd.endpoints, timeout_s=2.0)
        election = Election(client, "t", "a", "a:1", ttl_s=5)
        epoch = await election.campaign(timeout_s=20)
        log = ReplicatedLog(client, "t")
        for i in range(1, 101):
            await log.append(b"%d" % i, epoch=epoch)
        a = Membership(client, "t", "a", "a:1")
        b = Membership(client, "t", "b", "b:1")
        a.update(applied_index=100, applied_epoch=epoch, role=Role.LEADER)
        b.update(applied_index=40, applied_epoch=epoch)
        await a.start()
        await b.start()
        clock = Clock()
        policy = TrimPolicy(keep_entries=10, max_lag=1000, absent_grace_s=60.0)
        trimmer = LogTrimmer(client, "t", log, ["a", "b", "c"], policy, clock=clock)

        # c is configured but was never seen: it holds the whole log, for the grace only.
        assert await trimmer.run_once() == TrimDecision(0, "c", ())
        assert await log.first_index() == 1
        clock.now += 61
        assert await trimmer.run_once() == TrimDecision(40, "b", ("c",))
        assert await log.first_index() == 40
        with pytest.raises(LogTrimmedError) as trimmed:
            await log.read(39)
        assert trimmed.value.first_index == 40

        b.update(applied_index=95)

        async def b_at_95() -> bool:
            r = await record_of(client, "b")
            return r is not None and r.applied_index == 95

        await until("b's record says 95", b_at_95)
        assert await trimmer.run_once() == TrimDecision(91, None, ("c",))  # keep_entries

        # b goes away (its record with it): where it was last seen holds the log a while.
        await b.stop()
        for i in range(101, 201):
            await log.append(b"%d" % i, epoch=epoch)
        a.update(applied_index=200)

        async def a_at_200() -> bool:
            r = await record_of(client, "a")
            return r is not None and r.applied_index == 200

        await until("a's record says 200", a_at_200)  # written at most every 0.5 s
        assert (await trimmer.run_once()).below == 95
        clock.now += 61
        assert await trimmer.run_once() == TrimDecision(191, None, ("b", "c"))
        assert await log.first_index() == 191
        assert [i for i, _ in await log.read(191)] == list(range(191, 201))

        # A round with nothing to trim still compacts etcd (and answers the same).
        assert (await trimmer.run_once()).below == 0
        await a.stop()
        await election.resign()
        await client.close()

    run_bounded(main())
