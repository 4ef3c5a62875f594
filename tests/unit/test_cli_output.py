"""How the ``tq`` commands render records (ids, times, bytes) and log lines."""

from __future__ import annotations

import json
import logging
import sys
import uuid

import pytest
import yaml

from tq.cli.context import CliContext, cell_bytes, emit, plain, plain_bytes
from tq.cli.serve import JsonFormatter, configure_logging
from tq.core.ids import TaskId, make_task_id
from tq.protocol.records import QueueDepth, Stats, TaskInfo

TASK_ID = make_task_id(1_700_000_000_000, 42)
DEP_ID = make_task_id(1_700_000_000_001, 7)


def info(**fields: object) -> TaskInfo:
    base: dict[str, object] = {
        "id": TASK_ID,
        "task_type": "echo",
        "queue": "default",
        "state": "completed",
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_001.5,
        "max_retries": 3,
    }
    return TaskInfo(**{**base, **fields})  # type: ignore[arg-type]


def ctx(output: str) -> CliContext:
    return CliContext(output=output, url_flag="tq://127.0.0.1:7420")


def test_ids_are_canonical_uuid_text_and_times_iso_utc() -> None:
    data = plain(info(depends_on=[DEP_ID]))
    assert data["id"] == str(uuid.UUID(bytes=TASK_ID))
    assert data["depends_on"] == [str(uuid.UUID(bytes=DEP_ID))]
    assert data["created_at"] == "2023-11-14T22:13:20.000Z"
    assert data["updated_at"] == "2023-11-14T22:13:21.500Z"
    assert data["completed_at"] is None


def test_bytes_are_text_when_they_decode_and_marked_base64_otherwise() -> None:
    data = plain(info(payload=b'{"x": 1}', result=b"\xff\x00"))
    assert data["payload"] == '{"x": 1}'
    assert data["result"] == {"base64": "/wA="}
    assert plain_bytes(None) is None
    assert cell_bytes(b"\xff\x00") == "base64:/wA="
    assert cell_bytes(b"ok") == "ok"


def test_nested_records_become_plain_mappings() -> None:
    stats = Stats(pending=3, queues={"default": QueueDepth(high=1, low=2)}, totals={"done": 9})
    data = plain(stats)
    assert data["queues"] == {
        "default": {
            "high": 1,
            "normal": 0,
            "low": 2,
            "scheduled": 0,
            "in_progress": 0,
            "paused": False,
        }
    }
    assert data["totals"] == {"done": 9}


def test_json_output_is_parseable_and_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    record = plain(info(result=b"5"))
    emit(ctx("json"), [record], "ignored in json")
    assert json.loads(capsys.readouterr().out) == [record]


def test_yaml_output_is_parseable(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ctx("yaml"), {"id": "a", "n": [1, 2]})
    assert yaml.safe_load(capsys.readouterr().out) == {"id": "a", "n": [1, 2]}


def test_table_output_prints_plain_text_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    # Square brackets would be rich markup; a result must come out exactly as sent.
    emit(ctx("table"), {"x": 1}, '[bold]{"x": 1}[/bold]')
    assert capsys.readouterr().out == '[bold]{"x": 1}[/bold]\n'


def test_json_log_lines_carry_ts_level_logger_and_message() -> None:
    record = logging.LogRecord(
        "tq.broker", logging.INFO, __file__, 1, "lease.expired task=%s", ("t1",), None
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "tq.broker"
    assert entry["msg"] == "lease.expired task=t1"
    assert entry["ts"].startswith("20")
    assert "\n" not in line


def test_an_exception_stays_inside_its_one_json_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("tq", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exc"]


def test_configure_logging_replaces_the_root_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("warning", "json")
        configure_logging("info", "json")  # a second call must not double every line
        logging.getLogger("tq.test").info("hello %d", 1)
        lines = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(x)["msg"] for x in lines] == ["hello 1"]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_task_ids_render_the_same_whatever_the_id_type() -> None:
    assert plain(info(id=TaskId(bytes(16))))["id"] == "00000000-0000-0000-0000-000000000000"
