"""The Worker: claims tasks, runs them in a pool, reports outcomes, heartbeats, drains.

Theory of operation. The worker holds at most ``concurrency + prefetch`` tasks: ``running``
(in the pool) and ``waiting`` (claimed, leased, not started). The claim loop asks for as many
as are free, in one CLAIM_TASK that long-polls (``CLAIM_WAIT`` seconds), so an idle worker
costs one request per wait and a busy one claims exactly when a slot frees up: it never
polls in a loop. Each claimed task becomes one asyncio task (in the worker's task group)
that runs it under its timeout and hands the outcome to the ``Reporter`` (batched).
Heartbeats list every held task (which extends their leases) and bring back tasks that were
cancelled or whose lease was lost: those are cancelled cooperatively and their outcomes are
never reported.

Shutdown (``request_stop``): stop claiming, release the waiting tasks (no attempt counted),
let running ones finish within ``shutdown_timeout`` (then interrupt them, reported as failed
attempts), flush outcomes, deregister. A call still dialling a broker that is down is dropped
at once, and the goodbyes go only to a broker that answers (``BrokerLink.reachable``), so a
worker whose broker is gone stops in about a second. ``burst``: stop once a claim finds
nothing and nothing runs. Every broker call survives restarts: transient errors are retried
with backoff. ``url`` may name the nodes of a cluster (a list, or comma-separated): the
worker follows the leader, registers with it, and keeps running what it holds; outcomes and
heartbeats of those tasks go to the new leader, which refuses a stale lease as any broker.
The broker's orders (``tq.worker.orders``): a shutdown is ``request_stop``; a change of queues
is registered before the next claim.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from tq.client import AsyncClient, TlsConfig
from tq.client.periodic import declare
from tq.core.ids import format_task_id
from tq.errors import ConfigError, TqError
from tq.protocol.records import ClaimedTask
from tq.worker.context import TaskContext
from tq.worker.link import GOODBYE_TIMEOUT, BrokerLink
from tq.worker.orders import OrderTaker
from tq.worker.outcomes import Result, interrupted, missing_handler, timed_out, to_outcome
from tq.worker.pools import make_pool
from tq.worker.registry import Handler, HandlerSource, Registry
from tq.worker.retrying import Backoff, is_fatal, sleep_unless, wait_any

_log = logging.getLogger(__name__)

PoolName = Literal["asyncio", "thread", "process"]
#: Long-poll of one claim: short enough that shutdown waits little for an in-flight claim
#: (its tasks must be received to be released), long enough that idling costs ~nothing.
CLAIM_WAIT: Final = 2.0
MAX_CLAIM: Final = 1000


@dataclass(eq=False)
class _Running:
    claimed: ClaimedTask
    handler: Handler
    ctx: TaskContext
    task: asyncio.Task[None] | None = None
    disowned: str = ""  # why the broker no longer wants its outcome ("" while it does)
    started: float = 0.0  # loop time


class Worker:
    """Runs the handlers of ``handlers`` (a module or an iterable) for tasks of ``queues``."""

    def __init__(
        self,
        handlers: HandlerSource,
        *,
        url: str | Sequence[str],
        queues: Sequence[str] = ("default",),
        concurrency: int = 4,
        pool: PoolName = "asyncio",
        prefetch: int | None = None,
        heartbeat_interval: float | None = None,
        shutdown_timeout: float = 60.0,
        burst: bool = False,
        name: str | None = None,
        default_timeout: float | None = None,
        api_key: str | None = None,
        tls: TlsConfig | ssl.SSLContext | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"worker concurrency must be >= 1, got {concurrency}")
        if not queues:
            raise ConfigError("a worker needs at least one queue")
        self.registry = Registry.from_source(handlers)
        if not len(self.registry):
            raise ConfigError(f"no tq handlers found in {getattr(handlers, '__name__', handlers)}")
        self.url = url
        self._api_key = api_key  # with the work permission (docs/security.md)
        # Built now, so a TLS file that does not load stops the worker before it starts.
        self.tls = tls.context() if isinstance(tls, TlsConfig) else tls
        self.concurrency = concurrency
        self.prefetch = concurrency if prefetch is None else max(0, prefetch)
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.default_timeout = default_timeout
        self.worker_id = name or f"{socket.gethostname()}-{os.getpid()}"
        self._orders = OrderTaker(
            self.worker_id, queues, shutdown=self.request_stop, changed=self._queues_changed
        )
        #: Changed in place by the broker's orders (``tq.worker.orders``).
        self.queues = self._orders.queues
        self._heartbeat_interval = heartbeat_interval
        self._pool = make_pool(str(pool), concurrency, self.registry.modules())
        self._running: dict[bytes, _Running] = {}
        self._waiting: deque[ClaimedTask] = deque()
        self._stop_requested = False
        self._queues_changed_since = False  # an order changed them: register before waiting
        self._stopping = False
        self._forced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_task: asyncio.Task[None] | None = None
        # Made in run(), on the loop they belong to.
        self._stop: asyncio.Event
        self._slot: asyncio.Event
        self._link: BrokerLink
        self._tg: asyncio.TaskGroup
        self.completed = 0
        self.failed = 0

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop; safe from a signal handler or another thread (SIGTERM, and the
        broker's shutdown order, come here)."""
        self._stop_requested = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopped)

    def _stopped(self) -> None:
        self._stop.set()
        if hasattr(self, "_link"):
            self._link.heartbeats.soon()  # the broker shows it drains from now on

    def _queues_changed(self) -> None:
        """An order changed ``queues``: register them before the next claim (the claim loop
        wakes for it), which also acknowledges the order."""
        self._link.lost()
        self._queues_changed_since = True
        self._slot.set()

    def force_stop(self) -> None:
        """Second signal: kill pool children, cancel everything, report nothing."""
        _log.warning("worker.forced id=%s running=%d", self.worker_id, len(self._running))
        self._forced = True
        self._pool.kill()
        if self._loop is not None and self._run_task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._run_task.cancel)

    async def run(self) -> None:
        # The events exist before _loop is published: request_stop() may come from a thread.
        self._stop = asyncio.Event()
        self._slot = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._run_task = asyncio.current_task()
        if self._stop_requested:
            self._stop.set()
        self._link = link = BrokerLink(
            self.url,
            self.worker_id,
            concurrency=self.concurrency,
            pool=self._pool.kind,
            heartbeat_interval=self._heartbeat_interval,
            held=lambda: [*self._running, *(t.id for t in self._waiting)],
            disown=self._disown,
            orders=self._orders,
            started=lambda: list(self._running),
            draining=self._stop.is_set,
            api_key=self._api_key,
            tls=self.tls,
        )
        try:
            await self._pool.start()
            if await link.register(self._stop):
                await self._declare_schedules(link.client)
                _log.info(
                    "worker.started id=%s queues=%s pool=%s concurrency=%d handlers=%s",
                    self.worker_id,
                    ",".join(self.queues),
                    self._pool.kind,
                    self.concurrency,
                    ",".join(self.registry.names()),
                )
                try:
                    async with asyncio.TaskGroup() as tg:
                        self._tg = tg
                        beats = tg.create_task(link.heartbeats.run())
                        reports = tg.create_task(link.reporter.run())
                        try:
                            await self._claim_loop()
                        except BaseException:
                            # Fatal error or forced stop: no new task may start while the
                            # task group unwinds (it refuses new tasks then).
                            self._stop.set()
                            raise
                        await self._drain()
                        beats.cancel()
                        reports.cancel()
                except BaseExceptionGroup as group:
                    # A fatal broker answer (a revoked key, a missing permission) is the
                    # worker's exit reason, told in one line by the caller, not a group.
                    fatal = _tq_error(group)
                    if fatal is None:
                        raise
                    raise fatal from None
                await link.deregister()
            _log.info(
                "worker.stopped id=%s completed=%d failed=%d",
                self.worker_id,
                self.completed,
                self.failed,
            )
        finally:
            await self._pool.close()
            await link.close()

    async def _declare_schedules(self, client: AsyncClient) -> None:
        """Declare the ``@tq.periodic`` schedules of the tasks served (replacing schedules of
        the same names: an unchanged one keeps its next firing time). A refusal (a bad cron
        expression, a key without the submit permission) stops the worker, naming it."""
        sources = [h.source for h in self.registry]
        backoff = Backoff(cap=5.0)
        while not self._stop.is_set():
            try:
                declared = await declare(client, sources)
            except TqError as exc:
                if is_fatal(exc):
                    raise
                _log.warning("schedule.declare_failed error=%s", exc)
                await sleep_unless(self._stop, backoff.next())
                continue
            for s in declared:
                _log.info("schedule.declared name=%s task=%s", s.name, s.task_type)
            return

    # -- claiming and running -------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            free = self.concurrency + self.prefetch - len(self._running) - len(self._waiting)
            if free <= 0 and not self._queues_changed_since:
                self._slot.clear()
                await wait_any(self._slot, self._stop)
                continue
            # A change of queues is registered at once, even while every slot is taken.
            self._queues_changed_since = False
            if self._link.needs_register and not await self._link.register(self._stop):
                return
            if free <= 0:
                continue
            asked = asyncio.get_running_loop().time()
            try:
                tasks = await self._claim(min(free, MAX_CLAIM))
            except TqError as exc:
                if is_fatal(exc):
                    raise
                self._link.lost()
                delay = backoff.next()
                _log.warning("claim.failed retry_in=%.2fs error=%s", delay, exc)
                await sleep_unless(self._stop, delay)
                continue
            backoff.reset()
            if tasks:
                self._accept(tasks)
            elif self.burst:
                if not self._running and not self._waiting:
                    _log.info("worker.burst_done id=%s", self.worker_id)
                    return
                self._slot.clear()
                await wait_any(self._slot, self._stop)
            else:
                # A broker that long-polls less than CLAIM_WAIT (WELCOME max_wait_ms, maybe 0)
                # answers an empty claim early: wait out the rest instead of spinning on it.
                rest = CLAIM_WAIT - (asyncio.get_running_loop().time() - asked)
                if rest > 0:
                    await sleep_unless(self._stop, rest)

    async def _claim(self, max_tasks: int) -> list[ClaimedTask]:
        """One claim. A stop request abandons it while no connection is open (it is dialling
        a broker that is down: nothing was sent); a claim sent on an open connection is
        waited for, since the tasks it brings must be received to be released."""
        claim = asyncio.ensure_future(
            self._link.client.claim(
                self.worker_id,
                self.queues,
                max_tasks=max_tasks,
                # Burst never long-polls: "nothing claimable now" is its exit condition.
                wait=0.0 if self.burst else CLAIM_WAIT,
            )
        )
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((claim, stopped), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            claim.cancel()
            raise
        finally:
            stopped.cancel()
        if not claim.done() and not self._link.client.connected:
            claim.cancel()
            await asyncio.wait((claim,))
            if claim.cancelled():
                return []
        return await claim

    def _accept(self, tasks: list[ClaimedTask]) -> None:
        for claimed in tasks:
            if self.registry.get(claimed.task_type) is None:
                self._finish(claimed, missing_handler(claimed.task_type, self.registry.names()))
            else:
                self._waiting.append(claimed)
        self._dispatch()

    def _dispatch(self) -> None:
        # Once stopping, waiting tasks stay unstarted: they are released, not run.
        while self._waiting and len(self._running) < self.concurrency and not self._stop.is_set():
            claimed = self._waiting.popleft()
            handler = self.registry.get(claimed.task_type)
            assert handler is not None  # checked in _accept
            ctx = TaskContext(
                raw_id=claimed.id,
                task_type=claimed.task_type,
                queue=claimed.queue,
                attempt=claimed.attempts,
                max_retries=claimed.max_retries,
                _sink=self._link.progress.sink_for(claimed),
            )
            run = _Running(claimed, handler, ctx, started=asyncio.get_running_loop().time())
            self._running[claimed.id] = run
            run.task = self._tg.create_task(self._execute(run))

    async def _execute(self, run: _Running) -> None:
        claimed, handler = run.claimed, run.handler
        timeout = claimed.timeout or handler.timeout or self.default_timeout
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("task.started id=%s type=%s", format_task_id(claimed.id), claimed.task_type)
        result: Result
        try:
            if timeout is None:  # no timeout context to build and tear down per task
                result = await self._pool.execute(handler, run.ctx, claimed.payload)
            else:
                async with asyncio.timeout(timeout):
                    result = await self._pool.execute(handler, run.ctx, claimed.payload)
        except TimeoutError:  # only ours: pools turn a handler's own TimeoutError into a Result
            run.ctx.cancel()  # an abandoned thread that polls the flag can stop early
            result = timed_out(timeout or 0.0)
        except asyncio.CancelledError:
            run.ctx.cancel()
            if self._forced or not (run.disowned or self._stopping):
                raise
            result = interrupted(run.disowned or "interrupted: worker shutdown timeout passed")
        except Exception as exc:  # noqa: BLE001 - a bug of ours must not end the worker
            _log.exception("task.crashed id=%s", format_task_id(claimed.id))
            result = interrupted(f"worker error: {type(exc).__name__}: {exc}")
        finally:
            del self._running[claimed.id]
            self._slot.set()
            self._dispatch()
        if run.disowned:
            _log.info("task.disowned id=%s reason=%s", format_task_id(claimed.id), run.disowned)
            self._link.progress.forget(claimed.id)
            return
        self._finish(claimed, result, asyncio.get_running_loop().time() - run.started)

    def _finish(self, claimed: ClaimedTask, result: Result, elapsed: float = 0.0) -> None:
        if result.ok:
            self.completed += 1
            if _log.isEnabledFor(logging.INFO):  # formatting the id costs more than the no-op
                _log.info(
                    "task.completed id=%s type=%s elapsed=%.3fs",
                    format_task_id(claimed.id), claimed.task_type, elapsed,
                )  # fmt: skip
        else:
            self.failed += 1
            _log.warning(
                "task.failed id=%s type=%s attempt=%d retry=%s error_type=%s error=%s",
                format_task_id(claimed.id),
                claimed.task_type,
                claimed.attempts,
                result.retry,
                result.error_type,
                result.error,
            )
        self._link.progress.forget(claimed.id)
        self._link.reporter.put(to_outcome(claimed, result))

    # -- cancellation ---------------------------------------------------------------------

    def _disown(self, task_id: bytes, why: str) -> None:
        """The broker no longer wants this task's outcome: stop it as far as the pool can."""
        for claimed in self._waiting:
            if claimed.id == task_id:
                self._waiting.remove(claimed)
                _log.info("task.disowned id=%s reason=%s", format_task_id(task_id), why)
                return
        run = self._running.get(task_id)
        if run is None or run.disowned:
            return
        run.disowned = why
        self._pool.cancel(run.ctx)
        if self._pool.interrupts and run.handler.is_async and run.task is not None:
            run.task.cancel()

    # -- shutdown -------------------------------------------------------------------------

    async def _drain(self) -> None:
        self._stopping = True
        _log.info(
            "worker.stopping id=%s running=%d releasing=%d",
            self.worker_id,
            len(self._running),
            len(self._waiting),
        )
        if self._waiting:
            unstarted = list(self._waiting)
            self._waiting.clear()
            await self._link.release(unstarted)
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            if late:
                _log.warning(
                    "worker.interrupting tasks=%d after=%.0fs", len(late), self.shutdown_timeout
                )
                await self._pool.close()  # kills busy children: their tasks end interrupted
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=GOODBYE_TIMEOUT)
        await self._link.flush()


def _tq_error(group: BaseExceptionGroup[BaseException]) -> TqError | None:
    """The first TqError in ``group`` (nested groups included), if any."""
    for exc in group.exceptions:
        if isinstance(exc, TqError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _tq_error(exc)) is not None:
            return inner
    return None
