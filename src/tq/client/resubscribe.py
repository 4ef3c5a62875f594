"""Subscriptions that outlive connections: what is sent again after a loss, until when, by whom.

A lost connection under live subscriptions is re-dialled at once (by a restorer task, one
attempt at a time so that it stops as soon as nobody is left waiting) and each subscription
is sent again on the new connection. A result wait's subscription is restored until its
owner's deadline (the owner then ends it); an event stream's for a grace period after each
loss (``max(request_timeout, connect_timeout)``), then the stream fails with the last error.
A connection the client left for the cluster's leader counts as a loss (its subscriptions
move with the client, even with ``reconnect=False``); so does a SUBSCRIBE refused NOT_LEADER.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from tq.client.connection import Connection, ConnectionLostError
from tq.client.pacing import Backoff, Deadline, latest
from tq.core.ids import TaskId
from tq.errors import ErrorCode, NotLeaderError, TqError, UnavailableError
from tq.protocol import Subscribe, TaskEvent

if TYPE_CHECKING:
    from tq.client.session import Session

log = logging.getLogger(__name__)

_NO_DEADLINE = Deadline(None, None)


class SubscriptionState:
    """One logical subscription; ``conn``/``sid`` name its current wire subscription, if any."""

    def __init__(
        self,
        *,
        on_event: Callable[[TaskEvent], None],
        on_error: Callable[[TqError], None],
        task_ids: list[TaskId] | None = None,
        queues: list[str] | None = None,
        all: bool = False,
        until_terminal: bool = False,
        deadline: Deadline | None = None,
    ) -> None:
        self.task_ids = list(task_ids or [])
        self.queues = list(queues or [])
        self.all = all
        self.until_terminal = until_terminal
        self.on_event = on_event
        self.on_error = on_error
        #: The owner's deadline (a result wait: the owner enforces it and then unsubscribes);
        #: None for an event stream, which has none of its own.
        self.deadline = deadline
        #: Until when a lost wire subscription is sent again (a stream's is set at each loss).
        self.restore_by = deadline or _NO_DEADLINE
        self.conn: Connection | None = None
        self.sid = 0
        self.closed = False

    def message(self, request_id: int) -> Subscribe:
        return Subscribe(
            request_id=request_id,
            task_ids=list(self.task_ids),
            queues=list(self.queues),
            all=self.all,
            until_terminal=self.until_terminal,
        )

    def deliver(self, event: TaskEvent) -> None:
        if self.until_terminal and event.task_id in self.task_ids:
            # The broker forgets a one-shot id after its event: a re-subscribe must too, or a
            # reconnect would push the same terminal event twice.
            self.task_ids.remove(event.task_id)
        self.on_event(event)


class Subscriptions:
    """The live subscriptions of one Session, and the restoring of them after a loss."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._subs: set[SubscriptionState] = set()
        #: Some subscription has no wire subscription: the next ``connection()`` re-sends it.
        self.dirty = False
        self._restorer: asyncio.Task[None] | None = None

    async def subscribe(self, sub: SubscriptionState, deadline: Deadline) -> None:
        """Start ``sub``, through lost connections until ``deadline``; raises the broker's
        refusal (e.g. NotFoundError for an unknown id)."""
        session = self._session
        pacing = Backoff(session.backoff.cap)
        while True:
            conn = await session.connection(deadline)
            try:
                await self._bind(sub, conn, deadline)
                break
            except ConnectionLostError:
                if not session.reconnect:
                    raise
            except NotLeaderError as e:
                await session.refused(conn, e, deadline, pacing)
        if sub.closed:
            return
        self._subs.add(sub)
        if not conn.is_open:  # lost between the ACK and now: the lost-handler missed it
            self._orphan(sub)
            self.dirty = True
            self._restore_soon()

    def unsubscribe(self, sub: SubscriptionState) -> None:
        sub.closed = True
        self._subs.discard(sub)
        if sub.conn is not None and sub.sid:
            sub.conn.unsubscribe(sub.sid)
        sub.conn = None

    async def _bind(self, sub: SubscriptionState, conn: Connection, deadline: Deadline) -> None:
        within = deadline.bound(self._session.request_timeout)
        sid = await conn.subscribe(sub.message, sub.deliver, within)
        if sub.closed:  # unsubscribed while the SUBSCRIBE was in flight
            conn.unsubscribe(sid)
            return
        if not conn.is_open:
            # Acknowledged, then the connection died in the same read: binding to it would
            # leave the subscription on a dead connection that no reconnect re-sends.
            raise ConnectionLostError(f"connection to {conn.address.url} closed while subscribing")
        sub.conn, sub.sid = conn, sid

    def _orphan(self, sub: SubscriptionState) -> None:
        sub.conn = None
        if sub.deadline is None:  # a stream: a grace period from this loss on
            session = self._session
            sub.restore_by = Deadline.after(max(session.request_timeout, session.connect_timeout))

    def _restorable(self) -> list[SubscriptionState]:
        """Subscriptions without a wire subscription that are still wanted. A stream whose
        grace ran out fails here; a wait past its deadline is left to its owner to end."""
        wanted = []
        for sub in [s for s in self._subs if s.conn is None]:
            if not sub.restore_by.passed:
                wanted.append(sub)
            elif sub.deadline is None:
                self._subs.discard(sub)
                sub.on_error(self._session.late_error(sub.restore_by))
        return wanted

    async def rebind(self, conn: Connection) -> None:
        """Re-send every wanted subscription without one, pipelined; refusals fail their owner."""
        unbound = self._restorable()
        for sub in unbound:
            if sub.until_terminal and not sub.task_ids:
                sub.conn, sub.sid = conn, 0  # every id already had its event: nothing to ask
        unbound = [s for s in unbound if s.conn is None]
        refused: NotLeaderError | None = None
        results = await asyncio.gather(
            *(self._bind(s, conn, s.restore_by) for s in unbound), return_exceptions=True
        )
        for sub, result in zip(unbound, results, strict=True):
            if isinstance(result, NotLeaderError):
                refused = result
                continue
            if isinstance(result, UnavailableError):
                continue  # lost again or too slow: the next connection tries again
            if isinstance(result, TqError):
                self._subs.discard(sub)
                sub.on_error(result)
            elif isinstance(result, BaseException):
                raise result
        self.dirty = any(s.conn is None and not s.restore_by.passed for s in self._subs)
        if refused is not None and not self._session.follow(conn, refused):
            # No leader named (an election): wait before the next attempt, which the
            # restorer makes at once otherwise.
            await asyncio.sleep(self._session.backoff.failed())

    def lost(self, conn: Connection, reason: TqError, *, moved: bool = False) -> None:
        """``conn`` is gone: restore its subscriptions, or fail them without ``reconnect``
        (unless the client ``moved`` to another node on purpose)."""
        orphans = [sub for sub in self._subs if sub.conn is conn]
        for sub in orphans:
            self._orphan(sub)
        if not orphans:
            return
        self.dirty = True
        log.info("connection.lost url=%s subscriptions=%d", conn.address.url, len(orphans))
        if self._session.reconnect or moved:
            self._restore_soon()
            return
        for sub in orphans:
            self._subs.discard(sub)
            sub.on_error(ConnectionLostError(reason.message, ErrorCode.SHUTTING_DOWN))
        self.dirty = False

    def _restore_soon(self) -> None:
        if self._restorer is None or self._restorer.done():
            self._restorer = asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        """Dial for the subscriptions that lost their connection, one attempt at a time, until
        the latest of their deadlines (so an owner that left stops the dialling); a refusal
        fails them all."""
        session = self._session
        try:
            while not session.closed:
                wanted = self._restorable()
                if not wanted:
                    self.dirty = False
                    return
                try:
                    await session.connection(latest([s.restore_by for s in wanted]), once=True)
                except UnavailableError:
                    continue  # spaced by the Backoff; the next round drops what expired
        except TqError as e:
            for sub in [s for s in self._subs if s.conn is None]:
                self._subs.discard(sub)
                sub.on_error(e)
            self.dirty = False

    async def close(self) -> None:
        if self._restorer is not None:
            self._restorer.cancel()
            await asyncio.gather(self._restorer, return_exceptions=True)
        subs, self._subs = self._subs, set()
        for sub in subs:
            sub.on_error(UnavailableError("the client is closed"))
