"""Property tests of the codec and connections: every message round-trips however the bytes
are chunked, replies always find their requests, and no input bytes make the decoder raise
anything but ProtocolError or buffer more than one frame."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tq.errors import ProtocolError
from tq.protocol import (
    LENGTH_PREFIX_SIZE,
    MESSAGE_TYPES,
    REPLY_TO,
    ClientConnection,
    Decoded,
    FrameDecoder,
    Hello,
    InvalidMessage,
    Message,
    Nack,
    Ping,
    Request,
    ServerConnection,
    encode,
    encode_many,
)
from tq.protocol.registry import REQUEST_CLASSES

_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)


def strategy_for(t: mi.Type) -> st.SearchStrategy[Any]:
    """A strategy producing values that satisfy msgspec type ``t`` and its constraints.

    Built from the struct definitions themselves, so a new message or field is covered
    without touching this file.
    """
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else _I64_MIN)
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else _U64_MAX)
        return st.integers(lo, hi)
    if isinstance(t, mi.FloatType):
        low = t.ge if t.ge is not None else t.gt
        return st.floats(
            min_value=low, max_value=t.le, exclude_min=t.gt is not None, allow_nan=False
        )
    if isinstance(t, mi.StrType):
        return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 12, 12))
    if isinstance(t, mi.BytesType):
        max_size = t.max_length if t.max_length is not None else 24
        return st.binary(min_size=t.min_length or 0, max_size=max_size)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    if isinstance(t, mi.ListType):
        min_size = t.min_length or 0
        return st.lists(strategy_for(t.item_type), min_size=min_size, max_size=min_size + 3)
    if isinstance(t, mi.VarTupleType):
        min_size = t.min_length or 0
        items = st.lists(strategy_for(t.item_type), min_size=min_size, max_size=min_size + 3)
        return items.map(tuple)
    if isinstance(t, mi.DictType):
        return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), max_size=3)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(strategy_for(member) for member in t.types))
    if isinstance(t, mi.StructType):
        fields = {f.name: strategy_for(f.type) for f in t.fields}
        return st.builds(t.cls, **fields)
    raise TypeError(f"no strategy for {t!r}")


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return strategy_for(mi.type_info(cls))


def struct_fields(cls: type[Message]) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


MESSAGE_CLASSES: list[type[Message]] = [MESSAGE_TYPES[code] for code in sorted(MESSAGE_TYPES)]
any_message: st.SearchStrategy[Message] = st.sampled_from(MESSAGE_CLASSES).flatmap(message_strategy)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random points (empty chunks included: feed(b"") must be harmless)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


_settings = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=[c.__name__ for c in MESSAGE_CLASSES])
@_settings
@given(data=st.data())
def test_every_message_type_round_trips_through_a_frame(
    cls: type[Message], data: st.DataObject
) -> None:
    msg = data.draw(message_strategy(cls))
    frame = encode(msg)
    assert int.from_bytes(frame[:4], "big") == len(frame) - LENGTH_PREFIX_SIZE
    assert frame[4] == cls.type_code
    assert FrameDecoder().feed(frame) == [msg]


@_settings
@given(msgs=st.lists(any_message, min_size=1, max_size=6), data=st.data())
def test_concatenated_frames_fed_in_random_chunks_decode_in_order(
    msgs: list[Message], data: st.DataObject
) -> None:
    stream = encode_many(msgs)
    assert stream == b"".join(encode(m) for m in msgs)
    decoder = FrameDecoder()
    out: list[Decoded] = []
    for chunk in data.draw(chunked(stream)):
        out.extend(decoder.feed(chunk))
    assert out == msgs
    assert decoder.buffered == 0


def _feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> None:
    """Feed until the first error, asserting the two safety properties on the way."""
    limit = decoder.max_frame_size + LENGTH_PREFIX_SIZE
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except ProtocolError:
            with pytest.raises(ProtocolError):
                decoder.feed(b"\x00\x00\x00\x01\x05")  # poisoned: even a valid prefix fails
            return
        assert decoder.buffered <= limit


@_settings
@given(junk=st.binary(max_size=600), max_frame_size=st.integers(1, 512), data=st.data())
def test_random_bytes_raise_only_protocol_error_and_never_overbuffer(
    junk: bytes, max_frame_size: int, data: st.DataObject
) -> None:
    _feed_all(FrameDecoder(max_frame_size), data.draw(chunked(junk)))


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, at, value in mutations:
        i = at % (len(buf) + 1)
        if op == "insert":
            buf.insert(i, value)
        elif not buf:
            continue
        elif op == "flip":
            buf[i % len(buf)] ^= value
        elif op == "delete":
            del buf[i % len(buf)]
        else:
            del buf[i:]
    return bytes(buf)


@_settings
@given(
    msgs=st.lists(any_message, min_size=1, max_size=3),
    mutations=st.lists(_mutation, min_size=1, max_size=4),
    max_frame_size=st.sampled_from([64, 1024, 16 * 1024 * 1024]),
    data=st.data(),
)
def test_mutated_valid_frames_raise_only_protocol_error_and_never_overbuffer(
    msgs: list[Message],
    mutations: list[tuple[str, int, int]],
    max_frame_size: int,
    data: st.DataObject,
) -> None:
    stream = _mutate(encode_many(msgs), mutations)
    _feed_all(FrameDecoder(max_frame_size), data.draw(chunked(stream)))


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(_I64_MIN, _U64_MAX)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def well_formed_junk_payload(draw: st.DrawFn, cls: type[Message]) -> bytes:
    """A MessagePack map that uses the struct's own keys but arbitrary values and nesting."""
    names = [f.encode_name for f in struct_fields(cls)]
    keys = st.sampled_from(names) | st.text(max_size=6)
    return msgspec.msgpack.encode(draw(st.dictionaries(keys, _msgpack_values, max_size=6)))


