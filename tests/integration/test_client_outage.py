"""A caller's deadline is the client's deadline: waits ride out broker outages until then.

The broker is SIGKILLed and started again after the outage on the same port and data dir;
the test (or a ``tq worker``) then completes the tasks and every wait gets its value. Waits
whose deadline passes during an outage fail at that deadline with TIMEOUT, no earlier, and a
wait that ended stops the dialling it caused. Attempts are counted to show the backoff is
capped: a handful per outage, not a tight loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import tq
from tests.integration.cli_procs import child_env, free_port, wait_for
from tq.client import AsyncClient, Client, TaskOutcome, set_default_client
from tq.errors import AuthError, ErrorCode, UnavailableError
from tq.protocol import Hello, ServerConnection, nack_frame
from tq.testing import BrokerProcess
from tq.worker.retrying import is_fatal

OUTAGE_S = 15.0
QUEUE = "outage"
UNKNOWN_ID = "01900000-0000-7000-8000-000000000000"

pytestmark = pytest.mark.timeout(OUTAGE_S + 90)


@tq.task("outage.double", queue=QUEUE)
def double(x: int) -> int:
    return 2 * x


def aio(
    seconds: float,
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Run an async test on a fresh event loop, bounded by ``seconds``."""

    def wrap(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(test(*args, **kwargs), seconds))

        return run

    return wrap


async def hold(seconds: float, check: Callable[[], None]) -> None:
    """Let ``seconds`` pass, calling ``check`` every 50 ms: it asserts what must stay true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        check()
        await asyncio.sleep(0.05)  # polling a condition over a window
    check()


async def restart(broker: BrokerProcess) -> BrokerProcess:
    """A new broker on the killed one's port and data dir (blocking start, off the loop)."""
    again = BrokerProcess(broker.data_dir, port=broker.port)
    await asyncio.to_thread(again.start)
    return again


async def complete(url: str, results: dict[str, bytes]) -> None:
    """Act as a worker: claim one task of each type in ``results`` and report its result."""
    async with AsyncClient(url, name="test-worker") as worker:
        left = dict(results)
        while left:
            for claimed in await worker.claim("test-worker", [QUEUE], max_tasks=10, wait=5.0):
                outcome = TaskOutcome(
                    task_id=claimed.id,
                    lease_token=claimed.lease_token,
                    ok=True,
                    result=left.pop(claimed.task_type),
                )
                assert await worker.report([outcome]) == [0]


def attempts_of(caplog: pytest.LogCaptureFixture, client: str) -> list[float]:
    """When ``client`` failed to connect, from the session's ``connect.failed`` records."""
    return [
        r.created
        for r in caplog.records
        if r.name == "tq.client.session"
        and r.msg.startswith("connect.failed")
        and isinstance(r.args, tuple)
        and r.args[1] == client
    ]


def assert_timed_out(exc: BaseException | None, seconds: float) -> None:
    assert isinstance(exc, UnavailableError), repr(exc)
    assert exc.code is ErrorCode.TIMEOUT
    assert f"within {seconds:g} s (last error: " in exc.message, exc.message


