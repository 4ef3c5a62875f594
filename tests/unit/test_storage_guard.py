"""Storage outages in process: the service engine over a store that fails on demand (as
RocksDB does on a full disk), its guard and its background jobs, in one event loop.

What holds: the batch in flight is answered STORAGE_ERROR and later writes are refused before
they touch the state machine; reads keep working; memory is rebuilt from what the disk kept;
a lease token handed out in a lost batch is refused after the resume and never issued again;
nothing is written before the new lease epoch is durable; jobs skip their turns and survive;
parked claims are answered; the broker resumes by itself; the lifetime totals shown never go
down. (Events around failed batches: ``test_event_delivery``, on this rig.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tq.api.metrics import build_registry
from tq.broker.access import Principal
from tq.broker.instruments import Instruments
from tq.broker.jobs import lease_monitor, maintenance, retention, scheduler
from tq.broker.requests import ListQuery
from tq.broker.service import BrokerService
from tq.broker.storage_guard import StorageGuard
from tq.broker.tcp import Connections
from tq.client import task_spec
from tq.config import load
from tq.core.ids import TaskId, WorkerId
from tq.core.layout import MACHINE_KEY, Family, Mutation, decode_meta
from tq.core.model import TaskState
from tq.core.replies import ClaimedTask
from tq.errors import ErrorCode, StorageError
from tq.protocol.records import TaskOutcome
from tq.storage import MemoryBacking, MemoryStore, Store
from tq.storage.recovery import recover
from tq.storage.reopen import open_at_start

ANYONE = Principal.ANYONE

NO_SPACE = "IO error: No space left on device"
WORKER = WorkerId("w1")
#: Short intervals so every job has many turns to skip during an outage of a second.
FAST = {
    "broker.lease_duration_s": 0.3,
    "broker.lease_check_interval_s": 0.05,
    "broker.heartbeat_interval_s": 0.1,
    "broker.scheduler_interval_s": 0.02,
    "broker.maintenance_interval_s": 0.05,
    "persistence.compaction_interval_s": 0.05,
}


@dataclass
class Disk:
    """What every store of one test shares: the data, and the faults to inject."""

    backing: MemoryBacking = field(default_factory=MemoryBacking)
    full: bool = False  # writes, fsyncs, read-write opens and the probe fail
    fail_syncs: bool = False  # fsyncs fail (writes still land, as in the OS page cache)
    #: A failed fsync also loses the writes it should have made durable (the OS dropped them).
    lose_unsynced: bool = False
    fail_next_writes: int = 0  # this many writes fail although the probe passes
    sync_gate: threading.Event | None = None  # when set, each fsync waits for it
    syncs_held: int = 0  # fsyncs that reached the gate
    open_gate: threading.Event | None = None  # when set, each open (for a rebuild) waits for it
    failed_writes: int = 0


class FaultyStore(MemoryStore):
    """Fails like RocksDB on a full disk: once a write failed, every later write and fsync of
    this store fails too (RocksDB keeps its background error), until it is reopened."""

    def __init__(self, disk: Disk, read_only: bool) -> None:
        super().__init__(disk.backing, read_only=read_only)
        self.disk = disk
        self.broken = False

    def write(self, mutations: Iterable[Mutation], *, sync: bool = False) -> None:
        d = self.disk
        if not self.read_only and (self.broken or d.full or d.fail_next_writes):
            d.fail_next_writes = max(0, d.fail_next_writes - 1)
            d.failed_writes += 1
            self.broken = True
            raise StorageError(f"write batch failed: {NO_SPACE}")
        super().write(mutations, sync=sync)

    def sync_wal(self) -> None:
        d = self.disk
        if d.sync_gate is not None:
            d.syncs_held += 1
            d.sync_gate.wait(10)
        if self.broken or d.full or d.fail_syncs:
            if d.lose_unsynced:
                b = self.backing
                with b.lock:
                    for family, key, previous in reversed(b.unsynced):
                        b.apply(family, key, previous)
                    b.unsynced.clear()
            raise StorageError(f"sync WAL failed: {NO_SPACE}")
        super().sync_wal()


class FakeOpener:
    """Opens the disk's stores; read-write opens and the probe fail while it is full."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk

    def open(self, *, read_only: bool) -> Store:
        if self.disk.open_gate is not None:
            self.disk.open_gate.wait(10)
        if self.disk.full and not read_only:
            raise StorageError(f"cannot open store: {NO_SPACE}")
        return FaultyStore(self.disk, read_only)

    def probe(self) -> None:
        if self.disk.full:
            raise StorageError(f"write probe failed: {NO_SPACE}")


