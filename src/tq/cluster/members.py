"""Membership records: each node keeps ``/tq/<cluster>/nodes/<node_id>`` (its addresses, role
and applied index) attached to a lease of its own, so a dead node's record vanishes after the
TTL. The leader's trim reads them (what every live node applied) and so does ``tq cluster
status``; a record that is not tq's is reported as such, never a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

from tq.cluster.election import leader_key
from tq.cluster.etcd import Etcd, prefix_end
from tq.errors import TqError, ValidationError

log = logging.getLogger(__name__)

#: Least time between two writes of a record (a role change is written at once).
MIN_WRITE_INTERVAL_S: Final = 0.5


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"


class MemberRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a node says of itself. ``updated_at``: unix seconds of the write."""

    node_id: str
    address: str
    http_address: str | None
    role: Role
    applied_index: int
    applied_epoch: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A key under the nodes prefix whose value is not a member record (and why)."""

    key: str
    problem: str


@dataclass(frozen=True, slots=True)
class Roster:
    """Every live record, by node id, the keys that held something else, and the etcd
    revision they were read at."""

    records: tuple[MemberRecord, ...]
    invalid: tuple[InvalidRecord, ...]
    revision: int


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(MemberRecord)


def nodes_prefix(cluster: str) -> bytes:
    leader_key(cluster)  # the same rules for the cluster name
    return f"/tq/{cluster}/nodes/".encode()


def decode_record(key: bytes, value: bytes, prefix: bytes) -> MemberRecord:
    """The record stored at ``key``; ValidationError naming the key and the fault."""
    name = key.decode(errors="replace")
    try:
        record = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"member record {name}: {exc}") from exc
    if key != prefix + record.node_id.encode():
        raise ValidationError(f"member record {name} names node {record.node_id!r}")
    if record.applied_index < 0 or record.applied_epoch < 0:
        raise ValidationError(f"member record {name}: a negative applied index or epoch")
    return record


async def read_members(etcd: Etcd, cluster: str) -> Roster:
    """The records of the live nodes (sorted by node id) and any key that is not one."""
    prefix = nodes_prefix(cluster)
    revision, entries = await etcd.range(prefix, prefix_end(prefix))
    records: list[MemberRecord] = []
    invalid: list[InvalidRecord] = []
    for entry in entries:
        try:
            records.append(decode_record(entry.key, entry.value, prefix))
        except ValidationError as exc:
            invalid.append(InvalidRecord(entry.key.decode(errors="replace"), exc.message))
    return Roster(tuple(sorted(records, key=lambda r: r.node_id)), tuple(invalid), revision)


async def members(etcd: Etcd, cluster: str) -> list[MemberRecord]:
    """The live nodes' records; a key holding anything else is logged and left out."""
    roster = await read_members(etcd, cluster)
    for bad in roster.invalid:
        log.warning("cluster.member_record_invalid key=%s problem=%s", bad.key, bad.problem)
    return list(roster.records)


