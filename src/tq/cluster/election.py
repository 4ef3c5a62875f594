"""Leader election through etcd: a node campaigns for ``/tq/<cluster>/leader`` with a lease
(kept alive every TTL/4); the key's create_revision is the leader's epoch. A leader learns
promptly that it lost (the keepalive fails past the TTL, or the key is gone or replaced)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tq.cluster.etcd import Etcd
from tq.errors import TqError, UnavailableError, ValidationError

log = logging.getLogger(__name__)


def leader_key(cluster: str) -> bytes:
    if not cluster or "/" in cluster:
        raise ValidationError(f"cluster name {cluster!r}: must be non-empty, without '/'")
    return f"/tq/{cluster}/leader".encode()


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads: its node id, the address clients reach it at, and its epoch."""

    node_id: str
    address: str
    epoch: int


def _value(node_id: str, address: str) -> bytes:
    return json.dumps({"node_id": node_id, "address": address}).encode()


def parse_leader(value: bytes, epoch: int) -> Leader:
    """The leader a leader key's value names (``epoch``: the key's create_revision)."""
    try:
        fields = json.loads(value)
        return Leader(str(fields["node_id"]), str(fields["address"]), epoch)
    except (ValueError, KeyError, TypeError):
        return Leader("?", "?", epoch)  # written by something else than tq: still the holder


class Election:
    """One node's candidacy. ``campaign()`` returns once it leads (its epoch);
    ``lost`` is set (and ``on_lost`` called once) when it no longer does."""

    def __init__(
        self,
        etcd: Etcd,
        cluster: str,
        node_id: str,
        address: str,
        *,
        ttl_s: int = 5,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if not 2 <= ttl_s <= 60:
            raise ValidationError(f"leader lease TTL {ttl_s!r}: must be 2..60 whole seconds")
        self.etcd = etcd
        self.key = leader_key(cluster)
        self.node_id = node_id
        self.address = address
        self.ttl_s = ttl_s
        self.on_lost = on_lost
        self.epoch: int | None = None
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._lease: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None and not self.lost.is_set()

    async def observe(self) -> Leader | None:
        """The current leader as etcd holds it, or None between leaders."""
        entry = await self.etcd.get(self.key)
        return None if entry is None else parse_leader(entry.value, entry.create_revision)

    async def campaign(self, timeout_s: float | None = None) -> int:
        """Lead, waiting while another node does; the epoch. UnavailableError at the deadline,
        or when no etcd member answers (the caller decides whether to try again)."""
        assert self.epoch is None, "campaign() once per Election"
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ops = self.etcd.ops
        while True:
            lease = await self.etcd.grant_lease(self.ttl_s)
            try:
                won = await self.etcd.txn(
                    [ops.create(self.key) == 0],
                    [ops.put(self.key, _value(self.node_id, self.address), lease=lease)],
                    [],
                )
                held = await self.etcd.get(self.key)
            except UnavailableError:
                # Unknown whether the key is ours: revoking the lease deletes it if it is.
                with contextlib.suppress(UnavailableError):
                    await self.etcd.revoke_lease(lease)
                raise
            if won and held is not None and held.lease == lease:
                self._lease, self.epoch = lease, held.create_revision
                self.lost.clear()
                self._tasks = [
                    asyncio.create_task(self._keepalive(), name=f"tq-lease-{self.node_id}"),
                    asyncio.create_task(self._watch_key(), name=f"tq-leader-{self.node_id}"),
                ]
                log.info("cluster.leader node=%s epoch=%d", self.node_id, self.epoch)
                return self.epoch
            await self.etcd.revoke_lease(lease)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise UnavailableError(f"node {self.node_id}: not leader within {timeout_s}s")
            await self._wait_vacant(left)

    async def _wait_vacant(self, left: float | None) -> None:
        """Until the leader key is deleted (its holder resigned or its lease expired), the
        deadline, or a TTL (then the caller tries again: a missed event costs one TTL)."""
        entry = await self.etcd.get(self.key)
        if entry is None:
            return
        bound = self.ttl_s if left is None else min(self.ttl_s, left)
        watch = await self.etcd.watch(self.key, self.key + b"\0", entry.mod_revision + 1)

        async def deleted() -> None:
            async for event in watch:
                if event.kind == "DELETE":
                    return

        try:
            # Any failure (deadline, a broken watch) only means: try to win again.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(deleted(), bound)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), 1.0)

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        level = logging.INFO if reason == "resigned" else logging.WARNING
        log.log(
            level,
            "cluster.leader_lost node=%s epoch=%s reason=%s",
            self.node_id,
            self.epoch,
            reason,
        )
        if self.on_lost is not None:
            self.on_lost(reason)

    async def _keepalive(self) -> None:
        """Refresh every TTL/4; lost when etcd says the lease expired, or when no refresh
        succeeded for a TTL (etcd may have expired it: assume the worst)."""
        assert self._lease is not None
        last_ok = time.monotonic()
        while not self.lost.is_set():
            sent = time.monotonic()
            try:
                ttl = await asyncio.wait_for(self.etcd.refresh_lease(self._lease), self.ttl_s / 4)
            except (TimeoutError, TqError) as exc:  # etcd unreachable or refusing
                if time.monotonic() - last_ok >= self.ttl_s:
                    self._lose(f"lease not refreshed for {self.ttl_s}s ({exc})")
                    return
            else:
                if ttl <= 0:
                    self._lose("lease expired")
                    return
                last_ok = sent
            await asyncio.sleep(max(0.0, sent + self.ttl_s / 4 - time.monotonic()))

    async def _watch_key(self) -> None:
        """Lost as soon as the leader key is deleted or re-created by another node. Each watch
        lasts at most a TTL, then the key is read again: a watch on a member that hangs
        (SIGSTOP, partition) never delays the news by more than that."""
        while not self.lost.is_set():
            try:
                entry = await self.etcd.get(self.key)
                if entry is None or entry.create_revision != self.epoch:
                    self._lose("leader key gone or taken by another node")
                    return
                watch = await self.etcd.watch(self.key, self.key + b"\0", entry.mod_revision + 1)
                try:
                    await asyncio.wait_for(self._until_changed(watch), self.ttl_s)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(watch.cancel(), 1.0)
            except TimeoutError:
                continue  # no change within a TTL: read the key again
            except Exception:  # noqa: BLE001 (etcd unreachable or the watch broke: retry)
                await asyncio.sleep(min(0.5, self.ttl_s / 4))

    async def _until_changed(self, watch: Any) -> None:
        async for event in watch:
            if event.kind == "DELETE" or event.kv.create_revision != self.epoch:
                self._lose("leader key gone or taken by another node")
                return

    async def resign(self) -> None:
        """Stop leading: the key is deleted (if still ours) and the lease revoked."""
        await self.stop()
        if self.epoch is not None and not self.lost.is_set():
            ops = self.etcd.ops
            await self.etcd.txn([ops.create(self.key) == self.epoch], [ops.delete(self.key)], [])
            self._lose("resigned")
        if self._lease is not None:
            with contextlib.suppress(UnavailableError):
                await self.etcd.revoke_lease(self._lease)
            self._lease = None

    async def stop(self) -> None:
        """End the keepalive and the watch without telling etcd, as a crash would: the lease
        then expires by itself within its TTL (resign() is the polite way)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task stuck in the etcd client's teardown must not hang the caller.
            await asyncio.wait(tasks, timeout=2.0)
