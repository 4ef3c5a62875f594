"""AsyncClient against a real broker process: submit, inspect, wait for pushed results.

Workers are played by the test itself with ``claim`` and ``report`` (the real worker is tested
on its own), so each test decides exactly how its tasks end.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tq.client import AsyncClient, ClaimedTask, TaskOutcome
from tq.errors import (
    ConflictError,
    ErrorCode,
    NotFoundError,
    TaskFailedError,
    UnavailableError,
    ValidationError,
)
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(60)

UNKNOWN_ID = "01900000-0000-7000-8000-000000000000"


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, bounded by a deadline."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("broker") / "data") as b:
        yield b


@pytest.fixture
def queue() -> str:
    """A queue of the test's own, so tests sharing the broker never see each other's tasks."""
    return f"q-{uuid.uuid4().hex[:12]}"


async def work_one(
    client: AsyncClient, queue: str, outcome: Callable[[ClaimedTask], TaskOutcome]
) -> ClaimedTask:
    """Claim one task from ``queue`` (long poll) and report how it ended."""
    claimed: list[ClaimedTask] = []
    while not claimed:
        claimed = await client.claim("test-worker", [queue], max_tasks=1, wait=1.0)
    assert await client.report([outcome(claimed[0])]) == [0]
    return claimed[0]


def succeed(result: bytes) -> Callable[[ClaimedTask], TaskOutcome]:
    return lambda t: TaskOutcome(task_id=t.id, lease_token=t.lease_token, ok=True, result=result)


@aio
async def test_a_submitted_task_is_pending_with_what_was_submitted(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        task_id = await client.submit(
            "resize", b"img", queue=queue, priority=200, tags={"user": "7"}, max_retries=1
        )
        info = await client.status(task_id, include_payload=True)
        assert (info.task_type, info.queue, info.state) == ("resize", queue, "pending")
        assert (info.priority, info.max_retries, info.tags) == (200, 1, {"user": "7"})
        assert info.payload == b"img"
        assert await client.status_many([task_id, UNKNOWN_ID]) == [
            await client.status(task_id),
            None,
        ]
        assert await client.ping() > 0


@aio
async def test_a_thousand_concurrent_submits_pipeline_over_one_connection(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        await client.connect()
        conn = client._session._conn  # the one connection; read only, to compare below
        ids = await asyncio.gather(
            *(client.submit("t", b"%d" % i, queue=queue) for i in range(1000))
        )
        assert len(set(ids)) == 1000
        assert client._session._conn is conn
        infos = await client.status_many(ids)
        assert all(info is not None and info.state == "pending" for info in infos)
        tasks, cursor = await client.list_tasks(queue=queue, limit=1000)
        assert len(tasks) == 1000
        assert cursor is None or not (await client.list_tasks(queue=queue, cursor=cursor))[0]


@aio
async def test_submit_nowait_pipelines_submits_and_resolves_each_to_its_durable_id(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        with pytest.raises(UnavailableError, match="connect"):
            client.submit_nowait(client.spec("t", queue=queue))  # not connected yet
        await client.connect()
        futures = [
            client.submit_nowait(client.spec("t", b"%d" % i, queue=queue)) for i in range(500)
        ]
        ids = await asyncio.gather(*futures)
        assert len(set(ids)) == 500
        infos = await client.status_many(ids)
        assert [info.payload for info in infos if info is not None] == [None] * 500
        refused = client.submit_nowait(
            client.spec("t", queue=queue, depends_on=[str(uuid.uuid4())])
        )
        with pytest.raises(ConflictError):
            await refused


@aio
async def test_broker_refusals_raise_the_error_of_their_code(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        with pytest.raises(ConflictError) as dep:
            await client.submit("t", queue=queue, depends_on=[UNKNOWN_ID])
        assert dep.value.code is ErrorCode.DEPENDENCY_NOT_FOUND
        task_id = await client.submit("t", queue=queue)
        with pytest.raises(ConflictError) as dup:
            await client.submit("t", queue=queue, task_id=task_id)
        assert dup.value.code is ErrorCode.TASK_ALREADY_EXISTS
        with pytest.raises(NotFoundError):
            await client.status(UNKNOWN_ID)
        with pytest.raises(NotFoundError):
            await client.cancel(UNKNOWN_ID)
        with pytest.raises(ValidationError, match="priority"):
            await client.submit("t", queue=queue, priority=256)
        assert await client.ping() > 0  # none of that cost the connection


@aio
async def test_an_idempotency_key_returns_the_first_task(broker: BrokerProcess, queue: str) -> None:
    async with AsyncClient(broker.url) as client:
        first = await client.submit("t", queue=queue, idempotency_key=f"{queue}-k")
        again = await client.submit("t", queue=queue, idempotency_key=f"{queue}-k")
        assert again == first


@aio
async def test_cancel_ends_a_pending_task_and_refuses_an_ended_one(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        task_id = await client.submit("t", queue=queue)
        await client.cancel(task_id)
        with pytest.raises(TaskFailedError) as info:
            await client.result(task_id, timeout=5)
        assert info.value.code is ErrorCode.TASK_CANCELLED
        with pytest.raises(ConflictError) as again:
            await client.cancel(task_id)
        assert again.value.code is ErrorCode.INVALID_STATE
        assert await client.cancel_many([task_id, UNKNOWN_ID]) == [
            ErrorCode.INVALID_STATE,
            ErrorCode.TASK_NOT_FOUND,
        ]


@aio
async def test_result_is_pushed_when_a_worker_completes_the_task(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client, AsyncClient(broker.url) as worker:
        task_id = await client.submit("echo", b"ping", queue=queue)
        waiting = asyncio.ensure_future(client.result(task_id, timeout=20))
        claimed = await work_one(worker, queue, lambda t: succeed(t.payload + b"-pong")(t))
        assert claimed.payload == b"ping"
        assert await waiting == b"ping-pong"
        # Already terminal: the broker pushes the event right after the ACK.
        assert await client.result(task_id, timeout=5) == b"ping-pong"
        info = await client.wait(task_id)
        assert (info.state, info.result, info.attempts) == ("completed", b"ping-pong", 1)


@aio
async def test_result_of_a_failed_task_raises_with_the_remote_type(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        task_id = await client.submit("t", queue=queue)

        def fail(t: ClaimedTask) -> TaskOutcome:
            return TaskOutcome(
                task_id=t.id, lease_token=t.lease_token, ok=False, error="bad input",
                error_type="ValueError", retry=False,
            )  # fmt: skip

        await work_one(client, queue, fail)
        with pytest.raises(TaskFailedError) as info:
            await client.result(task_id, timeout=10)
        err = info.value
        assert (err.code, err.remote_type, err.task_id) == (
            ErrorCode.TASK_FAILED,
            "ValueError",
            task_id,
        )
        assert err.message == f"task {task_id} failed: ValueError: bad input"


@aio
async def test_wait_times_out_with_a_timeout_error_code(broker: BrokerProcess, queue: str) -> None:
    async with AsyncClient(broker.url) as client:
        task_id = await client.submit("t", queue=queue)
        with pytest.raises(UnavailableError) as info:
            await client.wait(task_id, timeout=0.2)
        assert info.value.code is ErrorCode.TIMEOUT
        with pytest.raises(NotFoundError):
            await client.wait(UNKNOWN_ID, timeout=5)


@aio
async def test_a_subscription_streams_a_tasks_life_in_order(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url) as client:
        async with client.subscribe(queues=[queue]) as events:
            task_id = await client.submit("t", queue=queue)
            await work_one(client, queue, succeed(b"ok"))
            states = []
            async for event in events:
                assert event.queue == queue
                states.append(event.state)
                if event.state == "completed":
                    assert event.result == b"ok"
                    break
        assert states == ["pending", "in_progress", "completed"]
        assert (await client.status(task_id)).state == "completed"


@aio
async def test_worker_calls_register_heartbeat_progress_and_release(
    broker: BrokerProcess, queue: str
) -> None:
    async with AsyncClient(broker.url, client_kind="worker") as worker:
        reply = await worker.register_worker(
            "w-" + queue, name="w", queues=[queue], concurrency=2, hostname="h", pid=1,
            pool="asyncio",
        )  # fmt: skip
        assert reply.worker_id == "w-" + queue
        assert any(w.id == "w-" + queue for w in await worker.workers())
        first, second = await asyncio.gather(
            worker.submit("t", queue=queue), worker.submit("t", queue=queue)
        )
        claimed = await worker.claim("w-" + queue, [queue], max_tasks=2)
        assert len(claimed) == 2
        await worker.progress(claimed[0].id, claimed[0].lease_token, 50, "halfway")
        beat = await worker.heartbeat(
            "w-" + queue, cpu_percent=1.5, memory_rss=1000, running=[t.id for t in claimed]
        )
        assert not beat.cancelled and not beat.unknown
        await worker.release("w-" + queue, [claimed[1]])
        infos = await worker.status_many([first, second])
        states = {info.progress_message: info.state for info in infos if info is not None}
        assert states == {"halfway": "in_progress", None: "pending"}
        await worker.deregister("w-" + queue)


def test_a_batch_above_the_frame_limit_is_split_into_frames(tmp_path: Path) -> None:
    settings = {"broker.max_frame_size_bytes": 65536, "broker.max_payload_size_bytes": 32768}
    with BrokerProcess(tmp_path / "data", settings=settings) as small:

        @aio
        async def scenario() -> None:
            async with AsyncClient(small.url) as client:
                specs = [client.spec("t", bytes(20_000), queue="big") for _ in range(10)]
                ids = await client.submit_many(specs)
                assert len(set(ids)) == 10
                infos = await client.status_many(ids)
                assert all(info is not None for info in infos)

        scenario()
