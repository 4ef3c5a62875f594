"""docs/protocol.md stays true to the code: every type code, field and error code is in it."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec.inspect as mi
import pytest

from tq.errors import ErrorCode
from tq.protocol import (
    MESSAGE_TYPES,
    REPLY_TO,
    MessageType,
    SubmitTask,
    TaskSpec,
    encode,
)
from tq.protocol import records as records_module
from tq.protocol.records import WireStruct

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")

RECORDS = sorted(
    (
        obj
        for obj in vars(records_module).values()
        if isinstance(obj, type) and issubclass(obj, WireStruct) and obj is not WireStruct
    ),
    key=lambda cls: cls.__name__,
)


def struct_fields(cls: type[object]) -> list[str]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields]


def table_rows(pattern: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in re.finditer(pattern, DOC, flags=re.MULTILINE)]


def section(title: str) -> str:
    """The text under ``### title`` up to the next heading."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#)", DOC, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/protocol.md has no section '### {title}'"
    return match.group(1)


def documented_fields(title: str) -> list[str]:
    return re.findall(r"^\| `(\w+)` \|", section(title), flags=re.MULTILINE)


def test_the_message_table_lists_every_type_code_with_its_name_and_reply() -> None:
    rows = table_rows(r"^\| 0x([0-9A-F]{2}) \| ([A-Z_]+) \| [^|]+ \| ([A-Z_]+|—) \|")
    documented = {int(code, 16): (name, reply) for code, name, reply in rows}
    expected = {
        code: (MessageType(code).name, REPLY_TO[MessageType(code)].name)
        if MessageType(code) in REPLY_TO
        else (MessageType(code).name, "—")
        for code in MESSAGE_TYPES
    }
    assert documented == expected


@pytest.mark.parametrize("code", sorted(MESSAGE_TYPES), ids=lambda c: MessageType(c).name)
def test_every_message_has_a_section_listing_exactly_its_fields(code: int) -> None:
    title = f"0x{code:02X} {MessageType(code).name}"
    assert documented_fields(title) == struct_fields(MESSAGE_TYPES[code])


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_every_record_has_a_section_listing_exactly_its_fields(cls: type[WireStruct]) -> None:
    assert documented_fields(cls.__name__) == struct_fields(cls)


def test_the_error_table_lists_every_code_with_its_http_and_grpc_status() -> None:
    rows = table_rows(r"^\| (\d{4}) \| `([A-Z_]+)` \| (\d{3}) \| `([A-Z_]+)` \|")
    documented = {int(n): (name, int(http), grpc) for n, name, http, grpc in rows}
    assert documented == {int(c): (c.name, c.http_status, c.grpc_status) for c in ErrorCode}


def test_the_worked_example_is_what_the_encoder_produces() -> None:
    match = re.search(r"```hex\n(.*?)\n```", DOC, re.DOTALL)
    assert match is not None
    expected = encode(
        SubmitTask(request_id=1, tasks=[TaskSpec(task_type="email.send", payload=b"hi")])
    )
    assert bytes.fromhex(match.group(1)) == expected


def test_no_float_field_can_hold_nan_as_the_doc_promises() -> None:
    def floats(t: mi.Type) -> list[mi.FloatType]:
        if isinstance(t, mi.FloatType):
            return [t]
        if isinstance(t, mi.UnionType):
            return [f for member in t.types for f in floats(member)]
        if isinstance(t, mi.ListType):
            return floats(t.item_type)
        if isinstance(t, mi.DictType):
            return floats(t.value_type)
        return []

    for cls in [*MESSAGE_TYPES.values(), *RECORDS]:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        for field in info.fields:
            for ft in floats(field.type):
                assert ft.ge is not None or ft.gt is not None, f"{cls.__name__}.{field.name}"
