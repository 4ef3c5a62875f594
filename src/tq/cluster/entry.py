"""The replication log entry: one group-commit batch of commands, as the log stores it.

An entry is a MessagePack array ``[version, index, epoch, crc, body]``: the format version,
the entry's position in the log, the epoch of the leader that appended it (its leader key's
etcd ``create_revision``), a CRC-32 of index, epoch and body, and the body: the batch's
commands in the order the leader applied them, exactly as ``tq.core.commands.encode_commands``
writes them (so the log stores exactly the commands' bytes).

Decoding is strict and all-or-nothing: a damaged, truncated, misplaced or unknown-version
entry raises ``CorruptEntryError`` naming the index and what is wrong, before any command of
it can be applied. The checksum catches what still parses (a flipped byte in a timestamp).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

import msgspec

from tq.core import commands as c
from tq.errors import StorageError, ValidationError

#: The entry format this code writes and reads. A reader refuses any other: a node must never
#: guess at an entry it does not understand (replicas would diverge).
FORMAT_VERSION: Final = 1


class CorruptEntryError(StorageError):
    """A log entry that cannot be applied as it is: nothing of it was applied."""


class Entry(msgspec.Struct, frozen=True):
    """One log entry, decoded: the commands one group commit applied, in order."""

    version: int
    index: int
    epoch: int
    commands: tuple[c.Command, ...]


class _Stored(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    index: int
    epoch: int
    crc: int
    body: bytes


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Stored)
_header: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])
_int: Final = msgspec.msgpack.Decoder(int)


def encode_entry(index: int, epoch: int, commands: Sequence[c.Command]) -> bytes:
    """The bytes the log stores at ``index`` for ``commands`` applied under ``epoch``."""
    if index < 1 or epoch < 1:
        raise ValidationError(
            f"a log entry needs index and epoch of 1 or more, not {index}, {epoch}"
        )
    return encode_body(index, epoch, c.encode_commands(list(commands)))


def encode_body(index: int, epoch: int, body: bytes) -> bytes:
    """``encode_entry`` of commands already encoded (``commands.encode_commands``): a leader
    encodes a batch once, to know its size before the index it gets is known."""
    if index < 1 or epoch < 1:
        raise ValidationError(
            f"a log entry needs index and epoch of 1 or more, not {index}, {epoch}"
        )
    return _encoder.encode(_Stored(FORMAT_VERSION, index, epoch, _crc(index, epoch, body), body))


def decode_entry(index: int, data: bytes) -> Entry:
    """The entry stored at ``index``; ``CorruptEntryError`` unless it is whole, of this
    format version, and says it belongs at ``index``."""
    where = f"log entry {index}"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CorruptEntryError(f"{where}: expected bytes, got {type(data).__name__}")
    try:
        entry = _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise CorruptEntryError(f"{where} ({len(data)} bytes): {_why(data, e)}") from e
    if entry.version != FORMAT_VERSION:
        raise CorruptEntryError(_version_message(where, entry.version))
    if entry.index < 1 or entry.epoch < 1:
        raise CorruptEntryError(
            f"{where}: index {entry.index} and epoch {entry.epoch} must be 1 or more"
        )
    if entry.index != index:
        raise CorruptEntryError(f"{where}: the entry says it is entry {entry.index}")
    if entry.crc != _crc(entry.index, entry.epoch, entry.body):
        raise CorruptEntryError(f"{where}: checksum mismatch (the entry was damaged)")
    try:
        commands = c.decode_commands(entry.body)
    except msgspec.DecodeError as e:  # checksum right, body wrong: written by a faulty encoder
        raise CorruptEntryError(f"{where}: its commands cannot be decoded: {e}") from e
    return Entry(entry.version, entry.index, entry.epoch, tuple(commands))


def _crc(index: int, epoch: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(_encoder.encode((index, epoch))))


def _version_message(where: str, version: int) -> str:
    return (
        f"{where}: format version {version}, but this node reads version {FORMAT_VERSION} "
        "only (upgrade every node to the same tq release)"
    )


def _why(data: bytes | bytearray | memoryview, error: msgspec.DecodeError) -> str:
    """What is wrong, naming an unknown format version before any detail of the layout
    (a newer entry fails the layout check too, and its version is the useful part)."""
    try:
        fields = _header.decode(data)
        version = _int.decode(fields[0]) if fields else None
    except (msgspec.DecodeError, IndexError):
        version = None
    if version is not None and version != FORMAT_VERSION:
        return _version_message("", version).removeprefix(": ")
    return str(error)
