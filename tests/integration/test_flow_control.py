"""Flow control through the public API against a real broker: a paused queue takes submits,
hands out nothing and resumes (a parked claim is served at once); a cap of N never has more
than N in progress, skips without blocking the tasks behind it, and frees a parked claim when
a task finishes; a rate-limited type refills on time for a parked claim; limits and pauses
survive a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rawconn import RawConn
from tq.client import AsyncClient
from tq.core.ids import format_task_id
from tq.errors import NotFoundError, ValidationError
from tq.protocol import ClaimedTask, ClaimTask, TaskOutcome, TaskResult, TaskSpec
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("flow") / "data") as b:
        yield b


async def claim(
    conn: RawConn, queue: str, n: int = 100, wait_ms: int = 0, timeout: float = 10.0
) -> list[ClaimedTask]:
    msg = ClaimTask(
        request_id=conn.rid(), worker_id="w", queues=[queue], max_tasks=n, wait_ms=wait_ms
    )
    reply = await conn.call(msg, timeout=timeout)
    return list(reply.tasks)


async def finish(conn: RawConn, tasks: list[ClaimedTask]) -> None:
    outcomes = [TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True) for t in tasks]
    reply = await conn.call(TaskResult(request_id=conn.rid(), results=outcomes))
    assert reply.codes == [0] * len(tasks)


async def submit(client: AsyncClient, queue: str, task_type: str, n: int) -> list[str]:
    return await client.submit_many([TaskSpec(task_type=task_type, queue=queue)] * n)


def test_a_paused_queue_takes_submits_hands_out_nothing_and_resumes(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        async with AsyncClient(broker.url) as client:
            conn = await RawConn.open(broker.port)
            state = await client.pause_queue("p1")
            assert state.paused and state.paused_at is not None
            assert (await client.pause_queue("p1")).paused_at == state.paused_at  # kept
            ids = await submit(client, "p1", "t", 3)
            assert await claim(conn, "p1") == []
            depth = (await client.stats()).queues["p1"]
            assert depth.paused and depth.normal == 3
            # A long poll parked on the paused queue is served the moment it resumes.
            parked = asyncio.create_task(claim(conn, "p1", wait_ms=20_000, timeout=30))
            await asyncio.sleep(0.3)  # let the claim park (it would return at once if served)
            assert not parked.done()
            started = time.monotonic()
            resumed = await client.resume_queue("p1")
            assert not resumed.paused and resumed.paused_at is None
            got = await asyncio.wait_for(parked, 10)
            assert time.monotonic() - started < 5
            assert {format_task_id(t.id) for t in got} == set(ids)
            assert not (await client.stats()).queues["p1"].paused
            await conn.close()

    asyncio.run(main())


def test_an_empty_paused_queue_is_listed_as_paused(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(broker.url) as client:
            await client.pause_queue("empty-paused")
            assert (await client.stats()).queues["empty-paused"].paused
            await client.resume_queue("empty-paused")
            assert "empty-paused" not in (await client.stats()).queues

    asyncio.run(main())


def test_a_capped_type_never_runs_more_than_its_cap_and_does_not_block_the_others(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        async with AsyncClient(broker.url) as client:
            conn = await RawConn.open(broker.port)
            info = await client.set_limit(task_type="heavy", concurrency=2)
            assert (info.scope, info.name, info.concurrency, info.running) == (
                "type", "heavy", 2, 0,
            )  # fmt: skip
            await submit(client, "c1", "heavy", 5)  # first in line
            await submit(client, "c1", "light", 3)  # behind them
            got = await claim(conn, "c1")
            assert sorted(t.task_type for t in got) == ["heavy", "heavy", "light", "light", "light"]
            assert await claim(conn, "c1") == []
            (limit,) = [x for x in await client.limits() if x.name == "heavy"]
            assert limit.running == 2
            # A parked claim gets the next heavy task when one finishes, not before.
            waiter = await RawConn.open(broker.port)
            parked = asyncio.create_task(claim(waiter, "c1", wait_ms=20_000, timeout=30))
            await asyncio.sleep(0.3)
            assert not parked.done()
            heavy = [t for t in got if t.task_type == "heavy"]
            await finish(conn, heavy[:1])
            nxt = await asyncio.wait_for(parked, 10)
            assert [t.task_type for t in nxt] == ["heavy"]
            # Clearing the cap lets the rest through.
            await client.clear_limit(task_type="heavy")
            assert len(await claim(conn, "c1")) == 2
            with pytest.raises(NotFoundError) as e:
                await client.clear_limit(task_type="heavy")
            assert "no limit on type 'heavy'" in str(e.value)
            await conn.close()
            await waiter.close()

    asyncio.run(main())


def test_a_queue_cap_counts_every_task_of_the_queue(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(broker.url) as client:
            conn = await RawConn.open(broker.port)
            await client.set_limit(queue="q-cap", concurrency=3)
            await submit(client, "q-cap", "a", 2)
            await submit(client, "q-cap", "b", 2)
            first = await claim(conn, "q-cap")
            assert len(first) == 3
            assert await claim(conn, "q-cap") == []
            await finish(conn, first[:2])
            assert len(await claim(conn, "q-cap")) == 1
            await client.clear_limit(queue="q-cap")
            await conn.close()

    asyncio.run(main())


def test_a_rate_limited_type_refills_on_time_for_a_parked_claim(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(broker.url) as client:
            conn = await RawConn.open(broker.port)
            info = await client.set_limit(task_type="slow", rate=2.0, burst=2)
            assert (info.rate, info.burst, info.tokens) == (2.0, 2, 2.0)
            await submit(client, "r1", "slow", 4)
            assert len(await claim(conn, "r1")) == 2  # the burst
            started = time.monotonic()
            got = await claim(conn, "r1", n=1, wait_ms=20_000, timeout=30)
            waited = time.monotonic() - started
            assert len(got) == 1
            assert 0.2 < waited < 3.0, waited  # a token every 0.5 s
            await client.clear_limit(task_type="slow")
            await conn.close()

    asyncio.run(main())


def test_bad_limits_are_refused_naming_what_is_wrong(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with AsyncClient(broker.url) as client:
            with pytest.raises(ValidationError, match="queue takes a concurrency cap"):
                await client.set_limit(queue="q", rate=1.0)
            with pytest.raises(ValidationError, match="a rate, a concurrency cap, or both"):
                await client.set_limit(task_type="t")
            with pytest.raises(ValidationError, match="burst 3 given without a rate"):
                await client.set_limit(task_type="t", burst=3, concurrency=1)
            with pytest.raises(ValidationError, match="exactly one of queue= and task_type="):
                await client.set_limit(queue="q", task_type="t", concurrency=1)
            with pytest.raises(ValidationError, match="rate"):
                await client.set_limit(task_type="t", rate=-1.0)
            assert [x for x in await client.limits() if x.name in ("q", "t")] == []

    asyncio.run(main())


def test_pauses_and_limits_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def configure(url: str) -> None:
        async with AsyncClient(url) as client:
            await client.pause_queue("held")
            await client.set_limit(task_type="mail", rate=1.0, burst=1, concurrency=4)
            await client.set_limit(queue="reports", concurrency=2)
            await submit(client, "held", "mail", 2)

    async def check(url: str, port: int) -> None:
        async with AsyncClient(url) as client:
            assert (await client.stats()).queues["held"].paused
            limits = {(x.scope, x.name): x for x in await client.limits()}
            assert set(limits) == {("queue", "reports"), ("type", "mail")}
            assert (limits["type", "mail"].rate, limits["type", "mail"].concurrency) == (1.0, 4)
            conn = await RawConn.open(port)
            assert await claim(conn, "held") == []
            await client.resume_queue("held")
            assert len(await claim(conn, "held")) == 1  # a burst of 1
            await conn.close()

    with BrokerProcess(data) as b:
        asyncio.run(configure(b.url))
    with BrokerProcess(data) as b:
        asyncio.run(check(b.url, b.port))
