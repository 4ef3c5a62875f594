"""The server-streaming RPCs: ``WatchTasks`` (task events from the event hub) and ``WatchStats``.

The event hub pushes into a ``WatchSink`` from the broker's publish path, so a push only
appends to a bounded buffer and never waits. The stream's own coroutine drains the buffer to
the client at the client's pace, many events per message (measured: one message per event
fell behind a client submitting 70k tasks/s; batched, a reader keeps up). When the client falls
more than ``WATCH_BUFFER`` events or ``WATCH_BUFFER_BYTES`` of results and texts behind (an
event may carry a result of many MiB), the stream ends with RESOURCE_EXHAUSTED (the client
watches again and re-reads what it missed) instead of the broker waiting or buffering without
bound. A stream holds at most that buffer plus the batch it is sending. A stream is held
under its caller's key (``BrokerService.hold``): revoking the key, or its expiry, ends the
stream at once with UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, TypeVar

from tq.api._pb import tq_pb2 as pb
from tq.api.grpc_convert import event_to_pb, parse_ids, stats_to_pb
from tq.broker.access import Principal
from tq.broker.requests import Watch
from tq.broker.service import BrokerService
from tq.core.effects import TaskEvent
from tq.errors import ErrorCode, QueueFullError, TqError, UnavailableError, ValidationError
from tq.protocol.records import NAME_MAX_LEN, Stats

#: Events one stream may hold unsent before it is ended as too slow. The buffer holds
#: references to events the broker made anyway; it must exceed the events of one big submit.
WATCH_BUFFER: Final = 100_000
#: The same bound in bytes (``event_size``).
WATCH_BUFFER_BYTES: Final = 64 * 1024 * 1024
#: Most events, and about the most result/error bytes, in one TaskEvents message.
MESSAGE_EVENTS: Final = 1000
MESSAGE_BYTES: Final = 1 << 20
DEFAULT_INTERVAL_MS: Final = 1000
MIN_INTERVAL_MS: Final = 100
MAX_INTERVAL_MS: Final = 3_600_000
_SUB_ID: Final = 1  # each stream has its own sink, so one subscription id per sink is enough
M = TypeVar("M")
Send = Callable[[M], Awaitable[None]]


def event_size(ev: TaskEvent) -> int:
    """What an event counts against the byte bounds: its result and texts, plus 100."""
    texts = (ev.error, ev.error_type, ev.progress_message)
    return 100 + len(ev.result or b"") + sum(len(t) for t in texts if t)


class WatchSink:
    """The event hub's end of one stream: a bounded buffer and a wake-up."""

    def __init__(self, limit: int = WATCH_BUFFER, limit_bytes: int = WATCH_BUFFER_BYTES) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.size = 0  # event_size of what is buffered
        self.events: deque[TaskEvent] = deque()
        self.overflowed = False
        self.closed = False
        self.ended = False  # an until_terminal watch saw every task finish
        self.refused: TqError | None = None  # the caller's key was revoked or expired
        self._wake = asyncio.Event()

    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        if self.overflowed or self.closed:
            return
        size = event_size(event)
        if len(self.events) >= self.limit or self.size + size > self.limit_bytes:
            self.overflowed = True
            self.events.clear()  # dropped: the stream ends, and a slow one must not keep them
            self.size = 0
        else:
            self.events.append(event)
            self.size += size
        self._wake.set()

    def watch_ended(self, subscription_id: int) -> None:
        self.ended = True
        self._wake.set()

    def close(self) -> None:
        """End the stream (broker shutting down)."""
        self.closed = True
        self._wake.set()

    def refuse(self, why: TqError) -> None:
        """End the stream with ``why`` (its key was revoked or expired)."""
        self.refused = why
        self.close()

    async def take(self) -> list[TaskEvent]:
        """Everything buffered, once there is something (or the stream must end)."""
        await self._wake.wait()
        self._wake.clear()
        batch = list(self.events)
        self.events.clear()
        self.size = 0
        return batch


