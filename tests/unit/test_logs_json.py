"""Log messages are events (``"lease.expired count=%d"``) and the JSON formatter turns them
into one object per line with the event name and typed fields."""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from pathlib import Path

import pytest

import tq
from tq.cli.serve import JsonFormatter, event_fields

SRC = Path(tq.__file__).parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
LOGGERS = {"log", "_log", "logger"}
#: An event name first (``%s`` may fill part of one), then anything.
EVENT_TEMPLATE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_%]+)+(?: |$)")


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("tq.x", logging.WARNING, __file__, 1, msg, args, exc_info)


def formatted(rec: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert isinstance(entry, dict)
    return entry


def log_templates() -> list[tuple[str, int, str]]:
    """(file, line, template) of every ``log.<level>("...")`` call under src/tq."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in LOGGERS
                and node.args
            ):
                continue
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else ast.unparse(first)
            found.append((str(path.relative_to(SRC)), node.lineno, str(text)))
    return found


def test_every_log_call_in_tq_is_an_event_style_template() -> None:
    templates = log_templates()
    assert len(templates) > 20
    bad = [t for t in templates if not EVENT_TEMPLATE.match(t[2])]
    assert not bad, f"not 'event.name key=%s' templates: {bad}"


def test_a_json_line_carries_the_event_and_its_fields_with_their_types() -> None:
    entry = formatted(record("lease.expired count=%d", 3))
    assert entry["event"] == "lease.expired"
    assert entry["count"] == 3
    assert entry["msg"] == "lease.expired count=3"
    assert {"ts", "level", "logger"} <= entry.keys()
    assert entry["level"] == "WARNING"


def test_fields_take_raw_values_literals_and_units_after_the_conversion() -> None:
    rec = record(
        "task.completed id=%s elapsed=%.3fs reason=limit ratio=%d%% ok=%s", "ab", 0.5, 7, True
    )
    assert event_fields(rec) == {
        "id": "ab",
        "elapsed": 0.5,
        "reason": "limit",
        "ratio": 7,
        "ok": True,
    }


def test_a_template_that_does_not_line_up_gives_no_fields() -> None:
    assert event_fields(record("odd.count a=%s b=%s", "only one")) == {}


@pytest.mark.parametrize(
    ("msg", "args"), [("plain words here", ()), ("mapped a=%(a)s", ({"a": 1},))]
)
def test_any_message_is_still_one_json_line(msg: str, args: tuple[object, ...]) -> None:
    entry = formatted(record(msg, *args))
    assert entry["logger"] == "tq.x"
    assert "a" not in entry
    assert "event" not in entry


def test_a_field_never_hides_the_standard_keys_and_odd_values_become_strings() -> None:
    entry = formatted(
        record("odd.values level=%s msg=%s peer=%s x=%s", "fake", "m", ("h", 1), 1e999)
    )
    assert entry["level"] == "WARNING"
    assert entry["msg"] == "odd.values level=fake msg=m peer=('h', 1) x=inf"
    assert entry["peer"] == "('h', 1)"
    assert entry["x"] == "inf"


def test_an_exception_travels_in_one_line() -> None:
    entry = formatted(record("request.crashed type=%s", "X", exc=True))
    assert isinstance(entry["exc"], str)
    assert "boom" in entry["exc"]
    assert "ValueError" in entry["exc"]
