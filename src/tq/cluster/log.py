"""The replicated command log in etcd: opaque ``bytes`` entries under contiguous indexes
``/tq/<cluster>/log/<20-digit index>`` from 1. The leader appends one entry at a time, fenced
by its epoch; every node reads and follows the log in order; applied entries are trimmed.
The log, not a leader's memory, is the truth: an append whose ack was lost may be in it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from tq.cluster.election import leader_key
from tq.cluster.etcd import Entry, Etcd, prefix_end
from tq.errors import ConflictError, LogTrimmedError, NotLeaderError, ValidationError

log = logging.getLogger(__name__)

#: Digits of an index in its key, so that key order is index order.
INDEX_DIGITS = 20
#: Entries per range read (follow and read page through longer stretches).
PAGE = 256


class ReplicatedLog:
    """The log of cluster ``cluster``. ``max_entry_bytes`` must stay below etcd's
    ``--max-request-bytes`` (default 1.5 MiB; tq's managed etcd raises it)."""

    def __init__(self, etcd: Etcd, cluster: str, *, max_entry_bytes: int = 1 << 20) -> None:
        self.etcd = etcd
        self.leader_key = leader_key(cluster)
        self.prefix = f"/tq/{cluster}/log/".encode()
        self.end = prefix_end(self.prefix)
        self.max_entry_bytes = max_entry_bytes
        # Exactly one append in flight: pipelined appends can commit out of order and leave a
        # gap when a middle one fails, so appends queue on this lock.
        self._append_lock = asyncio.Lock()
        self._next: int | None = None  # the next index to append; None: ask etcd

    def continue_after(self, index: int) -> None:
        """The next append goes at ``index + 1`` at the earliest: a leader whose store holds
        more than the log (restored from a checkpoint onto an empty etcd) continues the
        numbering, so that every applied mark stays a position in the log."""
        if index > 0:
            self._next = max(self._next or 0, index + 1)

    def key(self, index: int) -> bytes:
        return self.prefix + f"{index:0{INDEX_DIGITS}d}".encode()

    def index_of(self, key: bytes) -> int:
        return int(key[len(self.prefix) :])

    async def last_index(self) -> int:
        """The highest index in etcd (0: nothing was ever appended). A linearizable read: what
        etcd holds, including appends whose ack never reached their leader."""
        _, entries = await self.etcd.range(self.prefix, self.end, limit=1, descending=True)
        return self.index_of(entries[0].key) if entries else 0

    async def first_index(self) -> int:
        """The lowest index still held (0: the log is empty)."""
        _, entries = await self.etcd.range(self.prefix, self.end, limit=1)
        return self.index_of(entries[0].key) if entries else 0

    async def append(self, entry: bytes | Callable[[int], bytes], *, epoch: int) -> int:
        """Append ``entry`` as the leader of ``epoch``; its index once etcd committed it.
        ``entry`` may be a function of the index it gets (an entry that names its own place,
        as ``tq.cluster.entry`` does), called once that index is known.

        NotLeaderError: the leader key is no longer the one created at ``epoch`` (this node
        was deposed; nothing was written). UnavailableError: etcd did not answer, the outcome
        is unknown (the entry may be in the log); the next append starts from what etcd holds.
        """
        if not (isinstance(entry, bytes) or callable(entry)):
            raise ValidationError(f"log entry must be bytes, not {type(entry).__name__}")
        if isinstance(entry, bytes):
            self._check_size(entry)  # before etcd is asked anything
        async with self._append_lock:
            if self._next is None:
                self._next = await self.last_index() + 1
            index = self._next
            if not isinstance(entry, bytes):
                entry = entry(index)
                self._check_size(entry)
            ops = self.etcd.ops
            self._next = None  # unknown until this append's outcome is known
            appended = await self.etcd.txn(
                [ops.create(self.leader_key) == epoch, ops.create(self.key(index)) == 0],
                [ops.put(self.key(index), entry)],
                [],
            )
            if not appended:
                await self._refused(index, entry, epoch)
            self._next = index + 1
            return index

    def _check_size(self, entry: bytes) -> None:
        if len(entry) > self.max_entry_bytes:
            raise ValidationError(
                f"log entry of {len(entry)} bytes is above the {self.max_entry_bytes} byte limit"
            )

    async def _refused(self, index: int, entry: bytes, epoch: int) -> None:
        """Why the txn failed: deposed (NotLeaderError), or the index is taken — by this very
        entry when an earlier try committed but its reply was lost (then it is appended)."""
        # Ours first: an earlier try may have committed this very entry before this node was
        # deposed; it is in the log then, and saying "not appended" would be false.
        held = await self.etcd.get(self.key(index))
        if held is not None and held.value == entry:
            return
        leader = await self.etcd.get(self.leader_key)
        if leader is None or leader.create_revision != epoch:
            now = "no leader" if leader is None else f"epoch {leader.create_revision}"
            raise NotLeaderError(f"append refused: epoch {epoch} is over (etcd holds {now})")
        raise ConflictError(
            f"log index {index} already holds another entry in epoch {epoch}: "
            "a second writer with this epoch"
        )

    async def read(self, from_index: int, limit: int = PAGE) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries from ``from_index`` on, in order (empty: none yet).
        LogTrimmedError when ``from_index`` was trimmed away."""
        _, entries = await self._read(from_index, limit)
        return [(self.index_of(e.key), e.value) for e in entries]

    async def _read(self, from_index: int, limit: int) -> tuple[int, list[Entry]]:
        if from_index < 1:
            raise ValidationError(f"log index {from_index}: indexes start at 1")
        revision, entries = await self.etcd.range(self.key(from_index), self.end, limit=limit)
        if entries and self.index_of(entries[0].key) != from_index:
            first = await self.first_index()
            raise LogTrimmedError(
                f"log entries from {from_index} were trimmed; the log starts at {first}",
                first_index=first,
            )
        return revision, entries

    async def follow(
        self, from_index: int, *, idle_s: float = 1.0
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """Every entry from ``from_index`` on, in order, forever: what is stored first, then a
        watch from the revision of that read. After a broken watch, a gap or ``idle_s`` without
        events it reads again from the next index, so nothing is missed or repeated. etcd
        being unreachable is retried (backoff up to 1 s) until the caller stops iterating;
        close it (``contextlib.aclosing``) to end its watch at once. LogTrimmedError when
        ``from_index`` is no longer held: install a checkpoint, then follow from after it."""
        if from_index < 1:
            raise ValidationError(f"log index {from_index}: indexes start at 1")
        following = from_index
        backoff = 0.05
        while True:
            try:
                revision, entries = await self._read(following, PAGE)
            except LogTrimmedError:
                raise
            except Exception as exc:  # noqa: BLE001 (etcd unreachable: retry, bounded backoff)
                log.debug("cluster.log_read_retry from=%d error=%s", following, exc)
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            for entry in entries:
                yield self.index_of(entry.key), entry.value
                following += 1
            if len(entries) == PAGE:
                continue
            async for index, value in self._watch(following, revision + 1, idle_s):
                yield index, value
                following = index + 1

    async def _watch(
        self, following: int, revision: int, idle_s: float
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Entries ``following``, ``following+1``... as etcd announces them; returns (and the
        caller reads again) on a gap, ``idle_s`` of silence, or any watch failure."""
        try:
            watch = await self.etcd.watch(self.prefix, self.end, revision)
        except Exception:  # noqa: BLE001 (the caller's read retries with backoff)
            return
        events = watch.__aiter__()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.__anext__(), idle_s)
                except (TimeoutError, StopAsyncIteration):
                    return
                except Exception as exc:  # noqa: BLE001 (broken or compacted watch: read again)
                    log.debug("cluster.log_watch_ended error=%s", exc)
                    return
                if event.kind != "PUT":
                    continue
                index = self.index_of(bytes(event.kv.key))
                if index < following:
                    continue
                if index > following:
                    return
                yield index, bytes(event.kv.value)
                following += 1
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), 1.0)
            except Exception:  # noqa: BLE001 (the stream is gone already)
                log.debug("cluster.log_watch_cancel_failed")

    async def trim(self, below_index: int) -> int:
        """Delete the entries below ``below_index`` (never the last one, so the next index
        stays known) and compact etcd's history; the first index still held."""
        if below_index < 1:
            raise ValidationError(f"trim below {below_index}: indexes start at 1")
        last = await self.last_index()
        below = min(below_index, last)
        if below <= 1:
            return await self.first_index()
        await self.etcd.delete_range(self.prefix, self.key(below))
        revision, entries = await self.etcd.range(self.prefix, self.end, limit=1)
        await self.etcd.compact(revision)
        return self.index_of(entries[0].key)
