"""Frames: encode messages to bytes and decode a byte stream back into messages.

Theory of operation. A frame is ``N: u32 big-endian | type: u8 | payload: N-1 bytes of
MessagePack``; N counts the type byte and the payload, and N > ``max_frame_size`` is refused
from the 4-byte header alone, so a peer can never make the decoder buffer more than
``max_frame_size + 4`` bytes. ``FrameDecoder.feed`` walks each chunk once with a memoryview and
decodes payloads in place; only a trailing partial frame is copied into its buffer. Whatever
the input bytes, ``feed`` raises nothing but ``FrameError`` (a ``ProtocolError``), and after
the first one the decoder is poisoned: the stream has lost its framing and must be closed.
One failure keeps the framing: a payload that is one well-formed MessagePack map with a
readable ``request_id`` but breaks its message's schema (a type or a constraint) comes out as
an ``InvalidMessage``, and the connection decides whether that is a request error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

import msgspec

from tq.errors import ConfigError, ErrorCode, ProtocolError, ValidationError
from tq.protocol.messages import MessageType
from tq.protocol.records import RequestId
from tq.protocol.registry import MESSAGE_CODES, MESSAGE_TYPES, Message

DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
#: Nesting depth (the payload map is level 1) a sender must not exceed, even under unknown
#: keys, and every receiver decodes. tq's own messages reach 4. Deeper payloads are refused
#: once msgspec, which skips an unknown key's value recursively, reaches Python's recursion
#: limit: that is never before this depth, and always by 1000 levels.
MAX_NESTING: Final = 32
#: Bytes before N's span starts: the length prefix. N itself covers the type byte.
LENGTH_PREFIX_SIZE: Final = 4
_MAX_N: Final = 0xFFFFFFFF

_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct(">IB")

Buffer = bytes | bytearray | memoryview


class FrameError(ProtocolError):
    """A protocol error tied to the stream, with what the server needs to answer it.

    ``request_id`` is the id of the offending request when it could be read (so the NACK can
    quote it), else None. ``messages`` are what preceded the bad frame in the same ``feed``
    (messages, and on the server the ``InvalidMessage`` request errors it accepted): the
    caller may still serve them before sending the NACK and closing.
    """

    def __init__(
        self,
        message: str,
        code: ErrorCode | None = None,
        *,
        request_id: int | None = None,
        messages: list[Decoded] | None = None,
    ) -> None:
        super().__init__(message, code)
        self.request_id = request_id
        self.messages: list[Decoded] = messages if messages is not None else []


@dataclass(frozen=True, slots=True)
class InvalidMessage:
    """A frame of type ``type_code`` whose payload is a well-formed MessagePack map with a
    readable, non-negative ``request_id``, but whose fields break the message's schema
    (wrong type, outside a constraint, a required field missing). ``message`` names the
    type and msgspec's field path (``invalid SUBMIT_TASK: ... - at `$.tasks[0].priority```).

    Not a wire message: the framing is intact, so the decoder carries on, and the receiving
    connection decides. The broker answers a request this way with NACK INVALID_ARGUMENT and
    keeps the connection; anything else (a bad HELLO, a reply type from a client, a bad frame
    from the broker) stays a protocol error.
    """

    type_code: MessageType
    request_id: int
    message: str

    def error(self) -> ValidationError:
        """The request error this is when the receiver treats it as one."""
        return ValidationError(self.message)


#: What the frame decoder yields: a message, or a well-framed one that breaks its schema.
Decoded: TypeAlias = Message | InvalidMessage

# One shared Encoder: msgspec reuses its internal state across calls.
_encoder = msgspec.msgpack.Encoder()
_decoders: dict[int, msgspec.msgpack.Decoder[Message]] = {
    code: msgspec.msgpack.Decoder(cls) for code, cls in MESSAGE_TYPES.items()
}


class _RequestIdProbe(msgspec.Struct):
    request_id: RequestId | None = None


_probe = msgspec.msgpack.Decoder(_RequestIdProbe)


def _message_code(msg: Message) -> int:
    try:
        return MESSAGE_CODES[type(msg)]
    except KeyError:
        raise TypeError(f"{type(msg).__name__} is not a tq protocol message") from None


def encode(msg: Message) -> bytes:
    """One complete frame as a single bytes object."""
    try:
        payload = _encoder.encode(msg)
    except (msgspec.EncodeError, OverflowError, TypeError) as e:
        raise ValidationError(f"cannot encode {type(msg).__name__}: {e}") from e
    n = len(payload) + 1
    if n > _MAX_N:
        raise ProtocolError(f"frame of {n} bytes cannot be framed", ErrorCode.FRAME_TOO_LARGE)
    # Header + payload concatenation measured faster than encode_into a bytearray with the
    # header reserved: that path pays for bytearray growth and a final bytes() copy anyway.
    return _HEADER.pack(n, _message_code(msg)) + payload


def encode_many(msgs: Iterable[Message]) -> bytes:
    """Several frames back to back, ready for one write."""
    return b"".join([encode(msg) for msg in msgs])


def frame_size(frame: Buffer) -> int:
    """N of an encoded frame (what ``max_frame_size`` limits)."""
    return len(frame) - LENGTH_PREFIX_SIZE


def _peek_request_id(payload: Buffer) -> int | None:
    try:
        return _probe.decode(payload).request_id
    except Exception:  # noqa: BLE001 - best effort on bytes already known to be bad
        return None


def decode_payload(code: int, payload: Buffer) -> Message:
    """Decode one frame body; raises FrameError naming the type and the bad field path (a
    payload that merely breaks the schema too: see ``decode_frame_payload`` for the split)."""
    decoded = decode_frame_payload(code, payload)
    if isinstance(decoded, InvalidMessage):
        raise FrameError(decoded.message, request_id=decoded.request_id)
    return decoded


def decode_frame_payload(code: int, payload: Buffer) -> Decoded:
    """Decode one frame body: the message, an ``InvalidMessage`` when only the schema is
    broken, or FrameError (malformed MessagePack, trailing bytes, not a map, no readable
    ``request_id``, nesting beyond the decoder's depth, an unknown type code)."""
    decoder = _decoders.get(code)
    if decoder is None:
        raise FrameError(
            f"unknown message type 0x{code:02X}",
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            request_id=_peek_request_id(payload),
        )
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as e:
        # The schema is broken, maybe the MessagePack too: the probe reads the whole payload
        # again, so it only finds a request id in a well-formed map (with no trailing bytes).
        request_id = _peek_request_id(payload)
        message = f"invalid {MessageType(code).name}: {e}"
        if request_id is None:
            raise FrameError(message) from e
        return InvalidMessage(MessageType(code), request_id, message)
    except RecursionError as e:
        # msgspec skips an unknown key's value recursively, under Python's recursion limit.
        raise FrameError(
            f"invalid {MessageType(code).name} payload: nested deeper than the decoder's "
            "limit (see docs/protocol.md, Payload encoding)",
            request_id=_peek_request_id(payload),
        ) from e
    # Not just DecodeError: msgspec reports some malformed input with plain Python errors
    # (UnicodeDecodeError for invalid UTF-8). The try holds only the decode of untrusted
    # bytes, so every failure here is the input's fault and must become a ProtocolError.
    except Exception as e:
        raise FrameError(
            f"invalid {MessageType(code).name} payload: {e}",
            request_id=_peek_request_id(payload),
        ) from e


class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes as they arrive, get complete messages back."""

    __slots__ = ("_buf", "_error", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 1 <= max_frame_size <= _MAX_N:
            raise ConfigError(f"max_frame_size must be 1..{_MAX_N}, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (at most ``max_frame_size + 4``)."""
        return len(self._buf)

    @property
    def error(self) -> FrameError | None:
        """The error that poisoned this decoder, if any."""
        return self._error

    def feed(self, data: Buffer) -> list[Decoded]:
        """Every message completed by ``data``, in order. Raises only FrameError."""
        if self._error is not None:
            raise FrameError(
                f"decoder closed by an earlier error: {self._error.message}", self._error.code
            )
        out: list[Decoded] = []
        try:
            view = memoryview(data)
            self._feed(view if view.format == "B" else view.cast("B"), out)
        except FrameError as e:
            e.messages = out
            self._error = e
            self._buf = bytearray()
            raise
        return out

    def _check_length(self, n: int) -> None:
        if n > self.max_frame_size:
            raise FrameError(
                f"frame of {n} bytes exceeds the limit of {self.max_frame_size}",
                ErrorCode.FRAME_TOO_LARGE,
            )
        if n == 0:
            raise FrameError("empty frame: length 0 leaves no room for the type byte")

    def _feed(self, view: memoryview, out: list[Decoded]) -> None:
        pos = self._complete_buffered(view, out) if self._buf else 0
        end = len(view)
        while end - pos >= LENGTH_PREFIX_SIZE:
            n: int = _LENGTH.unpack_from(view, pos)[0]
            self._check_length(n)
            start = pos + LENGTH_PREFIX_SIZE
            if end - start < n:
                break
            out.append(decode_frame_payload(view[start], view[start + 1 : start + n]))
            pos = start + n
        if pos < end:
            self._buf += view[pos:]

    def _complete_buffered(self, view: memoryview, out: list[Decoded]) -> int:
        """Top up the buffered partial frame from ``view`` and decode it once complete.

        Takes only the bytes that frame still needs, so a large chunk arriving behind a few
        buffered bytes is never copied wholesale. Returns how much of ``view`` was consumed;
        if the frame is still incomplete that is all of it.
        """
        buf = self._buf
        pos = 0
        if len(buf) < LENGTH_PREFIX_SIZE:
            pos = min(LENGTH_PREFIX_SIZE - len(buf), len(view))
            buf += view[:pos]
            if len(buf) < LENGTH_PREFIX_SIZE:
                return pos
        n: int = _LENGTH.unpack_from(buf, 0)[0]
        self._check_length(n)
        take = min(LENGTH_PREFIX_SIZE + n - len(buf), len(view) - pos)
        buf += view[pos : pos + take]
        pos += take
        if len(buf) == LENGTH_PREFIX_SIZE + n:
            # A fresh buffer, not clear(): the memoryview slices handed to msgspec would make
            # resizing this one raise BufferError.
            self._buf = bytearray()
            frame = memoryview(buf)
            out.append(
                decode_frame_payload(frame[LENGTH_PREFIX_SIZE], frame[LENGTH_PREFIX_SIZE + 1 :])
            )
        return pos