@aio(OUTAGE_S + 60)
async def test_result_waits_of_every_client_survive_a_15_s_broker_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tq.client.session")
    loop = asyncio.get_running_loop()
    broker = BrokerProcess(tmp_path / "data").start()
    brokers = [broker]
    # A real worker on another queue: it too must be back at work after the outage.
    worker = subprocess.Popen(
        [sys.executable, "-m", "tq", "worker", "tq.worker.examples", "-Q", "echoes"],
        env=child_env(broker.url),
        stdout=(tmp_path / "worker.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    sync_client = Client(broker.url, name="sync-waiter")
    task_client = Client(broker.url, name="task-waiter")
    set_default_client(task_client)
    try:
        async with AsyncClient(broker.url, name="async-waiter") as client:
            async_id = await client.submit("outage.async", queue=QUEUE)
            sync_id = await asyncio.to_thread(sync_client.submit, "outage.sync", b"", queue=QUEUE)
            handle = await asyncio.to_thread(double.submit, 21)

            long_wait = asyncio.ensure_future(client.result(async_id, timeout=60))
            short_started = loop.time()
            short_wait = asyncio.ensure_future(client.result(async_id, timeout=4))
            sync_wait = asyncio.ensure_future(asyncio.to_thread(sync_client.result, sync_id, 60))
            task_wait = asyncio.ensure_future(asyncio.to_thread(handle.result, 60))
            await asyncio.sleep(0)  # both async waits send their SUBSCRIBE ...
            await client.ping()  # ... before this PING: when it returns they are held
            # The waits of the blocking clients run on their own threads: if one has not
            # subscribed by the kill, it subscribes after the restart instead. Both must work.
            await asyncio.to_thread(sync_client.ping)
            await asyncio.to_thread(task_client.ping)
            await asyncio.to_thread(
                wait_for, "the worker to register", lambda: sync_client.workers() or None
            )

            await asyncio.to_thread(broker.kill)
            short_failed_at: float | None = None

            def nothing_gave_up() -> None:
                nonlocal short_failed_at
                for wait in (long_wait, sync_wait, task_wait):
                    assert not wait.done(), wait.exception()
                if short_wait.done() and short_failed_at is None:
                    short_failed_at = loop.time()

            await hold(OUTAGE_S, nothing_gave_up)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            broker = await restart(broker)
            brokers.append(broker)
            await complete(
                broker.url,
                {
                    "outage.async": b"a",
                    "outage.sync": b"s",
                    "outage.double": double.encode_result(42),
                },
            )
            assert await long_wait == b"a"
            assert await sync_wait == b"s"
            assert await task_wait == 42
            echo = await client.submit("echo", b"after", queue="echoes")
            assert await client.result(echo, timeout=30) == b"after"

        # The short wait on the same task ended at its own deadline, not the long one's.
        assert short_failed_at is not None
        assert 3.0 <= short_failed_at - short_started <= 5.0
        assert_timed_out(short_wait.exception(), 4)
        # Capped backoff: a handful of attempts over ~20 s down, never more than 5 s apart.
        for name in ("async-waiter", "sync-waiter", "task-waiter"):
            attempts = attempts_of(caplog, name)
            assert 4 <= len(attempts) <= 25, (name, len(attempts))
            gaps = [b - a for a, b in itertools.pairwise(attempts)]
            assert max(gaps) <= 5.0 + 1.0, (name, gaps)
    finally:
        worker.terminate()
        worker.wait(15)
        set_default_client(None)
        task_client.close()
        sync_client.close()
        for b in brokers:
            b.stop()


def test_a_short_wait_during_an_outage_fails_at_its_deadline_not_before() -> None:
    dead = f"tq://127.0.0.1:{free_port()}"
    with Client(dead, max_reconnect_delay=1.0) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as info:
            client.result(UNKNOWN_ID, timeout=3)
        elapsed = time.monotonic() - started
    assert 3.0 <= elapsed <= 4.0, elapsed
    assert_timed_out(info.value, 3)
    assert f"no connection to {dead} within 3 s" in info.value.message
    assert "Connect call failed" in info.value.message or "refused" in info.value.message


def test_submit_wait_in_the_cli_survives_a_broker_outage(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    brokers = [broker]
    argv = [sys.executable, "-m", "tq", "submit", "echo", '{"n": 1}', "-q", QUEUE, "--wait"]
    cli = subprocess.Popen(
        argv, env=child_env(broker.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with Client(broker.url) as client:
            wait_for("the CLI's task", lambda: client.list_tasks(queue=QUEUE)[0] or None)
        broker.kill()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert cli.poll() is None, cli.communicate()
            time.sleep(0.05)  # polling a condition over the outage
        broker = BrokerProcess(broker.data_dir, port=broker.port).start()
        brokers.append(broker)
        asyncio.run(complete(broker.url, {"echo": b'{"n": 1}'}))
        out, err = cli.communicate(timeout=30)
        assert (cli.returncode, out) == (0, '{"n": 1}\n'), err
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        for b in brokers:
            b.stop()


class FailingDoor:
    """A listener on 127.0.0.1 whose every handshake fails: it hangs up at once or, with
    ``refuse``, answers the HELLO with that error's NACK. ``attempts``: when each came."""

    def __init__(self, *, port: int = 0, refuse: AuthError | None = None) -> None:
        self.port = port
        self.refuse = refuse
        self.attempts: list[float] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"tq://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FailingDoor:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(asyncio.get_running_loop().time())
        if self.refuse is not None:
            conn = ServerConnection(
                server_name="door", node_id="n1", heartbeat_interval=1.0, lease_duration=5.0
            )
            while data := await reader.read(1 << 16):
                hellos = [m for m in conn.receive_data(data) if isinstance(m, Hello)]
                if hellos:
                    writer.write(nack_frame(hellos[0].request_id, self.refuse))
                    await writer.drain()
                    break
        writer.close()

    async def until(self, attempts: int) -> None:
        while len(self.attempts) < attempts:
            await asyncio.sleep(0.02)  # polling a condition; the test's deadline bounds it


@aio(30)
async def test_backoff_is_capped_and_dialling_goes_on_until_the_deadline() -> None:
    async with FailingDoor() as door, AsyncClient(door.url, max_reconnect_delay=0.4) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UnavailableError) as info:
            await client.connect(timeout=3)
        elapsed = asyncio.get_running_loop().time() - started
    assert 3.0 <= elapsed <= 4.0, elapsed
    assert_timed_out(info.value, 3)
    # Pauses of 0.05 s doubling to the 0.4 s cap, jittered to [p/2, p]: 9 to 17 attempts.
    assert 6 <= len(door.attempts) <= 20, door.attempts
    gaps = [b - a for a, b in itertools.pairwise(door.attempts)]
    assert max(gaps) <= 0.4 + 0.25, gaps
    assert min(gaps[4:]) >= 0.2 - 0.05, gaps  # past the ramp: never a tight loop


@aio(30)
async def test_a_refused_handshake_is_final_whatever_the_deadline() -> None:
    refusal = AuthError("bad api key", ErrorCode.UNAUTHENTICATED)
    async with FailingDoor(refuse=refusal) as door, AsyncClient(door.url) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(AuthError, match="bad api key"):
            await client.result(UNKNOWN_ID, timeout=30)
        assert asyncio.get_running_loop().time() - started < 2.0
        assert len(door.attempts) == 1


@aio(60)
async def test_a_wait_that_ends_during_an_outage_stops_its_dialling(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        async with AsyncClient(broker.url, max_reconnect_delay=0.2) as client:
            task_id = await client.submit("t", queue=QUEUE)
            short = asyncio.ensure_future(client.result(task_id, timeout=2))
            endless = asyncio.ensure_future(client.result(task_id))
            await asyncio.sleep(0)
            await client.ping()  # both waits are subscribed
            await asyncio.to_thread(broker.kill)
            async with FailingDoor(port=broker.port) as door:
                with pytest.raises(UnavailableError) as info:
                    await short
                assert_timed_out(info.value, 2)
                # The wait without a deadline keeps the client dialling ...
                await door.until(len(door.attempts) + 3)
                assert not endless.done()
                endless.cancel()
                # ... and once it is gone nothing does (one attempt may be under way).
                settled = len(door.attempts)
                await hold(1.5, lambda: assert_at_most(door.attempts, settled + 1))


def assert_at_most(attempts: list[float], n: int) -> None:
    assert len(attempts) <= n, attempts


@aio(30)
async def test_a_worker_call_past_its_deadline_fails_as_transient_so_the_worker_retries() -> None:
    # The worker keeps reconnecting forever by retrying each call that fails this way.
    async with AsyncClient(
        f"tq://127.0.0.1:{free_port()}", request_timeout=1.0, client_kind="worker"
    ) as client:
        with pytest.raises(UnavailableError) as info:
            await client.heartbeat("w", cpu_percent=0.0, memory_rss=0, running=[])
    assert_timed_out(info.value, 1)
    assert not is_fatal(info.value)
