"""A stream of task events: ``async with client.subscribe(queues=["q"]) as events``.

Events are pushed by the broker into a bounded buffer; a consumer slower than the broker loses
the oldest ones (counted in ``dropped``) rather than stalling the connection every other
request shares. The subscription survives reconnects, though events of the gap are not replayed;
a broker out of reach for longer than the client's ``request_timeout`` ends it with the error.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, Final, Self

from tq.client.resubscribe import SubscriptionState
from tq.client.session import Session
from tq.client.specs import task_ids as parse_ids
from tq.errors import TqError, ValidationError
from tq.protocol import TaskEvent

log = logging.getLogger(__name__)

DEFAULT_BUFFER: Final = 10_000


class Subscription:
    """Async iterator of TaskEvents; also an async context manager and awaitable (both start
    it). Leaving the ``async with`` block, or ``aclose()``, unsubscribes."""

    def __init__(
        self,
        session: Session,
        *,
        task_ids: Sequence[str] = (),
        queues: Sequence[str] = (),
        all: bool = False,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        if not (task_ids or queues or all):
            raise ValidationError("subscribe to something: task_ids, queues or all=True")
        self._session = session
        self._state = SubscriptionState(
            task_ids=parse_ids(task_ids),
            queues=list(queues),
            all=all,
            on_event=self._on_event,
            on_error=self._on_error,
        )
        self._events: collections.deque[TaskEvent] = collections.deque()
        self._buffer = buffer
        self._ready = asyncio.Event()
        self._error: TqError | None = None
        self._started = False
        self._closed = False
        #: Events lost because the consumer fell more than ``buffer`` events behind.
        self.dropped = 0

    async def start(self) -> Self:
        """Subscribe (once); raises the broker's refusal, e.g. NotFoundError for an unknown id."""
        if not self._started:
            self._started = True
            await self._session.subscribe(self._state, self._session.deadline())
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        return self.start().__await__()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TaskEvent:
        await self.start()
        while True:
            if self._events:
                return self._events.popleft()
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    async def aclose(self) -> None:
        """Unsubscribe; iteration ends once the buffered events are consumed."""
        if not self._closed:
            self._closed = True
            self._session.unsubscribe(self._state)
            self._ready.set()

    def _on_event(self, event: TaskEvent) -> None:
        if self._closed:
            return
        if len(self._events) >= self._buffer:
            if not self.dropped:
                log.warning("subscription.overflow buffer=%d: dropping oldest events", self._buffer)
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self._ready.set()

    def _on_error(self, error: TqError) -> None:
        self._error = error
        self._closed = True
        self._ready.set()
