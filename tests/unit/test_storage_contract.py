"""The Store contract (tq.storage.base), run against every implementation.

One suite, no mocks: each test gets a fresh store from a ``StoreKit`` that can also reopen
the same data (a RocksDB dir, or a MemoryStore's backing) to check persistence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tq.core.layout import ALL_FAMILIES, Family, Mutation
from tq.errors import StorageError
from tq.storage import MemoryBacking, MemoryStore, Store, open_store

P, IP, C, M = Family.PENDING, Family.IN_PROGRESS, Family.COMPLETED, Family.METADATA


class StoreKit:
    """Opens stores over one piece of persistent data and closes them all at teardown."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "db"
        self.backing = MemoryBacking()
        self.opened: list[Store] = []

    def open(self, *, read_only: bool = False) -> Store:
        store: Store = (
            open_store(self.path, read_only=read_only)
            if self.kind == "rocks"
            else MemoryStore(self.backing, read_only=read_only)
        )
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["rocks", "memory"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKit]:
    made = StoreKit(request.param, tmp_path)
    yield made
    made.close_all()


@pytest.fixture
def store(kit: StoreKit) -> Store:
    return kit.open()


def k(i: int) -> bytes:
    return i.to_bytes(4, "big")


def test_a_put_is_readable_and_a_delete_removes_it(store: Store) -> None:
    store.write([(P, b"a", b"1")])
    assert store.get(P, b"a") == b"1"
    store.write([(P, b"a", None)])
    assert store.get(P, b"a") is None


def test_an_overwrite_replaces_the_value(store: Store) -> None:
    store.write([(P, b"a", b"1")])
    store.write([(P, b"a", b"2")])
    assert store.get(P, b"a") == b"2"
    assert list(store.iterate(P)) == [(b"a", b"2")]


def test_deleting_a_missing_key_is_harmless(store: Store) -> None:
    store.write([(P, b"nothing", None)])
    assert store.get(P, b"nothing") is None


def test_a_batch_applies_its_mutations_in_order(store: Store) -> None:
    store.write([(P, b"a", b"1"), (P, b"a", None), (P, b"b", None), (P, b"b", b"2")])
    assert store.get(P, b"a") is None
    assert store.get(P, b"b") == b"2"


def test_an_empty_batch_is_accepted_with_or_without_sync(store: Store) -> None:
    store.write([])
    store.write([], sync=True)
    assert list(store.iterate(P)) == []


@pytest.mark.parametrize(
    "bad",
    [(P, "str-key", b"v"), (P, b"k", "str-value"), (P, b"k", 7), (99, b"k", b"v")],
    ids=["str key", "str value", "int value", "unknown family"],
)
def test_a_batch_with_a_bad_mutation_raises_and_changes_nothing(
    store: Store, bad: tuple[object, object, object]
) -> None:
    store.write([(P, b"kept", b"1")])
    batch: list[object] = [(P, b"kept", None), (C, b"new", b"x"), bad]
    with pytest.raises(StorageError):
        store.write(batch)  # type: ignore[arg-type]
    assert store.get(P, b"kept") == b"1"
    assert store.get(C, b"new") is None


def test_families_are_independent_keyspaces(store: Store) -> None:
    store.write([(f, b"same", f.cf_name.encode()) for f in ALL_FAMILIES])
    store.write([(IP, b"same", None)])
    for family in ALL_FAMILIES:
        expected = None if family is IP else family.cf_name.encode()
        assert store.get(family, b"same") == expected
        assert list(store.iterate(family)) == ([] if expected is None else [(b"same", expected)])


def test_a_batch_spanning_families_moves_a_task_atomically(store: Store) -> None:
    store.write([(P, b"t", b"queued")])
    store.write([(P, b"t", None), (IP, b"t", b"running"), (M, b"machine", b"m1")], sync=True)
    assert store.get(P, b"t") is None
    assert store.get(IP, b"t") == b"running"
    assert store.get(M, b"machine") == b"m1"


def test_multi_get_answers_in_the_order_asked_with_none_for_missing(store: Store) -> None:
    store.write([(C, k(i), b"v%d" % i) for i in range(5)])
    assert store.multi_get(C, [k(3), k(9), k(0), k(3)]) == [b"v3", None, b"v0", b"v3"]
    assert store.multi_get(C, []) == []
    assert store.multi_get(P, [k(3)]) == [None]


