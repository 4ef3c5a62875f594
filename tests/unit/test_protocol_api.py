"""The public namespace of tq.protocol: curated, complete for the wire types, and pure."""

from __future__ import annotations

import subprocess
import sys

import tq.protocol
from tq.protocol import MESSAGE_TYPES
from tq.protocol import records as records_module
from tq.protocol.records import WireStruct


def test_every_name_in_all_is_importable_exactly_once() -> None:
    for name in tq.protocol.__all__:
        assert hasattr(tq.protocol, name), name
    assert len(set(tq.protocol.__all__)) == len(tq.protocol.__all__)


def test_every_message_and_record_struct_is_exported() -> None:
    records = [
        obj
        for obj in vars(records_module).values()
        if isinstance(obj, type) and issubclass(obj, WireStruct) and obj is not WireStruct
    ]
    for cls in [*MESSAGE_TYPES.values(), *records]:
        assert getattr(tq.protocol, cls.__name__) is cls


def test_the_registry_maps_codes_and_classes_both_ways() -> None:
    assert len(MESSAGE_TYPES) == len(tq.protocol.MESSAGE_CODES) == 64
    for code, cls in MESSAGE_TYPES.items():
        assert tq.protocol.MESSAGE_CODES[cls] == code == cls.type_code


def test_importing_the_protocol_pulls_in_no_io_or_outer_layers() -> None:
    code = (
        "import sys, tq.protocol; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'asyncio', 'socket', 'selectors'} or m.startswith(('tq.broker', 'tq.client', "
        "'tq.storage', 'tq.worker', 'tq.api', 'tq.cluster'))]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == ""
