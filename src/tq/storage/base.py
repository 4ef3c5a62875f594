"""The Store port: an ordered key-value store of opaque bytes, one keyspace per ``Family``.

Everything above storage (the state machine's mutations, recovery, snapshots) talks to this
protocol; ``rocksdb.py`` implements it for production and ``memory.py`` for tests, and one
contract suite (tests/unit/test_storage_contract.py) runs against both.

Contract (both implementations):

- ``write`` applies a batch atomically: after a crash either every mutation of the batch is
  present or none is. Mutations apply in order, so a later mutation of the same key wins.
  A batch that cannot be applied (a key or value that is not ``bytes``) raises ``StorageError``
  and changes nothing.
- Durability: a write whose ``sync_wal()`` *call started after the write returned* and then
  completed survives SIGKILL and power loss. Writes that run concurrently with a
  ``sync_wal()`` are not covered by it. ``write(..., sync=True)`` is durable (with every
  earlier write) when it returns. A write without a sync survives SIGKILL of the process (it
  has reached the OS) but may be lost on power loss.
- Visibility is not durability: a ``write(sync=False)`` is readable at once, before any sync.
  The broker must not act on what it reads (ack a submitter, hand a task out) as durable
  until its ``sync_wal()`` has returned.
- ``iterate`` yields ``(key, value)`` in key order (descending with ``reverse``) and holds a
  bounded amount of memory. Writes made while iterating never break the iteration (keys stay
  ordered, none is yielded twice) but may or may not be seen by it.
- Every failure is a ``StorageError`` naming the path and family; no foreign exception leaks.
  Any call on a closed store raises ``StorageError``; ``close()`` itself is idempotent.
- Thread-safety: calls may come from several threads (the broker syncs the WAL in a thread
  while the event loop writes), except ``close()``, which must not race other calls.
- Opened with ``read_only=True`` (both implementations), a store sees what was stored when it
  opened, takes no lock (it may sit beside the writer: a broker on a full disk serves reads
  from one), and every ``write`` and ``sync_wal`` raises ``StorageError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from tq.core.layout import Family, Mutation

StrPath = str | os.PathLike[str]


@runtime_checkable
class Store(Protocol):
    """An ordered, column-family key-value store of opaque bytes (see the module contract)."""

    def write(self, mutations: Iterable[Mutation], *, sync: bool = False) -> None:
        """Apply ``(family, key, value)`` mutations atomically; ``value=None`` deletes ``key``.

        ``sync=True`` makes the batch durable before returning (RocksDB holds the GIL for the
        whole fsync); the group-commit path is ``write(sync=False)`` then ``sync_wal()``.
        """
        ...

    def sync_wal(self) -> None:
        """Make every write that returned before this call durable (fsync the write-ahead log).

        Releases the GIL while it waits for the disk, so it can run in a thread while the
        event loop keeps writing; those concurrent writes are not covered by this call.
        """
        ...

    def get(self, family: Family, key: bytes) -> bytes | None:
        """The value stored under ``key`` in ``family``, or None."""
        ...

    def multi_get(self, family: Family, keys: Sequence[bytes]) -> list[bytes | None]:
        """``[get(family, k) for k in keys]`` in one call (same order, None where absent)."""
        ...

    def iterate(
        self,
        family: Family,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix``, in key order (descending if ``reverse``).

        ``start`` is where to begin, inclusive: forward yields keys ``>= start``, reverse
        yields keys ``<= start``. A closed store raises at the call, not at the first item.
        """
        ...

    def approximate_count(self, family: Family) -> int:
        """An estimate of the number of keys in ``family`` (exact for the memory store).

        RocksDB's estimate can be far off after many deletes until compaction catches up.
        """
        ...

    def compact(self, family: Family | None = None) -> None:
        """Compact ``family`` (every family if None): reclaim space held by deletes."""
        ...

    def checkpoint(self, path: StrPath) -> None:
        """Write a consistent copy of the whole store into the new directory ``path``."""
        ...

    def close(self) -> None:
        """Release the store (and its lock on the data dir). Idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def scan_bounds(
    prefix: bytes, start: bytes | None, reverse: bool
) -> tuple[bytes | None, bytes | None]:
    """Where an ``iterate`` begins and the exclusive upper bound of its prefix.

    Returns ``(seek, upper)``: forward, ``seek`` is the first candidate key (inclusive);
    reverse, it is the last candidate key (inclusive), or None to begin at the last key
    below ``upper``.
    """
    upper = prefix_upper_bound(prefix)
    if not reverse:
        return (prefix if start is None or start < prefix else start), upper
    if start is None or (upper is not None and start >= upper):
        return None, upper
    return start, upper
