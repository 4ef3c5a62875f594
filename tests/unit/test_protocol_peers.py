"""A client tells another kind of server from a tq broker by the first bytes of its answer."""

from __future__ import annotations

import pytest

from tq.errors import ErrorCode
from tq.protocol import ClientConnection, ConnectionState, Nack, Welcome, encode
from tq.protocol.peers import ForeignPeerError, check_first_reply, describe_peer

HTTP_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"


def hello_sent() -> ClientConnection:
    client = ClientConnection(client_name="c")
    client.hello()
    return client


@pytest.mark.parametrize(
    ("answer", "peer"),
    [
        (HTTP_400, "an HTTP server"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "an SSH server"),
        (b"\x15\x03\x03\x00\x02\x02\x46", "a TLS server"),
        (b"-ERR Protocol error\r\n", "a Redis server"),
        (b"220 mail.example.com ESMTP\r\n", "an SMTP or FTP server"),
        (b"\x00\x00\x00\x05\x7f....", "a server of another protocol"),  # small, unknown type
        (b"\x00\x00\x00\x00", "a server of another protocol"),  # an empty frame
    ],
)
def test_an_answer_no_broker_sends_is_named_for_what_it_looks_like(
    answer: bytes, peer: str
) -> None:
    client = hello_sent()
    with pytest.raises(ForeignPeerError) as info:
        client.receive_data(answer)
    assert info.value.peer == peer
    assert info.value.code == ErrorCode.PROTOCOL_ERROR
    assert str(info.value.message).startswith(f"answered like {peer}, not a tq broker")
    assert client.state is ConnectionState.CLOSED


def test_the_answer_is_judged_as_soon_as_its_length_prefix_is_in() -> None:
    client = hello_sent()
    for byte in HTTP_400[:3]:
        assert client.receive_data(bytes([byte])) == []
    with pytest.raises(ForeignPeerError, match="HTTP server"):
        client.receive_data(HTTP_400[3:4])


@pytest.mark.parametrize(
    "reply",
    [
        Welcome(
            request_id=1, version=1, max_frame_size=1 << 24, heartbeat_interval=5,
            lease_duration=30,
        ),
        Nack(request_id=1, code=ErrorCode.UNSUPPORTED_VERSION, message="no"),
        Nack(request_id=0, code=ErrorCode.TOO_MANY_CONNECTIONS, message="full"),
    ],
)  # fmt: skip
def test_a_brokers_first_reply_passes_even_a_byte_at_a_time(reply: Welcome | Nack) -> None:
    client = hello_sent()
    frame = encode(reply)
    got = [m for i in range(len(frame)) for m in client.receive_data(frame[i : i + 1])]
    assert got == [reply]


def test_only_the_first_reply_is_judged() -> None:
    assert describe_peer(b"HTTP/") == "an HTTP server"
    check_first_reply(b"\x00\x00")  # too short to judge: silent
    with pytest.raises(ForeignPeerError):
        check_first_reply(b"\x01\x00\x00\x00")  # 16 MiB: no first reply is that large
