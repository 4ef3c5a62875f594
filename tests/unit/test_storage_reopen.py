"""Opening a data dir on a full disk: the write probe, what counts as "disk full", and the
start-up choice between read-write and read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tq.core.layout import Family
from tq.errors import StorageError
from tq.storage import MemoryBacking, MemoryStore, Store, open_store
from tq.storage.reopen import (
    PROBE_NAME,
    RocksOpener,
    open_at_start,
    out_of_space,
    probe_dir,
    reason,
    release,
)

FULL = "IO error: No space left on device: While appending to file: /d/000004.log"


class RefusingOpener:
    """Read-write opens fail with ``error``; read-only opens work on a memory backing."""

    def __init__(self, error: StorageError) -> None:
        self.error = error
        self.backing = MemoryBacking()

    def open(self, *, read_only: bool) -> Store:
        if not read_only:
            raise self.error
        return MemoryStore(self.backing, read_only=True)

    def probe(self) -> None:
        raise self.error


def test_the_probe_writes_syncs_and_removes_its_file(tmp_path: Path) -> None:
    probe_dir(tmp_path, size=4096)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_probe_names_the_directory_and_leaves_nothing_behind(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(StorageError, match=r"write probe in .*gone failed: No such file"):
        probe_dir(missing)
    assert not (missing / PROBE_NAME).exists()


def test_disk_full_and_quota_errors_read_as_out_of_space() -> None:
    assert out_of_space(StorageError(f"write batch failed: {FULL}"))
    assert out_of_space(OSError(122, "Disk quota exceeded"))
    assert not out_of_space(StorageError("data dir /d is already open (lock)"))
    assert reason(StorageError(f"write batch failed: {FULL}")).startswith("disk full: write")
    assert reason(ValueError("odd")) == "ValueError: odd"


def test_a_full_disk_at_start_opens_read_only_and_says_why() -> None:
    opened = open_at_start(RefusingOpener(StorageError(f"cannot open store: {FULL}")))
    assert isinstance(opened.store, MemoryStore) and opened.store.read_only
    assert opened.read_only_because is not None
    assert opened.read_only_because.startswith("disk full: cannot open store")


def test_any_other_failure_at_start_is_raised_as_before() -> None:
    locked = StorageError("data dir /d is already open (another process holds its lock)")
    with pytest.raises(StorageError, match="already open"):
        open_at_start(RefusingOpener(locked))


def test_the_rocks_opener_opens_the_same_dir_both_ways_and_probes_it(tmp_path: Path) -> None:
    opener = RocksOpener(tmp_path / "db")
    opened = open_at_start(opener)
    assert opened.read_only_because is None
    opened.store.write([(Family.PENDING, b"k", b"v")], sync=True)
    reader = opener.open(read_only=True)
    assert reader.get(Family.PENDING, b"k") == b"v"
    assert release(opened.store) is None
    assert release(reader) is None
    opener.probe()
    assert not (tmp_path / "db" / PROBE_NAME).exists()
    with open_store(tmp_path / "db") as again:  # nothing holds the dir any more
        assert again.get(Family.PENDING, b"k") == b"v"
