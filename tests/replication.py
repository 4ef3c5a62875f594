"""The leader side of replication tests: a BrokerService on RocksDB whose written batches are
recorded as log entries (what a leader appends), a random workload for it, and a comparison
of two stores' whole contents."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from tq.broker.access import Principal
from tq.broker.service import BrokerService
from tq.broker.storage_guard import StorageGuard
from tq.cluster.entry import encode_entry
from tq.cluster.replica import Replica, applied_mark
from tq.config import load
from tq.core import commands as c
from tq.core.ids import TaskId, WorkerId
from tq.core.layout import ALL_FAMILIES, APPLIED_KEY, AppliedMark, Family
from tq.core.model import TaskState
from tq.core.replies import ClaimedTask
from tq.errors import TqError
from tq.protocol.records import TaskOutcome, TaskSpec
from tq.storage.base import Store
from tq.storage.recovery import recover
from tq.storage.reopen import RocksOpener, open_at_start
from tq.storage.retention import find_expired
from tq.storage.rocksdb import RocksStore

ANYONE = Principal.ANYONE
QUEUES = ("a", "b")
WORKERS = (WorkerId("w1"), WorkerId("w2"))
EPOCH = 7


@dataclass
class Recorder:
    """The leader's sink: each written batch becomes the next log entry, encoded at once."""

    epoch: int = EPOCH
    entries: list[bytes] = field(default_factory=list)

    def batch(self, commands: list[c.Command]) -> None:
        self.entries.append(encode_entry(len(self.entries) + 1, self.epoch, commands))


@asynccontextmanager
async def leader(
    path: Path, recorder: Recorder | None = None
) -> AsyncIterator[tuple[BrokerService, Recorder]]:
    """A service over the RocksDB store in ``path`` started as the server starts it (recovery,
    then the guard's start batch), recording its entries in ``recorder`` (a new one if None:
    pass the last one on to restart a leader on the same log); every batch is settled when the
    block ends."""
    opener = RocksOpener(path)
    opened = open_at_start(opener)
    rec = recover(opened.store, time.time())
    recorder = recorder or Recorder()
    svc = BrokerService(load(env={}), opened.store, rec.machine, sink=recorder)
    try:
        await StorageGuard(svc, opener).start(rec.repairs, opened.read_only_because)
        yield svc, recorder
    finally:
        await svc.drain()
        await svc.close()
        svc.store.close()


Contents = dict[str, list[tuple[bytes, bytes]]]
Op = tuple[str, int, int]
#: (what, a count or choice, another) — interpreted by ``run_workload``.
ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "submit", "submit", "submit", "claim", "claim", "complete", "fail", "cancel",
                "heartbeat", "register", "deregister", "release", "expire", "promote", "reap",
                "retry", "purge", "progress", "turn", "turn", "settle",
            ]
        ),
        st.integers(0, 5),
        st.integers(0, 3),
    ),
    min_size=10,
    max_size=80,
)  # fmt: skip


@dataclass
class Workload:
    """What the workload knows of the tasks it made, to pick targets for later operations."""

    ids: list[TaskId] = field(default_factory=list)
    held: list[ClaimedTask] = field(default_factory=list)


async def run_workload(svc: BrokerService, steps: Sequence[Op]) -> None:
    """Apply ``steps`` through the service's use cases, as doors and jobs would; "turn" ends
    the loop turn (one batch), "settle" waits for every batch to be durable."""
    w = Workload()
    later = 0.0  # how far jobs look ahead: time-driven commands move on through the run
    for what, n, k in steps:
        # A refused step (a lease gone, a dependency ended) changed nothing: go on.
        with contextlib.suppress(TqError):
            later = await _step(svc, w, what, n, k, later)


