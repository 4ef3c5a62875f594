"""RocksStore: the Store port on embedded RocksDB through rocksdict (the only module importing it).

Raw mode everywhere (bytes in, bytes out; never pickle). Every rocksdict call is wrapped so a
foreign exception leaves as ``StorageError`` naming the path and family. Option choices are
measured (benchmarks/storage_bench.py); the reasons sit next to each setting in ``_options``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    BottommostLevelCompaction,
    Cache,
    Checkpoint,
    CompactOptions,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    RdictIter,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from tq.core.layout import ALL_FAMILIES, LIVE_FAMILIES, Family, Mutation
from tq.errors import StorageError
from tq.storage.base import StrPath, scan_bounds

_MB = 1 << 20
_ARCHIVE = frozenset((Family.COMPLETED, Family.DEAD_LETTER))


@dataclass(frozen=True, slots=True)
class RocksTuning:
    """Memory and background-work knobs; the defaults suit one broker on a small machine."""

    write_buffer_mb: int = 64  # memtable of each live family; halved for archive families
    total_write_buffer_mb: int = 256  # all memtables together: the largest flushes first
    max_total_wal_mb: int = 256  # WAL kept for replay; bounds restart time after a crash
    block_cache_mb: int = 64  # shared by every family, holds index and filter blocks too
    max_background_jobs: int = 0  # flushes + compactions; 0 = from the CPU count (2..8)
    bloom_bits_per_key: int = 10  # archive families: ~1% false positives on result lookups


def _options(tuning: RocksTuning, create: bool) -> tuple[Options, dict[str, Options]]:
    cache = Cache(tuning.block_cache_mb * _MB)
    db = Options(raw_mode=True)
    db.create_if_missing(create)
    db.create_missing_column_families(True)
    jobs = tuning.max_background_jobs or max(2, min(8, os.cpu_count() or 2))
    db.set_max_background_jobs(jobs)
    db.set_db_write_buffer_size(tuning.total_write_buffer_mb * _MB)
    # Without a cap, a quiet family (metadata) pins every old WAL file and replay grows unbounded.
    db.set_max_total_wal_size(tuning.max_total_wal_mb * _MB)
    # A torn tail after power loss is dropped; the store recovers to a consistent batch prefix.
    db.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    db.set_bytes_per_sync(_MB)  # smooth SST writeback so it does not stall the WAL fsyncs
    db.set_avoid_unnecessary_blocking_io(True)  # delete obsolete files off the caller's thread
    db.set_keep_log_file_num(3)
    db.set_max_log_file_size(8 * _MB)
    # Not set, because measured no gain for one writer thread (storage_bench, 2 vCPU):
    # unordered_write (-15% tasks/s), pipelined write, memtable insert hints, WAL recycling.
    families = {f.cf_name: _family_options(f, tuning, cache) for f in ALL_FAMILIES}
    return db, families


def _family_options(family: Family, tuning: RocksTuning, cache: Cache) -> Options:
    opts = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_format_version(5)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opts.set_level_compaction_dynamic_level_bytes(True)
    # lz4: ~4x on task records at near-zero CPU; zstd only where archived data settles.
    opts.set_compression_type(DBCompressionType.lz4())
    if family in LIVE_FAMILIES:
        opts.set_write_buffer_size(tuning.write_buffer_mb * _MB)
        opts.set_max_write_buffer_number(4)  # keep accepting writes while one flushes
        # Queue churn leaves SST files mostly tombstones; compact those early so a restart's
        # scan of the live families does not wade through them.
        opts.add_compact_on_deletion_collector_factory(16_384, 8_192, 0.5)
    elif family in _ARCHIVE:
        opts.set_write_buffer_size(max(1, tuning.write_buffer_mb // 2) * _MB)
        opts.set_bottommost_compression_type(DBCompressionType.zstd())  # ~1.7x smaller than lz4
        table.set_bloom_filter(tuning.bloom_bits_per_key, False)  # result lookups by task id
        table.set_block_size(16 * 1024)
    else:
        opts.set_write_buffer_size(8 * _MB)
    opts.set_block_based_table_factory(table)
    return opts


class _Cursor:
    """A native iterator plus what it points into, so ``close()`` can drop it mid-scan (a live
    iterator keeps the DB locked) and the bound outlives it.

    rocksdict 0.3.29 hands RocksDB a pointer into the Python bytes of ``iterate_upper_bound``
    without keeping them alive: drop the ReadOptions and the bound is freed under the iterator
    (seen here as scans running past their prefix). So the cursor owns both until the end.
    """

    __slots__ = ("__weakref__", "bound", "it", "read_opts")

    def __init__(self, it: RdictIter, read_opts: ReadOptions, bound: bytes | None) -> None:
        self.it: RdictIter | None = it
        self.read_opts: ReadOptions | None = read_opts
        self.bound = bound

    def release(self) -> None:
        self.it = None  # the iterator first: it is what points at the bound
        self.read_opts = self.bound = None


class RocksStore:
    """The production Store (see ``tq.storage.base`` for the contract).

    ``read_only=True`` opens an existing store without writing anything to its directory
    (RocksDB replays the WAL into memory): what a broker on a full disk can still serve reads
    from. Every write to it raises ``StorageError``.

    No error raised here keeps a native handle alive: RocksDB lets go of the data dir (and its
    lock) only when the last reference to the DB, a column family or an iterator is gone, and a
    retained exception's frames would otherwise keep one (so a reopen after a failed write would
    find the dir locked by this very process).
    """

    def __init__(
        self,
        path: StrPath,
        *,
        create: bool = True,
        tuning: RocksTuning | None = None,
        read_only: bool = False,
    ) -> None:
        self._path = os.fspath(path)
        self._closed = False
        self.read_only = read_only
        if (read_only or not create) and not os.path.exists(os.path.join(self._path, "CURRENT")):
            # Checked here because RocksDB makes the directory before it finds nothing there.
            why = "read_only=True" if read_only else "create=False"
            raise StorageError(f"no store at {self._path} (and {why})")
        try:
            db_opts, family_opts = _options(tuning or RocksTuning(), create and not read_only)
            access = AccessType.read_only() if read_only else AccessType.read_write()
            self._db = Rdict(self._path, db_opts, column_families=family_opts, access_type=access)
            # Looked up once: a handle lookup per call costs more than the put it serves.
            self._handles = tuple(self._db.get_column_family_handle(f.cf_name) for f in Family)
            self._families = tuple(self._db.get_column_family(f.cf_name) for f in Family)
        except Exception as exc:
            raise StorageError(_open_message(self._path, exc)) from exc
        self._nosync = WriteOptions()
        self._sync = WriteOptions()
        self._sync.sync = True
        self._cursors: weakref.WeakSet[_Cursor] = weakref.WeakSet()

    @property
    def path(self) -> str:
        return self._path

    def write(self, mutations: Iterable[Mutation], *, sync: bool = False) -> None:
        if self._closed:  # an empty batch would otherwise succeed silently
            raise self._error("write batch", None, None)
        batch = self._batch(mutations)
        try:
            if batch.len():
                self._db.write(batch, self._sync if sync else self._nosync)
            elif sync:
                self._db.flush_wal(True)
        except Exception as exc:
            raise self._error("write batch", None, exc) from exc

    def _batch(self, mutations: Iterable[Mutation]) -> WriteBatch:
        batch = WriteBatch(raw_mode=True)
        handles = self._handles
        family: Family | None = None
        try:
            for family, key, value in mutations:
                if value is None:
                    batch.delete(key, handles[family])
                else:
                    batch.put(key, value, handles[family])
        except Exception as exc:
            del handles  # the error's frames must not pin the DB (see the class docstring)
            raise self._error("build write batch", family, exc) from exc
        return batch

    def sync_wal(self) -> None:
        try:
            self._db.flush_wal(True)  # releases the GIL for the fsync (write(sync=True) doesn't)
        except Exception as exc:
            raise self._error("sync WAL", None, exc) from exc

    def get(self, family: Family, key: bytes) -> bytes | None:
        try:
            return cast("bytes | None", self._families[family].get(key))
        except Exception as exc:
            raise self._error("get", family, exc) from exc

    def multi_get(self, family: Family, keys: Sequence[bytes]) -> list[bytes | None]:
        try:
            return cast("list[bytes | None]", self._families[family].get(list(keys)))
        except Exception as exc:
            raise self._error("multi_get", family, exc) from exc

    def iterate(
        self,
        family: Family,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        seek, upper = scan_bounds(prefix, start, reverse)
        it: RdictIter | None = None
        try:
            read_opts = ReadOptions()
            if upper is not None:
                read_opts.set_iterate_upper_bound(upper)
            # The native iterator reads a snapshot taken here, block by block (bounded memory).
            it = self._families[family].iter(read_opts)
            if seek is None:  # only when reverse: start below the prefix's upper bound
                it.seek_to_last()
            elif reverse:
                it.seek_for_prev(seek)
            else:
                it.seek(seek)
        except Exception as exc:
            it = None  # the error's frames must not pin the DB (see the class docstring)
            raise self._error("iterate", family, exc) from exc
        cursor = _Cursor(it, read_opts, upper)
        self._cursors.add(cursor)
        # No iterate_lower_bound: rocksdict was seen not to honour it, so a reverse scan checks
        # the prefix itself.
        return self._scan(cursor, family, prefix if reverse and prefix else None, reverse)

    def _scan(
        self, cursor: _Cursor, family: Family, lower: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        # RdictIter rather than the faster items(): items() ends silently on an I/O error or
        # corruption, and recovery must not mistake a damaged family for a short one.
        try:
            while True:
                it = cursor.it
                if it is None:
                    raise self._error("iterate", family, None)
                try:
                    if not it.valid():
                        it.status()  # raises if the scan ended on an error
                        return
                    key: bytes = it.key()
                    value: bytes = it.value()
                    if reverse:
                        it.prev()
                    else:
                        it.next()
                except Exception as exc:
                    del it  # the error's frames must not pin the DB (see the class docstring)
                    raise self._error("iterate", family, exc) from exc
                del it  # hold no native reference while suspended at the yield
                if lower is not None and not key.startswith(lower):
                    return
                yield key, value
        finally:
            cursor.release()

    def approximate_count(self, family: Family) -> int:
        try:
            count = self._families[family].property_int_value("rocksdb.estimate-num-keys")
        except Exception as exc:
            raise self._error("approximate_count", family, exc) from exc
        return count or 0

    def compact(self, family: Family | None = None) -> None:
        # Force the bottommost level too: that is where retention deletes become free space.
        opts = CompactOptions()
        opts.set_bottommost_level_compaction(BottommostLevelCompaction.force_optimized())
        for fam in ALL_FAMILIES if family is None else (family,):
            try:
                self._families[fam].compact_range(None, None, opts)
            except Exception as exc:
                raise self._error("compact", fam, exc) from exc

    def checkpoint(self, path: StrPath) -> None:
        target = os.fspath(path)
        if os.path.lexists(target):
            raise StorageError(f"checkpoint of {self._path}: target {target} already exists")
        if self._closed:
            raise self._error(f"checkpoint into {target}", None, None)
        try:
            # Flushes the memtables, then hard-links the SST files and copies the WAL tail.
            Checkpoint(self._db).create_checkpoint(target)
        except Exception as exc:
            raise self._error(f"checkpoint into {target}", None, exc) from exc

    def close(self) -> None:
        """Close; RocksDB really closes only once every handle and iterator is dropped."""
        if self._closed:
            return
        self._closed = True
        for cursor in list(self._cursors):
            cursor.release()
        families, self._families, self._handles = self._families, (), ()
        db = self._db
        del self._db  # later calls fail as "closed"; nothing here pins the DB any more
        failure: Exception | None = None
        try:
            for family in families:
                family.close()
            db.close()  # raises after a write failed (RocksDB keeps that error), yet lets go
        except Exception as exc:  # noqa: BLE001 - raised below, once nothing pins the DB
            failure = exc
        del db, families  # before raising: the error's frames must not pin the DB
        if failure is not None:
            raise StorageError(f"close of store at {self._path} failed: {failure}") from failure

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
        return f"RocksStore({self._path!r}{mode}{', closed' if self._closed else ''})"

    def _error(self, action: str, family: Family | None, exc: Exception | None) -> StorageError:
        where = f"store at {self._path}"
        if family is not None:
            where += f" family {getattr(family, 'cf_name', family)}"
        if self._closed:
            return StorageError(f"{action} on closed {where}")
        return StorageError(f"{action} failed on {where}: {type(exc).__name__}: {exc}")


def _open_message(path: str, exc: Exception) -> str:
    text = str(exc)
    if "lock" in text.lower():
        return f"data dir {path} is already open (another process or store holds its lock): {text}"
    return f"cannot open store at {path}: {type(exc).__name__}: {text}"


def open_store(
    path: StrPath,
    *,
    create: bool = True,
    tuning: RocksTuning | None = None,
    read_only: bool = False,
) -> RocksStore:
    """Open (creating unless ``create=False`` or ``read_only``) the RocksDB store in ``path``."""
    return RocksStore(path, create=create, tuning=tuning, read_only=read_only)
