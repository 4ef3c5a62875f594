"""Clients, workers and the CLI given several broker URLs end up where the work is done.

A real single-node broker never refuses NOT_LEADER, so a fake follower (``follower.py``: the
real frame protocol, refusing every write NOT_LEADER) stands in for the other nodes; the work
must end up on the real broker, which a second client, given only its URL, checks. Real
clusters are tested in tests/cluster.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import tq.worker.examples
from tests.integration.cli_procs import free_port, run_tq
from tests.integration.follower import FakeFollower
from tq.client import AsyncClient, Client, TaskOutcome
from tq.errors import ErrorCode, NotLeaderError, UnavailableError
from tq.testing import BrokerProcess
from tq.worker import Worker

pytestmark = pytest.mark.timeout(120)


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, bounded by a deadline."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 90))

    return run


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("follow") / "data") as b:
        yield b


def leader_of(broker: BrokerProcess) -> str:
    """What a follower names: the host:port of the leader's TCP door."""
    return f"{broker.host}:{broker.port}"


def dead_url() -> str:
    return f"tq://127.0.0.1:{free_port()}"


def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@aio
async def test_a_write_refused_not_leader_is_sent_again_to_the_leader_it_names(
    broker: BrokerProcess,
) -> None:
    with FakeFollower(leader=leader_of(broker)) as follower:
        async with AsyncClient(follower.url) as client, AsyncClient(broker.url) as direct:
            task_id = await client.submit("t", b"moved", queue=queue())
            assert client.url == broker.url
            assert client.urls == [follower.url]
            info = await direct.status(task_id, include_payload=True)
            assert (info.state, info.payload) == ("pending", b"moved")
            assert follower.seen["SubmitTask"] == 1  # refused once, then sent to the leader
            # Later calls go to the leader directly.
            await client.submit("t", queue=queue())
            assert follower.seen["SubmitTask"] == 1


def test_the_sync_client_takes_a_comma_separated_list_and_follows_too(
    broker: BrokerProcess,
) -> None:
    with (
        FakeFollower(leader=leader_of(broker)) as follower,
        Client(f"{follower.url}, {broker.url}") as client,
        Client(broker.url) as direct,
    ):
        assert client.urls == [follower.url, broker.url]
        task_id = client.submit("t", b"sync", queue=queue())
        assert direct.status(task_id).state == "pending"
        assert follower.seen["SubmitTask"] == 1


@aio
async def test_a_dead_first_url_is_skipped_for_the_next_without_a_pause(
    broker: BrokerProcess,
) -> None:
    dead = dead_url()
    # A pause between the nodes of one round would be at least FIRST_PAUSE / 2 (25 ms) per
    # round: with a generous cap on the backoff, a first call that paused would still pass,
    # so what is checked is that it works at once, well within the connect timeout.
    async with AsyncClient([dead, broker.url], request_timeout=10.0) as client:
        t0 = time.monotonic()
        task_id = await client.submit("t", queue=queue())
        assert time.monotonic() - t0 < 5.0
        assert client.url == broker.url
        assert (await client.status(task_id)).state == "pending"


@aio
async def test_without_a_named_leader_the_client_tries_the_other_urls(
    broker: BrokerProcess,
) -> None:
    with FakeFollower(leader=None) as follower:
        async with AsyncClient([follower.url, broker.url]) as client:
            task_id = await client.submit("t", queue=queue())
            assert client.url == broker.url
            assert follower.seen["SubmitTask"] == 1
            assert (await client.status(task_id)).state == "pending"


@aio
async def test_with_no_leader_anywhere_the_call_ends_at_its_deadline_naming_the_urls() -> None:
    with FakeFollower(leader=None) as a, FakeFollower(leader=None) as b:
        async with AsyncClient([a.url, b.url], request_timeout=1.5) as client:
            t0 = time.monotonic()
            with pytest.raises(NotLeaderError) as info:
                await client.submit("t")
            assert time.monotonic() - t0 < 10.0
            assert info.value.code is ErrorCode.NOT_LEADER
            assert f"{a.url},{b.url}" in info.value.message
            assert "within 1.5 s" in info.value.message
            # Every refusal was followed by a move: both nodes were asked, more than once.
            assert a.seen["SubmitTask"] >= 2 and b.seen["SubmitTask"] >= 2


