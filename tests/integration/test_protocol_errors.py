"""Request errors versus protocol errors on a real broker, in raw frames as a client written
from docs/protocol.md would send them: a bad value is a NACK INVALID_ARGUMENT and the
connection goes on; a frame that breaks the framing, the handshake or request id 0 closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from tests.integration.rawconn import read_nack_then_eof
from tq.errors import ErrorCode
from tq.protocol import (
    MAX_NESTING,
    FrameDecoder,
    GetStats,
    Hello,
    InvalidMessage,
    Message,
    MessageType,
    Nack,
    Ping,
    Pong,
    SubmitReply,
    Welcome,
    encode,
)
from tq.testing import BrokerProcess

pytestmark = pytest.mark.timeout(120)
T = 10.0  #: deadline of every read


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("wire") / "d") as b:
        yield b


def frame(code: int, payload: Any) -> bytes:
    """A frame of type ``code``: ``payload`` as raw bytes, or encoded as MessagePack."""
    body = payload if isinstance(payload, bytes) else msgspec.msgpack.encode(payload)
    return (len(body) + 1).to_bytes(4, "big") + bytes([code]) + body


class Wire:
    """A connection spoken in raw frames, its HELLO already answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.got: list[Message] = []

    @classmethod
    async def open(cls, port: int) -> Wire:
        wire = cls(*await asyncio.open_connection("127.0.0.1", port))
        wire.writer.write(encode(Hello(request_id=1, versions=[1])))
        assert isinstance(await wire.reply(1), Welcome)
        return wire

    async def reply(self, request_id: int) -> Message:
        """The broker's answer to ``request_id`` (replies may come in any order)."""
        async with asyncio.timeout(T):
            while True:
                for msg in self.got:
                    if getattr(msg, "request_id", None) == request_id:
                        self.got.remove(msg)
                        return msg
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the broker closed the connection")
                for decoded in self.decoder.feed(data):
                    assert not isinstance(decoded, InvalidMessage), decoded  # never from a broker
                    self.got.append(decoded)

    async def close(self) -> None:
        self.writer.close()


def run(main: Any) -> None:
    asyncio.run(main())


SUBMIT = MessageType.SUBMIT_TASK
BAD_VALUES = {
    "priority above 255": ({"task_type": "t", "priority": 300}, "$.tasks[0].priority"),
    "infinite delay": ({"task_type": "t", "delay": float("inf")}, "$.tasks[0].delay"),
    "nan scheduled_at": ({"task_type": "t", "scheduled_at": float("nan")},
                         "$.tasks[0].scheduled_at"),
    "expires_at after 9999": ({"task_type": "t", "expires_at": 3e11}, "$.tasks[0].expires_at"),
    "infinite timeout": ({"task_type": "t", "timeout": float("inf")}, "$.tasks[0].timeout"),
    "infinite backoff": ({"task_type": "t", "retry": {"max_delay": float("inf")}},
                         "$.tasks[0].retry.max_delay"),
    "no task type": ({"queue": "q"}, "task_type"),
}  # fmt: skip