@_settings
@given(data=st.data())
def test_well_formed_msgpack_of_the_wrong_shape_is_invalid_or_a_protocol_error(
    data: st.DataObject,
) -> None:
    cls = data.draw(st.sampled_from(MESSAGE_CLASSES))
    payload = data.draw(well_formed_junk_payload(cls))
    frame = (len(payload) + 1).to_bytes(4, "big") + bytes([cls.type_code]) + payload
    decoder = FrameDecoder()
    try:
        msgs = decoder.feed(frame)
    except ProtocolError:
        return
    (msg,) = msgs
    if isinstance(msg, InvalidMessage):
        # Only a map whose request id reads as one, and the decoder carries on.
        assert msg.type_code == cls.type_code
        fields = msgspec.msgpack.decode(payload)
        assert isinstance(fields, dict) and fields.get("request_id") == msg.request_id
        assert decoder.feed(encode(Ping(request_id=1))) == [Ping(request_id=1)]
    else:
        assert type(msg) is cls


# --- through the connection classes --------------------------------------------------------

REQUESTS_AFTER_HELLO = [cls for cls in REQUEST_CLASSES if cls is not Hello]


def new_server() -> ServerConnection:
    return ServerConnection(
        server_name="s", node_id="n", heartbeat_interval=5.0, lease_duration=30.0
    )


@_settings
@given(
    requests=st.lists(st.sampled_from(REQUESTS_AFTER_HELLO).flatmap(message_strategy), max_size=5),
    data=st.data(),
)
def test_pipelined_requests_reach_the_server_and_every_reply_finds_its_request(
    requests: list[Request], data: st.DataObject
) -> None:
    client, srv = ClientConnection(client_name="c"), new_server()
    stream = client.hello()
    sent: list[Request] = []
    for request in requests:
        numbered = msgspec.structs.replace(request, request_id=client.next_request_id())
        stream += client.send(numbered)
        sent.append(numbered)
    received = [m for chunk in data.draw(chunked(stream)) for m in srv.receive_data(chunk)]
    assert received[1:] == sent

    replies: list[Message] = []
    for request in sent:
        reply_cls = data.draw(st.sampled_from([MESSAGE_TYPES[REPLY_TO[request.type_code]], Nack]))
        reply = data.draw(message_strategy(reply_cls))
        replies.append(msgspec.structs.replace(reply, request_id=request.request_id))
    shuffled = data.draw(st.permutations(replies))
    answer = srv.welcome() + encode_many(shuffled)
    got = [m for chunk in data.draw(chunked(answer)) for m in client.receive_data(chunk)]
    assert got[1:] == shuffled
    assert client.outstanding == {}


@_settings
@given(
    requests=st.lists(st.sampled_from(REQUESTS_AFTER_HELLO).flatmap(message_strategy), max_size=3),
    mutations=st.lists(_mutation, max_size=3),
    data=st.data(),
)
def test_a_server_connection_raises_only_protocol_error_on_any_stream(
    requests: list[Request], mutations: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    srv = new_server()
    stream = _mutate(encode_many([Hello(request_id=1, versions=[1]), *requests]), mutations)
    error: ProtocolError | None = None
    for chunk in data.draw(chunked(stream)):
        try:
            srv.receive_data(chunk)
        except ProtocolError as e:
            error = e
            break
    if error is not None:
        (nack,) = FrameDecoder().feed(srv.nack(error))
        assert isinstance(nack, Nack)
        assert nack.code == error.code
