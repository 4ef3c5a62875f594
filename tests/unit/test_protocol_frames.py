"""The frame decoder's edge cases, each pinned by a hand-built frame."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import msgspec
import pytest

from tq.core.ids import TaskId
from tq.errors import ConfigError, ErrorCode, ProtocolError, ValidationError
from tq.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_NESTING,
    Ack,
    FrameDecoder,
    FrameError,
    InvalidMessage,
    MessageType,
    Ping,
    SubmitTask,
    TaskSpec,
    decode_payload,
    encode,
    encode_many,
)


def frame(code: int, payload: object) -> bytes:
    body = payload if isinstance(payload, bytes) else msgspec.msgpack.encode(payload)
    return (len(body) + 1).to_bytes(4, "big") + bytes([code]) + body


def feed_error(decoder: FrameDecoder, data: bytes) -> FrameError:
    with pytest.raises(ProtocolError) as info:
        decoder.feed(data)
    assert isinstance(info.value, FrameError)
    return info.value


def test_a_frame_is_a_big_endian_length_then_the_type_then_a_msgpack_map() -> None:
    assert encode(Ping(request_id=1)) == bytes.fromhex("0000000e05 81 aa") + b"request_id\x01"


def test_the_default_maximum_frame_size_is_16_mib() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == FrameDecoder().max_frame_size == 16 * 1024 * 1024


def test_an_oversized_length_is_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    error = feed_error(decoder, (1001).to_bytes(4, "big"))
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert error.request_id is None
    assert decoder.buffered == 0


def test_a_frame_exactly_at_the_limit_is_accepted() -> None:
    data = encode(Ping(request_id=3))
    assert FrameDecoder(max_frame_size=len(data) - 4).feed(data) == [Ping(request_id=3)]


def test_a_zero_length_frame_is_a_protocol_error() -> None:
    error = feed_error(FrameDecoder(), b"\x00\x00\x00\x00")
    assert error.code is ErrorCode.PROTOCOL_ERROR


def test_an_unknown_type_is_refused_with_the_request_id_it_carried() -> None:
    error = feed_error(FrameDecoder(), frame(0x7F, {"request_id": 42}))
    assert error.code is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert error.request_id == 42


def invalid(data: bytes) -> InvalidMessage:
    """The one value a frame decodes to, which must be an InvalidMessage."""
    decoder = FrameDecoder()
    (out,) = decoder.feed(data)
    assert isinstance(out, InvalidMessage), out
    assert decoder.error is None  # the framing holds: the stream goes on
    return out


def test_an_invalid_field_is_named_and_the_request_id_still_read() -> None:
    bad = {"request_id": 9, "tasks": [{"task_type": "t", "priority": 300}]}
    out = invalid(frame(0x10, bad))
    assert "$.tasks[0].priority" in out.message
    assert "SUBMIT_TASK" in out.message
    assert (out.type_code, out.request_id) == (MessageType.SUBMIT_TASK, 9)
    # The strict decoder, which the client validates its own requests with, refuses it.
    with pytest.raises(FrameError) as info:
        decode_payload(0x10, msgspec.msgpack.encode(bad))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR and info.value.request_id == 9


@pytest.mark.parametrize(
    ("field", "value"),
    [("task_id", b"short"), ("percent", 101), ("lease_token", -1), ("task_id", "a" * 16)],
)
def test_constraints_are_enforced_at_decode(field: str, value: object) -> None:
    good = {"request_id": 1, "task_id": b"\x01" * 16, "lease_token": 1, "percent": 5}
    assert FrameDecoder().feed(frame(0x16, good))
    assert f"$.{field}" in invalid(frame(0x16, {**good, field: value})).message


def test_a_missing_required_field_is_named() -> None:
    assert "task_id" in invalid(frame(0x16, {"request_id": 1})).message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("delay", float("inf")), ("delay", 1e10 + 1), ("scheduled_at", float("inf")),
        ("scheduled_at", 253_402_300_800.0), ("expires_at", float("nan")),
        ("expires_at", 1e300), ("timeout", float("inf")), ("timeout", 0.0),
        ("retry", {"base": float("inf")}), ("retry", {"max_delay": 1e11}),
        ("retry", {"factor": float("inf")}), ("retry", {"factor": 1001.0}),
        ("retry", {"jitter": float("nan")}),
    ],
)  # fmt: skip
def test_non_finite_and_absurd_times_and_durations_are_refused(field: str, value: object) -> None:
    spec = {"task_type": "t", field: value}
    out = invalid(frame(0x10, {"request_id": 1, "tasks": [spec]}))
    assert f"$.tasks[0].{field}" in out.message


def test_the_largest_allowed_times_and_durations_are_accepted() -> None:
    retry = {"base": 1e10, "max_delay": 1e10, "factor": 1000.0, "jitter": 1.0}
    spec = {"task_type": "t", "delay": 1e10, "expires_at": 253_402_300_799.0, "timeout": 1e10,
            "retry": retry}  # fmt: skip
    (msg,) = FrameDecoder().feed(frame(0x10, {"request_id": 1, "tasks": [spec]}))
    assert isinstance(msg, SubmitTask) and msg.tasks[0].delay == 1e10


def test_a_heartbeat_cannot_report_infinite_cpu() -> None:
    beat = {"request_id": 1, "worker_id": "w", "cpu_percent": float("inf")}
    assert "$.cpu_percent" in invalid(frame(0x32, beat)).message


def test_a_key_given_twice_takes_its_last_value_and_every_value_is_checked() -> None:
    # MessagePack maps may repeat a key; the decoder reads each value in order.
    twice = b"\x82\xaarequest_id\x07\xaarequest_id\x08"
    assert FrameDecoder().feed(frame(0x05, twice)) == [Ping(request_id=8)]
    tags = (b"\x82\xaarequest_id\x01\xa5tasks\x91\x82\xa9task_type\xa1t"
            b"\xa4tags\x82\xa1k\xa11\xa1k\xa12")  # fmt: skip
    (msg,) = FrameDecoder().feed(frame(0x10, tags))
    assert isinstance(msg, SubmitTask) and msg.tasks[0].tags == {"k": "2"}
    # An earlier bad value is not hidden by a later good one.
    bad_first = (b"\x82\xaarequest_id\x01\xa5tasks\x91\x83\xa9task_type\xa1t"
                 b"\xa8priority\xcd\x01\x2c\xa8priority\x05")  # fmt: skip
    assert "$.tasks[0].priority" in invalid(frame(0x10, bad_first)).message


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    msg = {"request_id": 5, "from_the_future": {"nested": [1, 2, 3]}}
    assert FrameDecoder().feed(frame(0x05, msg)) == [Ping(request_id=5)]


def test_trailing_bytes_after_the_payload_map_are_refused() -> None:
    body = msgspec.msgpack.encode({"request_id": 1}) + b"\xc0"
    assert feed_error(FrameDecoder(), frame(0x05, body)).code is ErrorCode.PROTOCOL_ERROR


def test_invalid_utf8_is_a_protocol_error_not_a_unicode_error() -> None:
    body = b"\x82\xaarequest_id\x01\xabclient_name\xa2\xc3\x28"
    assert feed_error(FrameDecoder(), frame(0x01, body)).code is ErrorCode.PROTOCOL_ERROR


def nested(depth: int) -> bytes:
    """A PING whose unknown key ``z`` holds arrays nested so that the payload is ``depth``
    levels deep (the payload map is level 1)."""
    return b"\x82\xaarequest_id\x07\xa1z" + b"\x91" * (depth - 1) + b"\xc0"


def test_nesting_up_to_the_guaranteed_depth_under_an_unknown_key_is_accepted() -> None:
    assert FrameDecoder().feed(frame(0x05, nested(MAX_NESTING))) == [Ping(request_id=7)]


@pytest.fixture
def default_recursion_limit() -> Iterator[None]:
    """The limit the broker process runs with (Hypothesis raises it in this one)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


