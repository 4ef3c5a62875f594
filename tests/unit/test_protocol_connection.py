"""Connection rules of both ends: handshake, version negotiation, frame limits, request ids."""

from __future__ import annotations

import msgspec
import pytest

from tq.core.ids import TaskId
from tq.errors import ErrorCode, ProtocolError, TqError
from tq.protocol import (
    CONNECTION_REQUEST_ID,
    MAX_HELLO_FRAME_SIZE,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Ack,
    ClientConnection,
    ConnectionState,
    FrameDecoder,
    FrameError,
    Hello,
    InvalidMessage,
    Message,
    MessageType,
    Nack,
    Ping,
    Pong,
    ServerConnection,
    SubmitReply,
    SubmitTask,
    TaskEvent,
    TaskSpec,
    Welcome,
    WorkerOrders,
    encode,
    encode_many,
    nack_frame,
    negotiate_version,
)

TID = TaskId(b"\x01" * 16)


def server(**overrides: object) -> ServerConnection:
    kwargs: dict[str, object] = {
        "server_name": "test",
        "node_id": "n1",
        "heartbeat_interval": 5.0,
        "lease_duration": 30.0,
    }
    kwargs.update(overrides)
    return ServerConnection(**kwargs)  # type: ignore[arg-type]


def decode_one(data: bytes) -> Message:
    (msg,) = FrameDecoder().feed(data)
    assert not isinstance(msg, InvalidMessage), msg
    return msg


def handshake() -> tuple[ClientConnection, ServerConnection]:
    client, srv = ClientConnection(client_name="c"), server()
    srv.receive_data(client.hello())
    client.receive_data(srv.welcome())
    return client, srv


def server_error(srv: ServerConnection, data: bytes) -> FrameError:
    with pytest.raises(ProtocolError) as info:
        srv.receive_data(data)
    assert isinstance(info.value, FrameError)
    assert srv.state is ConnectionState.CLOSED
    return info.value


# --- server --------------------------------------------------------------------------------


def test_the_current_protocol_version_is_1_and_supported() -> None:
    assert PROTOCOL_VERSION == 1
    assert PROTOCOL_VERSION in SUPPORTED_VERSIONS


def test_a_server_accepts_hello_and_answers_welcome_with_its_request_id() -> None:
    srv = server(max_frame_size=4096)
    (hello,) = srv.receive_data(encode(Hello(request_id=7, versions=[1], client_name="c")))
    assert isinstance(hello, Hello)
    assert srv.state is ConnectionState.ESTABLISHED
    welcome = decode_one(srv.welcome())
    assert welcome == Welcome(
        request_id=7,
        version=1,
        server_name="test",
        node_id="n1",
        max_frame_size=4096,
        heartbeat_interval=5.0,
        lease_duration=30.0,
    )


def test_the_highest_common_version_is_chosen() -> None:
    srv = server(versions=(1, 2, 3))
    srv.receive_data(encode(Hello(request_id=1, versions=[5, 2, 3])))
    assert srv.version == 3
    assert negotiate_version([1, 2], [2, 1]) == 2


def test_no_common_version_is_refused_as_unsupported_version() -> None:
    error = server_error(server(), encode(Hello(request_id=1, versions=[2, 3])))
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert error.request_id == 1
    assert "[2, 3]" in error.message


def test_an_empty_version_list_is_refused_as_unsupported_version() -> None:
    assert server_error(server(), encode(Hello(request_id=1, versions=[]))).code is (
        ErrorCode.UNSUPPORTED_VERSION
    )


def test_hello_twice_is_a_protocol_error() -> None:
    _, srv = handshake()
    error = server_error(srv, encode(Hello(request_id=9, versions=[1])))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert error.request_id == 9


def test_requests_pipelined_behind_hello_are_delivered_in_order() -> None:
    srv = server()
    submit = SubmitTask(request_id=2, tasks=[TaskSpec(task_type="t")])
    msgs = srv.receive_data(encode_many([Hello(request_id=1, versions=[1]), submit]))
    assert msgs == [Hello(request_id=1, versions=[1]), submit]


def test_a_client_may_not_send_a_reply_type() -> None:
    _, srv = handshake()
    error = server_error(srv, encode(Ack(request_id=4)))
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert "ACK" in error.message


