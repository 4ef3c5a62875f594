"""Per-connection protocol state for both ends, sans I/O: bytes in, messages out, frames out.

Rules: the client's first message is HELLO, in a frame of at most ``MAX_HELLO_FRAME_SIZE``;
the server answers WELCOME with the highest version both speak, or NACK UNSUPPORTED_VERSION
(a first frame of any other type: HANDSHAKE_REQUIRED, from its type byte alone).
A client may pipeline requests right behind HELLO. Every request has a distinct non-zero
``request_id`` while outstanding; each reply echoes it, and a NACK with request id 0 concerns
the whole connection. Any ``FrameError`` moves a connection to CLOSED: answer it with a NACK
(``ServerConnection.nack``) and close the socket. The one exception is a request whose
payload only breaks its schema: the server hands it over as an ``InvalidMessage`` (to be
answered NACK INVALID_ARGUMENT) and stays open. The client judges the first reply by its
length prefix and type byte before decoding it: another kind of server is named (``peers``).
The asyncio shells only move bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Final, Generic, Literal, TypeVar

from tq.errors import (
    ErrorCode,
    NotLeaderError,
    ProtocolError,
    RateLimitedError,
    TqError,
    ValidationError,
)
from tq.protocol.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    LENGTH_PREFIX_SIZE,
    Buffer,
    Decoded,
    FrameDecoder,
    FrameError,
    InvalidMessage,
    encode,
    frame_size,
)
from tq.protocol.messages import (
    IDLE_TIMEOUT,
    MAX_WAIT_MS,
    MIN_CLIENT_FRAME_SIZE,
    Hello,
    MessageType,
    Nack,
    TaskEvent,
    Welcome,
    WorkerOrders,
)
from tq.protocol.peers import FIRST_REPLY_HEAD, check_first_reply
from tq.protocol.registry import (
    MESSAGE_TYPES,
    PUSH_CLASSES,
    REPLY_CLASSES,
    REPLY_TO,
    REQUEST_CLASSES,
    Push,
    Reply,
    Request,
)

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final[tuple[int, ...]] = (PROTOCOL_VERSION,)
#: Largest N of the first frame (HELLO, a few hundred bytes): a peer that has not shaken
#: hands cannot make the broker buffer a max_frame_size frame.
MAX_HELLO_FRAME_SIZE: Final = 64 * 1024
#: Request id 0 is never used by a request: a NACK carrying it concerns the whole connection.
CONNECTION_REQUEST_ID: Final = 0
_MAX_REQUEST_ID: Final = 2**64 - 1
#: The bytes of the first frame the server checks before decoding it: N, then the type.
_FIRST_HEAD: Final = LENGTH_PREFIX_SIZE + 1
_REQUEST_CODES: Final = frozenset(cls.type_code for cls in REQUEST_CLASSES)

_In = TypeVar("_In", Request | InvalidMessage, Reply | Push)


class ConnectionState(StrEnum):
    NEW = "new"  # server: waiting for HELLO; client: HELLO not yet built
    HELLO_SENT = "hello_sent"  # client only: waiting for WELCOME
    ESTABLISHED = "established"
    CLOSED = "closed"  # after a protocol error or a refused handshake: close the socket


def negotiate_version(offered: Iterable[int], supported: Iterable[int]) -> int:
    """The highest version in both sets; ProtocolError UNSUPPORTED_VERSION if none."""
    common = set(offered) & set(supported)
    if not common:
        raise ProtocolError(
            f"no common protocol version: client offers {sorted(set(offered))}, "
            f"server speaks {sorted(set(supported))}",
            ErrorCode.UNSUPPORTED_VERSION,
        )
    return max(common)


def nack_frame(request_id: int | None, error: TqError) -> bytes:
    """The NACK frame answering ``request_id`` (None: the connection as a whole)."""
    rid = CONNECTION_REQUEST_ID if request_id is None else request_id
    retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
    leader = error.leader if isinstance(error, NotLeaderError) else None
    return encode(
        Nack(
            request_id=rid,
            code=int(error.code),
            message=error.message,
            retry_after=retry_after,
            leader=leader,
        )
    )


class _Endpoint(Generic[_In]):
    """What both ends share: a frame decoder, a state, and a per-message ``_check`` hook."""

    def __init__(self, max_frame_size: int) -> None:
        self.state = ConnectionState.NEW
        self._decoder = FrameDecoder(max_frame_size)

    @property
    def max_frame_size(self) -> int:
        """The largest frame N this end accepts."""
        return self._decoder.max_frame_size

    def receive_data(self, data: Buffer) -> list[_In]:
        """Messages completed by ``data``. Raises FrameError, and the state becomes CLOSED."""
        if self.state is ConnectionState.CLOSED:
            raise FrameError("connection is closed after a protocol error or a refusal")
        try:
            msgs = self._decoder.feed(data)
        except FrameError as e:
            # The valid prefix must obey the connection rules too; its own error wins if not.
            e.messages = list(self._accept(e.messages))
            self.state = ConnectionState.CLOSED
            raise
        return self._accept(msgs)

    def _accept(self, msgs: list[Decoded]) -> list[_In]:
        accepted: list[_In] = []
        for msg in msgs:
            try:
                accepted.append(self._check(msg))
            except ProtocolError as e:
                self.state = ConnectionState.CLOSED
                request_id = None if isinstance(msg, (TaskEvent, WorkerOrders)) else msg.request_id
                raise FrameError(
                    e.message, e.code, request_id=request_id, messages=list(accepted)
                ) from e
        return accepted

    def _check(self, msg: Decoded) -> _In:
        raise NotImplementedError


def _zero_request_id(code: MessageType) -> ProtocolError:
    return ProtocolError(
        f"{code.name} with request id 0: 0 is reserved for the connection, a request must "
        "use another"
    )


class ServerConnection(_Endpoint[Request | InvalidMessage]):
    """The broker's side: enforces the handshake, the message direction and request ids.

    ``receive_data`` returns requests, and ``InvalidMessage`` for a request (never HELLO)
    whose payload only breaks its schema: the caller answers that NACK INVALID_ARGUMENT.
    """

    def __init__(
        self,
        *,
        server_name: str,
        node_id: str,
        heartbeat_interval: float,
        lease_duration: float,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_wait_ms: int = MAX_WAIT_MS,
    ) -> None:
        super().__init__(max_frame_size)
        self.server_name = server_name
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.lease_duration = lease_duration
        self.versions = tuple(versions)
        self.idle_timeout = idle_timeout
        self.max_wait_ms = max_wait_ms
        self.hello: Hello | None = None
        self.version: int | None = None
        self._head = bytearray()  # the first frame's length prefix and type byte, as they arrive

    def receive_data(self, data: Buffer) -> list[Request | InvalidMessage]:
        if self.state is ConnectionState.NEW and len(self._head) < _FIRST_HEAD:
            self._check_first_frame(data)
        return super().receive_data(data)

    def _check_first_frame(self, data: Buffer) -> None:
        """Refuse a first frame above MAX_HELLO_FRAME_SIZE from its length prefix alone, and
        one that is not HELLO from its type byte alone, whatever its payload would say."""
        self._head += memoryview(data)[: _FIRST_HEAD - len(self._head)]
        if len(self._head) < LENGTH_PREFIX_SIZE:
            return
        n = int.from_bytes(self._head[:LENGTH_PREFIX_SIZE], "big")
        if n > MAX_HELLO_FRAME_SIZE:
            self.state = ConnectionState.CLOSED
            raise FrameError(
                f"first frame of {n} bytes exceeds the limit of {MAX_HELLO_FRAME_SIZE} "
                "before the handshake (HELLO must come first and is small)",
                ErrorCode.FRAME_TOO_LARGE,
            )
        if n == 0 or len(self._head) < _FIRST_HEAD:
            return  # an empty frame has no type byte: the decoder refuses it
        code = self._head[LENGTH_PREFIX_SIZE]
        if code != MessageType.HELLO:
            self.state = ConnectionState.CLOSED
            name = MessageType(code).name if code in MESSAGE_TYPES else "unknown"
            raise FrameError(
                f"the first frame must be HELLO (type 0x01), got type 0x{code:02X} ({name})",
                ErrorCode.HANDSHAKE_REQUIRED,
            )

    def _check(self, msg: Decoded) -> Request | InvalidMessage:
        # The common case first, with the fewest checks: a valid request on an established
        # connection costs two isinstance calls and a truth test.
        if isinstance(msg, REQUEST_CLASSES):
            if not msg.request_id:
                raise _zero_request_id(msg.type_code)
            if self.state is ConnectionState.ESTABLISHED:
                if isinstance(msg, Hello):
                    raise ProtocolError("HELLO sent twice on one connection")
                return msg
            if not isinstance(msg, Hello):  # the first frame's type byte said HELLO
                raise ProtocolError(
                    f"first message must be HELLO, got {msg.type_code.name}",
                    ErrorCode.HANDSHAKE_REQUIRED,
                )
            self.version = negotiate_version(msg.versions, self.versions)
            self.hello = msg
            self.state = ConnectionState.ESTABLISHED
            return msg
        if not isinstance(msg, InvalidMessage) or msg.type_code not in _REQUEST_CODES:
            raise ProtocolError(f"a client may not send {msg.type_code.name}")
        if not msg.request_id:
            raise _zero_request_id(msg.type_code)
        if msg.type_code is MessageType.HELLO:
            # A bad HELLO: the handshake cannot go on (or a second HELLO, bad as well).
            established = self.state is ConnectionState.ESTABLISHED
            raise ProtocolError(
                "HELLO sent twice on one connection" if established else msg.message
            )
        if self.state is not ConnectionState.ESTABLISHED:
            raise ProtocolError(
                f"first message must be HELLO, got {msg.type_code.name}",
                ErrorCode.HANDSHAKE_REQUIRED,
            )
        return msg

    @property
    def peer_max_frame_size(self) -> int:
        """The largest frame this end may send: the lower of its own limit and the one the
        client stated in HELLO (its own limit until then)."""
        stated = None if self.hello is None else self.hello.max_frame_size
        return self.max_frame_size if stated is None else min(stated, self.max_frame_size)

    def welcome(self) -> bytes:
        """The WELCOME frame answering the accepted HELLO."""
        if self.hello is None or self.version is None:
            raise ProtocolError("no HELLO accepted yet", ErrorCode.HANDSHAKE_REQUIRED)
        return encode(
            Welcome(
                request_id=self.hello.request_id,
                version=self.version,
                server_name=self.server_name,
                node_id=self.node_id,
                max_frame_size=self.max_frame_size,
                heartbeat_interval=self.heartbeat_interval,
                lease_duration=self.lease_duration,
                idle_timeout=self.idle_timeout,
                max_wait_ms=self.max_wait_ms,
            )
        )

    def send(self, msg: Reply | Push) -> bytes:
        """The frame for a reply or push (no state change: replies are the service's job)."""
        return encode(msg)

    def nack(self, error: TqError, request_id: int | None = None) -> bytes:
        """NACK ``error``; a FrameError supplies the request id it could read itself."""
        if request_id is None and isinstance(error, FrameError):
            request_id = error.request_id
        return nack_frame(request_id, error)


class ClientConnection(_Endpoint[Reply | Push]):
    """The client's side: builds HELLO, numbers requests, matches replies to them."""

    def __init__(
        self,
        *,
        client_name: str,
        client_kind: Literal["client", "worker"] = "client",
        api_key: str | None = None,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        if max_frame_size < MIN_CLIENT_FRAME_SIZE:
            raise ValidationError(
                f"max_frame_size {max_frame_size} is below {MIN_CLIENT_FRAME_SIZE}, the least a "
                "client may state in HELLO"
            )
        super().__init__(max_frame_size)
        self.client_name = client_name
        self.client_kind: Literal["client", "worker"] = client_kind
        self.api_key = api_key
        self.versions = tuple(versions)
        self.welcome: Welcome | None = None
        #: Until WELCOME says otherwise, assume the server takes what we accept.
        self.peer_max_frame_size = max_frame_size
        self._next_id = 1
        self._outstanding: dict[int, MessageType] = {}
        self._head = bytearray()  # the first reply's length prefix and type byte, as they arrive

    @property
    def version(self) -> int | None:
        return None if self.welcome is None else self.welcome.version

    def receive_data(self, data: Buffer) -> list[Reply | Push]:
        if self.state is ConnectionState.HELLO_SENT and len(self._head) < FIRST_REPLY_HEAD:
            # Before the decoder reads a length: another server's answer (HTTP/1.1 400...)
            # is named for what it is, not reported as a frame of 1,213,486,160 bytes.
            self._head += memoryview(data)[: FIRST_REPLY_HEAD - len(self._head)]
            try:
                check_first_reply(bytes(self._head))
            except FrameError:
                self.state = ConnectionState.CLOSED
                raise
        return super().receive_data(data)

    @property
    def outstanding(self) -> Mapping[int, MessageType]:
        """Request id -> request type, for every request still waiting for its reply."""
        return self._outstanding

    def next_request_id(self) -> int:
        """A fresh non-zero id (wraps after 2**64 - 1, skipping ids still outstanding)."""
        while True:
            rid = self._next_id
            self._next_id = rid + 1 if rid < _MAX_REQUEST_ID else 1
            if rid not in self._outstanding:
                return rid

    def hello(self) -> bytes:
        """The HELLO frame; must be the first bytes written to the socket."""
        if self.state is not ConnectionState.NEW:
            raise ProtocolError("HELLO already sent")
        msg = Hello(
            request_id=self.next_request_id(),
            versions=list(self.versions),
            client_name=self.client_name,
            client_kind=self.client_kind,
            api_key=self.api_key,
            max_frame_size=self.max_frame_size,
        )
        frame = encode(msg)
        self._outstanding[msg.request_id] = MessageType.HELLO
        self.state = ConnectionState.HELLO_SENT
        return frame

    def send(self, msg: Request, frame: bytes | None = None) -> bytes:
        """The frame for ``msg``, whose request id is now outstanding until its reply.
        ``frame``: ``encode(msg)`` if the caller already has it (saves a second encode).

        Raises ProtocolError (nothing recorded, connection still usable) if HELLO was not sent,
        the id is 0 or already outstanding, or the frame exceeds the server's limit.
        """
        if self.state is ConnectionState.NEW or isinstance(msg, Hello):
            raise ProtocolError("send HELLO first, with hello()", ErrorCode.HANDSHAKE_REQUIRED)
        if self.state is ConnectionState.CLOSED:
            raise ProtocolError("connection is closed")
        rid = msg.request_id
        if rid == CONNECTION_REQUEST_ID or rid in self._outstanding:
            raise ProtocolError(f"request id {rid} is reserved or already outstanding")
        if frame is None:
            frame = encode(msg)
        if frame_size(frame) > self.peer_max_frame_size:
            raise ProtocolError(
                f"{msg.type_code.name} frame of {frame_size(frame)} bytes exceeds the server's "
                f"limit of {self.peer_max_frame_size}",
                ErrorCode.FRAME_TOO_LARGE,
            )
        self._outstanding[rid] = msg.type_code
        return frame

    def _check(self, msg: Decoded) -> Reply | Push:
        if isinstance(msg, InvalidMessage):
            # A broker that sends a frame breaking its schema is broken: no request errors here.
            raise ProtocolError(msg.message)
        if isinstance(msg, PUSH_CLASSES):
            # Pushes (task events, worker orders) answer no request. Events for a
            # subscription being cancelled may still be in flight: the shell routes by
            # subscription_id and drops what it no longer wants.
            return msg
        if not isinstance(msg, REPLY_CLASSES):
            raise ProtocolError(f"a server may not send {msg.type_code.name}")
        rid = msg.request_id
        if isinstance(msg, Nack) and rid == CONNECTION_REQUEST_ID:
            self.state = ConnectionState.CLOSED  # the server is about to close the socket
            return msg
        request_type = self._outstanding.get(rid)
        if request_type is None:
            raise ProtocolError(f"{msg.type_code.name} answers unknown request id {rid}")
        if not isinstance(msg, Nack) and msg.type_code is not REPLY_TO[request_type]:
            raise ProtocolError(
                f"{msg.type_code.name} cannot answer {request_type.name} (request id {rid})"
            )
        del self._outstanding[rid]
        if request_type is MessageType.HELLO:
            self._handshake(msg)
        return msg

    def _handshake(self, msg: Reply) -> None:
        if isinstance(msg, Nack):
            self.state = ConnectionState.CLOSED  # refused: the server closes after this NACK
            return
        assert isinstance(msg, Welcome)  # guaranteed by the REPLY_TO check
        if msg.version not in self.versions:
            raise ProtocolError(
                f"server chose version {msg.version}, not one of {list(self.versions)}",
                ErrorCode.UNSUPPORTED_VERSION,
            )
        self.welcome = msg
        self.peer_max_frame_size = msg.max_frame_size
        self.state = ConnectionState.ESTABLISHED
