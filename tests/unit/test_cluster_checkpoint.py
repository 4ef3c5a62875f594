"""A node's RocksDB checkpoint as a stream and its install elsewhere: the same contents and
applied mark; a damaged, truncated, foreign or older stream refused with the old store left as
it was; a crash at any point of the swap recovered to the old store or the new one, whole."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import msgspec
import pytest
from tests.replication import Led, contents, follow, lead
from tests.unit.test_cluster_replica import BUSY

from tq.cluster.checkpoint import (
    MANIFEST_NAME,
    Manifest,
    Snapshot,
    clear_checkpoints,
    take_checkpoint,
)
from tq.cluster.install import CheckpointError, finish_install, receive_checkpoint, swap_in
from tq.cluster.replica import applied_mark
from tq.core.layout import AppliedMark, Family
from tq.storage.rocksdb import RocksStore, open_store


@pytest.fixture(scope="module")
def led(tmp_path_factory: pytest.TempPathFactory) -> Led:
    return lead(tmp_path_factory.mktemp("leader") / "db", BUSY, restart_at=17)


def node(path: Path, led: Led, upto: int | None = None) -> None:
    """A node's store in ``path`` that applied the first ``upto`` entries of ``led``."""
    follow(path, led.entries[:upto])


def stream_of(store_dir: Path, work: Path) -> tuple[Snapshot, bytes]:
    with RocksStore(store_dir) as store:
        snapshot = take_checkpoint(store, work)
    return snapshot, b"".join(snapshot.chunks())


def dump(path: Path) -> tuple[dict[str, list[tuple[bytes, bytes]]], AppliedMark]:
    with open_store(path, create=False, read_only=True) as store:
        return contents(store), applied_mark(store)


def test_a_checkpoint_installed_elsewhere_opens_with_the_same_contents_and_mark(
    tmp_path: Path, led: Led
) -> None:
    node(tmp_path / "source", led)
    snapshot, data = stream_of(tmp_path / "source", tmp_path / "work")
    assert len(data) == snapshot.stream_bytes
    assert not snapshot.path.exists()  # the stream removed its directory when it ended
    assert snapshot.manifest.mark == AppliedMark(len(led.entries), led.epoch)
    assert snapshot.manifest.data_bytes > 0
    # A node far behind, with a file of its own in its directory (the bootstrap key).
    behind = tmp_path / "behind"
    node(behind, led, upto=3)
    (behind / "bootstrap-admin.key").write_text("secret")
    manifest = receive_checkpoint(io.BytesIO(data), behind, have=AppliedMark(3, led.epoch - 1))
    assert manifest == snapshot.manifest
    assert dump(behind)[1] == AppliedMark(3, led.epoch - 1)  # not installed until the swap
    swap_in(behind)
    assert dump(behind) == dump(tmp_path / "source")
    assert dump(behind)[0] == led.contents
    assert (behind / "bootstrap-admin.key").read_text() == "secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["behind", "source", "work"]
    # The installed store is a working store: it applies the next entries (none left here)
    # and takes writes.
    with RocksStore(behind) as store:
        store.write([(Family.PENDING, b"k", b"v")], sync=True)


def test_a_new_node_without_a_store_installs_one(tmp_path: Path, led: Led) -> None:
    node(tmp_path / "source", led)
    _, data = stream_of(tmp_path / "source", tmp_path / "work")
    receive_checkpoint(io.BytesIO(data), tmp_path / "new")
    swap_in(tmp_path / "new")
    assert dump(tmp_path / "new") == dump(tmp_path / "source")