def test_an_oversized_frame_gets_a_frame_too_large_nack_and_closes() -> None:
    client, srv = ClientConnection(client_name="c"), server(max_frame_size=256)
    srv.receive_data(client.hello())
    error = server_error(srv, (10_000).to_bytes(4, "big") + b"\x10")
    nack = decode_one(srv.nack(error))
    assert nack == Nack(
        request_id=CONNECTION_REQUEST_ID, code=ErrorCode.FRAME_TOO_LARGE, message=error.message
    )
    with pytest.raises(ProtocolError):
        srv.receive_data(encode(Ping(request_id=5)))


def test_a_first_frame_above_the_hello_limit_is_refused_from_its_length_prefix_alone() -> None:
    srv = server()
    assert srv.receive_data(b"\x00\x01") == []  # the prefix may arrive in pieces
    error = server_error(srv, (MAX_HELLO_FRAME_SIZE + 1).to_bytes(4, "big")[2:])
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert str(MAX_HELLO_FRAME_SIZE) in error.message
    assert srv.state is ConnectionState.CLOSED


def test_a_hello_of_exactly_the_hello_limit_is_accepted() -> None:
    fields: dict[str, object] = {"request_id": 1, "versions": [1], "pad": b"x" * 300}
    # An unknown key (ignored by the receiver) fills the frame up to N == the limit.
    overhead = 1 + len(msgspec.msgpack.encode(fields)) - 300
    fields["pad"] = b"x" * (MAX_HELLO_FRAME_SIZE - overhead)
    payload = msgspec.msgpack.encode(fields)
    frame = (1 + len(payload)).to_bytes(4, "big") + bytes([MessageType.HELLO]) + payload
    assert int.from_bytes(frame[:4], "big") == MAX_HELLO_FRAME_SIZE
    assert server().receive_data(frame) == [Hello(request_id=1, versions=[1])]


def test_requests_behind_hello_may_be_as_large_as_the_server_frame_limit() -> None:
    srv = server()
    big = SubmitTask(request_id=2, tasks=[TaskSpec(task_type="t", payload=b"x" * 200_000)])
    msgs = srv.receive_data(encode_many([Hello(request_id=1, versions=[1]), big]))
    assert msgs == [Hello(request_id=1, versions=[1]), big]


def test_valid_requests_before_a_bad_frame_are_still_handed_over() -> None:
    _, srv = handshake()
    data = encode(Ping(request_id=2)) + b"\x00\x00\x00\x01\x7f"
    error = server_error(srv, data)
    assert error.code is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert error.messages == [Ping(request_id=2)]


def test_a_bad_frame_behind_a_missing_hello_reports_the_handshake_first() -> None:
    error = server_error(server(), encode(Ping(request_id=2)) + b"\x00\x00\x00\x00")
    assert error.code is ErrorCode.HANDSHAKE_REQUIRED


def test_welcome_before_hello_is_refused() -> None:
    with pytest.raises(ProtocolError):
        server().welcome()


def test_nack_frame_encodes_any_tq_error() -> None:
    error = TqError("queue q is full", ErrorCode.QUEUE_FULL)
    assert decode_one(nack_frame(12, error)) == Nack(
        request_id=12, code=4000, message="queue q is full"
    )
    assert decode_one(nack_frame(None, error)) == Nack(
        request_id=0, code=4000, message="queue q is full"
    )


# --- client --------------------------------------------------------------------------------


def test_a_client_is_established_by_a_welcome_for_a_version_it_offered() -> None:
    client, _ = handshake()
    assert client.state is ConnectionState.ESTABLISHED
    assert client.version == 1
    assert client.outstanding == {}


def test_the_client_learns_the_server_frame_limit_and_refuses_to_exceed_it() -> None:
    client, srv = ClientConnection(client_name="c"), server(max_frame_size=128)
    srv.receive_data(client.hello())
    client.receive_data(srv.welcome())
    assert client.peer_max_frame_size == 128
    big = SubmitTask(
        request_id=client.next_request_id(), tasks=[TaskSpec(task_type="t", payload=b"x" * 200)]
    )
    with pytest.raises(ProtocolError) as info:
        client.send(big)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert big.request_id not in client.outstanding
    assert client.state is ConnectionState.ESTABLISHED


