"""The HTTP API's JSON shapes without a server: request validation and its messages, the
mapping to and from the service's records, filters, cursors and the error body."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

import pydantic
import pytest

from tq.api.fields import CURSOR_PATTERN
from tq.api.http_errors import error_response
from tq.api.responses import StatsOut, TaskOut, text_and_base64
from tq.api.rest import _decode_cursor, task_filter
from tq.api.schemas import (
    CONTROL,
    BulkIn,
    StatsOp,
    SubscribeOp,
    TaskFilter,
    TaskQuery,
    TaskSubmit,
    Tier,
    describe_errors,
)
from tq.api.ws import event_message
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId
from tq.core.model import PriorityTier, TaskState
from tq.errors import ErrorCode, ValidationError
from tq.protocol.records import QueueDepth, Stats, TaskInfo


def invalid(model: type[pydantic.BaseModel], data: Any) -> str:
    with pytest.raises(pydantic.ValidationError) as e:
        model.model_validate(data)
    return describe_errors(e.value.errors())


def test_a_submit_maps_every_field_to_the_task_spec() -> None:
    dep, own = uuid.uuid4(), uuid.uuid4()
    spec = TaskSubmit.model_validate(
        {
            "id": str(own), "task_type": "resize", "queue": "img", "payload": "héllo",
            "priority": 7, "delay": 1.5, "max_retries": 2, "timeout": 30,
            "retry": {"base": 0.5, "factor": 3, "max_delay": 60, "jitter": 0},
            "depends_on": [str(dep)], "tags": {"a": "b"}, "idempotency_key": "k",
            "expires_at": 2_000_000_000,
        }
    ).spec()  # fmt: skip
    assert spec.id == own.bytes
    assert (spec.task_type, spec.queue, spec.payload) == ("resize", "img", "héllo".encode())
    assert (spec.priority, spec.delay, spec.max_retries, spec.timeout) == (7, 1.5, 2, 30.0)
    assert spec.retry is not None
    assert (spec.retry.base, spec.retry.factor, spec.retry.max_delay) == (0.5, 3.0, 60.0)
    assert spec.depends_on == (dep.bytes,)
    assert (spec.tags, spec.idempotency_key, spec.expires_at) == ({"a": "b"}, "k", 2e9)


def test_payload_base64_is_decoded_and_no_payload_is_empty() -> None:
    raw = bytes(range(256))
    b64 = base64.b64encode(raw).decode()
    assert TaskSubmit(task_type="t", payload_base64=b64).spec().payload == raw
    assert TaskSubmit(task_type="t").spec().payload == b""
    assert "not both" in invalid(
        TaskSubmit, {"task_type": "t", "payload": "", "payload_base64": ""}
    )
    assert "payload_base64" in invalid(TaskSubmit, {"task_type": "t", "payload_base64": "a"})


@pytest.mark.parametrize(
    ("given", "unix"),
    [
        (1700000000, 1700000000.0),
        (1700000000.5, 1700000000.5),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T23:13:20+01:00", 1700000000.0),
        ("1969-07-20T20:17:40Z", 0.0),  # before the epoch: as past as the epoch
    ],
)
def test_body_times_are_unix_seconds_or_rfc_3339(given: object, unix: float) -> None:
    assert TaskSubmit.model_validate({"task_type": "t", "scheduled_at": given}).scheduled_at == unix
    assert TaskFilter.model_validate({"created_after": given}).created_after == unix


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("2023-11-14T22:13:20", "no UTC offset"),
        ("2023-11-14", "is a date"),
        ("1700000000", "give unix seconds as a number"),  # JSON has numbers for that
        ("10m", "is an age"),  # ten minutes *ago*: for a time from now, delay
        (True, "expected a number"),
        ("tomorrow", "not a time"),
    ],
)
def test_a_body_time_in_another_form_is_refused_saying_why(given: object, named: str) -> None:
    assert named in invalid(TaskSubmit, {"task_type": "t", "expires_at": given})


def test_listing_filters_also_take_ages_counted_back_from_now() -> None:
    before = time.time()
    since = TaskFilter.model_validate({"created_after": "10m"}).created_after
    assert since is not None
    assert before - 600 <= since <= time.time() - 600
    query = TaskQuery.model_validate({"created_after": "1.5h", "created_before": "1700000000"})
    assert query.created_after is not None
    assert query.created_after == pytest.approx(time.time() - 5400, abs=5)
    assert query.created_before == 1700000000.0  # query text is a number's only form


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"task_type": "t", "scheduled_at": "soon"}, "scheduled_at: Value error"),
        ({"task_type": "t", "priority": "5"}, "priority"),
        ({"task_type": "t", "max_retries": True}, "max_retries"),
        ({"task_type": "t", "priority": 5.5}, "priority"),
        ({"task_type": "t", "scheduled_at": -1}, "scheduled_at"),
        ({"task_type": "t", "delay": float("inf")}, "delay"),
        ({"task_type": "t", "delay": float("nan")}, "delay"),
        ({"task_type": "\ud800"}, "task_type"),
        ({"task_type": "t", "tags": {"k": "\udfff"}}, "tags.k"),
        ({"task_type": "t", "priority": 256}, "priority"),
        ({"task_type": "t", "max_retries": 2**31}, "max_retries"),
        ({"task_type": "t", "nope": 1}, "nope"),
    ],
)
def test_bad_values_are_refused_naming_the_field(data: dict[str, Any], named: str) -> None:
    assert named in invalid(TaskSubmit, data)


def test_error_descriptions_are_short_and_count_the_rest() -> None:
    data = {"task_type": "x" * 500, "priority": -1, "delay": -1, "timeout": 0, "queue": ""}
    message = invalid(TaskSubmit, data)
    assert message.count(";") == 3
    assert message.endswith("and 2 more")
    assert "..." in message  # the long input is cut
    assert len(message) < 400


def test_task_out_gives_text_when_utf8_and_always_base64() -> None:
    info = TaskInfo(
        id=TaskId(uuid.UUID(int=1).bytes), task_type="t", queue="q", state="completed",
        created_at=1.0, updated_at=2.0, max_retries=3, payload=b"\xff\x00",
        result=b"ok", depends_on=[TaskId(uuid.UUID(int=2).bytes)],
    )  # fmt: skip
    out = TaskOut.of(info)
    assert out.id == "00000000-0000-0000-0000-000000000001"
    assert out.depends_on == ["00000000-0000-0000-0000-000000000002"]
    assert (out.payload, out.payload_base64) == (None, "/wA=")
    assert (out.result, out.result_base64) == ("ok", "b2s=")
    assert out.state is TaskState.COMPLETED
    assert text_and_base64(None) == (None, None)


def test_stats_keep_every_queue_depth() -> None:
    stats = Stats(pending=3, queues={"q": QueueDepth(high=1, normal=2)}, totals={"submitted": 9})
    out = StatsOut.of(stats).model_dump()
    assert out["queues"] == {
        "q": {"high": 1, "normal": 2, "low": 0, "scheduled": 0, "in_progress": 0, "paused": False}
    }
    assert (out["pending"], out["totals"]) == (3, {"submitted": 9})


@pytest.mark.parametrize(
    ("filters", "bounds"),
    [
        ({}, (0, 255)),
        ({"priority": "high"}, (200, 255)),
        ({"priority": "normal"}, (100, 199)),
        ({"priority": "low"}, (0, 99)),
        ({"priority": "high", "priority_max": 220}, (200, 220)),
        ({"priority_min": 50, "priority": "normal"}, (100, 199)),
    ],
)
def test_a_tier_intersects_the_priority_range(
    filters: dict[str, Any], bounds: tuple[int, int]
) -> None:
    f = task_filter(TaskFilter.model_validate(filters))
    assert (f.priority_min, f.priority_max) == bounds


def test_an_empty_priority_range_matches_nothing() -> None:
    assert task_filter(TaskFilter(priority=Tier.LOW, priority_min=100)).empty


def test_every_tier_name_is_a_core_priority_tier() -> None:
    assert [t.value for t in Tier] == [t.label for t in sorted(PriorityTier, key=int)]


def test_cursors_round_trip_with_or_without_padding_and_junk_is_refused() -> None:
    for key in (uuid.uuid4().bytes, b"x", b"\xff" * 64):
        text = base64.urlsafe_b64encode(key).decode()
        assert _decode_cursor(text) == key
        assert _decode_cursor(text.rstrip("=")) == key
    assert _decode_cursor(None) is None
    for junk in ("", "!!!", "a", base64.urlsafe_b64encode(b"x" * 65).decode(), "é", "AAA=="):
        with pytest.raises(ValidationError, match="cursor"):
            _decode_cursor(junk)


def test_the_cursor_pattern_is_exactly_base64_of_1_to_64_bytes() -> None:
    for n in range(0, 70):
        text = base64.urlsafe_b64encode(b"k" * n).decode()
        for form in (text, text.rstrip("=")):
            assert bool(re.fullmatch(CURSOR_PATTERN, form)) is (1 <= n <= 64), (n, form)


def test_bulk_takes_ids_or_a_filter() -> None:
    assert BulkIn.model_validate({"ids": []}).ids == []
    assert BulkIn.model_validate({"filter": {"state": "dead_letter"}}).filter is not None
    assert "ids or filter" in invalid(BulkIn, {})
    assert "filter.colour" in invalid(BulkIn, {"filter": {"colour": "red"}})


def test_control_messages_are_told_apart_by_op() -> None:
    sub = CONTROL.validate_json('{"op": "unsubscribe", "queues": ["q"]}')
    assert isinstance(sub, SubscribeOp)
    assert (sub.op, sub.queues, sub.all) == ("unsubscribe", ["q"], False)
    stats = CONTROL.validate_python({"op": "stats", "interval": 2})
    assert isinstance(stats, StatsOp)
    assert stats.interval == 2
    with pytest.raises(pydantic.ValidationError):
        CONTROL.validate_json('{"op": "subscribe", "task_ids": ["x"]}')


def test_an_event_message_leaves_out_what_it_lacks() -> None:
    ev = TaskEvent(TaskId(uuid.UUID(int=5).bytes), TaskState.COMPLETED, "q", "t", 9.0, 1, b"\xff")
    assert event_message(ev) == {
        "type": "task", "task_id": "00000000-0000-0000-0000-000000000005",
        "state": "completed", "queue": "q", "task_type": "t", "at": 9.0,
        "at_rfc3339": "1970-01-01T00:00:09.000Z", "attempts": 1,
        "result_base64": "/w==",
    }  # fmt: skip


def test_the_error_body_carries_the_stable_code_and_its_status() -> None:
    r = error_response(ErrorCode.TASK_NOT_FOUND, "no task with id x")
    assert r.status_code == 404
    assert json.loads(bytes(r.body)) == {
        "error": {"code": 3000, "name": "TASK_NOT_FOUND", "message": "no task with id x"}
    }