@dataclass
class Rig:
    service: BrokerService
    guard: StorageGuard
    jobs: list[asyncio.Task[None]]

    @property
    def read_only(self) -> bool:
        """Memory was rebuilt on a store opened read-only (during an outage)."""
        store = self.service.store
        return isinstance(store, MemoryStore) and store.read_only


@contextlib.asynccontextmanager
async def broker(
    disk: Disk, *, jobs: bool = False, settings: dict[str, object] | None = None
) -> AsyncIterator[Rig]:
    """The service, its guard and (with ``jobs``) its background jobs, as the server wires
    them; everything stopped and closed on exit."""
    opener = FakeOpener(disk)
    opened = open_at_start(opener)
    rec = recover(opened.store, time.time())
    service = BrokerService(
        load(env={}, overrides={**FAST, **(settings or {})}), opened.store, rec.machine
    )
    guard = StorageGuard(service, opener, probe_first_s=0.01, probe_max_s=0.05)
    await guard.start(rec.repairs, opened.read_only_because)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(guard.run())]
            if jobs:
                tasks += [
                    tg.create_task(lease_monitor(service)),
                    tg.create_task(scheduler(service)),
                    tg.create_task(maintenance(service, Connections(service).close_idle)),
                    tg.create_task(retention(service)),
                ]
            try:
                async with asyncio.timeout(30):
                    yield Rig(service, guard, tasks)
            finally:
                for task in tasks:
                    task.cancel()
    finally:
        await service.drain()
        await service.commit.close()
        service.store.close()


async def until(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)  # polling a condition with a deadline


async def submit(service: BrokerService, n: int = 1, **options: object) -> list[TaskId]:
    reply, durable = service.submit(ANYONE, [task_spec("t", **options) for _ in range(n)])  # type: ignore[arg-type]
    await durable
    return list(reply.ids)


async def fail_a_write(service: BrokerService, disk: Disk) -> TaskId:
    """Fill the disk and submit: the batch is applied, its write fails; the lost task's id."""
    disk.full = True
    reply, durable = service.submit(ANYONE, [task_spec("t")])
    with pytest.raises(StorageError, match="retry later"):
        await durable
    return reply.ids[0]


def claim(service: BrokerService, queue: str = "default", n: int = 1) -> list[ClaimedTask]:
    got: list[ClaimedTask] = []
    service.claim(ANYONE, WORKER, [queue], n, 0, got.extend)
    return got


def complete(service: BrokerService, task: ClaimedTask) -> tuple[list[int], asyncio.Future[None]]:
    return service.report(
        ANYONE, [TaskOutcome(task_id=task.id, lease_token=task.lease_token, ok=True)]
    )


def durable_epoch(service: BrokerService) -> int:
    raw = service.store.get(Family.METADATA, MACHINE_KEY)
    assert raw is not None
    return decode_meta(raw).epoch


def scrape(service: BrokerService) -> dict[str, float]:
    text = generate_latest(build_registry(service, Instruments())).decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("tq_storage")
    }


@pytest.mark.parametrize("sync_mode", ["fsync", "relaxed"])
def test_a_failed_write_refuses_writes_serves_reads_and_resumes_alone(
    sync_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, settings={"persistence.sync_mode": sync_mode}) as rig:
            s = rig.service
            (kept,) = await submit(s)
            lost = await fail_a_write(s, disk)
            assert not s.ready()
            assert scrape(s) == {"tq_storage_failures_total": 1.0, "tq_storage_writes_accepted": 0}
            for _ in range(100):  # refused before the state machine sees them, not logged
                with pytest.raises(StorageError, match=r"writes refused: .*disk full") as e:
                    s.submit(ANYONE, [task_spec("t")])
                assert "retry later" in e.value.message
                assert e.value.code is ErrorCode.STORAGE_ERROR
            with pytest.raises(StorageError, match="writes refused"):
                claim(s)
            # Reads are served throughout.
            info = s.status(ANYONE, [kept], include_payload=False)[0]
            assert info is not None and info.state == "pending"
            assert kept in [t.id for t in s.list_tasks(ANYONE, ListQuery())[0]]

            await until("memory rebuilt on a read-only store", lambda: rig.read_only)
            assert s.status(ANYONE, [lost], include_payload=False) == [
                None
            ]  # the disk never had it
            assert s.stats(ANYONE).pending == 1

            disk.full = False
            await until("writes accepted again", s.ready)
            assert not rig.read_only
            (after,) = await submit(s)
            assert s.stats(ANYONE).pending == 2
            assert s.status(ANYONE, [after], include_payload=False)[0] is not None
            assert scrape(s) == {"tq_storage_failures_total": 1.0, "tq_storage_writes_accepted": 1}

    with caplog.at_level(logging.INFO, logger="tq"):
        asyncio.run(main())
    events = [r.getMessage().split(" ")[0] for r in caplog.records]
    assert events.count("storage.unavailable") == 1, events  # once, not per refused request
    assert events.count("storage.resumed") == 1, events


