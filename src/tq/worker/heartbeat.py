"""Heartbeats: liveness, CPU and memory of the worker's process tree, and the held tasks.

Each HEARTBEAT lists every task the worker holds, which extends their leases; the reply
names tasks that were cancelled or whose lease was lost, and the worker disowns those. CPU
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
        self, worker_id: str, *, cpu_percent: float, memory_rss: int, running: Sequence[bytes]
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
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._held = held
        self._disown = disown
        self._lost = lost
        self._sampler = ProcessTreeSampler()
        self.interval = 15.0

    async def run(self) -> None:
        while True:
            ok = await self.beat()
            # Leases run out one lease_duration after the last *good* beat, whatever the
            # interval: after a miss, try again within a second.
            await asyncio.sleep(self.interval if ok else min(1.0, self.interval))

    async def beat(self) -> bool:
        # Measured ~1 ms (children() scans /proc): worth a thread hop off the event loop.
        cpu, rss = await asyncio.to_thread(self._sampler.sample)
        try:
            reply = await self._client.heartbeat(
                self._worker_id, cpu_percent=cpu, memory_rss=rss, running=self._held()
            )
        except TqError as exc:
            _log.warning("heartbeat.failed error=%s", exc)
            if not is_fatal(exc):
                self._lost()
            return False
        for task_id in reply.cancelled:
            self._disown(task_id, "cancelled")
        for task_id in reply.unknown:
            self._disown(task_id, "lease lost")
        return True
