"""Installing a checkpoint stream (``tq.cluster.checkpoint``) as a node's store, atomically.

Theory of operation, for the store directory ``D``: the stream is received into
``.D.incoming`` beside it, every file checked against the manifest (names, sizes, SHA-256;
nothing else accepted) and the store opened to check its applied mark; only then is it
renamed to ``.D.ready`` (the rename is the mark of a verified checkpoint). ``swap_in`` then
renames ``D`` to ``.D.old`` and ``.D.ready`` to ``D``, with the parent directory fsync'd after
each rename. A crash at any point leaves ``D`` (the old or the new store, whole), or no ``D``
with ``.D.ready`` or ``.D.old`` beside it: ``finish_install`` (run before opening the store)
renames the right one back, so the store is always the old one or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import IO, Final

import msgspec

from tq.cluster.checkpoint import CHUNK, FORMAT_VERSION, MANIFEST_NAME, Manifest, manifest_decoder
from tq.cluster.replica import applied_mark
from tq.core.layout import AppliedMark
from tq.errors import StorageError
from tq.storage.rocksdb import open_store

#: Largest manifest accepted (a store of 100,000 files describes itself in ~10 MB).
MAX_MANIFEST_BYTES: Final = 16 << 20
#: What RocksDB keeps in its directory; any other plain file (the bootstrap key) is carried
#: over to the new store directory by ``swap_in``.
_ROCKSDB_FILE: Final = re.compile(
    r"(CURRENT|IDENTITY|LOCK|LOG(\.old\.\d+)?|MANIFEST-\d+|OPTIONS-\d+(\.dbtmp)?"
    r"|\d+\.(sst|log|blob|dbtmp)|rocksdict-config\.json)"
)
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class CheckpointError(StorageError):
    """A checkpoint stream that is not whole, not this format, or not newer than the store:
    nothing of it was installed."""


def _beside(store_dir: Path, what: str) -> Path:
    return store_dir.parent / f".{store_dir.name}.{what}"


def receive_checkpoint(
    stream: IO[bytes], store_dir: Path, *, have: AppliedMark | None = None
) -> Manifest:
    """Read a checkpoint stream into ``.D.ready`` beside ``store_dir`` (verified, not yet in
    use: ``swap_in`` installs it). CheckpointError if the stream is damaged, truncated, of
    another format, holds anything the manifest does not list, or is older than ``have``;
    then nothing is left behind. Blocking: run it in a thread."""
    store_dir = Path(store_dir)
    _check_carry_over(store_dir)
    incoming, ready = _beside(store_dir, "incoming"), _beside(store_dir, "ready")
    for leftover in (incoming, ready):
        shutil.rmtree(leftover, ignore_errors=True)
    incoming.mkdir(parents=True)
    try:
        manifest = _receive(stream, incoming, have)
        with open_store(incoming, create=False, read_only=True) as store:
            mark = applied_mark(store)
        if mark != manifest.mark:
            raise CheckpointError(
                f"checkpoint says it holds entry {manifest.applied_index} (epoch "
                f"{manifest.applied_epoch}), its store holds {mark.index} (epoch {mark.epoch})"
            )
        _fsync_dir(incoming)
        os.rename(incoming, ready)
        _fsync_dir(store_dir.parent)
    except StorageError:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    except (OSError, tarfile.TarError, ValueError, EOFError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        raise CheckpointError(f"checkpoint stream refused: {type(exc).__name__}: {exc}") from exc
    return manifest


def _receive(stream: IO[bytes], into: Path, have: AppliedMark | None) -> Manifest:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST_NAME or not first.isfile():
            raise CheckpointError(f"checkpoint stream does not start with {MANIFEST_NAME}")
        if first.size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"checkpoint manifest of {first.size} bytes: too large")
        manifest = _manifest(_read_all(tar, first))
        if have is not None and (manifest.applied_index, manifest.applied_epoch) < (
            have.index,
            have.epoch,
        ):
            raise CheckpointError(
                f"checkpoint holds entry {manifest.applied_index}, older than entry "
                f"{have.index} this node has applied: not installed"
            )
        expected = {f.name: f for f in manifest.files}
        received: set[str] = set()
        # next(), not iteration: a stream-mode TarFile's iterator starts again at the manifest.
        while (member := tar.next()) is not None:
            entry = expected.get(member.name)
            if entry is None or member.name in received:
                raise CheckpointError(f"checkpoint stream holds {member.name!r} unexpectedly")
            if not member.isfile() or member.size != entry.size:
                raise CheckpointError(f"checkpoint file {member.name}: not {entry.size} bytes")
            _copy(tar, member, into / member.name, entry.sha256)
            received.add(member.name)
        missing = sorted(set(expected) - received)
        if missing:
            raise CheckpointError(f"checkpoint stream ended without {', '.join(missing)}")
    return manifest


def _manifest(raw: bytes) -> Manifest:
    try:
        manifest = manifest_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"checkpoint manifest: {exc}") from exc
    if manifest.format != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {manifest.format}, but this node reads format "
            f"{FORMAT_VERSION} only (run the same tq release on every node)"
        )
    names = [f.name for f in manifest.files]
    bad = next((n for n in names if not _SAFE_NAME.fullmatch(n) or n == MANIFEST_NAME), None)
    if bad is not None:
        raise CheckpointError(f"checkpoint manifest names the file {bad!r}: not a store file")
    if len(set(names)) != len(names) or "CURRENT" not in names:
        raise CheckpointError("checkpoint manifest lists a file twice, or no CURRENT file")
    if any(f.size < 0 for f in manifest.files) or manifest.applied_index < 0:
        raise CheckpointError("checkpoint manifest holds a negative size or index")
    return manifest


def _read_all(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    if f is None:
        raise CheckpointError(f"checkpoint member {member.name} has no content")
    data = f.read()
    if len(data) != member.size:
        raise CheckpointError(f"checkpoint stream truncated inside {member.name}")
    return data


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, sha256: str) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise CheckpointError(f"checkpoint member {member.name} has no content")
    digest = hashlib.sha256()
    size = 0
    with open(target, "xb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != member.size:
        raise CheckpointError(f"checkpoint stream truncated inside {member.name}")
    if digest.hexdigest() != sha256:
        raise CheckpointError(f"checkpoint file {member.name}: SHA-256 mismatch (damaged)")


def _check_carry_over(store_dir: Path) -> None:
    """The swap replaces the whole directory: refuse one holding a directory of something
    else (a managed etcd member's data) before downloading anything."""
    if not store_dir.is_dir():
        return
    for entry in os.scandir(store_dir):
        if entry.is_dir(follow_symlinks=False) or entry.is_symlink():
            raise CheckpointError(
                f"store directory {store_dir} holds {entry.name}/, which is not the store's: "
                "installing a checkpoint replaces the whole directory (move it elsewhere, e.g. "
                "raft.etcd_data_dir outside persistence.data_dir)"
            )


def swap_in(store_dir: Path) -> None:
    """Install the verified checkpoint ``receive_checkpoint`` left beside ``store_dir``, in
    place of the store (which must be closed). Plain files that are not RocksDB's (the
    bootstrap key) are carried over. CheckpointError when none is ready."""
    store_dir = Path(store_dir)
    ready, old = _beside(store_dir, "ready"), _beside(store_dir, "old")
    if not ready.is_dir():
        raise CheckpointError(f"no verified checkpoint is ready beside {store_dir}")
    _check_carry_over(store_dir)
    shutil.rmtree(old, ignore_errors=True)
    if store_dir.exists():
        for entry in os.scandir(store_dir):
            if not _ROCKSDB_FILE.fullmatch(entry.name) and not (ready / entry.name).exists():
                shutil.copy2(entry.path, ready / entry.name)
        _fsync_dir(ready)
        os.rename(store_dir, old)
        _fsync_dir(store_dir.parent)
    os.rename(ready, store_dir)
    _fsync_dir(store_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def discard_ready(store_dir: Path) -> None:
    """Drop a received checkpoint that will not be installed (it failed a later check)."""
    shutil.rmtree(_beside(Path(store_dir), "ready"), ignore_errors=True)


def finish_install(store_dir: Path) -> str | None:
    """After a crash mid-install: complete or undo it, so ``store_dir`` is a whole store
    again. Call before opening the store. What was done (None: nothing to do)."""
    store_dir = Path(store_dir)
    incoming, ready, old = (_beside(store_dir, w) for w in ("incoming", "ready", "old"))
    done: str | None = None
    if not store_dir.exists():
        if ready.is_dir():
            os.rename(ready, store_dir)  # verified and the old store already moved away
            done = "installed the verified checkpoint"
        elif old.is_dir():
            os.rename(old, store_dir)
            done = "restored the store the install had moved away"
        if done is not None:
            _fsync_dir(store_dir.parent)
    for leftover in (incoming, ready, old):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            done = done or "removed an unfinished checkpoint"
    return done


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync of a directory
            os.fsync(fd)
    finally:
        os.close(fd)
