"""Telling a tq broker from another server by the first bytes it answers HELLO with.

A broker's first frame is small (WELCOME or NACK, under ``MAX_FIRST_REPLY_SIZE``) and its type
byte is 0x02 or 0x04. Anything else is another kind of server on that port, and reading its
bytes as a frame length would only report an absurd size (``HTTP`` is 1,213,486,160 bytes):
``ForeignPeerError`` names what answered instead, when its first bytes are recognisable.
"""

from __future__ import annotations

from typing import Final

from tq.errors import ErrorCode
from tq.protocol.codec import LENGTH_PREFIX_SIZE, FrameError
from tq.protocol.messages import MessageType

#: The largest first frame a broker sends: WELCOME or a NACK refusing the handshake.
MAX_FIRST_REPLY_SIZE: Final = 64 * 1024
#: Bytes needed to judge a first reply: its length prefix and its type byte.
FIRST_REPLY_HEAD: Final = LENGTH_PREFIX_SIZE + 1
_FIRST_REPLY_TYPES: Final = frozenset({MessageType.WELCOME, MessageType.NACK})

#: Well-known first bytes of other servers' answers (to a request they cannot parse).
_SIGNATURES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"HTTP", "an HTTP server"),
    (b"SSH-", "an SSH server"),
    (b"\x15\x03", "a TLS server"),  # a TLS alert record
    (b"\x16\x03", "a TLS server"),  # a TLS handshake record
    (b"-ERR", "a Redis server"),
    (b"+OK", "a Redis or POP3 server"),
    (b"AMQP", "an AMQP broker"),
    (b"220", "an SMTP or FTP server"),
    (b"ERROR", "a memcached server"),
)


class ForeignPeerError(FrameError):
    """The peer answered HELLO with bytes no tq broker sends; ``peer`` says what it looks
    like ("an HTTP server"), or "a server of another protocol"."""

    def __init__(self, peer: str, head: bytes) -> None:
        super().__init__(
            f"answered like {peer}, not a tq broker (first bytes {head.hex(' ')})",
            ErrorCode.PROTOCOL_ERROR,
        )
        self.peer = peer
        self.head = head


def describe_peer(head: bytes) -> str:
    """What a peer whose answer starts with ``head`` looks like."""
    for prefix, name in _SIGNATURES:
        if head.startswith(prefix):
            return name
    return "a server of another protocol"


def check_first_reply(head: bytes) -> None:
    """Raise ForeignPeerError if ``head`` (the first bytes received, at most
    ``FIRST_REPLY_HEAD``) cannot start a broker's first frame; silent while it still can."""
    if len(head) >= LENGTH_PREFIX_SIZE:
        n = int.from_bytes(head[:LENGTH_PREFIX_SIZE], "big")
        if not 0 < n <= MAX_FIRST_REPLY_SIZE:
            raise ForeignPeerError(describe_peer(head), head)
    if len(head) >= FIRST_REPLY_HEAD and head[LENGTH_PREFIX_SIZE] not in _FIRST_REPLY_TYPES:
        raise ForeignPeerError(describe_peer(head), head)
