"""Open streams held by an API key (a TCP connection, a WebSocket, a gRPC watch): ended when
the key is revoked (at once, by the revoke) or expires (by a timer at its expiry), so a stream
that makes no further request does not keep receiving events on a key that is no longer valid.

Requests are checked one by one by ``BrokerService.allow``; this covers what flows without a
request. The door says how to end its stream (``end``: called once, with the reason).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tq.broker.access import Principal
from tq.core.times import format_rfc3339
from tq.errors import TqError, UnauthenticatedError

End = Callable[[TqError], None]


class Stream:
    """One held stream: ``release()`` when it ends by itself (idempotent)."""

    __slots__ = ("_end", "_owner", "_timer", "key_id")

    def __init__(self, owner: OpenStreams, key_id: str, end: End) -> None:
        self._owner = owner
        self.key_id = key_id
        self._end: End | None = end
        self._timer: asyncio.TimerHandle | None = None

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._end = None
        self._owner.discard(self)

    def end(self, why: TqError) -> None:
        end = self._end
        self.release()
        if end is not None:
            end(why)


class OpenStreams:
    """The streams of each key id, so revoking a key (or its expiry) ends them."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[Stream]] = {}

    def hold(self, who: Principal, end: End) -> Stream:
        """Register a stream of ``who`` (auth disabled, ``ANYONE``: nothing can end it)."""
        stream = Stream(self, who.key_id or "", end)
        if who.key_id is None:
            return stream
        self._by_key.setdefault(who.key_id, set()).add(stream)
        if who.expires_at is not None:
            key_id, at = who.key_id, who.expires_at

            def expired() -> None:
                when = format_rfc3339(at, "seconds")
                stream.end(UnauthenticatedError(f"API key {key_id} expired at {when}"))

            delay = max(0.0, at - time.time())
            stream._timer = asyncio.get_running_loop().call_later(delay, expired)
        return stream

    def discard(self, stream: Stream) -> None:
        held = self._by_key.get(stream.key_id)
        if held is not None:
            held.discard(stream)
            if not held:
                del self._by_key[stream.key_id]

    def revoked(self, key_id: str, why: TqError) -> None:
        """End every stream of ``key_id``."""
        for stream in list(self._by_key.get(key_id, ())):
            stream.end(why)

    def holders(self) -> list[str]:
        """The key ids that hold open streams now."""
        return list(self._by_key)

    def count(self, key_id: str) -> int:
        return len(self._by_key.get(key_id, ()))
