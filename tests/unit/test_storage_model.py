"""Rule-based tests: random sequences of Store calls, checked against a dict-of-dicts model.

The same machine drives RocksStore and MemoryStore (the contract suite's stateful half); the
memory variant adds simulated crashes, with and without power loss, checked against the
durable part of the model.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tq.core.layout import ALL_FAMILIES, Family, Mutation
from tq.storage import MemoryBacking, MemoryStore, Store, open_store

Model = dict[Family, dict[bytes, bytes]]

families = st.sampled_from(ALL_FAMILIES)
# A tiny alphabet so keys collide, share prefixes and hit the 0x00 / 0xff edges.
keys = st.lists(st.sampled_from([0, 1, 0x7F, 0xFF]), max_size=3).map(bytes)
values = st.binary(max_size=8)
mutations = st.tuples(families, keys, st.none() | values)


def copy(model: Model) -> Model:
    return {family: dict(data) for family, data in model.items()}


class StoreMachine(RuleBasedStateMachine):
    kind: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tq-store-model-")
        self.backing = MemoryBacking()
        self.store = self.open()
        self.model: Model = {family: {} for family in ALL_FAMILIES}
        self.durable = copy(self.model)

    def open(self) -> Store:
        if self.kind == "rocks":
            return open_store(f"{self.dir}/db")
        return MemoryStore(self.backing)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(batch=st.lists(mutations, max_size=6), sync=st.booleans())
    def write(self, batch: list[Mutation], sync: bool) -> None:
        self.store.write(batch, sync=sync)
        for family, key, value in batch:
            if value is None:
                self.model[family].pop(key, None)
            else:
                self.model[family][key] = value
        if sync:
            self.durable = copy(self.model)

    @rule()
    def sync_wal(self) -> None:
        self.store.sync_wal()
        self.durable = copy(self.model)

    @rule(family=families, key=keys)
    def get(self, family: Family, key: bytes) -> None:
        assert self.store.get(family, key) == self.model[family].get(key)

    @rule(family=families, wanted=st.lists(keys, max_size=5))
    def multi_get(self, family: Family, wanted: list[bytes]) -> None:
        expected = [self.model[family].get(key) for key in wanted]
        assert self.store.multi_get(family, wanted) == expected

    @rule(family=families, prefix=keys, start=st.none() | keys, reverse=st.booleans())
    def iterate(self, family: Family, prefix: bytes, start: bytes | None, reverse: bool) -> None:
        data = self.model[family]
        chosen = sorted(
            key
            for key in data
            if key.startswith(prefix)
            and (start is None or (key <= start if reverse else key >= start))
        )
        expected = [(key, data[key]) for key in (chosen[::-1] if reverse else chosen)]
        got = list(self.store.iterate(family, prefix=prefix, start=start, reverse=reverse))
        assert got == expected

    @rule(family=st.none() | families)
    def compact(self, family: Family | None) -> None:
        self.store.compact(family)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open()
        self.durable = copy(self.model)  # a clean close keeps everything


class RocksMachine(StoreMachine):
    kind = "rocks"


class MemoryMachine(StoreMachine):
    kind = "memory"

    @invariant()
    def counts_are_exact(self) -> None:
        for family in ALL_FAMILIES:
            assert self.store.approximate_count(family) == len(self.model[family])

    @precondition(lambda self: isinstance(self.store, MemoryStore))
    @rule(power_loss=st.booleans())
    def crash_and_restart(self, power_loss: bool) -> None:
        assert isinstance(self.store, MemoryStore)
        self.store.simulate_crash(power_loss=power_loss)
        self.store = self.open()
        if power_loss:
            self.model = copy(self.durable)
        self.durable = copy(self.model)
        for family in ALL_FAMILIES:
            assert dict(self.store.iterate(family)) == self.model[family]


TestRocksStoreMatchesADictModel = RocksMachine.TestCase
TestRocksStoreMatchesADictModel.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
TestMemoryStoreMatchesADictModel = MemoryMachine.TestCase
TestMemoryStoreMatchesADictModel.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
