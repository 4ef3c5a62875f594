"""RocksStore specifics the contract suite cannot cover: checkpoints, opening errors, corruption."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tq.core.layout import ALL_FAMILIES, Family
from tq.errors import StorageError
from tq.storage import RocksStore, RocksTuning, open_store

P, C = Family.PENDING, Family.COMPLETED


def k(i: int) -> bytes:
    return i.to_bytes(16, "big")


def test_a_checkpoint_opens_as_a_store_with_the_same_data(tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as store:
        store.write([(family, b"key", family.cf_name.encode()) for family in ALL_FAMILIES])
        store.write([(P, k(i), b"v") for i in range(1000)])  # still in the memtable
        store.checkpoint(tmp_path / "snap")
        store.write([(P, b"after", b"x"), (C, b"key", None)])
        assert store.get(P, b"after") == b"x"  # the source store keeps working
    with open_store(tmp_path / "snap", create=False) as snap:
        for family in ALL_FAMILIES:
            assert snap.get(family, b"key") == family.cf_name.encode()
        assert snap.get(P, b"after") is None
        assert sum(1 for _ in snap.iterate(P)) == 1001


def test_a_checkpoint_refuses_an_existing_target(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with open_store(tmp_path / "db") as store, pytest.raises(StorageError, match="taken"):
        store.checkpoint(tmp_path / "taken")


def test_opening_a_missing_store_without_create_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no store at .*missing"):
        open_store(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_opening_a_file_as_a_store_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a database")
    with pytest.raises(StorageError, match="file"):
        open_store(tmp_path / "file")


def test_every_family_exists_after_opening_a_fresh_dir(tmp_path: Path) -> None:
    with RocksStore(tmp_path / "db", tuning=RocksTuning(write_buffer_mb=4)) as store:
        store.write([(family, b"k", b"v") for family in ALL_FAMILIES], sync=True)
    names = {p.name for p in (tmp_path / "db").iterdir()}
    assert "CURRENT" in names
    with open_store(tmp_path / "db") as store:
        assert all(store.get(family, b"k") == b"v" for family in ALL_FAMILIES)


def test_a_sync_after_a_large_batch_is_accepted(tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as store:
        store.write([(P, k(i), os.urandom(200)) for i in range(20_000)])
        store.sync_wal()
        assert store.approximate_count(P) == 20_000


def _corrupt_largest_sst(db_dir: Path) -> None:
    sst = max(db_dir.glob("*.sst"), key=lambda p: p.stat().st_size)
    data = bytearray(sst.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)  # inside a data block, far from footer and index
    sst.write_bytes(bytes(data))


def test_a_corrupt_table_fails_the_scan_instead_of_ending_it_early(tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as store:
        # Incompressible values: the file is large and the zeroed bytes land in a data block.
        store.write([(P, k(i), os.urandom(200)) for i in range(20_000)])
        store.compact(P)
    _corrupt_largest_sst(tmp_path / "db")
    with open_store(tmp_path / "db") as store, pytest.raises(StorageError, match="pending"):
        for _ in store.iterate(P):
            pass


def test_a_prefix_scan_stays_in_its_prefix_while_memory_is_reused(tmp_path: Path) -> None:
    # Regression: rocksdict keeps only a pointer to the upper-bound bytes; once they were
    # freed, reused memory moved the bound and scans ran past (or stopped short of) the prefix.
    with open_store(tmp_path / "db") as store:
        store.write([(P, bytes((a, 0, b)), b"v") for a in range(8) for b in range(40)])
        for a in range(7):
            got = []
            for key, _ in store.iterate(P, prefix=bytes((a, 0))):
                got.append(key)
                churn = [bytes((i % 256, 1)) for i in range(2000)]  # same size as the bound
                del churn
            assert got == [bytes((a, 0, b)) for b in range(40)]


def test_writes_racing_a_wal_sync_thread_all_land(tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as store:
        stop = threading.Event()
        errors: list[StorageError] = []

        def syncer() -> None:
            try:
                while not stop.is_set():
                    store.sync_wal()
            except StorageError as exc:  # the only error a store call may raise
                errors.append(exc)

        thread = threading.Thread(target=syncer)
        thread.start()
        try:
            for b in range(300):
                store.write([(P, k(b * 10 + i), b"v") for i in range(10)])
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()
        assert errors == []
        store.sync_wal()
        assert sum(1 for _ in store.iterate(P)) == 3000


def test_a_read_only_open_needs_an_existing_store_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no store at .*missing \(and read_only=True\)"):
        open_store(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()


#: Writes until the WAL passes a file-size limit (EFBIG: how a write fails without a full
#: disk or root), keeps the error, closes, and reopens the same dir in the same process.
FAILED_WRITE_CHILD = """
import resource, signal, sys
from tq.core.layout import Family
from tq.errors import StorageError
from tq.storage import open_store

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of dying
store = open_store(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
kept = None
try:
    for i in range(100_000):
        store.write([(Family.PENDING, i.to_bytes(8, "big"), b"x" * 1000)])
except StorageError as e:
    kept = e  # an error held on to, as a broker holds the one that started an outage
assert kept is not None, "no write failed"
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
try:
    store.close()
except StorageError:
    pass  # expected: RocksDB repeats the write's error at close
again = open_store(sys.argv[1])  # fails on the dir lock if anything still pins the DB
print(sum(1 for _ in again.iterate(Family.PENDING)), "|", kept.message)
again.close()
"""


def test_an_error_from_a_failed_write_does_not_keep_the_closed_store_locked(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FAILED_WRITE_CHILD, str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.strip().split(" | ")
    assert int(count) > 0  # what was written before the failure is still there
    assert "File too large" in message
