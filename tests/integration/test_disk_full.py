"""A real broker on a disk that fills up (a tmpfs): it stays up, refuses writes with a
retryable STORAGE_ERROR, serves reads, says it is not ready, and resumes by itself once
space is freed; no acknowledged task is lost, and no lifetime total ever goes down. Also: a
broker started on a full disk.

Mounting a tmpfs needs root; elsewhere these tests skip (the injected-fault tests in
tests/unit/test_storage_guard.py cover the same engine without a real disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tq.client import AsyncClient
from tq.errors import ErrorCode, StorageError
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(240)

T = TypeVar("T")
DISK_SIZE = "24m"
SETTINGS = {
    "api.rest_enabled": True,
    "api.grpc_enabled": False,
    # Small memtables, so SST flushes (background work that fails on its own) happen too.
    "persistence.write_buffer_size_bytes": 1 << 20,
}
PAYLOAD = b"p" * 512
HANDLERS = """
import tq

@tq.handler("noop")
def noop(payload):
    return b"ok"
"""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of its own, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (the disk that fills up) needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False, timeout=30)


def fill(disk: Path, name: str = "filler") -> Path:
    """Write a file until the disk has no space left; the file."""
    filler = disk / name
    chunk = os.urandom(1 << 20)
    with filler.open("wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):  # the last, partial chunk
            while True:
                f.write(chunk[:4096])
    return filler


def broker_on(disk: Path, tmp_path: Path) -> BrokerProcess:
    # The log lives off the small disk: the broker must be able to say what happens.
    return BrokerProcess(disk / "data", settings=SETTINGS, log_file=tmp_path / "broker.log")


async def until(what: str, check: Callable[[], Awaitable[T | None]], timeout: float) -> T:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)  # polling a condition with a deadline
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class Submitter:
    """Submits continuously from a few concurrent loops, recording what was acknowledged."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.acked: list[str] = []
        self.refused: list[StorageError] = []
        self.acked_after_refusal = 0
        self._stop = asyncio.Event()

    async def loop(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(20):
                    task_id = await self.client.submit("noop", PAYLOAD)
            except StorageError as e:
                self.refused.append(e)
                await asyncio.sleep(0.01)  # a refused submit is answered at once: pace retries
                continue
            self.acked.append(task_id)
            if self.refused:
                self.acked_after_refusal += 1

    async def run(self, loops: int = 4) -> None:
        await asyncio.gather(*(self.loop() for _ in range(loops)))

    def stop(self) -> None:
        self._stop.set()


class TotalsWatch:
    """Reads the GET_STATS totals over and over, noting every one that went down (a lifetime
    total never does: not when a batch fails, nor when memory is rebuilt from the disk)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.reads = 0
        self.last: dict[str, int] = {}
        self.decreases: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            async with asyncio.timeout(20):
                totals = (await self.client.stats()).totals
            self.reads += 1
            for key, value in totals.items():
                if value < self.last.get(key, 0):
                    self.decreases.append(f"{key} {self.last[key]} -> {value}")
                self.last[key] = value
            await asyncio.sleep(0.002)  # a sampling period, not a wait for a condition

    def stop(self) -> None:
        self._stop.set()


async def readyz(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/readyz")


async def all_found(client: AsyncClient, ids: list[str]) -> list[str]:
    """The states of ``ids`` (QUERY_STATUS in pages); fails if one is unknown."""
    states: list[str] = []
    for i in range(0, len(ids), 500):
        page = ids[i : i + 500]
        for task_id, info in zip(page, await client.status_many(page), strict=True):
            assert info is not None, f"acknowledged task {task_id} is unknown to the broker"
            states.append(info.state)
    return states


def drain_with_a_worker(tmp_path: Path, broker: BrokerProcess) -> None:
    (tmp_path / "disk_handlers.py").write_text(HANDLERS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    argv = [sys.executable, "-m", "tq", "--set", f"worker.broker_url={broker.url}"]
    argv += ["worker", "disk_handlers", "--burst"]
    with (tmp_path / "worker.log").open("ab") as log:
        proc = subprocess.run(
            argv, check=False, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=120
        )
    assert proc.returncode == 0, (tmp_path / "worker.log").read_text()


def test_a_full_disk_refuses_writes_serves_reads_and_resumes_alone_losing_nothing(
    disk: Path, tmp_path: Path
) -> None:
    with broker_on(disk, tmp_path) as broker:
        assert broker.proc is not None
        rest = f"http://127.0.0.1:{broker.ports['rest_port']}"
        metrics = f"http://127.0.0.1:{broker.ports['metrics_port']}/metrics"

        async def outage() -> list[str]:
            async with (
                AsyncClient(broker.url) as client,
                httpx.AsyncClient(base_url=rest, timeout=10) as http,
            ):
                sub = Submitter(client)
                running = asyncio.create_task(sub.run())
                totals = TotalsWatch(client)
                watching = asyncio.create_task(totals.run())

                async def acked(n: int) -> bool:
                    return len(sub.acked) >= n

                await until("the first acknowledged submits", lambda: acked(100), 30)
                filler = fill(disk)

                async def refused() -> bool:
                    return bool(sub.refused)

                await until("a submit refused with STORAGE_ERROR", refused, 60)
                err = sub.refused[0]
                assert err.code is ErrorCode.STORAGE_ERROR
                assert "retry later" in err.message, err.message
                assert broker.proc is not None and broker.proc.poll() is None, broker.log_tail()
                # Whatever the failed store lets go of as it closes is taken too, so the
                # outage lasts until the test frees the disk.
                top_up = fill(disk, "filler-2")

                # Reads are served during the outage; the broker says why it is not ready.
                async def not_ready() -> str | None:
                    r = await readyz(http)
                    return r.text if r.status_code == 503 else None

                why = await until("/readyz answering 503", not_ready, 30)
                assert "disk full" in why, why
                outage_ids = list(sub.acked)
                await all_found(client, outage_ids)
                stats = await client.stats()
                assert stats.pending >= len(outage_ids) > 0
                page, _ = await client.list_tasks(state="pending", limit=10)
                assert len(page) == 10
                assert (await http.get(f"/v1/tasks/{outage_ids[0]}")).status_code == 200
                scraped = (await http.get(metrics)).text
                assert "tq_storage_writes_accepted 0.0" in scraped

                # Space comes back: writes resume with nobody's help.
                filler.unlink()
                top_up.unlink()

                async def resumed() -> bool:
                    return sub.acked_after_refusal >= 50

                await until("submits acknowledged again after the outage", resumed, 90)
                assert (await readyz(http)).status_code == 200
                sub.stop()
                totals.stop()
                async with asyncio.timeout(30):
                    await asyncio.gather(running, watching)
                assert totals.reads > 100 and not totals.decreases, totals.decreases
                # Every acknowledged submit is durable, so counted.
                assert (await client.stats()).totals["submitted"] >= len(sub.acked)
                scraped = (await http.get(metrics)).text
                assert "tq_storage_writes_accepted 1.0" in scraped
                outages = next(
                    float(line.split()[1])
                    for line in scraped.splitlines()
                    if line.startswith("tq_storage_failures_total ")
                )
                log = broker.log_tail(400)
                # Said once per outage, not per refused request.
                assert 1 <= log.count("storage.unavailable") == outages, log
                assert len(sub.refused) > 10 * outages
                assert "storage.resumed" in log, log
                return sub.acked

        acked = asyncio.run(outage())
        assert broker.proc.poll() is None

        drain_with_a_worker(tmp_path, broker)

        async def check() -> list[str]:
            async with AsyncClient(broker.url) as client:
                return await all_found(client, acked)

        states = asyncio.run(check())
        assert set(states) == {"completed"}, {s: states.count(s) for s in set(states)}
        assert len(set(acked)) == len(acked)


def test_a_broker_started_on_a_full_disk_serves_reads_says_why_and_resumes_alone(
    disk: Path, tmp_path: Path
) -> None:
    async def submit(url: str, n: int) -> list[str]:
        async with AsyncClient(url) as client:
            return [await client.submit("noop", PAYLOAD) for _ in range(n)]

    with broker_on(disk, tmp_path) as broker:
        ids = asyncio.run(submit(broker.url, 20))
    filler = fill(disk)

    with broker_on(disk, tmp_path) as broker:
        rest = f"http://127.0.0.1:{broker.ports['rest_port']}"

        async def read_only_then_resume() -> None:
            async with (
                AsyncClient(broker.url) as client,
                httpx.AsyncClient(base_url=rest, timeout=10) as http,
            ):
                assert set(await all_found(client, ids)) == {"pending"}
                assert (await client.stats()).pending == len(ids)
                not_ready = await readyz(http)
                assert not_ready.status_code == 503, not_ready.text
                assert "disk full" in not_ready.text, not_ready.text
                with pytest.raises(StorageError, match="retry later") as refused:
                    await client.submit("noop", PAYLOAD)
                assert refused.value.code is ErrorCode.STORAGE_ERROR

                filler.unlink()

                async def accepted() -> str | None:
                    with contextlib.suppress(StorageError):
                        return await client.submit("noop", PAYLOAD)
                    return None

                ids.append(await until("a submit accepted after space came back", accepted, 60))
                assert (await readyz(http)).status_code == 200
                assert set(await all_found(client, ids)) == {"pending"}

        asyncio.run(read_only_then_resume())
        log = broker.log_tail(200)
        assert "storage.unavailable reason=disk full" in log, log
        assert "storage.resumed" in log, log