@pytest.mark.usefixtures("default_recursion_limit")
@pytest.mark.parametrize("depth", [1000, 200_000])
def test_nesting_beyond_the_decoders_limit_is_a_protocol_error(depth: int) -> None:
    error = feed_error(FrameDecoder(), frame(0x05, nested(depth)))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert "nested deeper" in error.message
    assert error.request_id is None  # the probe that would read it is as deep


def test_a_decoder_is_poisoned_after_an_error() -> None:
    decoder = FrameDecoder()
    feed_error(decoder, b"\x00\x00\x00\x00")
    error = feed_error(decoder, encode(Ping(request_id=1)))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert decoder.error is not None


def test_messages_before_a_bad_frame_ride_on_the_error() -> None:
    good = encode_many([Ping(request_id=1), Ping(request_id=2)])
    error = feed_error(FrameDecoder(), good + frame(0x7F, {"request_id": 3}))
    assert error.messages == [Ping(request_id=1), Ping(request_id=2)]
    assert error.request_id == 3


def test_a_frame_split_byte_by_byte_decodes_once_complete() -> None:
    msg = SubmitTask(request_id=1, tasks=[TaskSpec(task_type="t", payload=b"x" * 300)])
    data = encode(msg) + encode(Ack(request_id=2))
    decoder = FrameDecoder()
    out = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert out == [msg, Ack(request_id=2)]


def test_a_large_chunk_behind_a_partial_frame_is_not_buffered_wholesale() -> None:
    pings = [Ping(request_id=i) for i in range(1, 2001)]
    data = encode_many(pings)
    decoder = FrameDecoder(max_frame_size=64)
    assert decoder.feed(data[:3]) == []
    assert decoder.feed(data[3:-2]) == pings[:-1]
    assert decoder.buffered == len(encode(pings[-1])) - 2
    assert decoder.feed(data[-2:]) == pings[-1:]


def test_memoryview_and_bytearray_input_are_accepted() -> None:
    data = encode(Ping(request_id=1))
    assert FrameDecoder().feed(memoryview(data)) == [Ping(request_id=1)]
    assert FrameDecoder().feed(bytearray(data)) == [Ping(request_id=1)]


def test_decoded_task_ids_are_bytes_independent_of_the_input_buffer() -> None:
    tid = TaskId(bytes(range(16)))
    buf = bytearray(encode(SubmitTask(request_id=1, tasks=[TaskSpec(id=tid, task_type="t")])))
    (msg,) = FrameDecoder().feed(buf)
    buf[:] = b"\x00" * len(buf)
    assert isinstance(msg, SubmitTask)
    assert msg.tasks[0].id == tid


def test_an_impossible_max_frame_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FrameDecoder(max_frame_size=0)


def test_encoding_an_out_of_range_value_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        encode(Ping(request_id=2**64))


def test_encoding_something_that_is_not_a_message_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode(TaskSpec(task_type="t"))  # type: ignore[arg-type]
