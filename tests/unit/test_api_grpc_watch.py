"""The watch buffer: a push never waits, a full buffer marks the stream as too slow and drops
what follows, and events leave in bounded messages, in order."""

from __future__ import annotations

import asyncio
import uuid

from tq.api.grpc_watch import MESSAGE_BYTES, MESSAGE_EVENTS, WatchSink, chunks, event_size
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId
from tq.core.model import TaskState


def event(n: int, result: bytes | None = None) -> TaskEvent:
    return TaskEvent(TaskId(uuid.uuid4().bytes), TaskState.PENDING, "q", "t", float(n), 0, result)


def test_a_sink_keeps_events_up_to_its_limit_then_overflows_and_drops_them_all() -> None:
    async def main() -> None:
        sink = WatchSink(limit=3)
        events = [event(i) for i in range(3)]
        for ev in events:
            sink.push_event(1, ev)
        assert (sink.overflowed, list(sink.events)) == (False, events)
        sink.push_event(1, event(3))
        assert sink.overflowed
        # The stream ends: what was buffered is released at once, not kept for a slow reader.
        async with asyncio.timeout(5):
            assert await sink.take() == []
        sink.push_event(1, event(9))  # after an overflow nothing more is kept
        assert not sink.events

    asyncio.run(main())


def test_a_sink_overflows_by_bytes_before_its_event_count() -> None:
    async def main() -> None:
        sink = WatchSink(limit=1000, limit_bytes=3 * 1024 * 1024)
        big = [event(i, b"r" * (1024 * 1024)) for i in range(3)]
        sink.push_event(1, big[0])
        sink.push_event(1, big[1])
        assert (sink.overflowed, sink.size) == (False, 2 * event_size(big[0]))
        sink.push_event(1, big[2])  # a third MiB and its overhead pass the 3 MiB bound
        assert sink.overflowed
        assert not sink.events
        assert sink.size == 0

    asyncio.run(main())


def test_take_waits_for_an_event_and_returns_everything_buffered_at_once() -> None:
    async def main() -> None:
        sink = WatchSink()
        waiter = asyncio.create_task(sink.take())
        await asyncio.sleep(0)
        assert not waiter.done()
        first, second = event(1), event(2)
        sink.push_event(1, first)
        sink.push_event(1, second)
        async with asyncio.timeout(5):
            assert await waiter == [first, second]

    asyncio.run(main())


def test_close_wakes_a_waiting_stream() -> None:
    async def main() -> None:
        sink = WatchSink()
        waiter = asyncio.create_task(sink.take())
        await asyncio.sleep(0)
        sink.close()
        async with asyncio.timeout(5):
            assert await waiter == []
        assert sink.closed
        sink.push_event(1, event(1))
        assert not sink.events

    asyncio.run(main())


def test_chunks_bound_the_events_and_bytes_of_a_message_and_keep_the_order() -> None:
    many = [event(i) for i in range(2 * MESSAGE_EVENTS + 1)]
    parts = list(chunks(many))
    assert [len(p) for p in parts] == [MESSAGE_EVENTS, MESSAGE_EVENTS, 1]
    assert [e for p in parts for e in p] == many

    big = [event(i, b"x" * (MESSAGE_BYTES // 2)) for i in range(5)]
    assert [len(p) for p in chunks(big)] == [2, 2, 1]
    assert list(chunks([])) == []
