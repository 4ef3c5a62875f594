"""MemoryStore: the Store contract in memory, for tests of everything above storage.

Data lives in a ``MemoryBacking`` (a dict and a sorted key list per family) that outlives the
store, so a test can "restart" by opening a new store on the same backing, and can simulate a
crash (``simulate_crash``), optionally a power loss that drops every write not yet synced.
One read-write store at a time holds a backing (RocksDB's lock); read-only stores, like
RocksDB's, take no lock and may sit beside it.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Self

from tq.core.layout import ALL_FAMILIES, Family, Mutation
from tq.errors import StorageError
from tq.storage.base import StrPath, scan_bounds

_NFAMILIES = len(ALL_FAMILIES)


class MemoryBacking:
    """What a MemoryStore holds, kept apart so it survives a simulated restart or crash."""

    def __init__(self) -> None:
        self.values: tuple[dict[bytes, bytes], ...] = tuple({} for _ in ALL_FAMILIES)
        self.keys: tuple[list[bytes], ...] = tuple([] for _ in ALL_FAMILIES)
        # (family, key, previous value) for every write not yet synced, oldest first.
        self.unsynced: list[Mutation] = []
        self.lock = threading.Lock()
        self.in_use = False

    def apply(self, family: int, key: bytes, value: bytes | None) -> bytes | None:
        """Set or delete one key; returns the previous value."""
        values, keys = self.values[family], self.keys[family]
        previous = values.get(key)
        if value is None:
            if previous is not None:
                del values[key]
                del keys[bisect_left(keys, key)]
        else:
            if previous is None:
                insort(keys, key)  # amortised append for time-ordered (UUIDv7) keys
            values[key] = value
        return previous


class MemoryStore:
    """An in-memory Store with the same contract as RocksStore (``sync_wal`` is free)."""

    def __init__(self, backing: MemoryBacking | None = None, *, read_only: bool = False) -> None:
        self._backing = backing if backing is not None else MemoryBacking()
        self.read_only = read_only
        if not read_only:
            with self._backing.lock:
                if self._backing.in_use:
                    raise StorageError("memory store backing is already open in another store")
                self._backing.in_use = True
        self._closed = False

    @property
    def backing(self) -> MemoryBacking:
        return self._backing

    def write(self, mutations: Iterable[Mutation], *, sync: bool = False) -> None:
        self._check_writable("write batch")
        batch = list(mutations)
        for mutation in batch:  # validate all first: a bad batch must change nothing
            _check(mutation)
        b = self._backing
        with b.lock:
            self._check_open("write batch")
            for family, key, value in batch:
                b.unsynced.append((family, key, b.apply(family, key, value)))
            if sync:
                b.unsynced.clear()

    def sync_wal(self) -> None:
        self._check_writable("sync WAL")
        with self._backing.lock:
            self._check_open("sync WAL")
            self._backing.unsynced.clear()

    def get(self, family: Family, key: bytes) -> bytes | None:
        with self._backing.lock:
            self._check_open("get", family)
            return self._backing.values[family].get(key)

    def multi_get(self, family: Family, keys: Sequence[bytes]) -> list[bytes | None]:
        with self._backing.lock:
            self._check_open("multi_get", family)
            values = self._backing.values[family]
            return [values.get(k) for k in keys]

    def iterate(
        self,
        family: Family,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._backing.lock:
            self._check_open("iterate", family)
        seek, upper = scan_bounds(prefix, start, reverse)
        return self._scan(family, prefix, seek, upper, reverse)

    def _scan(
        self, family: Family, prefix: bytes, seek: bytes | None, upper: bytes | None, rev: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        # Re-find the position from the last key yielded at every step (O(log n)), so writes
        # between steps cannot make the scan skip, repeat or misorder keys.
        b = self._backing
        keys, values = b.keys[family], b.values[family]
        first = seek if seek is not None else b""
        last: bytes | None = None
        while True:
            with b.lock:
                self._check_open("iterate", family)
                if not rev:
                    at = bisect_left(keys, first) if last is None else bisect_right(keys, last)
                    if at >= len(keys) or (upper is not None and keys[at] >= upper):
                        return
                elif last is None:
                    if seek is not None:
                        at = bisect_right(keys, seek) - 1
                    else:
                        at = (len(keys) if upper is None else bisect_left(keys, upper)) - 1
                else:
                    at = bisect_left(keys, last) - 1
                if at < 0 or not keys[at].startswith(prefix):
                    return
                last = keys[at]
                value = values[last]
            yield last, value

    def approximate_count(self, family: Family) -> int:
        with self._backing.lock:
            self._check_open("approximate_count", family)
            return len(self._backing.values[family])

    def compact(self, family: Family | None = None) -> None:
        with self._backing.lock:
            self._check_open("compact", family)

    def checkpoint(self, path: StrPath) -> None:
        raise StorageError(f"checkpoint into {os.fspath(path)}: not supported by MemoryStore")

    def simulate_crash(self, *, power_loss: bool = False) -> None:
        """Die without closing. A process crash keeps every write (it reached the OS); a power
        loss also undoes the writes no ``sync_wal()`` or ``sync=True`` covered."""
        b = self._backing
        with b.lock:
            self._check_open("simulate_crash")
            self._check_writable("simulate_crash")
            if power_loss:
                for family, key, previous in reversed(b.unsynced):
                    b.apply(family, key, previous)
            b.unsynced.clear()
            self._closed = True
            b.in_use = False

    def close(self) -> None:
        with self._backing.lock:
            if not self._closed:
                self._closed = True
                if not self.read_only:
                    self._backing.in_use = False
                    self._backing.unsynced.clear()  # a clean close leaves everything durable

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = ", read-only" if self.read_only else ""
        return f"MemoryStore({'closed' if self._closed else 'open'}{mode})"

    def _check_writable(self, action: str) -> None:
        if self.read_only:
            raise StorageError(f"{action} on memory store: opened read-only")

    def _check_open(self, action: str, family: Family | None = None) -> None:
        if self._closed or (family is not None and not 0 <= family < _NFAMILIES):
            where = "" if family is None else f" family {getattr(family, 'cf_name', family)}"
            state = "closed" if self._closed else "unknown"
            raise StorageError(f"{action} on memory store: {state}{where}")


def _check(mutation: Mutation) -> None:
    try:
        family, key, value = mutation
    except (TypeError, ValueError):
        raise StorageError(f"bad mutation {mutation!r}: not (family, key, value)") from None
    if not isinstance(family, int) or not 0 <= family < _NFAMILIES:
        raise StorageError(f"bad mutation: unknown family {family!r}")
    if not isinstance(key, bytes):
        raise StorageError(f"bad mutation in family {family}: key {key!r} is not bytes")
    if value is not None and not isinstance(value, bytes):
        raise StorageError(f"bad mutation in family {family}: value for {key!r} is not bytes")
