"""A client may state its own frame limit in HELLO: the server then sends nothing above the
lower of the two limits; the reference client states its own, and a limit below 64 KiB is
refused on both ends."""

from __future__ import annotations

import pytest

from tq.errors import ErrorCode, ValidationError
from tq.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    MIN_CLIENT_FRAME_SIZE,
    ClientConnection,
    FrameError,
    Hello,
    ServerConnection,
    encode,
)


def server(max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> ServerConnection:
    return ServerConnection(
        server_name="s", node_id="n", heartbeat_interval=5.0, lease_duration=30.0,
        max_frame_size=max_frame_size,
    )  # fmt: skip


def test_the_reference_client_states_its_limit_and_the_server_sends_the_lower_one() -> None:
    client = ClientConnection(client_name="c", max_frame_size=1 << 20)
    srv = server()
    assert srv.peer_max_frame_size == DEFAULT_MAX_FRAME_SIZE  # before HELLO: its own
    (hello,) = srv.receive_data(client.hello())
    assert isinstance(hello, Hello)
    assert hello.max_frame_size == 1 << 20
    assert srv.peer_max_frame_size == 1 << 20
    bigger = ClientConnection(client_name="c", max_frame_size=64 << 20)
    srv = server()
    srv.receive_data(bigger.hello())
    assert srv.peer_max_frame_size == DEFAULT_MAX_FRAME_SIZE  # never above its own


def test_a_hello_without_a_limit_means_the_servers_own() -> None:
    srv = server(max_frame_size=1 << 20)
    srv.receive_data(encode(Hello(request_id=1, versions=[1])))
    assert srv.peer_max_frame_size == 1 << 20


def test_a_stated_limit_below_64_kib_is_a_protocol_error_naming_the_field() -> None:
    srv = server()
    low = Hello(request_id=1, versions=[1], max_frame_size=MIN_CLIENT_FRAME_SIZE - 1)
    with pytest.raises(FrameError) as got:
        srv.receive_data(encode(low))
    assert got.value.code is ErrorCode.PROTOCOL_ERROR
    assert "max_frame_size" in got.value.message
    with pytest.raises(ValidationError, match="below 65536"):
        ClientConnection(client_name="c", max_frame_size=MIN_CLIENT_FRAME_SIZE - 1)