class Membership:
    """This node's record. ``update`` is cheap (call it after every applied entry): a writer
    task puts the record at most every ``MIN_WRITE_INTERVAL_S``, at once when the role
    changes, on a lease kept alive every TTL/4 (granted again if it expired, e.g. after a
    partition). etcd being unreachable is retried; it never reaches the caller."""

    def __init__(
        self,
        etcd: Etcd,
        cluster: str,
        node_id: str,
        address: str,
        *,
        http_address: str | None = None,
        ttl_s: int = 5,
    ) -> None:
        if not 2 <= ttl_s <= 60:
            raise ValidationError(f"member record TTL {ttl_s!r}: must be 2..60 whole seconds")
        if not node_id or "/" in node_id:
            raise ValidationError(f"node id {node_id!r}: must be non-empty, without '/'")
        self.etcd = etcd
        self.key = nodes_prefix(cluster) + node_id.encode()
        self.ttl_s = ttl_s
        self._record = MemberRecord(node_id, address, http_address, Role.FOLLOWER, 0, 0, 0.0)
        self._written: MemberRecord | None = None
        self._changed = asyncio.Event()  # the record differs from the one written
        self._wake = asyncio.Event()  # the writer has something new to decide
        self._urgent = False
        self._lease: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def record(self) -> MemberRecord:
        """The record as this node last described itself (written or about to be)."""
        return self._record

    @property
    def written(self) -> MemberRecord | None:
        """The record etcd holds (as last written by this object), None before the first."""
        return self._written

    def update(
        self,
        *,
        applied_index: int | None = None,
        applied_epoch: int | None = None,
        role: Role | None = None,
    ) -> None:
        old = self._record
        new = msgspec.structs.replace(
            old,
            applied_index=old.applied_index if applied_index is None else applied_index,
            applied_epoch=old.applied_epoch if applied_epoch is None else applied_epoch,
            role=old.role if role is None else Role(role),
        )
        if new == old:
            return
        urgent = new.role != old.role
        # Wake the writer only when it has something new to decide: not on every entry.
        if urgent or not self._changed.is_set():
            self._wake.set()
        self._urgent = self._urgent or urgent
        self._record = new
        self._changed.set()

    async def start(self) -> None:
        """Write the record once (raising if etcd does not take it), then keep it current."""
        await self._write()
        self.start_writer()

    def start_writer(self) -> None:
        """Keep the record current from now on (after ``start``, or instead of it when etcd
        did not answer: the record is then written once it does)."""
        if self._task is None:
            self._changed.set()
            self._wake.set()
            self._task = asyncio.create_task(self._run(), name=f"tq-member-{self._record.node_id}")

    async def _write(self) -> None:
        if self._lease is None:
            self._lease = await self.etcd.grant_lease(self.ttl_s)
        self._changed.clear()
        self._urgent = False
        record = msgspec.structs.replace(self._record, updated_at=time.time())
        ops = self.etcd.ops
        await self.etcd.txn([], [ops.put(self.key, _encoder.encode(record), lease=self._lease)], [])
        self._written = record

    async def _run(self) -> None:
        """Write when a change is due (urgent: now; else MIN_WRITE_INTERVAL_S after the last
        write or failed try), refresh the lease every TTL/4, sleep in between."""
        refresh_every = self.ttl_s / 4
        next_refresh = time.monotonic() + refresh_every
        last_try = time.monotonic()
        while True:
            if self._changed.is_set():
                due = last_try + (0.0 if self._urgent else MIN_WRITE_INTERVAL_S)
                if time.monotonic() >= due:
                    last_try = time.monotonic()
                    try:
                        await self._write()
                    except Exception as exc:  # noqa: BLE001 (the writer must outlive any failure)
                        log.debug("cluster.member_write_retry key=%s error=%s", self.key, exc)
                        self._changed.set()
            if time.monotonic() >= next_refresh:
                await self._refresh()
                next_refresh = time.monotonic() + refresh_every
            wake_at = next_refresh
            if self._changed.is_set():
                wake_at = min(wake_at, last_try + (0.0 if self._urgent else MIN_WRITE_INTERVAL_S))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - time.monotonic()))

    async def _refresh(self) -> None:
        """Keep the lease alive; one that expired takes the record with it, so the record is
        written again on a new lease."""
        if self._lease is None:
            self._changed.set()
            return
        try:
            ttl = await self.etcd.refresh_lease(self._lease)
        except Exception as exc:  # noqa: BLE001 (etcd unreachable: try again at the next turn)
            log.debug("cluster.member_keepalive_retry node=%s error=%s", self.key, exc)
            return
        if ttl <= 0:
            log.warning("cluster.member_lease_expired key=%s", self.key.decode())
            self._lease = None
            self._urgent = True
            self._changed.set()
            self._wake.set()

    async def stop(self, *, remove: bool = True) -> None:
        """End the writer; with ``remove`` the lease is revoked (the record goes at once),
        else it lapses after its TTL as a crash would leave it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
        if remove and self._lease is not None:
            with contextlib.suppress(TqError):
                await self.etcd.revoke_lease(self._lease)
            self._lease = None