@aio
async def test_a_leader_named_later_is_followed_once_the_election_is_over(
    broker: BrokerProcess,
) -> None:
    with FakeFollower(leader=None) as follower:
        async with AsyncClient(follower.url, request_timeout=20.0) as client:
            submitting = asyncio.ensure_future(client.submit("t", queue=queue()))
            async with asyncio.timeout(10):
                while follower.seen["SubmitTask"] < 2:  # refused, paused, refused again
                    await asyncio.sleep(0.02)  # polling a condition under a deadline
            follower.leader = leader_of(broker)
            task_id = await submitting
            async with AsyncClient(broker.url) as direct:
                assert (await direct.status(task_id)).state == "pending"


@aio
async def test_a_timeout_from_a_deposed_leader_is_sent_again_only_when_keyed(
    broker: BrokerProcess,
) -> None:
    with FakeFollower(leader=leader_of(broker), deposed=1) as follower:
        async with AsyncClient(follower.url) as client:
            # Outcome unknown: a plain submit is not sent again (it might be twice in the log).
            with pytest.raises(UnavailableError) as info:
                await client.submit("t", queue=queue())
            assert info.value.code is ErrorCode.TIMEOUT
            assert follower.seen["SubmitTask"] == 1
        follower.deposed = 1
        async with AsyncClient(follower.url) as client, AsyncClient(broker.url) as direct:
            # Keyed, it is harmless to repeat: sent again, refused NOT_LEADER, then applied
            # once on the leader.
            key = uuid.uuid4().hex
            task_id = await client.submit("t", queue=queue(), idempotency_key=key)
            assert follower.seen["SubmitTask"] == 3
            assert await direct.submit("t", queue=queue(), idempotency_key=key) == task_id


@aio
async def test_every_url_unreachable_names_each_one_in_the_error() -> None:
    first, second = dead_url(), dead_url()
    async with AsyncClient(f"{first},{second}", request_timeout=1.0) as client:
        with pytest.raises(UnavailableError) as info:
            await client.ping()
        message = info.value.message
        assert info.value.code is ErrorCode.TIMEOUT
        assert message.startswith("no connection to any of the brokers within 1 s: ")
        assert f"{first} (Connection refused)" in message
        assert f"{second} (Connection refused)" in message
    # One round, on a client that has not been backing off: each URL once, then the error.
    async with AsyncClient(f"{first},{second}", request_timeout=10.0) as client:
        with pytest.raises(UnavailableError, match="cannot reach any of the brokers: ") as once:
            await client.connect(retry=False)
        assert first in once.value.message and second in once.value.message


@aio
async def test_a_wait_subscribed_on_a_follower_moves_with_the_client_and_gets_its_result(
    broker: BrokerProcess,
) -> None:
    q = queue()
    async with AsyncClient(broker.url) as direct:
        task_id = await direct.submit("t", b"in", queue=q)
        with FakeFollower(leader=leader_of(broker)) as follower:
            async with AsyncClient(follower.url) as client:
                # The follower takes the SUBSCRIBE (reads are served by any node) ...
                waiting = asyncio.ensure_future(client.result(task_id, timeout=60))
                await client.ping()  # sent after the SUBSCRIBE: when it returns, it is held
                # ... then a write moves the client to the leader, and the wait with it.
                await client.submit("t", queue=queue())
                assert client.url == broker.url
                (claimed,) = await direct.claim("w", [q], max_tasks=1, wait=5.0)
                outcome = TaskOutcome(
                    task_id=claimed.id, lease_token=claimed.lease_token, ok=True, result=b"out"
                )
                assert await direct.report([outcome]) == [0]
                assert await waiting == b"out"