KEYS = [
    b"",
    b"a",
    b"a\x00",
    b"a\x01",
    b"a\xff",
    b"a\xff\x00",
    b"a\xff\xff",
    b"b",
    b"\xff",
    b"\xff\xff",
]


def model_scan(keys: list[bytes], prefix: bytes, start: bytes | None, reverse: bool) -> list[bytes]:
    chosen = sorted(
        key
        for key in set(keys)
        if key.startswith(prefix) and (start is None or (key <= start if reverse else key >= start))
    )
    return chosen[::-1] if reverse else chosen


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("prefix", [b"", b"a", b"a\xff", b"\xff", b"\xff\xff", b"c"])
@pytest.mark.parametrize("start", [None, b"", b"a\x00", b"a\xff", b"b", b"\xff\xff\xff"])
def test_iteration_yields_the_prefix_in_key_order_from_start(
    store: Store, prefix: bytes, start: bytes | None, reverse: bool
) -> None:
    store.write([(P, key, b"v" + key) for key in KEYS])
    store.write([(C, b"a\x00", b"other family")])
    got = list(store.iterate(P, prefix=prefix, start=start, reverse=reverse))
    assert [key for key, _ in got] == model_scan(KEYS, prefix, start, reverse)
    assert all(value == b"v" + key for key, value in got)


