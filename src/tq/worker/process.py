"""The process pool: ``concurrency`` child processes for CPU-bound work and hard timeouts.

Children are started with the *spawn* context (no inherited locks or threads from the
parent) and import the handler modules by name. Parent and child talk over a
``multiprocessing`` Pipe with ``send_bytes``/``recv_bytes`` of msgspec-encoded messages
(``childproc.py``): task data is never pickled. The parent reads each pipe from the event
loop (``add_reader``), so a waiting task costs no thread.

A child runs one task at a time. When the worker cancels an execution (timeout, forced
shutdown) the child is killed with SIGKILL (the only way to stop arbitrary Python code) and
a replacement is spawned in the background; a child that dies on its own is replaced too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from tq.errors import ConfigError
from tq.worker import childproc as cp
from tq.worker.context import TaskContext
from tq.worker.outcomes import Result, interrupted
from tq.worker.registry import Handler

_log = logging.getLogger(__name__)

#: Time a child gets to import the handler modules and say it is ready.
START_TIMEOUT = 60.0
#: Time children get to exit after being told to stop, before SIGKILL.
STOP_TIMEOUT = 5.0


class _ChildDiedError(Exception):
    pass


@dataclass(eq=False)
class _Child:
    proc: BaseProcess
    conn: Connection
    ready: asyncio.Future[None]
    busy: asyncio.Future[Result] | None = None
    ctx: TaskContext | None = None
    retired: bool = False
    pid: int = field(default=0)


class ProcessPool:
    """``size`` children; ``execute`` hands a task to an idle one and awaits its result."""

    kind = "processes"
    interrupts = False

    def __init__(self, size: int, modules: list[str]) -> None:
        bad = [m for m in modules if m in {"", "__main__", "__mp_main__"}]
        if bad:
            raise ConfigError(
                "the process pool imports handlers by module name, but some are defined in"
                " the __main__ script: move them to an importable module"
            )
        self.size = size
        self._modules = modules
        self._mp = multiprocessing.get_context("spawn")
        self._children: set[_Child] = set()
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.replaced = 0

    async def start(self) -> None:
        children = [self._spawn() for _ in range(self.size)]
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await asyncio.gather(*(c.ready for c in children))
        except TimeoutError:
            self.kill()
            raise ConfigError(
                f"process pool children not ready within {START_TIMEOUT:g}s"
            ) from None
        except ConfigError:
            self.kill()
            raise
        for child in children:
            self._idle.put_nowait(child)

    def _spawn(self) -> _Child:
        loop = asyncio.get_running_loop()
        parent_end, child_end = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(
            target=cp.child_main, args=(child_end, self._modules), name="tq-child"
        )
        proc.start()
        child_end.close()  # the child holds its own copy; ours would hide the child's EOF
        child = _Child(proc, parent_end, loop.create_future(), pid=proc.pid or 0)
        self._children.add(child)
        loop.add_reader(parent_end.fileno(), self._on_readable, child)
        _log.debug("process.started pid=%d", child.pid)
        return child

    async def execute(self, handler: Handler, ctx: TaskContext, payload: bytes) -> Result:
        while True:
            child = await self._idle.get()
            if not child.retired:
                break
        child.busy = asyncio.get_running_loop().create_future()
        child.ctx = ctx
        job = cp.Job(
            id=ctx.raw_id,
            task_type=handler.name,
            queue=ctx.queue,
            attempt=ctx.attempt,
            max_retries=ctx.max_retries,
            payload=payload,
        )
        try:
            child.conn.send_bytes(cp.encode(job))
            result = await child.busy
        except asyncio.CancelledError:
            self._retire(child, "cancelled")
            raise
        except (_ChildDiedError, OSError) as exc:
            self._retire(child, "died")
            return interrupted(f"worker process {child.pid} died while running the task: {exc}")
        child.busy = None
        child.ctx = None
        self._idle.put_nowait(child)
        return result

    def cancel(self, ctx: TaskContext) -> None:
        ctx.cancel()
        for child in self._children:
            if child.ctx is ctx and not child.retired:
                with contextlib.suppress(OSError):
                    child.conn.send_bytes(cp.encode(cp.Cancel(id=ctx.raw_id)))

    def _on_readable(self, child: _Child) -> None:
        try:
            msg = cp.decode_to_parent(child.conn.recv_bytes())
        except (EOFError, OSError):
            self._lost(child)
            return
        if isinstance(msg, cp.Done):
            if child.busy is not None and not child.busy.done():
                child.busy.set_result(msg.result)
        elif isinstance(msg, cp.Progress):
            if child.ctx is not None and child.ctx.raw_id == msg.id:
                child.ctx.progress(msg.percent, msg.message)
        elif isinstance(msg, cp.Ready):
            if not child.ready.done():
                child.ready.set_result(None)
        elif not child.ready.done():  # Fatal: the modules failed to import
            child.ready.set_exception(ConfigError(msg.error))

    def _lost(self, child: _Child) -> None:
        # At EOF the pipe stays readable: stop watching it or the loop spins on it.
        asyncio.get_running_loop().remove_reader(child.conn.fileno())
        code = child.proc.exitcode
        reason = f"exit code {code}" if code is not None else "pipe closed"
        if not child.ready.done():
            child.ready.set_exception(ConfigError(f"process pool child exited at start ({reason})"))
        if child.busy is not None and not child.busy.done():
            child.busy.set_exception(_ChildDiedError(reason))
        elif not self._closing:
            _log.warning("process.died pid=%d %s", child.pid, reason)
            self._retire(child, "died")

    def _retire(self, child: _Child, why: str) -> None:
        """Kill ``child`` (idempotent) and, unless closing, start its replacement."""
        if child.retired:
            return
        child.retired = True
        self._children.discard(child)
        if child.busy is not None and not child.busy.done():
            child.busy.set_exception(_ChildDiedError(f"worker process {why}"))
        asyncio.get_running_loop().remove_reader(child.conn.fileno())
        child.proc.kill()  # SIGKILL: arbitrary handler code cannot be interrupted otherwise
        if not self._closing:
            _log.info("process.replaced pid=%d reason=%s", child.pid, why)
            self.replaced += 1
            task = asyncio.create_task(self._replace(child))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replace(self, old: _Child) -> None:
        await asyncio.to_thread(old.proc.join, STOP_TIMEOUT)  # reap the zombie
        old.conn.close()
        delay = 0.5
        while not self._closing:
            child = self._spawn()
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await child.ready
            except (TimeoutError, ConfigError) as exc:
                _log.error("process.start_failed error=%s", exc)
                self._retire(child, "failed to start")
                await asyncio.sleep(delay)  # backoff: a broken import would otherwise spin
                delay = min(delay * 2, 30.0)
                continue
            self._idle.put_nowait(child)
            return

    async def close(self) -> None:
        """Stop every child: busy ones at once (their tasks end as interrupted), idle ones by
        asking them to exit, with SIGKILL for any still alive after a grace period."""
        self._closing = True
        for task in list(self._background):
            task.cancel()
        children = list(self._children)
        for child in children:
            if child.busy is not None and not child.busy.done():
                child.proc.kill()
            else:
                with contextlib.suppress(OSError):
                    child.conn.send_bytes(cp.encode(cp.Stop()))
        await asyncio.gather(
            *(asyncio.to_thread(c.proc.join, STOP_TIMEOUT) for c in children),
            return_exceptions=True,
        )
        for child in children:
            self._retire(child, "closed")
            child.conn.close()

    def kill(self) -> None:
        self._closing = True
        for child in list(self._children):
            child.proc.kill()