class Watches:
    """The live streams of one server, so shutdown can end them at once."""

    def __init__(self, service: BrokerService) -> None:
        self.service = service
        self.sinks: set[WatchSink] = set()
        self.closing = asyncio.Event()

    def close_all(self) -> None:
        self.closing.set()
        for sink in self.sinks:
            sink.close()

    async def tasks(
        self,
        who: Principal,
        req: pb.WatchTasksRequest,
        send: Send[pb.TaskEvents],
        live: Callable[[], Awaitable[None]],
    ) -> None:
        """Send the events of the watched tasks until the client leaves (or, with
        ``until_terminal``, until every watched task has finished). ``live()`` is awaited once
        the subscription is in place (it sends the response headers: the client's cue)."""
        ids = parse_ids(req.ids)
        queues = list(req.queues)
        for i, q in enumerate(queues):
            if not 0 < len(q) <= NAME_MAX_LEN:
                raise ValidationError(f"queues[{i}] must be 1..{NAME_MAX_LEN} characters")
        if not (ids or queues or req.all):
            raise ValidationError("watch what? give ids, queues or all")
        if self.closing.is_set():
            raise UnavailableError("broker shutting down", ErrorCode.SHUTTING_DOWN)
        sink = WatchSink()
        # NotFoundError for an unknown id; finished tasks' final events come through the sink.
        watch = Watch(tuple(ids), tuple(queues), req.all, req.until_terminal)
        self.service.watch(who, sink, _SUB_ID, watch)
        held = self.service.hold(who, sink.refuse)
        self.sinks.add(sink)
        try:
            await live()
            while True:
                batch = await sink.take()
                if sink.refused is not None:
                    raise sink.refused
                if sink.closed:
                    raise UnavailableError("broker shutting down", ErrorCode.SHUTTING_DOWN)
                if sink.overflowed:
                    raise QueueFullError(
                        f"watch stream fell more than {sink.limit} events or "
                        f"{sink.limit_bytes} bytes behind; the events after that were dropped: "
                        "read faster or watch fewer tasks, then watch again"
                    )
                for chunk in chunks(batch):
                    await send(pb.TaskEvents(events=[event_to_pb(ev) for ev in chunk]))
                if sink.ended and not sink.events:
                    return
        finally:
            # Not ``unwatch``: that is a request, checked (and refused once the key is revoked).
            self.service.detach(sink)
            held.release()
            self.sinks.discard(sink)

    async def stats(self, who: Principal, req: pb.WatchStatsRequest, send: Send[pb.Stats]) -> None:
        """The stats now, then every ``interval_ms``: rate-limited once, as one request."""
        interval_ms = req.interval_ms or DEFAULT_INTERVAL_MS
        if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
            raise ValidationError(
                f"interval_ms {interval_ms} is outside {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}"
            )
        first: Stats | None = self.service.stats(who)
        refused: list[TqError] = []
        wake = asyncio.Event()

        def refuse(why: TqError) -> None:
            refused.append(why)
            wake.set()

        held = self.service.hold(who, refuse)
        try:
            while True:
                if refused:
                    raise refused[0]
                if self.closing.is_set():
                    raise UnavailableError("broker shutting down", ErrorCode.SHUTTING_DOWN)
                stats = first if first is not None else self.service.stats(who, tick=True)
                first = None
                await send(stats_to_pb(stats, time.time()))
                await _either(self.closing, wake, interval_ms / 1000)
        finally:
            held.release()


async def _either(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    """Wait until ``a`` or ``b`` is set, or ``timeout`` seconds."""
    waits = [asyncio.create_task(a.wait()), asyncio.create_task(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def chunks(events: list[TaskEvent]) -> Iterator[list[TaskEvent]]:
    """``events`` in runs of at most ``MESSAGE_EVENTS`` events and about ``MESSAGE_BYTES``."""
    chunk: list[TaskEvent] = []
    size = 0
    for ev in events:
        chunk.append(ev)
        size += event_size(ev)
        if len(chunk) >= MESSAGE_EVENTS or size >= MESSAGE_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
