"""A thin async wrapper over aetcd that handles what it lacks, as measured against etcd 3.4
(../shared/research/etcd.md): failover between several endpoints (aetcd takes one), a raised
gRPC receive limit, ``failure=[]`` in transactions, a deadline on every call, and errors mapped
to tq.errors (``UnavailableError`` naming every endpoint tried)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc

from tq.errors import UnavailableError, ValidationError

T = TypeVar("T")

#: gRPC receive/send limit: etcd replies (a range over the log) can exceed gRPC's 4 MiB default.
MESSAGE_LIMIT = 64 << 20

#: Failures after which another endpoint may answer: the member is down, slow or partitioned.
_RETRYABLE: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    TimeoutError,
)
_RETRYABLE_STATUS = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as etcd holds it (the subset tq reads)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``http://host:port`` as (host, port); a bad one is named in the error."""
    bare = endpoint.removeprefix("http://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"etcd endpoint {endpoint!r} is not host:port or http://host:port")
    if endpoint.startswith("https://"):
        raise ValidationError(f"etcd endpoint {endpoint!r}: TLS to etcd is not supported yet")
    return host, int(port)


class Etcd:
    """One connection at a time to one of ``endpoints``; a call that fails because that member
    is unreachable moves to the next and is retried there, until each was tried once.

    Retrying is safe only for idempotent calls or transactions that compare what they change
    (every write tq makes is such a transaction: see tq.cluster.log)."""

    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 5.0) -> None:
        if not endpoints:
            raise ValidationError("etcd endpoints: at least one is needed")
        if not timeout_s > 0:
            raise ValidationError(f"etcd timeout {timeout_s!r}: must be above 0 seconds")
        self.endpoints = tuple(endpoints)
        self._addresses = [parse_endpoint(e) for e in self.endpoints]
        self.timeout_s = timeout_s
        self._current = 0
        self._client: aetcd.Client | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.endpoints[self._current]

    def _connect(self) -> aetcd.Client:
        if self._client is None:
            host, port = self._addresses[self._current]
            options = {
                "grpc.max_receive_message_length": MESSAGE_LIMIT,
                "grpc.max_send_message_length": MESSAGE_LIMIT,
                "grpc.initial_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 500,
            }
            # aetcd's own timeout is whole seconds; ours (asyncio.wait_for) is the real bound.
            self._client = aetcd.Client(
                host, port, timeout=max(1, round(self.timeout_s)), options=options
            )
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # The member may be gone: then there is nothing left to close cleanly.
            with contextlib.suppress(TimeoutError, aetcd.exceptions.ClientError, OSError):
                await asyncio.wait_for(client.close(), min(1.0, self.timeout_s))

    async def call(self, what: str, op: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """``op`` on the current member within the deadline, else on the next ones in turn."""
        failures: list[str] = []
        for _ in range(len(self.endpoints)):
            client = self._connect()
            endpoint = self.endpoint
            try:
                await asyncio.wait_for(client.connect(), self.timeout_s)
                return await asyncio.wait_for(op(client), self.timeout_s)
            except asyncio.CancelledError:
                # grpc cancels the calls of a channel a concurrent call closed on failing
                # over; that is not our task being cancelled, so retry on the new member.
                task = asyncio.current_task()
                if (task is not None and task.cancelling()) or self._client is client:
                    raise
                failures.append(f"{endpoint}: closed by a concurrent failover")
            except grpc.aio.AioRpcError as exc:  # a stub called directly (range)
                if exc.code() not in _RETRYABLE_STATUS:
                    raise UnavailableError(
                        f"etcd {what} failed at {endpoint}: {exc.details()}"
                    ) from exc
                failures.append(f"{endpoint}: {exc.code().name} {exc.details()}")
                if self._client is client:
                    self._current = (self._current + 1) % len(self.endpoints)
                    await self._drop()
            except _RETRYABLE as exc:
                failures.append(f"{endpoint}: {type(exc).__name__} {exc}".strip())
                if self._client is client:  # not yet moved on by a concurrent call
                    self._current = (self._current + 1) % len(self.endpoints)
                    await self._drop()
            except aetcd.exceptions.ClientError as exc:
                raise UnavailableError(f"etcd {what} failed at {endpoint}: {exc}") from exc
        raise UnavailableError(
            f"etcd {what}: no endpoint answered within {self.timeout_s}s "
            f"(tried {'; '.join(failures)})"
        )

    async def close(self) -> None:
        await self._drop()

    # -- the calls tq makes ------------------------------------------------------------------

    async def get(self, key: bytes) -> Entry | None:
        got = await self.call("get", lambda c: c.get(key))
        return None if got is None else _entry(got)

    async def range(
        self, start: bytes, end: bytes, *, limit: int = 0, descending: bool = False
    ) -> tuple[int, list[Entry]]:
        """Keys in [start, end) in key order (or reversed), at most ``limit`` (0: all), with
        the store revision the read saw (watch from revision+1 to miss nothing after it)."""
        request = rpc.RangeRequest(key=start, range_end=end, limit=limit)
        request.sort_target = rpc.RangeRequest.KEY
        request.sort_order = rpc.RangeRequest.DESCEND if descending else rpc.RangeRequest.ASCEND

        async def op(client: aetcd.Client) -> Any:
            return await client.kvstub.Range(request, timeout=self.timeout_s)

        reply = await self.call("range", op)
        return reply.header.revision, [_entry(kv) for kv in reply.kvs]

    async def txn(self, compare: list[Any], success: list[Any], failure: list[Any]) -> bool:
        """A transaction; ``failure`` defaults to ``[]`` (aetcd crashes on None)."""
        ok, _ = await self.call("txn", lambda c: c.transaction(compare, success, failure or []))
        return bool(ok)

    async def grant_lease(self, ttl_s: int) -> int:
        lease = await self.call("lease grant", lambda c: c.lease(ttl_s))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        """The lease's remaining TTL after the refresh; 0 or less: it has expired."""
        reply = await self.call("lease keepalive", lambda c: c.refresh_lease(lease_id))
        return -1 if reply is None else int(reply.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        await self.call("lease revoke", lambda c: c.revoke_lease(lease_id))

    async def delete_range(self, start: bytes, end: bytes) -> None:
        await self.call("delete", lambda c: c.delete_range(start, end))

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision``; already compacted that far is done too."""

        async def op(client: aetcd.Client) -> None:
            try:
                await client.compact(revision, physical=True)
            except aetcd.exceptions.ClientError as exc:
                if "required revision has been compacted" not in str(exc):
                    raise

        await self.call("compact", op)

    async def watch(self, start: bytes, end: bytes, start_revision: int) -> Any:
        """A watch on [start, end) replaying history from ``start_revision`` (aetcd's Watch:
        iterate it for events, ``await w.cancel()`` to end it)."""
        return await self.call(
            "watch",
            lambda c: c.watch(start, range_end=end, start_revision=start_revision),
        )

    @property
    def ops(self) -> aetcd.client.Transactions:
        """Builders of transaction compares and operations (create/put/get/delete)."""
        return self._connect().transactions


def _entry(kv: Any) -> Entry:
    return Entry(
        key=bytes(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease),
    )


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
