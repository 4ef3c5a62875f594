"""Heartbeats: liveness, CPU and memory of the worker's process tree, and the held tasks.

Each HEARTBEAT lists every task the worker holds, which extends their leases, and which of them
it started; the reply names tasks that were cancelled or whose lease was lost, and the worker
disowns those, and repeats the worker's orders not acknowledged yet (``tq.worker.orders``). CPU
percent is measured between two samples, so ``psutil.Process`` objects are kept from one
sample to the next (the first reading of a process is always 0).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import psutil

from tq.errors import TqError
from tq.protocol.messages import HeartbeatReply
from tq.worker.orders import OrderTaker
from tq.worker.retrying import is_fatal

_log = logging.getLogger(__name__)


class ProcessTreeSampler:
    """``sample()`` -> (cpu percent summed over the tree, RSS bytes summed over the tree)."""

    def __init__(self, pid: int | None = None) -> None:
        self._root = psutil.Process(pid)
        self._known: dict[int, psutil.Process] = {self._root.pid: self._root}
        self._root.cpu_percent(None)  # prime: the first reading of a process is always 0

    def sample(self) -> tuple[float, int]:
        try:
            tree = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            tree = [self._root]
        cpu = 0.0
        rss = 0
        known: dict[int, psutil.Process] = {}
        for listed in tree:
            # Reuse the object sampled before: cpu_percent() measures since *its* last call.
            proc = self._known.get(listed.pid, listed)
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading: it no longer counts
                continue
            known[proc.pid] = proc
        self._known = known
        return cpu, rss


class _HeartbeatClient(Protocol):
    async def heartbeat(
        self,
        worker_id: str,
        *,
        cpu_percent: float,
        memory_rss: int,
        running: Sequence[bytes],
        started: Sequence[bytes],
        draining: bool,
        acked: int,
    ) -> HeartbeatReply: ...


class Heartbeater:
    """Beats every ``interval`` seconds until cancelled; a missed beat is retried sooner."""

    def __init__(
        self,
        client: _HeartbeatClient,
        worker_id: str,
        *,
        held: Callable[[], list[bytes]],
        disown: Callable[[bytes, str], None],
        lost: Callable[[], None],
        orders: OrderTaker | None = None,
        started: Callable[[], list[bytes]] = list,
        draining: Callable[[], bool] = bool,
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._held = held
        self._disown = disown
        self._lost = lost
        self._orders = orders
        self._started = started
        self._draining = draining
        self._sampler = ProcessTreeSampler()
        self._soon = asyncio.Event()
        self.interval = 15.0

    def soon(self) -> None:
        """Beat now rather than at the next interval: something the broker shows changed
        (the worker drains, or carried out an order)."""
        self._soon.set()

    async def run(self) -> None:
        while True:
            ok = await self.beat()
            # Leases run out one lease_duration after the last *good* beat, whatever the
            # interval: after a miss, try again within a second.
            try:
                async with asyncio.timeout(self.interval if ok else min(1.0, self.interval)):
                    await self._soon.wait()
            except TimeoutError:
                pass
            self._soon.clear()

    async def beat(self) -> bool:
        # Measured ~1 ms (children() scans /proc): worth a thread hop off the event loop.
        cpu, rss = await asyncio.to_thread(self._sampler.sample)
        orders = self._orders
        try:
            reply = await self._client.heartbeat(
                self._worker_id, cpu_percent=cpu, memory_rss=rss, running=self._held(),
                started=self._started(), draining=self._draining(),
                acked=0 if orders is None else orders.acked,
            )  # fmt: skip
        except TqError as exc:
            _log.warning("heartbeat.failed error=%s", exc)
            if not is_fatal(exc):
                self._lost()
            return False
        for task_id in reply.cancelled:
            self._disown(task_id, "cancelled")
        for task_id in reply.unknown:
            self._disown(task_id, "lease lost")
        if orders is not None and reply.orders:
            orders.take(reply.orders)
        return True