def test_a_bad_value_is_a_request_error_naming_its_field_and_the_connection_stays(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        # Pipelined: every bad request gets its own NACK, and the good ones go through.
        for rid, (spec, _) in enumerate(BAD_VALUES.values(), start=10):
            wire.writer.write(frame(SUBMIT, {"request_id": rid, "tasks": [spec]}))
        wire.writer.write(frame(SUBMIT, {"request_id": 99, "tasks": [{"task_type": "t"}]}))
        for rid, (_, path) in enumerate(BAD_VALUES.values(), start=10):
            nack = await wire.reply(rid)
            assert isinstance(nack, Nack), nack
            assert nack.code == ErrorCode.INVALID_ARGUMENT, nack
            assert path in nack.message and "SUBMIT_TASK" in nack.message, nack.message
        assert isinstance(await wire.reply(99), SubmitReply)
        # A request lacking a required field of its own, on the same connection.
        wire.writer.write(frame(MessageType.PROGRESS, {"request_id": 100, "percent": 5}))
        lacking = await wire.reply(100)
        assert isinstance(lacking, Nack) and lacking.code == ErrorCode.INVALID_ARGUMENT
        assert "task_id" in lacking.message
        wire.writer.write(encode(Ping(request_id=101)))
        assert isinstance(await wire.reply(101), Pong)
        await wire.close()

    run(main)


BROKEN_FRAMES = {
    # The schema is broken too, but the MessagePack is not one map: trailing bytes.
    "trailing bytes": (msgspec.msgpack.encode({"request_id": 5, "tasks": 7}) + b"\xc0", 5),
    "malformed": (b"\x81\xaarequest_id\x05\xc1", 5),
    "no request id": (msgspec.msgpack.encode({"tasks": []}), 0),
    "not a map": (msgspec.msgpack.encode([5, []]), 0),
}


@pytest.mark.parametrize(("payload", "rid"), BROKEN_FRAMES.values(), ids=BROKEN_FRAMES.keys())
def test_a_frame_that_is_not_one_map_with_a_request_id_is_a_protocol_error_that_closes(
    broker: BrokerProcess, payload: bytes, rid: int
) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        wire.writer.write(frame(SUBMIT, payload))
        nack = await read_nack_then_eof(wire.reader, T)
        assert (nack.code, nack.request_id) in {(ErrorCode.PROTOCOL_ERROR, rid),
                                                (ErrorCode.PROTOCOL_ERROR, 0)}  # fmt: skip
        await wire.close()

    run(main)


def test_a_reply_type_from_a_client_is_a_protocol_error_even_with_a_bad_schema(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        wire.writer.write(frame(MessageType.SUBMIT_REPLY, {"request_id": 3}))
        nack = await read_nack_then_eof(wire.reader, T)
        assert nack.code == ErrorCode.PROTOCOL_ERROR and "SUBMIT_REPLY" in nack.message
        await wire.close()

    run(main)


FIRST_FRAMES = {
    "valid GET_STATS": encode(GetStats(request_id=3)),
    "SUBMIT_TASK breaking its schema": frame(SUBMIT, {"request_id": 3, "tasks": [{}]}),
    "malformed SUBMIT_TASK": frame(SUBMIT, b"\xc1\xc1\xc1"),
    "unknown type": frame(0x7F, {"request_id": 3}),
    "HELLO's reply": frame(MessageType.WELCOME, {"request_id": 3}),
}  # fmt: skip


@pytest.mark.parametrize("first", FIRST_FRAMES.values(), ids=FIRST_FRAMES.keys())
def test_a_first_frame_that_is_not_hello_gets_handshake_required_whatever_its_payload(
    broker: BrokerProcess, first: bytes
) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        writer.write(first)
        nack = await read_nack_then_eof(reader, T)
        assert (nack.code, nack.request_id) == (ErrorCode.HANDSHAKE_REQUIRED, 0)
        writer.close()

    run(main)


def test_request_id_0_is_refused_with_a_protocol_error_of_the_connection(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        wire.writer.write(encode(Ping(request_id=2)) + encode(Ping(request_id=0)))
        nacks: list[Nack] = []
        others: list[object] = []
        async with asyncio.timeout(T):
            while data := await wire.reader.read(65536):
                for msg in wire.decoder.feed(data):
                    if isinstance(msg, Nack):
                        nacks.append(msg)
                    else:
                        others.append(msg)
        assert others == [Pong(request_id=2)]  # the valid request before it is still answered
        (nack,) = nacks
        assert (nack.code, nack.request_id) == (ErrorCode.PROTOCOL_ERROR, 0)
        assert "request id 0" in nack.message
        await wire.close()

    run(main)


def nested_ping(request_id: int, depth: int) -> bytes:
    """A PING whose unknown key holds arrays nested so the payload is ``depth`` levels deep."""
    return frame(
        MessageType.PING,
        b"\x82\xaarequest_id" + bytes([request_id]) + b"\xa1z" + b"\x91" * (depth - 1) + b"\xc0",
    )


def test_nesting_up_to_the_documented_depth_is_decoded_and_far_beyond_it_closes(
    broker: BrokerProcess,
) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        wire.writer.write(nested_ping(7, MAX_NESTING))
        assert await wire.reply(7) == Pong(request_id=7)
        wire.writer.write(nested_ping(8, 1000))
        nack = await read_nack_then_eof(wire.reader, T)
        assert nack.code == ErrorCode.PROTOCOL_ERROR and "nested deeper" in nack.message
        await wire.close()

    run(main)


def test_a_key_given_twice_takes_its_last_value(broker: BrokerProcess) -> None:
    async def main() -> None:
        wire = await Wire.open(broker.port)
        wire.writer.write(frame(MessageType.PING, b"\x82\xaarequest_id\x07\xaarequest_id\x08"))
        assert await wire.reply(8) == Pong(request_id=8)
        await wire.close()

    run(main)
