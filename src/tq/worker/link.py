"""The worker's session with its broker: registration, heartbeats, outcomes, progress, goodbye.

Everything here survives broker restarts and leader changes: registration is retried with
backoff until it succeeds (or the worker stops), and any lost call marks the link for
re-registration, since a restarted broker may have forgotten the worker; so does a move to
another node of a cluster (the client follows the leader by itself, ``tq.client.session``).
Claiming stays with the worker's loop.
Goodbyes (release, deregister) go only to a broker that answers at once (``reachable``):
one that is down would hold a stopping worker for their timeouts, while it reclaims the
tasks (their leases expire) and forgets the worker (missed heartbeats) on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Final

from tq.client import AsyncClient
from tq.errors import TqError
from tq.protocol.records import ClaimedTask
from tq.worker.heartbeat import Heartbeater
from tq.worker.orders import OrderTaker
from tq.worker.reporting import ProgressSender, Reporter
from tq.worker.retrying import Backoff, best_effort, is_fatal, sleep_unless, unless_stopped

_log = logging.getLogger(__name__)

#: Time the goodbyes (release, deregister) and the last outcomes get to reach the broker.
GOODBYE_TIMEOUT: Final = 10.0
#: Time a stopping worker gives an unconnected broker to take a new connection.
PROBE_TIMEOUT: Final = 1.0


class BrokerLink:
    """One AsyncClient and the conversations the worker keeps up over it."""

    def __init__(
        self,
        url: str | Sequence[str],
        worker_id: str,
        *,
        concurrency: int,
        pool: str,
        heartbeat_interval: float | None,
        held: Callable[[], list[bytes]],
        disown: Callable[[bytes, str], None],
        orders: OrderTaker,
        started: Callable[[], list[bytes]],
        draining: Callable[[], bool],
        api_key: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.orders = orders  # its queues are the worker's
        self._concurrency = concurrency
        self._pool = pool
        self._heartbeat_override = heartbeat_interval
        self.client = AsyncClient(
            url,
            name=f"tq-worker {worker_id}",
            reconnect=True,
            client_kind="worker",
            api_key=api_key,
            tls=tls,
        )
        self.reporter = Reporter(self.client)
        self.progress = ProgressSender(self.client, asyncio.get_running_loop())
        self.heartbeats = Heartbeater(
            self.client, worker_id, held=held, disown=disown, lost=self.lost, orders=orders,
            started=started, draining=draining,
        )  # fmt: skip
        self.client.on_worker_orders(lambda pushed: orders.take(pushed.orders))
        self._registered_on: str | None = None

    @property
    def url(self) -> str:
        """The node the worker talks to now."""
        return self.client.url

    @property
    def needs_register(self) -> bool:
        """Never registered, a call failed for want of a broker since, or the client moved to
        another node (the leader) since: register before the next claim."""
        return self._registered_on != self.client.url

    def lost(self) -> None:
        """A call failed for want of a broker: register again before the next claim."""
        self._registered_on = None

    async def register(self, stop: asyncio.Event) -> bool:
        """Register, retrying until the broker answers; False if ``stop`` is set first."""
        backoff = Backoff(cap=5.0)
        while not stop.is_set():
            done = self.orders.done
            call = self.client.register_worker(
                self.worker_id,
                name=self.worker_id,
                queues=list(self.orders.queues),
                concurrency=self._concurrency,
                hostname=socket.gethostname()[:256],
                pid=os.getpid(),
                pool=self._pool,
                acked=done,
            )
            try:
                # Dialling a broker that is down takes the call's whole deadline: a stop
                # request must not wait for it.
                reply = await unless_stopped(stop, call)
            except TqError as exc:
                if is_fatal(exc):
                    raise
                _log.warning("worker.register_failed url=%s error=%s", self.url, exc)
                await sleep_unless(stop, backoff.next())
                continue
            if reply is None:
                break
            self._registered_on = self.client.url
            self.orders.registered(done)
            if reply.orders:
                self.orders.take(reply.orders)
            # Never slower than the broker asks: it declares a worker dead after missed beats.
            self.heartbeats.interval = min(
                self._heartbeat_override or reply.heartbeat_interval, reply.heartbeat_interval
            )
            return True
        return False

    async def reachable(self) -> bool:
        """True if the connection is open, or one attempt within ``PROBE_TIMEOUT`` opens it."""
        if self.client.connected:
            return True
        try:
            await self.client.connect(PROBE_TIMEOUT, retry=False)
        except TqError:
            return False
        return True

    async def release(self, claimed: Sequence[ClaimedTask]) -> None:
        """Hand back claimed tasks that never started (their claim does not count)."""
        if not await self.reachable():
            _log.warning(
                "worker.release_skipped tasks=%d reason=broker unreachable (it runs them "
                "again once their leases expire)",
                len(claimed),
            )
            return
        await best_effort(
            lambda: self.client.release(self.worker_id, claimed), "release", GOODBYE_TIMEOUT
        )

    async def flush(self) -> None:
        """Wait for the outcomes still to report: finished work, worth a wait for a broker
        that is back within ``GOODBYE_TIMEOUT``, but not for one that cannot be reached."""
        if self.reporter.idle:
            return
        if await self.reachable():
            if await self.reporter.flush(GOODBYE_TIMEOUT):
                return
            why = "timed out"
        else:
            why = "broker unreachable"
        _log.error(
            "worker.unreported outcomes=%d reason=%s (the broker runs those tasks again once "
            "their leases expire)",
            self.reporter.pending,
            why,
        )

    async def deregister(self) -> None:
        if not await self.reachable():
            _log.info("worker.deregister_skipped reason=broker unreachable")
            return
        await best_effort(
            lambda: self.client.deregister(self.worker_id), "deregister", GOODBYE_TIMEOUT
        )

    async def close(self) -> None:
        await self.progress.close()
        await self.client.close()