async def _step(svc: BrokerService, w: Workload, what: str, n: int, k: int, later: float) -> float:
    if True:
        now = time.time() + later
        worker = WORKERS[k % 2]
        if what == "submit":
            deps = (w.ids[-1],) if k == 3 and w.ids else ()
            specs = [
                TaskSpec(
                    task_type="t", queue=QUEUES[(n + i) % 2], priority=(n * 37 + i) % 10,
                    payload=bytes([n, i]), max_retries=k, delay=1.0 if i == 2 else None,
                    depends_on=deps,
                )
                for i in range(n + 1)
            ]  # fmt: skip
            reply, _ = svc.submit(ANYONE, specs)
            w.ids.extend(reply.ids)
        elif what == "claim":
            svc.claim(ANYONE, worker, list(QUEUES), n + 1, 0, w.held.extend)
        elif what in ("complete", "fail") and w.held:
            picked, w.held = w.held[: n + 1], w.held[n + 1 :]
            ok = what == "complete"
            outcomes = [
                TaskOutcome(
                    task_id=t.id, lease_token=t.lease_token, ok=ok,
                    result=b"r" if ok else None, error=None if ok else "boom", retry=k != 0,
                )
                for t in picked
            ]  # fmt: skip
            svc.report(ANYONE, outcomes)
        elif what == "cancel" and w.ids:
            svc.cancel(ANYONE, w.ids[-(n + 1) :: 2])
        elif what == "heartbeat":
            svc.heartbeat(ANYONE, worker, 1.0, 1000, [t.id for t in w.held])
        elif what == "register":
            svc.register(
                ANYONE, worker, name="w", queues=list(QUEUES), concurrency=2, hostname="h",
                pid=n,
            )  # fmt: skip
        elif what == "deregister":
            svc.deregister(ANYONE, worker)
        elif what == "release" and w.held:
            picked, w.held = w.held[:1], w.held[1:]
            svc.release(ANYONE, worker, [(t.id, t.lease_token) for t in picked])
        elif what == "expire":
            later += svc.lease + 1
            svc.apply(c.ExpireLeases(time.time() + later))
        elif what == "promote":
            later += 2.0 * (n + 1)
            svc.apply(c.PromoteDue(time.time() + later))
        elif what == "reap":
            svc.apply(c.ReapDeadWorkers(now, svc.dead_after / (n + 1)))
        elif what == "retry" and w.ids:
            svc.retry_ids(w.ids[-(n + 1) :])
        elif what == "purge":
            found = find_expired(svc.store, now + 1)
            if found.task_ids:
                svc.apply(c.PurgeTasks(now, found.task_ids, found.states))
        elif what == "progress" and w.held:
            t = w.held[0]
            svc.progress(ANYONE, t.id, t.lease_token, 10 * n, "step")
        elif what == "turn":
            await asyncio.sleep(0)
        elif what == "settle":
            await svc.drain()
    return later


@dataclass
class Led:
    """What a leader left: its log entries, its store's contents, its machine's snapshot, and
    the epoch of its last entry."""

    entries: list[bytes]
    contents: Contents
    snapshot: dict[str, object]
    epoch: int = EPOCH


def lead(path: Path, steps: Sequence[Op], restart_at: int | None = None) -> Led:
    """Run ``steps`` on a leader in ``path``; with ``restart_at``, the leader stops after
    that many steps and starts again on the same store and log, in a new epoch."""
    cut = len(steps) if restart_at is None else restart_at

    async def body() -> Led:
        recorder: Recorder | None = None
        led: Led | None = None
        for part in (steps[:cut], steps[cut:]) if restart_at is not None else (steps,):
            if recorder is not None:
                recorder.epoch += 1  # a restarted leader campaigns again: a new epoch
            async with leader(path, recorder) as (svc, recorder):
                await run_workload(svc, part)
                await svc.drain()
                led = Led(
                    recorder.entries, contents(svc.store), svc.machine.snapshot(), recorder.epoch
                )
        assert led is not None
        return led

    return asyncio.run(asyncio.wait_for(body(), 60))


def contents(store: Store) -> Contents:
    """Every key and value of every family, except a node's own applied mark."""
    return {
        f.cf_name: [
            (k, v) for k, v in store.iterate(f) if not (f is Family.METADATA and k == APPLIED_KEY)
        ]
        for f in ALL_FAMILIES
    }


def live_states(store: Store) -> dict[TaskState, int]:
    rec = recover(store, time.time())
    return {s: n for s, n in rec.machine.counts().items() if n}


def follow(path: Path, entries: Sequence[bytes], first: int = 1) -> tuple[Contents, int]:
    """Open the replica store in ``path``, apply ``entries`` (numbered from ``first``), and
    return its contents and applied index (closed again)."""
    with RocksStore(path) as store:
        replica = Replica.open(store)
        for i, data in enumerate(entries, first):
            replica.apply_entry(i, data)
        return contents(store), replica.applied_index


def same_as_leader(store: RocksStore, led: Led) -> None:
    assert contents(store) == led.contents
    n = len(led.entries)
    assert applied_mark(store) == AppliedMark(n, led.epoch if n else 0)
    # The store recovers exactly like the leader's: the same machine, byte for byte.
    assert Replica.open(store).machine.snapshot() == led.snapshot
