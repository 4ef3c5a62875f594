"""A replica follows the leader's log into its own RocksDB: the same durable state as the
leader's for any workload, resumed after a restart from its applied index, indifferent to
redelivery, refusing gaps, and unchanged by an entry it cannot apply."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.replication import EPOCH, Op, contents, follow, lead, live_states, ops, same_as_leader

from tq.cluster.entry import CorruptEntryError, decode_entry, encode_entry
from tq.cluster.replica import DivergenceError, LogOrderError, Replica
from tq.core import commands as c
from tq.core.ids import TaskId, WorkerId
from tq.errors import ErrorCode, StorageError
from tq.storage.rocksdb import RocksStore

REPLAYS = settings(max_examples=60, deadline=None)
#: A fixed workload touching every kind of operation, for the tests that are not properties.
BUSY: list[Op] = [
    ("register", 0, 0), ("submit", 5, 0), ("submit", 3, 3), ("turn", 0, 0), ("claim", 4, 0),
    ("claim", 2, 1), ("complete", 1, 0), ("fail", 1, 1), ("fail", 0, 0), ("settle", 0, 0),
    ("heartbeat", 0, 0), ("progress", 2, 0), ("cancel", 2, 0), ("turn", 0, 0), ("expire", 0, 0),
    ("promote", 3, 0), ("retry", 4, 0), ("submit", 4, 2), ("claim", 5, 1), ("release", 0, 1),
    ("turn", 0, 0), ("reap", 0, 0), ("purge", 0, 0), ("deregister", 0, 1), ("submit", 2, 0),
]  # fmt: skip


@REPLAYS
@given(ops, st.none() | st.integers(0, 80))
def test_a_replica_applying_the_leaders_entries_holds_the_leaders_durable_state(
    steps: list[Op], restart_at: int | None
) -> None:
    """Also across a restart of the leader (``restart_at`` steps in): its start batch (a new
    lease epoch, the leases that ran out) is an entry like any other."""
    with tempfile.TemporaryDirectory() as tmp:
        led = lead(Path(tmp, "leader"), steps, restart_at)
        with RocksStore(Path(tmp, "replica")) as store:
            replica = Replica.open(store)
            for i, data in enumerate(led.entries, 1):
                assert replica.apply_entry(i, data) is not None
            assert replica.machine.snapshot() == led.snapshot
            assert replica.applied_index == len(led.entries)
            same_as_leader(store, led)


def test_the_fixed_workload_reaches_every_kind_of_state(tmp_path: Path) -> None:
    """Keeps the workload honest: it is not a run of refusals that leaves nothing to compare."""
    led = lead(tmp_path / "leader", BUSY, restart_at=17)
    assert led.epoch == EPOCH + 1
    follow(tmp_path / "replica", led.entries)
    with RocksStore(tmp_path / "replica") as store:
        same_as_leader(store, led)
        families = {name for name, rows in contents(store).items() if rows}
        assert {"pending", "dead_letter", "metadata"} <= families  # completed ones: purged
        assert live_states(store)
    kinds = {
        type(cmd).__name__
        for i, data in enumerate(led.entries, 1)
        for cmd in decode_entry(i, data).commands
    }
    assert {
        "SubmitTasks", "ClaimTasks", "CompleteTasks", "FailTasks", "CancelTasks", "RetryTasks",
        "PurgeTasks", "ReleaseTasks", "Heartbeat", "ExpireLeases", "PromoteDue", "BrokerStarted",
    } <= kinds  # fmt: skip


@REPLAYS
@given(ops, st.data())
def test_a_replica_closed_mid_stream_resumes_from_its_applied_index(
    steps: list[Op], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        led = lead(Path(tmp, "leader"), steps)
        cut = data.draw(st.integers(0, len(led.entries)))
        path = Path(tmp, "replica")
        store = RocksStore(path)
        replica = Replica.open(store)
        for i, entry in enumerate(led.entries[:cut], 1):
            replica.apply_entry(i, entry)
        store.close()  # no fsync, no flush: what a killed process leaves to the OS
        with RocksStore(path) as store:
            again = Replica.open(store)
            assert again.applied_index == cut
            assert again.machine.snapshot() == replica.machine.snapshot()
            # The log redelivers from wherever the node asks (here: from the start).
            for i, entry in enumerate(led.entries, 1):
                applied = again.apply_entry(i, entry)
                assert (applied is None) == (i <= cut)
            same_as_leader(store, led)


def test_redelivered_entries_change_nothing(tmp_path: Path) -> None:
    led = lead(tmp_path / "leader", BUSY)
    with RocksStore(tmp_path / "replica") as store:
        replica = Replica.open(store)
        for i, entry in enumerate(led.entries, 1):
            replica.apply_entry(i, entry)
            before = contents(store)
            for j in range(1, i + 1):
                assert replica.apply_entry(j, led.entries[j - 1]) is None
            assert contents(store) == before
        same_as_leader(store, led)


def test_a_gap_is_refused_naming_the_missing_entries(tmp_path: Path) -> None:
    led = lead(tmp_path / "leader", BUSY)
    assert len(led.entries) >= 4
    with RocksStore(tmp_path / "replica") as store:
        replica = Replica.open(store)
        replica.apply_entry(1, led.entries[0])
        before = contents(store)
        with pytest.raises(LogOrderError, match="entries 2 to 3 are missing") as e:
            replica.apply_entry(4, led.entries[3])
        assert e.value.code == ErrorCode.STORAGE_ERROR
        assert contents(store) == before
        assert replica.applied_index == 1
        for i, entry in enumerate(led.entries[1:], 2):  # the missing ones come: it goes on
            replica.apply_entry(i, entry)
        same_as_leader(store, led)


def test_an_entry_of_an_older_epoch_is_refused(tmp_path: Path) -> None:
    with RocksStore(tmp_path / "replica") as store:
        replica = Replica.open(store)
        replica.apply_entry(1, encode_entry(1, 5, [c.PromoteDue(1.0)]))
        before = contents(store)
        with pytest.raises(LogOrderError, match="epoch 4, older than epoch 5 of entry 1"):
            replica.apply_entry(2, encode_entry(2, 4, [c.PromoteDue(2.0)]))
        assert contents(store) == before
        assert (replica.applied_index, replica.applied_epoch) == (1, 5)


def damaged(entry: bytes) -> list[bytes]:
    """Ways an entry arrives damaged: truncated, extended, a byte flipped, moved."""
    middle = len(entry) // 2
    return [
        b"",
        entry[:-1],
        entry[:middle],
        entry + b"\x00",
        entry[:middle] + bytes([entry[middle] ^ 0xFF]) + entry[middle + 1 :],
        encode_entry(99, EPOCH, []),
    ]


def test_a_corrupt_entry_changes_nothing_and_the_good_one_applies_after(tmp_path: Path) -> None:
    led = lead(tmp_path / "leader", BUSY)
    with RocksStore(tmp_path / "replica") as store:
        replica = Replica.open(store)
        for i, entry in enumerate(led.entries, 1):
            before, snap = contents(store), replica.machine.snapshot()
            for bad in damaged(entry):
                with pytest.raises(CorruptEntryError, match=f"log entry {i}"):
                    replica.apply_entry(i, bad)
                assert contents(store) == before
                assert replica.machine.snapshot() == snap
                assert replica.applied_index == i - 1
            replica.apply_entry(i, entry)
        same_as_leader(store, led)


def test_a_command_this_node_refuses_leaves_memory_and_store_as_they_were(
    tmp_path: Path,
) -> None:
    """An entry whose first command applies and whose second is refused: the first is undone
    in memory (rebuilt from the store), and nothing reaches the store."""
    led = lead(tmp_path / "leader", BUSY)
    with RocksStore(tmp_path / "replica") as store:
        replica = Replica.open(store)
        for i, entry in enumerate(led.entries, 1):
            replica.apply_entry(i, entry)
        before, snap = contents(store), replica.machine.snapshot()
        n = len(led.entries) + 1
        refused = encode_entry(
            n,
            EPOCH,
            [
                c.RegisterWorker(5.0, WorkerId("w9"), "w9", ("a",), 1),
                c.ReportProgress(5.0, TaskId(b"\x00" * 16), 1, 50),  # no such task: refused
            ],
        )
        with pytest.raises(
            DivergenceError, match=rf"log entry {n}: command 2 of 2 \(ReportProgress\)"
        ):
            replica.apply_entry(n, refused)
        assert replica.machine.snapshot() == snap
        assert contents(store) == before
        assert replica.applied_index == n - 1
        with RocksStore(tmp_path / "leader") as leader_store:
            assert contents(leader_store) == contents(store)


def test_a_corrupt_applied_mark_is_named(tmp_path: Path) -> None:
    from tq.core.layout import APPLIED_KEY, Family

    with RocksStore(tmp_path / "replica") as store:
        store.write([(Family.METADATA, APPLIED_KEY, b"\xc1")])
        with pytest.raises(StorageError, match="metadata under key cluster/applied"):
            Replica.open(store)


def test_the_cluster_page_names_every_cluster_setting_still_refused() -> None:
    from tq.config.unbuilt import UNBUILT

    page = (Path(__file__).resolve().parents[2] / "docs" / "cluster.md").read_text()
    not_built = page.split("## Not built yet", 1)[1]
    for key in UNBUILT:
        if key.startswith("raft."):
            assert f"`{key}`" in not_built, f"docs/cluster.md must say {key} is not built yet"
    built = page.split("## Settings", 1)[1].split("## ", 1)[0]
    for key in ("raft.enabled", "raft.etcd_endpoints", "raft.leader_lease_ttl_s"):
        assert key not in UNBUILT and f"`{key}`" in built