def test_a_welcome_for_a_version_not_offered_is_refused() -> None:
    client = ClientConnection(client_name="c")
    hello = decode_one(client.hello())
    assert isinstance(hello, Hello)
    bad = server(versions=(2,))
    bad.version, bad.hello = 2, hello  # a broken server that ignores negotiation
    with pytest.raises(ProtocolError) as info:
        client.receive_data(bad.welcome())
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert client.state is ConnectionState.CLOSED


def test_a_nack_to_hello_closes_the_client_and_is_returned() -> None:
    client = ClientConnection(client_name="c", versions=(9,))
    srv = server()
    with pytest.raises(FrameError) as info:
        srv.receive_data(client.hello())
    (nack,) = client.receive_data(srv.nack(info.value))
    assert isinstance(nack, Nack)
    assert nack.code == ErrorCode.UNSUPPORTED_VERSION
    assert client.state is ConnectionState.CLOSED


def test_sending_before_hello_is_refused() -> None:
    client = ClientConnection(client_name="c")
    with pytest.raises(ProtocolError) as info:
        client.send(Ping(request_id=1))
    assert info.value.code is ErrorCode.HANDSHAKE_REQUIRED


def test_request_ids_are_non_zero_unique_and_tracked_until_answered() -> None:
    client, srv = handshake()
    ids = [client.next_request_id() for _ in range(3)]
    assert len(set(ids)) == 3
    assert 0 not in ids
    frames = [client.send(Ping(request_id=rid)) for rid in ids]
    assert client.outstanding == dict.fromkeys(ids, MessageType.PING)
    srv.receive_data(b"".join(frames))
    # Replies may come back in any order.
    replies = client.receive_data(encode_many([Pong(request_id=r) for r in reversed(ids)]))
    pushed = (TaskEvent, WorkerOrders)
    assert [r.request_id for r in replies if not isinstance(r, pushed)] == ids[::-1]
    assert client.outstanding == {}


def test_an_outstanding_or_reserved_request_id_cannot_be_sent_again() -> None:
    client, _ = handshake()
    client.send(Ping(request_id=5))
    for rid in (5, CONNECTION_REQUEST_ID):
        with pytest.raises(ProtocolError):
            client.send(Ping(request_id=rid))
    assert client.next_request_id() != 5


def test_a_reply_to_an_unknown_request_id_is_flagged() -> None:
    client, _ = handshake()
    with pytest.raises(ProtocolError) as info:
        client.receive_data(encode(Pong(request_id=77)))
    assert "77" in info.value.message
    assert client.state is ConnectionState.CLOSED


def test_a_reply_of_the_wrong_type_is_flagged() -> None:
    client, _ = handshake()
    client.send(Ping(request_id=client.next_request_id()))
    rid = next(iter(client.outstanding))
    with pytest.raises(ProtocolError) as info:
        client.receive_data(encode(SubmitReply(request_id=rid, ids=[], created=[])))
    assert "PING" in info.value.message


def test_a_nack_answers_any_request() -> None:
    client, _ = handshake()
    rid = client.next_request_id()
    client.send(SubmitTask(request_id=rid, tasks=[TaskSpec(task_type="t")]))
    (nack,) = client.receive_data(nack_frame(rid, TqError("full", ErrorCode.QUEUE_FULL)))
    assert isinstance(nack, Nack)
    assert client.outstanding == {}
    assert client.state is ConnectionState.ESTABLISHED


def test_a_connection_level_nack_closes_the_client() -> None:
    client, _ = handshake()
    (nack,) = client.receive_data(nack_frame(None, TqError("bye", ErrorCode.SHUTTING_DOWN)))
    assert isinstance(nack, Nack)
    assert client.state is ConnectionState.CLOSED


def test_pushed_task_events_pass_through_the_client() -> None:
    client, _ = handshake()
    event = TaskEvent(subscription_id=3, task_id=TID, state="completed", at=1.0)
    assert client.receive_data(encode(event)) == [event]


def test_a_server_may_not_send_a_request_type() -> None:
    client, _ = handshake()
    with pytest.raises(ProtocolError):
        client.receive_data(encode(Ping(request_id=1)))


def test_a_server_reply_frame_round_trips_through_send() -> None:
    client, srv = handshake()
    rid = client.next_request_id()
    srv.receive_data(client.send(SubmitTask(request_id=rid, tasks=[TaskSpec(task_type="t")])))
    reply = SubmitReply(request_id=rid, ids=[TID], created=[True])
    assert client.receive_data(srv.send(reply)) == [reply]
