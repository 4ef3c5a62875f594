"""The process pool: handlers in spawned children, SIGKILL on timeout, replacements."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from tq.errors import ConfigError
from tq.worker.context import TaskContext
from tq.worker.process import ProcessPool
from tq.worker.registry import Handler, Registry, import_handlers

T = TypeVar("T")

HANDLERS = """
import asyncio, os, time
import tq
from tq.worker import current_task, Reject

@tq.handler("pid")
def pid(payload):
    current_task().progress(40, "working")
    return str(os.getpid()).encode()

@tq.handler("spin")
def spin(payload):
    while True:  # CPU-bound and deaf to everything but SIGKILL
        pass

@tq.handler("die")
def die(payload):
    os._exit(3)

@tq.handler("reject")
def reject(payload):
    raise Reject("nope")

@tq.handler("wait_cancel")
def wait_cancel(payload):
    ctx = current_task()
    return b"cancelled" if ctx.wait_cancelled(10) else b"not cancelled"

@tq.handler("async_double")
async def async_double(payload):
    await asyncio.sleep(0)
    return payload * 2
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    where = tmp_path_factory.mktemp("handlers")
    (where / "pp_handlers.py").write_text(HANDLERS)
    sys.path.insert(0, str(where))  # spawned children inherit the parent's sys.path
    try:
        yield Registry.from_source(import_handlers("pp_handlers"))
    finally:
        sys.path.remove(str(where))
        sys.modules.pop("pp_handlers", None)


def context(progress: list[tuple[int, str | None]] | None = None) -> TaskContext:
    sink: Callable[[int, str | None], None] = (
        (lambda p, m: progress.append((p, m))) if progress is not None else (lambda p, m: None)
    )
    return TaskContext(
        raw_id=os.urandom(16), task_type="t", queue="q", attempt=1, max_retries=3, _sink=sink
    )


def run(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(asyncio.wait_for(coro(), 60))


def handler(registry: Registry, name: str) -> Handler:
    found = registry.get(name)
    assert found is not None
    return found


async def started(registry: Registry, size: int) -> ProcessPool:
    pool = ProcessPool(size, registry.modules())
    await pool.start()
    return pool


def test_a_handler_runs_in_a_child_and_its_progress_reaches_the_parent(registry: Registry) -> None:
    progress: list[tuple[int, str | None]] = []

    async def main() -> tuple[bytes | None, bytes | None]:
        pool = await started(registry, 1)
        try:
            first = await pool.execute(handler(registry, "pid"), context(progress), b"")
            double = await pool.execute(handler(registry, "async_double"), context(), b"ab")
            return first.result, double.result
        finally:
            await pool.close()

    pid, double = run(main)
    assert pid is not None and int(pid) != os.getpid()
    assert double == b"abab"
    assert progress == [(40, "working")]


def test_a_timeout_kills_the_child_and_a_replacement_runs_the_next_task(
    registry: Registry,
) -> None:
    async def main() -> tuple[int, int, int]:
        pool = await started(registry, 1)
        try:
            before = int((await pool.execute(handler(registry, "pid"), context(), b"")).result or 0)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await pool.execute(handler(registry, "spin"), context(), b"")
            after = int((await pool.execute(handler(registry, "pid"), context(), b"")).result or 0)
            return before, after, pool.replaced
        finally:
            await pool.close()

    before, after, replaced = run(main)
    assert before != after
    assert replaced == 1
    assert not psutil.pid_exists(before) or psutil.Process(before).status() == psutil.STATUS_ZOMBIE


def test_a_child_that_dies_mid_task_fails_the_attempt_and_is_replaced(registry: Registry) -> None:
    async def main() -> tuple[bool, bool, str | None, bytes | None]:
        pool = await started(registry, 1)
        try:
            died = await pool.execute(handler(registry, "die"), context(), b"")
            again = await pool.execute(handler(registry, "pid"), context(), b"")
            return died.ok, died.retry, died.error, again.result
        finally:
            await pool.close()

    ok, retry, error, again = run(main)
    assert (ok, retry) == (False, True)
    assert error is not None and "died" in error
    assert again is not None and again.isdigit()


def test_reject_in_a_child_is_a_final_failure(registry: Registry) -> None:
    async def main() -> tuple[bool, bool, str | None]:
        pool = await started(registry, 1)
        try:
            r = await pool.execute(handler(registry, "reject"), context(), b"")
            return r.ok, r.retry, r.error
        finally:
            await pool.close()

    assert run(main) == (False, False, "nope")


def test_cooperative_cancellation_reaches_the_childs_handler(registry: Registry) -> None:
    async def main() -> bytes | None:
        pool = await started(registry, 1)
        try:
            ctx = context()
            running = asyncio.ensure_future(
                pool.execute(handler(registry, "wait_cancel"), ctx, b"")
            )
            await asyncio.sleep(0.2)
            pool.cancel(ctx)
            return (await running).result
        finally:
            await pool.close()

    assert run(main) == b"cancelled"


def test_children_run_tasks_in_parallel(registry: Registry) -> None:
    async def main() -> set[bytes | None]:
        pool = await started(registry, 2)
        try:
            ctxs = [context(), context()]
            waits = [
                asyncio.ensure_future(pool.execute(handler(registry, "wait_cancel"), c, b""))
                for c in ctxs
            ]
            await asyncio.sleep(0.2)
            for c in ctxs:
                pool.cancel(c)  # both are running at once, or one would still be queued
            return {(await w).result for w in waits}
        finally:
            await pool.close()

    assert run(main) == {b"cancelled"}


def test_close_leaves_no_child_behind(registry: Registry) -> None:
    me = psutil.Process()
    before = {c.pid for c in me.children()}

    async def main() -> set[int]:
        pool = await started(registry, 2)
        spawned = {c.pid for c in me.children()} - before
        await pool.close()
        return spawned

    spawned = run(main)
    assert len(spawned) >= 2
    alive = {c.pid for c in me.children() if c.status() != psutil.STATUS_ZOMBIE}
    assert not spawned & alive


def test_a_module_that_fails_in_the_child_is_a_config_error(tmp_path: Path) -> None:
    async def main() -> None:
        pool = ProcessPool(1, ["surely_not_a_module_here"])
        await pool.start()

    with pytest.raises(ConfigError, match="surely_not_a_module_here"):
        run(main)


def test_handlers_defined_in_main_are_refused() -> None:
    with pytest.raises(ConfigError, match="__main__"):
        ProcessPool(1, ["__main__"])
