"""Opening a data dir that may sit on a full disk, for a broker that must outlive the outage.

Read-write when it can, read-only on a full disk (reads keep working, nothing is written);
closing a store so that RocksDB really lets go of the directory; and a cheap probe of whether
writing works again, so the broker knows when a read-write reopen is worth trying.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Protocol

from tq.errors import StorageError, TqError
from tq.storage.base import Store, StrPath
from tq.storage.rocksdb import RocksTuning, open_store

#: What the OS says when a write finds no room (ENOSPC, EDQUOT), as RocksDB quotes it.
OUT_OF_SPACE = ("No space left on device", "Disk quota exceeded")
#: The probe writes this much: a few bytes can fit in the last free block of a disk that
#: still cannot take a memtable flush, and a store reopened there fails again at once.
PROBE_BYTES = 1 << 20
PROBE_NAME = ".tq-write-probe"


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full."""
    return any(text in str(error) for text in OUT_OF_SPACE)


def reason(error: BaseException) -> str:
    """A one-line account of a storage failure for logs and refusals (no code prefix)."""
    text = error.message if isinstance(error, TqError) else f"{type(error).__name__}: {error}"
    return f"disk full: {text}" if out_of_space(error) else text


class Opener(Protocol):
    """Opens one data dir, again and again: the broker's way back to its store."""

    def open(self, *, read_only: bool) -> Store:
        """The store, read-write or read-only; ``StorageError`` when it cannot be opened."""
        ...

    def probe(self) -> None:
        """Raise ``StorageError`` unless a small write made durable in the data dir works."""
        ...


class RocksOpener:
    """The production ``Opener``: RocksDB in ``path``, probed with a file next to it."""

    def __init__(self, path: StrPath, tuning: RocksTuning | None = None) -> None:
        self.path = os.fspath(path)
        self.tuning = tuning

    def open(self, *, read_only: bool) -> Store:
        return open_store(self.path, tuning=self.tuning, read_only=read_only)

    def probe(self) -> None:
        probe_dir(self.path)


def probe_dir(path: StrPath, size: int = PROBE_BYTES) -> None:
    """Write ``size`` bytes to a file in ``path``, fsync it and remove it; ``StorageError``
    (naming the path and the OS error) if any step fails. The file never outlives the call."""
    name = os.path.join(os.fspath(path), PROBE_NAME)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(bytes(size))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"write probe in {os.fspath(path)} failed: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@dataclass(frozen=True)
class Opened:
    store: Store
    #: None when the store is writable; else why it was opened read-only.
    read_only_because: str | None = None


def open_at_start(opener: Opener) -> Opened:
    """Read-write, or read-only when the disk is full (any other failure is raised: a locked
    or damaged data dir must stop the broker from starting, as before)."""
    try:
        return Opened(opener.open(read_only=False))
    except StorageError as exc:
        if not out_of_space(exc):
            raise
        return Opened(opener.open(read_only=True), reason(exc))


def release(store: Store) -> str | None:
    """Close ``store`` and collect what still refers to it, so RocksDB lets go of the data dir;
    the close error's text if closing failed (expected after a failed write: RocksDB keeps
    that error and repeats it at close, yet still lets go once nothing refers to the DB)."""
    failure: str | None = None
    try:
        store.close()
    except StorageError as exc:
        failure = exc.message
    gc.collect()  # an exception cycle may still hold an iterator or a column family
    return failure
