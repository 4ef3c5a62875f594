"""Where a bad frame stops being a request error: the server hands over a request that only
breaks its schema (the broker NACKs it INVALID_ARGUMENT and carries on) and refuses, as a
protocol error that closes, a first frame that is not HELLO, request id 0, a bad HELLO, a reply
type, and anything that is not one well-formed map with a request id."""

from __future__ import annotations

import msgspec
import pytest
from tests.unit.test_protocol_connection import decode_one, handshake, server, server_error

from tq.errors import ErrorCode
from tq.protocol import (
    CONNECTION_REQUEST_ID,
    IDLE_TIMEOUT,
    MAX_WAIT_MS,
    Ack,
    ConnectionState,
    FrameError,
    Hello,
    InvalidMessage,
    MessageType,
    Nack,
    Ping,
    Request,
    SubmitTask,
    Welcome,
    encode,
)


def frame(code: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([code]) + payload


@pytest.mark.parametrize(
    "first",
    [
        encode(Ping(request_id=3)),
        frame(0x10, msgspec.msgpack.encode({"request_id": 3, "tasks": [{"priority": 300}]})),
        frame(0x10, b"\xc1\xc1"),  # not MessagePack at all
        frame(0x7F, msgspec.msgpack.encode({"request_id": 3})),  # no such type
        encode(Ack(request_id=3)),  # a reply type
        frame(0x05, b"\x81\xaarequest_id\x03")[:5],  # the type byte, the payload yet to come
    ],
    ids=["valid-ping", "invalid-submit", "malformed", "unknown-type", "reply-type", "type-only"],
)
def test_a_first_frame_that_is_not_hello_is_refused_from_its_type_byte_alone(
    first: bytes,
) -> None:
    srv = server()
    error = server_error(srv, first)
    assert error.code is ErrorCode.HANDSHAKE_REQUIRED
    assert error.request_id is None  # decided before the payload is read: the connection's
    assert srv.state is ConnectionState.CLOSED
    nack = decode_one(srv.nack(error))
    assert nack == Nack(
        request_id=CONNECTION_REQUEST_ID, code=ErrorCode.HANDSHAKE_REQUIRED, message=error.message
    )


def test_the_first_frame_type_byte_may_arrive_alone() -> None:
    srv = server()
    data = encode(Hello(request_id=1, versions=[1]))
    assert srv.receive_data(data[:4]) == []
    assert srv.receive_data(data[4:5]) == []
    assert srv.receive_data(data[5:]) == [Hello(request_id=1, versions=[1])]


def test_a_request_that_breaks_its_schema_is_handed_over_as_invalid_and_the_stream_goes_on() -> (
    None
):
    _, srv = handshake()
    spec = {"task_type": "t", "priority": 300}
    bad = frame(0x10, msgspec.msgpack.encode({"request_id": 7, "tasks": [spec]}))
    missing = frame(0x16, msgspec.msgpack.encode({"request_id": 8}))  # PROGRESS lacks task_id
    msgs = srv.receive_data(bad + missing + encode(Ping(request_id=9)))
    invalid, lacking, ping = msgs
    assert isinstance(invalid, InvalidMessage) and isinstance(lacking, InvalidMessage)
    assert (invalid.type_code, invalid.request_id) == (MessageType.SUBMIT_TASK, 7)
    assert "$.tasks[0].priority" in invalid.message and "SUBMIT_TASK" in invalid.message
    assert invalid.error().code is ErrorCode.INVALID_ARGUMENT
    assert lacking.request_id == 8 and "task_id" in lacking.message
    assert ping == Ping(request_id=9)
    assert srv.state is ConnectionState.ESTABLISHED


@pytest.mark.parametrize(
    ("payload", "request_id"),
    [
        # Schema broken *and* not well-formed: trailing bytes after the map.
        (msgspec.msgpack.encode({"request_id": 7, "tasks": 1}) + b"\xc0", 7),
        (msgspec.msgpack.encode({"tasks": []}), None),  # no request id to answer
        (msgspec.msgpack.encode({"request_id": -1, "tasks": []}), None),  # not a request id
        (msgspec.msgpack.encode([7, []]), None),  # not a map
    ],
    ids=["trailing-bytes", "no-request-id", "negative-request-id", "array"],
)
def test_a_frame_that_is_not_a_well_formed_map_with_a_request_id_stays_a_protocol_error(
    payload: bytes, request_id: int | None
) -> None:
    _, srv = handshake()
    error = server_error(srv, frame(0x10, payload))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert error.request_id is None or error.request_id == request_id
    assert srv.state is ConnectionState.CLOSED


def test_a_hello_that_breaks_its_schema_is_a_protocol_error_quoting_its_request_id() -> None:
    srv = server()
    error = server_error(srv, frame(0x01, msgspec.msgpack.encode({"request_id": 4})))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert error.request_id == 4 and "versions" in error.message
    assert srv.state is ConnectionState.CLOSED


def test_a_reply_type_that_breaks_its_schema_is_still_a_protocol_error() -> None:
    _, srv = handshake()
    error = server_error(srv, frame(0x11, msgspec.msgpack.encode({"request_id": 4})))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert "SUBMIT_REPLY" in error.message


@pytest.mark.parametrize(
    "msg",
    [Ping(request_id=0), SubmitTask(request_id=0, tasks=[])],
    ids=["ping", "submit"],
)
def test_request_id_0_is_refused_as_a_protocol_error_of_the_connection(msg: Request) -> None:
    _, srv = handshake()
    error = server_error(srv, encode(msg))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert "request id 0" in error.message
    assert decode_one(srv.nack(error)).request_id == CONNECTION_REQUEST_ID  # type: ignore[union-attr]
    assert srv.state is ConnectionState.CLOSED


def test_request_id_0_is_refused_even_in_hello_or_an_invalid_request() -> None:
    error = server_error(server(), encode(Hello(request_id=0, versions=[1])))
    assert error.code is ErrorCode.PROTOCOL_ERROR and error.request_id == 0
    _, srv = handshake()
    invalid = frame(0x16, msgspec.msgpack.encode({"request_id": 0}))
    assert server_error(srv, invalid).code is ErrorCode.PROTOCOL_ERROR


def test_welcome_advertises_the_idle_timeout_and_the_long_poll_cap() -> None:
    srv = server(idle_timeout=12.5, max_wait_ms=4000)
    srv.receive_data(encode(Hello(request_id=1, versions=[1])))
    welcome = decode_one(srv.welcome())
    assert isinstance(welcome, Welcome)
    assert (welcome.idle_timeout, welcome.max_wait_ms) == (12.5, 4000)
    # A broker that says nothing means the protocol's defaults.
    plain = Welcome(request_id=1, version=1, max_frame_size=1, heartbeat_interval=1.0,
                    lease_duration=1.0)  # fmt: skip
    assert (plain.idle_timeout, plain.max_wait_ms) == (IDLE_TIMEOUT, MAX_WAIT_MS) == (30.0, 30_000)


def test_a_client_closes_on_a_broker_frame_that_breaks_its_schema() -> None:
    client, _ = handshake()
    rid = client.next_request_id()
    client.send(Ping(request_id=rid))
    # A well-formed map with a readable request id, lacking NACK's required code: on the
    # broker's side this would be a request error; from the broker it is a broken peer.
    with pytest.raises(FrameError) as info:
        client.receive_data(frame(0x04, msgspec.msgpack.encode({"request_id": rid})))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert client.state is ConnectionState.CLOSED