def test_a_lease_token_from_a_lost_batch_is_refused_after_the_resume_and_never_reissued() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk) as rig:
            s = rig.service
            (task_id,) = await submit(s)
            epoch = durable_epoch(s)
            disk.full = True
            (lost,) = claim(s)  # answered at once; its batch then fails to reach the disk
            assert lost.id == task_id
            await until("the outage", lambda: not s.ready())
            await until("memory rebuilt", lambda: rig.read_only)
            task = s.machine.get(task_id)
            assert task is not None and task.state is TaskState.PENDING  # the claim is gone
            with pytest.raises(StorageError, match="writes refused"):
                complete(s, lost)

            disk.full = False
            await until("writes accepted again", s.ready)
            assert durable_epoch(s) == s.machine.meta.epoch == epoch + 1
            codes, durable = complete(s, lost)
            await durable
            assert codes == [ErrorCode.LEASE_MISMATCH]
            (fresh,) = claim(s)
            assert fresh.id == task_id
            assert fresh.lease_token >> 40 == epoch + 1 > lost.lease_token >> 40
            codes, durable = complete(s, fresh)
            await durable
            assert codes == [0]

    asyncio.run(main())


def test_no_write_is_accepted_before_the_new_lease_epoch_is_durable() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk) as rig:
            s = rig.service
            await submit(s)
            epoch = durable_epoch(s)
            await fail_a_write(s, disk)
            await until("memory rebuilt", lambda: rig.read_only)
            disk.sync_gate = gate = threading.Event()
            disk.full = False
            await until("the resume's fsync", lambda: disk.syncs_held > 0)
            # The start batch (with the new epoch) is written but not durable yet.
            assert not s.ready()
            with pytest.raises(StorageError, match="writes refused"):
                claim(s)
            with pytest.raises(StorageError, match="writes refused"):
                s.submit(ANYONE, [task_spec("t")])
            gate.set()
            await until("writes accepted again", s.ready)
            assert durable_epoch(s) == epoch + 1
            (fresh,) = claim(s)
            assert fresh.lease_token >> 40 == epoch + 1

    asyncio.run(main())


def test_parked_claims_and_batches_waiting_for_their_fsync_are_answered_at_the_failure() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk) as rig:
            s = rig.service
            answers: list[list[ClaimedTask]] = []
            s.claim(ANYONE, WORKER, ["empty"], 1, 30, answers.append)  # a 30 s long poll
            assert len(s.waiters) == 1
            disk.fail_syncs = True
            reply, durable = s.submit(
                ANYONE, [task_spec("t", queue="other")]
            )  # written, fsync fails
            with pytest.raises(StorageError, match="not made durable, retry later"):
                await durable
            await until("the parked claim answered", lambda: answers)
            assert answers == [[]]
            assert len(s.waiters) == 0
            disk.fail_syncs = False
            await until("writes accepted again", s.ready)
            # The write had reached the store, only its fsync failed: the outcome of a refused
            # request is unknown (an idempotency key makes its retry safe), as after a crash.
            assert s.status(ANYONE, reply.ids, include_payload=False)[0] is not None

    asyncio.run(main())