@aio
async def test_a_wait_whose_subscribe_is_refused_not_leader_subscribes_at_the_leader(
    broker: BrokerProcess,
) -> None:
    q = queue()
    async with AsyncClient(broker.url) as direct:
        task_id = await direct.submit("t", queue=q)
        with FakeFollower(leader=leader_of(broker), serves_subscriptions=False) as follower:
            async with AsyncClient(follower.url) as client:
                waiting = asyncio.ensure_future(client.result(task_id, timeout=60))
                async with asyncio.timeout(30):
                    while client.url != broker.url:
                        await asyncio.sleep(0.02)  # polling a condition under a deadline
                (claimed,) = await direct.claim("w", [q], max_tasks=1, wait=5.0)
                outcome = TaskOutcome(
                    task_id=claimed.id, lease_token=claimed.lease_token, ok=True, result=b"ok"
                )
                assert await direct.report([outcome]) == [0]
                assert await waiting == b"ok"
                assert follower.seen["Subscribe"] == 1


@aio
async def test_a_worker_follows_the_leader_registers_there_and_runs_its_tasks(
    broker: BrokerProcess,
) -> None:
    q = queue()
    name = f"follower-{uuid.uuid4().hex[:6]}"
    with FakeFollower(leader=leader_of(broker)) as follower:
        worker = Worker(
            tq.worker.examples, url=f"{dead_url()},{follower.url}", queues=[q], name=name
        )
        running = asyncio.create_task(worker.run())
        try:
            async with AsyncClient(broker.url) as direct:
                task_id = await direct.submit("echo", b"hello", queue=q)
                assert await direct.result(task_id, timeout=60) == b"hello"
                (listed,) = [w for w in await direct.workers() if w.name == name]
                assert listed.alive
                assert follower.seen["RegisterWorker"] >= 1
        finally:
            worker.request_stop()
            async with asyncio.timeout(30):
                await running


def test_the_cli_takes_a_comma_list_and_names_every_url_it_could_not_reach(
    broker: BrokerProcess,
) -> None:
    first, second = dead_url(), dead_url()
    done = run_tq("stats", "--url", f"{first},{second}", url=None)
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach any of the brokers: ")
    assert f"{first} (Connection refused)" in done.stderr
    assert f"{second} (Connection refused)" in done.stderr
    with FakeFollower(leader=leader_of(broker)) as follower:
        urls = f"{dead_url()},{follower.url}"
        done = run_tq("submit", "echo", "{}", "--queue", queue(), url=urls)  # TQ_BROKER_URL
        assert done.returncode == 0, done.stderr
        task_id = done.stdout.strip()
        assert follower.seen["SubmitTask"] == 1
    with Client(broker.url) as direct:
        assert direct.status(task_id).state == "pending"


@aio
async def test_a_worker_whose_broker_dies_mid_task_moves_on_and_keeps_working(
    tmp_path: Path,
) -> None:
    q = queue()
    name = f"mover-{uuid.uuid4().hex[:6]}"
    first = await asyncio.to_thread(BrokerProcess(tmp_path / "first").start)
    second = await asyncio.to_thread(BrokerProcess(tmp_path / "second").start)
    try:
        with FakeFollower(leader=leader_of(second)) as follower:
            worker = Worker(
                tq.worker.examples, url=[first.url, follower.url], queues=[q], name=name
            )
            running = asyncio.create_task(worker.run())
            try:
                async with AsyncClient(first.url) as on_first:
                    slow = await on_first.submit("sleep", b'{"seconds": 2}', queue=q)
                    async with asyncio.timeout(30):
                        while (await on_first.status(slow)).state != "in_progress":
                            await asyncio.sleep(0.05)  # polling a condition under a deadline
                await asyncio.to_thread(first.kill)  # gone, with the task running
                async with AsyncClient(second.url) as on_second:
                    task_id = await on_second.submit("echo", b"after", queue=q)
                    assert await on_second.result(task_id, timeout=60) == b"after"
                    assert [w.name for w in await on_second.workers() if w.alive] == [name]
                # The task it held ran to its end: its outcome went to the node it moved to
                # (which never had that task, and refused it), and the worker went on.
                async with asyncio.timeout(30):
                    while worker.completed < 2:
                        await asyncio.sleep(0.05)  # polling a condition under a deadline
                assert not running.done()
                assert follower.seen["RegisterWorker"] >= 1
            finally:
                worker.request_stop()
                async with asyncio.timeout(30):
                    await running
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
