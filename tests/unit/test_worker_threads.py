"""The abandonable thread pool behind sync handlers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tq.worker.threads import ThreadPool


def test_jobs_run_concurrently_up_to_the_pool_size() -> None:
    pool = ThreadPool(3)
    barrier = threading.Barrier(3, timeout=5)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(pool.run(barrier.wait) for _ in range(3))))

    # All three meet at the barrier, so all three ran at once; the barrier would time out else.
    assert sorted(asyncio.run(main())) == [0, 1, 2]
    pool.shutdown()


def test_an_exception_reaches_the_caller() -> None:
    pool = ThreadPool(1)

    def fail() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        asyncio.run(pool.run(fail))
    pool.shutdown()


def test_a_cancelled_job_abandons_its_thread_and_a_replacement_keeps_the_pool_size() -> None:
    pool = ThreadPool(1)
    release = threading.Event()
    stuck_in: list[str] = []

    def stuck() -> str:
        stuck_in.append(threading.current_thread().name)
        release.wait(10)
        return "late"

    async def main() -> str:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.run(stuck)
        # The only slot is held by the stuck thread, yet the next job runs at once.
        async with asyncio.timeout(5):
            return await pool.run(lambda: threading.current_thread().name)

    try:
        other = asyncio.run(main())
    finally:
        release.set()
    assert pool.abandoned == 1
    assert other != stuck_in[0]
    pool.shutdown()


def test_a_job_cancelled_before_it_started_never_runs() -> None:
    pool = ThreadPool(1)
    gate = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = asyncio.ensure_future(pool.run(lambda: gate.wait(5)))
        second = asyncio.ensure_future(pool.run(lambda: ran.append("second")))
        await asyncio.sleep(0.05)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)  # the cancel is processed
        gate.set()
        await first
        await pool.run(lambda: None)  # the pool's single thread went past the cancelled job

    asyncio.run(main())
    assert ran == []
    assert pool.abandoned == 0
    pool.shutdown()


def test_threads_are_daemons_so_a_stuck_handler_cannot_block_exit() -> None:
    pool = ThreadPool(1)
    assert asyncio.run(pool.run(lambda: threading.current_thread().daemon)) is True
    pool.shutdown()


def test_the_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        ThreadPool(0)
