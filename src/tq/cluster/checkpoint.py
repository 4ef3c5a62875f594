"""A node's RocksDB checkpoint as a stream, for a node too far behind the trimmed log.

The stream is a POSIX tar (no compression: the SST files are compressed already) whose first
member is ``MANIFEST.json``: the format version, the checkpoint's applied mark (read from the
checkpoint itself, so it is exactly the state the files hold) and every file with its size
and SHA-256; the files follow, in manifest order. ``tq.cluster.install`` reads it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec

from tq.cluster.replica import applied_mark
from tq.core.layout import AppliedMark
from tq.errors import StorageError
from tq.storage.base import Store
from tq.storage.rocksdb import open_store

#: The stream format this code writes and reads; a reader refuses any other.
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "MANIFEST.json"
#: Bytes per chunk of the stream (what one read of a file and one write to the socket move).
CHUNK: Final = 1 << 20
_BLOCK: Final = tarfile.BLOCKSIZE
_counter = itertools.count()
_PREFIX: Final = "checkpoint-"


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    size: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a checkpoint stream holds. ``created_at``: unix seconds on the serving node."""

    format: int
    applied_index: int
    applied_epoch: int
    created_at: float
    files: tuple[FileEntry, ...]

    @property
    def mark(self) -> AppliedMark:
        return AppliedMark(self.applied_index, self.applied_epoch)

    @property
    def data_bytes(self) -> int:
        return sum(f.size for f in self.files)


manifest_encoder: Final = msgspec.json.Encoder()
manifest_decoder: Final = msgspec.json.Decoder(Manifest)


class Snapshot:
    """A checkpoint directory taken from a store and its manifest; ``chunks()`` is the stream
    (blocking file reads: iterate it in a thread), ``remove()`` deletes the directory (done by
    ``chunks()`` when it ends, however it ends)."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self._header = manifest_encoder.encode(manifest)

    @property
    def stream_bytes(self) -> int:
        """The exact length of the stream (a Content-Length)."""
        members = [len(self._header), *(f.size for f in self.manifest.files)]
        return sum(_BLOCK + _padded(size) for size in members) + 2 * _BLOCK

    def chunks(self) -> Iterator[bytes]:
        try:
            yield _header(MANIFEST_NAME, len(self._header), self.manifest.created_at)
            yield self._header + _padding(len(self._header))
            for entry in self.manifest.files:
                yield _header(entry.name, entry.size, self.manifest.created_at)
                sent = 0
                with open(self.path / entry.name, "rb") as f:
                    while chunk := f.read(min(CHUNK, entry.size - sent)):
                        sent += len(chunk)
                        yield chunk
                if sent != entry.size:  # a checkpoint file is never written to: a disk fault
                    raise StorageError(
                        f"checkpoint file {entry.name} changed while streamed "
                        f"({sent} of {entry.size} bytes)"
                    )
                yield _padding(entry.size)
            yield b"\0" * (2 * _BLOCK)
        finally:
            self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _padding(size: int) -> bytes:
    return b"\0" * (_padded(size) - size)


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def take_checkpoint(store: Store, work_dir: Path) -> Snapshot:
    """Checkpoint ``store`` into a new directory under ``work_dir`` (on the store's file
    system, so RocksDB hard-links the SST files) and describe it. Blocking (it flushes the
    memtables and hashes every file): call it in a thread (``take_checkpoint_async``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{_PREFIX}{os.getpid()}-{next(_counter)}-{time.time_ns()}"
    store.checkpoint(path)
    try:
        with open_store(path, create=False, read_only=True) as snap:
            mark = applied_mark(snap)
        files = tuple(_describe(path, name) for name in sorted(os.listdir(path)))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    manifest = Manifest(FORMAT_VERSION, mark.index, mark.epoch, time.time(), files)
    return Snapshot(path, manifest)


async def take_checkpoint_async(store: Store, work_dir: Path) -> Snapshot:
    return await asyncio.to_thread(take_checkpoint, store, work_dir)


def clear_checkpoints(work_dir: Path) -> int:
    """Delete the checkpoint directories left in ``work_dir`` by an earlier run (its process
    died mid-stream); call at start, before serving any. How many there were."""
    if not work_dir.is_dir():
        return 0
    stale = [p for p in work_dir.iterdir() if p.name.startswith(_PREFIX) and p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def _describe(directory: Path, name: str) -> FileEntry:
    path = directory / name
    if not path.is_file() or path.is_symlink():
        raise StorageError(f"checkpoint {directory} holds {name}, which is not a regular file")
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(name, size, digest.hexdigest())
