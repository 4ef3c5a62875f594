"""The service's one check, over an in-memory store: a key's permission and queues, what a
queue-scoped key sees of listings, stats, workers and subscriptions, expiry and revocation
re-checked on every call, and a door that authenticated nobody refused when auth is on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tq.broker.access import Principal
from tq.broker.requests import ListQuery, TaskFilter, Watch
from tq.broker.service import BrokerService
from tq.config import load
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId, WorkerId
from tq.errors import ErrorCode, PermissionDeniedError, TqError, UnauthenticatedError
from tq.protocol.records import KeySpec, TaskSpec
from tq.storage import MemoryBacking, MemoryStore
from tq.storage.recovery import recover

ANYONE = Principal.ANYONE


class Sink:
    """Collects pushed events (none are awaited here)."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        self.events.append(event)

    def watch_ended(self, subscription_id: int) -> None:
        pass


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


@asynccontextmanager
async def service(**overrides: object) -> AsyncIterator[BrokerService]:
    store = MemoryStore(MemoryBacking())
    svc = BrokerService(
        load(env={}, overrides=overrides), store, recover(store, time.time()).machine
    )
    try:
        yield svc
    finally:
        await svc.drain()
        await svc.close()
        store.close()


async def key(svc: BrokerService, **spec: Any) -> Principal:
    """The caller a door would have authenticated with a new key (the KeyRing's own test
    covers verification; bcrypt would only slow these down)."""
    info, _ = await svc.create_key(ANYONE, KeySpec(name="k", **spec))
    stored = svc.machine.key(info.id)
    assert stored is not None
    return Principal.of(stored)


async def submit(svc: BrokerService, who: Principal, queue: str) -> TaskId:
    reply, durable = svc.submit(who, [TaskSpec(task_type="t", queue=queue)])
    await svc.confirmed(durable)
    return reply.ids[0]


def test_a_scoped_key_sees_only_its_queues() -> None:
    async def body() -> None:
        async with service() as svc:
            a = await key(svc, permissions=["submit", "read", "work"], queues=["a"])
            for queue in ("a", "a", "b"):
                await submit(svc, ANYONE, queue)
            await svc.confirmed(
                svc.register(ANYONE, WorkerId("wa"), name="wa", queues=["a"], concurrency=1,
                             hostname="h", pid=1)
            )  # fmt: skip
            await svc.confirmed(
                svc.register(ANYONE, WorkerId("wb"), name="wb", queues=["b"], concurrency=1,
                             hostname="h", pid=1)
            )  # fmt: skip
            infos, _ = svc.list_tasks(a, ListQuery())  # no queue named: its one queue
            assert [i.queue for i in infos] == ["a", "a"]
            with pytest.raises(PermissionDeniedError, match="may not use queue b"):
                svc.list_tasks(a, ListQuery(TaskFilter(queue="b")))
            stats = svc.stats(a)
            assert (stats.pending, list(stats.queues), stats.workers) == (2, ["a"], 1)
            assert stats.totals == {} and svc.stats(ANYONE).pending == 3
            assert [w.id for w in svc.workers(a)] == ["wa"]
            with pytest.raises(PermissionDeniedError):
                svc.submit(a, [TaskSpec(task_type="t", queue="b")])
            assert svc.stats(ANYONE).pending == 3  # the refused submit added nothing

    run(body)


def test_a_key_of_several_queues_must_name_one_to_list_and_its_all_means_its_queues() -> None:
    async def body() -> None:
        async with service() as svc:
            ab = await key(svc, permissions=["read"], queues=["a", "b"])
            with pytest.raises(PermissionDeniedError, match="name one of them"):
                svc.list_tasks(ab, ListQuery())
            b_task = await submit(svc, ANYONE, "b")
            c_task = await submit(svc, ANYONE, "c")
            sink = Sink()
            svc.watch(ab, sink, 1, Watch(all=True))
            sub = svc.events.get(sink, 1)
            assert sub is not None and (sub.all, sorted(sub.queues)) == (False, ["a", "b"])
            with pytest.raises(PermissionDeniedError):
                svc.watch(ab, sink, 2, Watch(task_ids=(c_task,)))
            assert svc.status(ab, [b_task], False)[0] is not None
            with pytest.raises(PermissionDeniedError, match="may not use queue c"):
                svc.status(ab, [b_task, c_task], False)

    run(body)


def test_expiry_and_revocation_are_checked_on_every_call() -> None:
    async def body() -> None:
        async with service() as svc:
            soon = await key(svc, permissions=["read"], expires_at=time.time() + 3.0)
            svc.stats(soon)
            deadline = time.monotonic() + 10
            while time.time() < (soon.expires_at or 0):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            with pytest.raises(UnauthenticatedError, match="expired at"):
                svc.stats(soon)
            kept = await key(svc, permissions=["read"])
            svc.stats(kept)
            assert kept.key_id is not None
            await svc.revoke_key(ANYONE, kept.key_id)
            with pytest.raises(UnauthenticatedError, match="was revoked"):
                svc.stats(kept)

    run(body)


def test_with_auth_on_a_caller_nobody_authenticated_is_refused() -> None:
    async def body() -> None:
        async with service(**{"auth.enabled": True}) as svc:
            with pytest.raises(UnauthenticatedError) as e:
                svc.stats(ANYONE)
            assert e.value.code is ErrorCode.UNAUTHENTICATED
            with pytest.raises(UnauthenticatedError, match="no API key given"):
                await svc.authenticate(None)

    run(body)


def test_key_administration_needs_an_admin_of_every_queue() -> None:
    async def body() -> None:
        async with service() as svc:
            scoped_admin = await key(svc, permissions=["admin"], queues=["a"])
            reader = await key(svc, permissions=["read"])
            for who in (scoped_admin, reader):
                with pytest.raises(PermissionDeniedError):
                    svc.list_keys(who)
                with pytest.raises(PermissionDeniedError):
                    await svc.create_key(who, KeySpec(name="x", permissions=["admin"]))
            with pytest.raises(TqError) as e:
                await svc.revoke_key(ANYONE, "ffffffffffff")
            assert e.value.code is ErrorCode.KEY_NOT_FOUND
            names = [k.name for k in svc.list_keys(ANYONE)]
            assert names.count("k") == 2 and "x" not in names

    run(body)