def refused(data: bytes, store_dir: Path, match: str, have: AppliedMark | None = None) -> None:
    before = dump(store_dir)
    with pytest.raises(CheckpointError, match=match):
        receive_checkpoint(io.BytesIO(data), store_dir, have=have)
    assert dump(store_dir) == before
    leftovers = [p.name for p in store_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    with pytest.raises(CheckpointError, match="no verified checkpoint"):
        swap_in(store_dir)


def test_a_truncated_stream_is_refused_and_the_old_store_stays(tmp_path: Path, led: Led) -> None:
    node(tmp_path / "source", led)
    _, data = stream_of(tmp_path / "source", tmp_path / "work")
    node(tmp_path / "old", led, upto=2)
    for cut in (0, 100, 512, 1024 + 10, len(data) // 3, len(data) // 2, len(data) - 2048):
        refused(data[:cut], tmp_path / "old", "truncated|ended without|does not start|refused")


def test_a_damaged_byte_anywhere_in_a_file_is_refused(tmp_path: Path, led: Led) -> None:
    node(tmp_path / "source", led)
    _, data = stream_of(tmp_path / "source", tmp_path / "work")
    node(tmp_path / "old", led, upto=2)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = [m for m in tar.getmembers() if m.name != MANIFEST_NAME and m.size]
    for member in files:
        for at in {0, member.size // 2, member.size - 1}:
            damaged = bytearray(data)
            damaged[member.offset_data + at] ^= 0x55
            refused(bytes(damaged), tmp_path / "old", f"{member.name}: SHA-256 mismatch")


def rewrite(data: bytes, manifest: dict[str, object] | None, extra: bytes | None) -> bytes:
    """The stream with its manifest replaced, or with a member ``extra`` appended."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r|") as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as target,
    ):
        while (member := source.next()) is not None:
            f = source.extractfile(member)
            assert f is not None
            body = f.read()
            if member.name == MANIFEST_NAME and manifest is not None:
                body = msgspec.json.encode(manifest)
                member.size = len(body)
            target.addfile(member, io.BytesIO(body))
        if extra is not None:
            info = tarfile.TarInfo("../escape")
            info.size = len(extra)
            target.addfile(info, io.BytesIO(extra))
    return out.getvalue()


def test_a_stream_of_another_format_older_or_with_foreign_files_is_refused(
    tmp_path: Path, led: Led
) -> None:
    node(tmp_path / "source", led)
    snapshot, data = stream_of(tmp_path / "source", tmp_path / "work")
    node(tmp_path / "old", led, upto=2)
    fields = msgspec.to_builtins(snapshot.manifest)
    refused(rewrite(data, {**fields, "format": 2}, None), tmp_path / "old", "format 2")
    refused(rewrite(data, {**fields, "extra": 1}, None), tmp_path / "old", "manifest")
    refused(rewrite(data, None, b"x"), tmp_path / "old", "'../escape' unexpectedly")
    files = [*fields["files"], {"name": "../x", "size": 1, "sha256": "0" * 64}]
    refused(rewrite(data, {**fields, "files": files}, None), tmp_path / "old", "'../x'")
    # The manifest must tell the truth about the store's mark.
    lie = {**fields, "applied_index": snapshot.manifest.applied_index + 1}
    refused(rewrite(data, lie, None), tmp_path / "old", "its store holds")
    refused(b"not a tar stream at all" * 100, tmp_path / "old", "refused")
    newer = AppliedMark(len(led.entries) + 1, led.epoch)
    refused(data, tmp_path / "old", "older than entry", have=newer)


def test_a_store_dir_holding_another_directory_is_refused_before_downloading(
    tmp_path: Path, led: Led
) -> None:
    node(tmp_path / "old", led, upto=2)
    (tmp_path / "old" / "etcd").mkdir()
    with pytest.raises(CheckpointError, match="holds etcd/"):
        receive_checkpoint(io.BytesIO(b""), tmp_path / "old")


@pytest.mark.parametrize("crash_after", ["ready", "moved_old", "swapped", "receiving"])
def test_a_crash_at_any_point_of_an_install_leaves_the_old_store_or_the_new_one(
    tmp_path: Path, led: Led, crash_after: str
) -> None:
    """The install's steps done by hand up to ``crash_after``, then what a restart does."""
    node(tmp_path / "source", led)
    _, data = stream_of(tmp_path / "source", tmp_path / "work")
    store = tmp_path / "store"
    node(store, led, upto=2)
    old, new = dump(store), dump(tmp_path / "source")
    ready, moved = tmp_path / ".store.ready", tmp_path / ".store.old"
    receive_checkpoint(io.BytesIO(data), store)
    if crash_after == "receiving":  # died while downloading: a partial incoming dir
        os.rename(ready, tmp_path / ".store.incoming")
        os.remove(tmp_path / ".store.incoming" / "CURRENT")
    if crash_after in ("moved_old", "swapped"):
        os.rename(store, moved)
    if crash_after == "swapped":
        os.rename(ready, store)
    assert finish_install(store) is not None
    expected = old if crash_after in ("ready", "receiving") else new
    assert dump(store) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source", "store", "work"]
    assert finish_install(store) is None


def test_the_manifest_is_strict_json(tmp_path: Path, led: Led) -> None:
    node(tmp_path / "source", led)
    snapshot, data = stream_of(tmp_path / "source", tmp_path / "work")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        first = tar.next()
        assert first is not None
        assert first.name == MANIFEST_NAME
        f = tar.extractfile(first)
        assert f is not None
        manifest = msgspec.json.decode(f.read(), type=Manifest)
    assert manifest == snapshot.manifest
    assert {f.name for f in manifest.files} >= {"CURRENT"}
    assert all(len(f.sha256) == 64 for f in manifest.files)


def test_checkpoints_left_by_a_crash_are_cleared_at_start(tmp_path: Path, led: Led) -> None:
    node(tmp_path / "source", led)
    with RocksStore(tmp_path / "source") as store:
        left = [take_checkpoint(store, tmp_path / "work") for _ in range(2)]
    (tmp_path / "work" / "mine").mkdir()  # not a checkpoint: stays
    assert all(s.path.is_dir() for s in left)
    assert clear_checkpoints(tmp_path / "work") == 2
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["mine"]
    assert clear_checkpoints(tmp_path / "nothing") == 0