def test_background_jobs_skip_their_turns_during_an_outage_and_work_after_it() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk, jobs=True) as rig:
            s = rig.service
            await submit(s)
            (leased,) = claim(s)  # its lease (0.3 s) runs out during the outage
            (delayed,) = await submit(s, delay=0.3)
            await s.drain()
            due = time.time() + 0.5
            await fail_a_write(s, disk)
            await until("the lease and the delay to run out", lambda: time.time() > due)
            assert s.machine.count(TaskState.IN_PROGRESS) == 1  # the lease monitor skipped
            assert s.machine.count(TaskState.SCHEDULED) == 1  # so did the scheduler
            assert not any(job.done() for job in rig.jobs)

            disk.full = False
            await until("writes accepted again", s.ready)
            await until(
                "the delayed task promoted", lambda: s.machine.count(TaskState.PENDING) >= 2
            )
            task = s.machine.get(leased.id)
            assert task is not None and task.state is TaskState.PENDING  # expired at the resume
            again = s.machine.get(delayed)
            assert again is not None and again.state is TaskState.PENDING
            assert not any(job.done() for job in rig.jobs)

    asyncio.run(main())


def test_a_store_opened_read_only_at_start_serves_reads_and_resumes_when_space_returns() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk) as rig:
            ids = await submit(rig.service, 3)
        disk.full = True
        async with broker(disk) as rig:
            s = rig.service
            assert rig.read_only and not s.ready()
            assert "disk full" in str(s.failed)
            assert s.storage_failures == 1
            assert all(i is not None for i in s.status(ANYONE, ids, include_payload=False))
            assert s.stats(ANYONE).pending == 3
            with pytest.raises(StorageError, match="writes refused"):
                s.submit(ANYONE, [task_spec("t")])
            disk.full = False
            await until("writes accepted again", s.ready)
            await submit(s)
            assert s.stats(ANYONE).pending == 4

    asyncio.run(main())


def test_a_failure_while_resuming_keeps_writes_refused_and_the_next_probe_resumes() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk) as rig:
            s = rig.service
            await submit(s)
            epoch = durable_epoch(s)
            await fail_a_write(s, disk)
            await until("memory rebuilt", lambda: rig.read_only)
            disk.fail_next_writes = 1  # the probe passes, the resume's start batch fails
            disk.full = False
            await until("writes accepted again", s.ready)
            assert disk.failed_writes == 2
            assert s.storage_failures == 1  # one outage, however many tries it took to end
            assert durable_epoch(s) == s.machine.meta.epoch == epoch + 1
            await submit(s)

    asyncio.run(main())


def test_group_commit_keeps_its_counters_across_the_store_swap() -> None:
    disk = Disk()

    async def main() -> None:
        async with broker(disk) as rig:
            s = rig.service
            commit = s.commit
            await submit(s, 5)
            before = (commit.writes, commit.syncs, commit.mutations)
            await fail_a_write(s, disk)
            disk.full = False
            await until("writes accepted again", s.ready)
            await submit(s)
            assert s.commit is commit
            after = (commit.writes, commit.syncs, commit.mutations)
            assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

    asyncio.run(main())


def test_lifetime_totals_show_only_durable_changes_and_never_decrease_over_outages() -> None:
    disk = Disk()
    shown: list[int] = []

    def submitted(service: BrokerService) -> int:
        """``submitted`` as GET_STATS and Prometheus show it (they must agree)."""
        stats = service.stats(ANYONE).totals["submitted"]
        text = generate_latest(build_registry(service, Instruments())).decode()
        (scraped,) = (
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "tq_tasks_total" and s.labels == {"outcome": "submitted"}
        )
        assert scraped == stats
        shown.append(stats)
        return stats

    async def main() -> None:
        async with broker(disk) as rig:
            s = rig.service
            await submit(s, 3)
            assert submitted(s) == 3
            disk.sync_gate = gate = threading.Event()
            _, durable = s.submit(ANYONE, [task_spec("t")])
            await until("its fsync held", lambda: disk.syncs_held > 0)
            assert submitted(s) == 3  # applied, not durable: not counted yet
            gate.set()
            disk.sync_gate = None
            await durable
            assert submitted(s) == 4

            await fail_a_write(s, disk)  # applied in memory, never on disk
            assert submitted(s) == 4
            disk.full = False
            await until("writes accepted again", s.ready)
            assert submitted(s) == 4

            disk.fail_syncs = True  # written, fsync failed: counted once the disk shows it kept
            _, durable = s.submit(ANYONE, [task_spec("t")])
            with pytest.raises(StorageError, match="retry later"):
                await durable
            assert submitted(s) == 4
            disk.fail_syncs = False
            await until("writes accepted again", s.ready)
            assert submitted(s) == 5
            await submit(s)
            assert submitted(s) == 6

    asyncio.run(main())
    assert shown == sorted(shown), shown
