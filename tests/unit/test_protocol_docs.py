"""docs/protocol.md stays true to the code: rendered as Markdown, every table is a table (a
stray blank line turns rows into a paragraph), and the tables list every type code, field,
error code and stats total the code has, no more and no fewer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec.inspect as mi
import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tq.core.layout import Counters
from tq.errors import ErrorCode
from tq.protocol import (
    MAX_NESTING,
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


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)


def render(text: str) -> list[Section]:
    """The document as CommonMark + GFM tables sees it: headings, each with its tables."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    sections = [Section("")]
    row: list[str] | None = None
    in_head = False
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            sections.append(Section(tokens[i + 1].content))
        elif tok.type == "table_open":
            sections[-1].tables.append(Table([], []))
        elif tok.type in ("thead_open", "thead_close"):
            in_head = tok.type == "thead_open"
        elif tok.type == "tr_open":
            row = []
        elif tok.type in ("th_open", "td_open"):
            assert row is not None
            row.append(_cell(tokens[i + 1]))
        elif tok.type == "tr_close":
            assert row is not None
            table = sections[-1].tables[-1]
            if in_head:
                table.header = row
            else:
                table.rows.append(row)
    return sections


def _cell(tok: Token) -> str:
    """A cell's text, code spans unwrapped (``request_id`` for `` `request_id` ``)."""
    return "".join(
        child.content for child in tok.children or () if child.type in ("text", "code_inline")
    ).strip()


SECTIONS = render(DOC)


def section(title: str) -> Section:
    found = [s for s in SECTIONS if s.title == title]
    assert len(found) == 1, f"docs/protocol.md has {len(found)} sections '{title}'"
    return found[0]


def field_table(title: str) -> list[str]:
    """The first column of the section's field table."""
    tables = [t for t in section(title).tables if t.header[:2] == ["field", "type"]]
    assert len(tables) == 1, f"'{title}' has {len(tables)} field tables"
    return [row[0] for row in tables[0].rows]


def documented_totals() -> list[str]:
    """The GET_STATS ``totals`` keys the doc lists (Stats: the table headed ``total``)."""
    (table,) = [t for t in section("Stats").tables if t.header[:1] == ["total"]]
    return [row[0] for row in table.rows]


def struct_fields(cls: type[object]) -> list[str]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields]


def test_every_table_in_the_source_renders_as_a_table_with_all_its_rows() -> None:
    # Runs of lines starting with "|" outside code fences: each must be one rendered table,
    # its rows all rendered (header and delimiter lines aside).
    outside_fences = re.sub(r"^```.*?^```", "", DOC, flags=re.MULTILINE | re.DOTALL)
    runs = re.findall(r"(?:^\|.*\n)+", outside_fences, flags=re.MULTILINE)
    rendered = [t for s in SECTIONS for t in s.tables]
    assert [len(run.splitlines()) - 2 for run in runs] == [len(t.rows) for t in rendered]
    assert all(t.rows for t in rendered), "a table with no rows (a blank line after its header?)"


def test_the_message_table_lists_every_type_code_with_its_name_and_reply() -> None:
    (table,) = section("Message types").tables
    documented = {int(row[0], 16): (row[1], row[3]) for row in table.rows}
    assert documented == {
        code: (MessageType(code).name, REPLY_TO[MessageType(code)].name)
        if MessageType(code) in REPLY_TO
        else (MessageType(code).name, "—")
        for code in MESSAGE_TYPES
    }


@pytest.mark.parametrize("code", sorted(MESSAGE_TYPES), ids=lambda c: MessageType(c).name)
def test_every_message_has_a_section_listing_exactly_its_fields(code: int) -> None:
    title = f"0x{code:02X} {MessageType(code).name}"
    assert field_table(title) == struct_fields(MESSAGE_TYPES[code])


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_every_record_has_a_section_listing_exactly_its_fields(cls: type[WireStruct]) -> None:
    assert field_table(cls.__name__) == struct_fields(cls)


def test_the_error_table_lists_every_code_with_its_http_and_grpc_status() -> None:
    (table,) = section("Error codes").tables
    assert table.header == ["code", "name", "HTTP", "gRPC", "meaning"]
    documented = {int(row[0]): (row[1], int(row[2]), row[3]) for row in table.rows}
    assert documented == {int(c): (c.name, c.http_status, c.grpc_status) for c in ErrorCode}


def test_the_stats_totals_are_exactly_the_counters_the_broker_keeps() -> None:
    assert documented_totals() == list(Counters.__struct_fields__)


def test_the_nesting_limit_in_the_doc_is_the_codes() -> None:
    assert f"**{MAX_NESTING} levels**" in DOC


def test_the_worked_example_is_what_the_encoder_produces() -> None:
    match = re.search(r"```hex\n(.*?)\n```", DOC, re.DOTALL)
    assert match is not None
    expected = encode(
        SubmitTask(request_id=1, tasks=[TaskSpec(task_type="email.send", payload=b"hi")])
    )
    assert bytes.fromhex(match.group(1)) == expected


def test_every_float_field_is_bounded_both_ways_so_nan_and_inf_are_never_valid() -> None:
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
        for f in info.fields:
            for ft in floats(f.type):
                assert ft.ge is not None or ft.gt is not None, f"{cls.__name__}.{f.name}"
                assert ft.le is not None or ft.lt is not None, f"{cls.__name__}.{f.name}"