key_bytes = st.lists(st.sampled_from([0, 1, 0x7F, 0xFE, 0xFF]), max_size=4).map(bytes)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(key_bytes, max_size=25),
    prefix=key_bytes,
    start=st.none() | key_bytes,
    reverse=st.booleans(),
)
def test_iteration_matches_a_sorted_model_for_any_keys(
    store: Store, keys: list[bytes], prefix: bytes, start: bytes | None, reverse: bool
) -> None:
    store.write([(Family.FAILED, key, None) for key, _ in store.iterate(Family.FAILED)])
    store.write([(Family.FAILED, key, key) for key in keys])
    got = [
        key for key, _ in store.iterate(Family.FAILED, prefix=prefix, start=start, reverse=reverse)
    ]
    assert got == model_scan(keys, prefix, start, reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_writes_during_an_iteration_never_reorder_or_repeat_keys(
    store: Store, reverse: bool
) -> None:
    store.write([(P, k(i), b"v") for i in range(0, 200, 2)])
    seen: list[bytes] = []
    deleted: set[bytes] = set()
    for n, (key, _) in enumerate(store.iterate(P, reverse=reverse)):
        seen.append(key)
        i = int.from_bytes(key, "big")
        if i % 2:
            continue  # a key this test wrote: writing more around it would never end
        # Insert on both sides of the cursor and delete a key the scan has not reached yet.
        store.write([(P, k(i + 1), b"new"), (P, k(max(i - 1, 1)), b"new")])
        if n % 10 == 0:
            deleted.add(k(i - 4 if reverse else i + 4))
            store.write([(P, k(i - 4 if reverse else i + 4), None)])
    assert seen == sorted(set(seen), reverse=reverse)
    assert {k(i) for i in range(0, 200, 2)} - deleted <= set(seen)


def test_iteration_is_lazy_and_can_stop_early(store: Store) -> None:
    store.write([(P, k(i), b"v") for i in range(1000)])
    scan = store.iterate(P)
    assert [next(scan)[0] for _ in range(3)] == [k(0), k(1), k(2)]
    del scan  # an abandoned scan must not hold anything the store needs


def test_data_survives_close_and_reopen(kit: StoreKit) -> None:
    first = kit.open()
    first.write([(P, b"a", b"1"), (M, b"machine", b"m")])
    first.write([(C, b"c", b"3")], sync=True)
    first.sync_wal()
    first.close()
    second = kit.open()
    assert second.get(P, b"a") == b"1"
    assert second.get(M, b"machine") == b"m"
    assert list(second.iterate(C)) == [(b"c", b"3")]


def test_a_store_cannot_be_opened_twice_at_once(kit: StoreKit) -> None:
    first = kit.open()
    with pytest.raises(StorageError, match="already open"):
        kit.open()
    first.close()
    kit.open().close()


def test_a_read_only_store_reads_what_is_stored_and_refuses_every_write(kit: StoreKit) -> None:
    with kit.open() as first:
        first.write([(P, k(i), b"v") for i in range(5)] + [(C, b"c", b"done")], sync=True)
    reader = kit.open(read_only=True)
    assert reader.get(C, b"c") == b"done"
    assert [key for key, _ in reader.iterate(P)] == [k(i) for i in range(5)]
    with pytest.raises(StorageError):
        reader.write([(P, b"x", b"1")])
    with pytest.raises(StorageError):
        reader.sync_wal()
    assert reader.get(P, b"x") is None


def test_a_read_only_store_takes_no_lock_beside_a_writer(kit: StoreKit) -> None:
    writer = kit.open()
    writer.write([(P, b"a", b"1")], sync=True)
    reader = kit.open(read_only=True)  # beside the writer: what a broker on a full disk does
    assert reader.get(P, b"a") == b"1"
    writer.close()
    again = kit.open()  # the reader does not hold the data dir either
    reader.close()
    assert again.get(P, b"a") == b"1"


def test_a_context_manager_closes_the_store(kit: StoreKit) -> None:
    with kit.open() as opened:
        opened.write([(P, b"a", b"1")])
    with pytest.raises(StorageError):
        opened.get(P, b"a")
    with kit.open() as again:
        assert again.get(P, b"a") == b"1"


def test_approximate_count_tracks_distinct_keys_per_family(store: Store) -> None:
    assert store.approximate_count(P) == 0
    store.write([(P, k(i), b"v") for i in range(1000)])
    store.write([(P, k(i), None) for i in range(400)])
    store.compact(P)
    assert 500 <= store.approximate_count(P) <= 700
    assert store.approximate_count(C) == 0


@pytest.mark.parametrize("family", [None, P], ids=["all families", "one family"])
def test_compaction_keeps_the_data(store: Store, family: Family | None) -> None:
    store.write([(P, k(i), b"v%d" % i) for i in range(2000)] + [(C, b"c", b"kept")])
    store.write([(P, k(i), None) for i in range(0, 2000, 2)])
    store.compact(family)
    assert [key for key, _ in store.iterate(P)] == [k(i) for i in range(1, 2000, 2)]
    assert store.get(P, k(7)) == b"v7"
    assert store.get(C, b"c") == b"kept"


def test_every_call_on_a_closed_store_raises_storage_error(store: Store, tmp_path: Path) -> None:
    store.write([(P, b"a", b"1")])
    store.close()
    store.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: store.write([(P, b"a", b"2")]),
        lambda: store.write([]),
        lambda: store.write([], sync=True),
        store.sync_wal,
        lambda: store.get(P, b"a"),
        lambda: store.multi_get(P, [b"a"]),
        lambda: store.iterate(P),
        lambda: store.approximate_count(P),
        store.compact,
        lambda: store.checkpoint(tmp_path / "cp"),
    ]
    for call in calls:
        with pytest.raises(StorageError):
            call()


def test_an_iteration_cut_short_by_close_raises_storage_error(store: Store) -> None:
    store.write([(P, k(i), b"v") for i in range(10)])
    scan = store.iterate(P)
    next(scan)
    store.close()
    with pytest.raises(StorageError, match="closed"):
        next(scan)


def test_a_suspended_iteration_does_not_keep_the_store_open(kit: StoreKit) -> None:
    first = kit.open()
    first.write([(P, k(i), b"v") for i in range(10)])
    scan = first.iterate(P)
    next(scan)
    first.close()
    reopened = kit.open()  # would fail on the data dir lock if the scan still held it
    assert reopened.get(P, k(3)) == b"v"
    del scan


def test_mutation_tuples_from_the_layout_module_are_accepted(store: Store) -> None:
    mutations: list[Mutation] = [(Family.DEAD_LETTER, b"d", b"x"), (Family.FAILED, b"f", b"y")]
    store.write(iter(mutations))
    assert store.get(Family.DEAD_LETTER, b"d") == b"x"
    assert store.get(Family.FAILED, b"f") == b"y"
