"""Open streams held by a key end once, with the reason, when the key is revoked or expires;
a released stream is never ended; a stream of nobody (auth disabled) is not tracked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tq.broker.access import Permission, Principal
from tq.broker.streams import OpenStreams
from tq.errors import TqError, UnauthenticatedError


def principal(key_id: str, expires_at: float | None = None) -> Principal:
    return Principal(key_id, "k", frozenset({Permission.READ}), None, expires_at)


def test_revoking_a_key_ends_each_of_its_streams_once_and_no_other() -> None:
    async def main() -> None:
        streams = OpenStreams()
        ended: list[tuple[str, str]] = []

        def end(name: str) -> Callable[[TqError], None]:
            return lambda why: ended.append((name, why.message))

        a1 = streams.hold(principal("a"), end("a1"))
        streams.hold(principal("a"), end("a2"))
        streams.hold(principal("b"), end("b"))
        a1.release()
        streams.revoked("a", UnauthenticatedError("revoked"))
        streams.revoked("a", UnauthenticatedError("again"))
        assert ended == [("a2", "revoked")]
        assert (streams.count("a"), streams.count("b")) == (0, 1)
        nobody = streams.hold(Principal.ANYONE, end("anyone"))
        nobody.release()
        assert streams.count("") == 0

    asyncio.run(main())


def test_a_stream_ends_when_its_key_expires_not_before() -> None:
    async def main() -> None:
        streams = OpenStreams()
        ended = asyncio.Event()
        why: list[TqError] = []

        def end(e: TqError) -> None:
            why.append(e)
            ended.set()

        expires_at = time.time() + 0.2
        streams.hold(principal("c", expires_at), end)
        async with asyncio.timeout(5):
            await ended.wait()
        assert time.time() >= expires_at
        assert why[0].message.startswith("API key c expired at ")
        assert streams.count("c") == 0

    asyncio.run(main())
