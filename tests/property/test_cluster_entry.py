"""The replication log entry format: generated command batches survive encode/decode byte for
byte, every command inside is its own encoding, and damaged entries are refused whole."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tq.cluster.entry import (
    FORMAT_VERSION,
    CorruptEntryError,
    _crc,
    decode_entry,
    encode_entry,
)
from tq.core import commands as c
from tq.errors import ErrorCode, ValidationError


def values(t: mi.Type) -> st.SearchStrategy[Any]:
    """Any value msgspec would encode for type ``t``: every field of every command, optional
    ones included (hypothesis' ``from_type`` cannot: msgspec defaults are factories)."""
    if isinstance(t, mi.StructType):
        fields = {f.name: values(f.type) for f in t.fields}
        return st.fixed_dictionaries(fields).map(lambda kw: t.cls(**kw))
    if isinstance(t, mi.UnionType):
        return st.one_of(*(values(x) for x in t.types))
    if isinstance(t, mi.VarTupleType):
        return st.lists(values(t.item_type), max_size=3).map(tuple)
    if isinstance(t, mi.DictType):
        return st.dictionaries(values(t.key_type), values(t.value_type), max_size=3)
    simple: dict[type, st.SearchStrategy[Any]] = {
        mi.IntType: st.integers(-(2**63), 2**63 - 1),
        mi.FloatType: st.floats(),
        mi.StrType: st.text(max_size=12),
        mi.BytesType: st.binary(max_size=20),
        mi.NoneType: st.none(),
        mi.BoolType: st.booleans(),
    }
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    return simple[type(t)]


commands = st.lists(values(mi.type_info(c.Command)), max_size=6)
positions = st.integers(min_value=1, max_value=2**62)


@given(commands, positions, positions)
def test_an_entry_decodes_to_the_batch_it_was_made_of(
    batch: list[c.Command], index: int, epoch: int
) -> None:
    data = encode_entry(index, epoch, batch)
    entry = decode_entry(index, data)
    assert (entry.version, entry.index, entry.epoch) == (FORMAT_VERSION, index, epoch)
    # Compared as bytes: generated floats include NaN, which equals nothing.
    assert [msgspec.msgpack.encode(x) for x in entry.commands] == [
        msgspec.msgpack.encode(x) for x in batch
    ]
    assert encode_entry(index, epoch, entry.commands) == data


@given(commands)
def test_the_entry_stores_exactly_the_commands_bytes_in_order(batch: list[c.Command]) -> None:
    data = encode_entry(7, 3, batch)
    inner = b"".join(msgspec.msgpack.encode(x) for x in batch)
    assert data.endswith(inner)
    assert data.endswith(c.encode_commands(batch))


@given(commands, st.data())
def test_any_damaged_byte_is_refused(batch: list[c.Command], data: st.DataObject) -> None:
    whole = encode_entry(3, 2, batch)
    at = data.draw(st.integers(0, len(whole) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = whole[:at] + bytes([whole[at] ^ flip]) + whole[at + 1 :]
    with pytest.raises(CorruptEntryError, match="log entry 3"):
        decode_entry(3, bad)


@given(commands, st.data())
def test_a_truncated_entry_is_refused_naming_its_index(
    batch: list[c.Command], data: st.DataObject
) -> None:
    whole = encode_entry(5, 2, batch)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    with pytest.raises(CorruptEntryError, match="log entry 5") as e:
        decode_entry(5, whole[:cut])
    assert e.value.code == ErrorCode.STORAGE_ERROR


@given(commands, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_refused(batch: list[c.Command], tail: bytes) -> None:
    with pytest.raises(CorruptEntryError, match="log entry 1"):
        decode_entry(1, encode_entry(1, 1, batch) + tail)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_decode_to_anything_but_an_entry_or_a_clear_error(
    junk: bytes,
) -> None:
    message = ""
    try:
        entry = decode_entry(1, junk)
    except CorruptEntryError as e:
        message = e.message
    else:
        assert entry.index == 1
    assert message == "" or message.startswith("log entry 1")


def test_an_entry_stored_at_another_index_is_refused() -> None:
    data = encode_entry(4, 1, [c.PromoteDue(1.0)])
    with pytest.raises(CorruptEntryError, match="log entry 5: the entry says it is entry 4"):
        decode_entry(5, data)


def test_an_unknown_format_version_is_named_even_when_the_layout_changed_too() -> None:
    newer = msgspec.msgpack.encode([FORMAT_VERSION + 1, 1, 1, [], "a new field"])
    with pytest.raises(CorruptEntryError, match=r"format version 2, but this node reads version 1"):
        decode_entry(1, newer)
    same_layout = msgspec.msgpack.encode([FORMAT_VERSION + 1, 1, 1, []])
    with pytest.raises(CorruptEntryError, match="format version 2"):
        decode_entry(1, same_layout)


def test_an_unknown_command_tag_is_refused_even_with_a_right_checksum() -> None:
    body = msgspec.msgpack.encode([[99, 1.0]])
    data = msgspec.msgpack.encode([FORMAT_VERSION, 1, 1, _crc(1, 1, body), body])
    with pytest.raises(CorruptEntryError, match="log entry 1: its commands cannot be decoded"):
        decode_entry(1, data)


@pytest.mark.parametrize(("index", "epoch"), [(0, 1), (1, 0), (-3, 2)])
def test_positions_below_one_are_refused_both_ways(index: int, epoch: int) -> None:
    with pytest.raises(ValidationError, match="1 or more"):
        encode_entry(index, epoch, [])
    data = msgspec.msgpack.encode([FORMAT_VERSION, index, epoch, 0, b"\x90"])
    with pytest.raises(CorruptEntryError, match="must be 1 or more"):
        decode_entry(index, data)
