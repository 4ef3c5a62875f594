"""Executors: where a handler runs. ``asyncio`` and ``thread`` here, ``process`` in process.py.

Every pool turns one execution into a ``Result`` and never raises for a handler's fault; the
only exception out of ``execute`` is ``CancelledError``, which the worker uses for timeouts,
cooperative cancellation and forced shutdown. What a cancel can do depends on the pool:

- ``asyncio``: async handlers run as the worker's own asyncio task, so a cancel interrupts
  them at their next ``await``. Sync handlers run in a thread so they never block the loop.
- ``thread``: sync handlers in a pool of ``concurrency`` threads. A thread cannot be
  interrupted: on timeout the task is reported failed and the thread is *abandoned* (it runs
  to completion, its result is dropped, a replacement thread takes its slot). Its context
  is marked cancelled, so handlers that may overrun should poll ``current_task().cancelled``.
  Async handlers run on the loop, as in the asyncio pool.
"""

from __future__ import annotations

from typing import Protocol

from tq.errors import ConfigError
from tq.worker.context import TaskContext, activated
from tq.worker.outcomes import Result, from_exception, succeeded
from tq.worker.registry import Handler
from tq.worker.threads import ThreadPool


class Pool(Protocol):
    """What the worker needs from an executor."""

    #: The pool's name in REGISTER_WORKER (the protocol's spelling).
    kind: str
    #: Whether async handlers run on the worker's loop, so that cooperative cancellation can
    #: also cancel them (sync handlers only ever get the flag: interrupting their thread
    #: would abandon it, which costs more than letting it see the flag).
    interrupts: bool

    async def start(self) -> None: ...

    async def execute(self, handler: Handler, ctx: TaskContext, payload: bytes) -> Result: ...

    def cancel(self, ctx: TaskContext) -> None:
        """Cooperative cancellation: the flag is set; tell the handler if it runs elsewhere."""

    async def close(self) -> None: ...

    def kill(self) -> None:
        """Forced exit: stop whatever can be stopped, synchronously."""


async def run_async(handler: Handler, ctx: TaskContext, payload: bytes) -> Result:
    with activated(ctx):
        try:
            value = await handler.call_async(payload)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a handler's fault: its outcome
            return from_exception(exc)
    return succeeded(value)


def run_sync(handler: Handler, ctx: TaskContext, payload: bytes) -> Result:
    with activated(ctx):
        try:
            value = handler.call_sync(payload)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a handler's fault: its outcome
            return from_exception(exc)
    return succeeded(value)


class AsyncioPool:
    """Async handlers on the event loop; sync ones on threads so the loop stays responsive."""

    kind = "asyncio"
    interrupts = True

    def __init__(self, concurrency: int) -> None:
        self._threads = ThreadPool(concurrency, name="tq-sync")

    async def start(self) -> None:
        return None

    async def execute(self, handler: Handler, ctx: TaskContext, payload: bytes) -> Result:
        if handler.is_async:
            return await run_async(handler, ctx, payload)
        return await self._threads.run(lambda: run_sync(handler, ctx, payload))

    def cancel(self, ctx: TaskContext) -> None:
        ctx.cancel()

    async def close(self) -> None:
        self._threads.shutdown()

    def kill(self) -> None:
        self._threads.shutdown()


class ThreadedPool(AsyncioPool):
    """Every sync handler on one of ``concurrency`` threads (async ones on the loop)."""

    kind = "threads"

    def __init__(self, concurrency: int) -> None:
        self._threads = ThreadPool(concurrency, name="tq-thread")


def make_pool(kind: str, concurrency: int, modules: list[str]) -> Pool:
    """The pool named by the ``worker.pool`` setting; ``modules`` hold the handlers."""
    if kind == "asyncio":
        return AsyncioPool(concurrency)
    if kind == "thread":
        return ThreadedPool(concurrency)
    if kind == "process":
        from tq.worker.process import ProcessPool  # noqa: PLC0415 - it imports this module's peers

        return ProcessPool(concurrency, modules)
    raise ConfigError(f"unknown worker pool {kind!r}: expected asyncio, thread or process")
