"""The client's link to one broker: lazy connect, reconnect with backoff, lasting subscriptions.

Rules: a call connects when there is no open connection, retrying with exponential backoff and
jitter until its deadline or ``MAX_CONNECT_ATTEMPTS`` (a refusal, AuthError or ProtocolError,
is final). A request lost with its connection has an unknown outcome: it is sent again on a
new connection only when the caller says repeating it is harmless (``retry=True``), otherwise
the caller gets ConnectionLostError. Subscriptions outlive connections: each new connection
re-sends them, and a connection that drops under live subscriptions is re-dialled at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Final, Literal

from tq.client.address import parse_url
from tq.client.connection import Connection, ConnectionLostError, R
from tq.core.ids import TaskId
from tq.errors import ErrorCode, TqError, UnavailableError
from tq.protocol import MAX_WAIT_MS, Request, Subscribe, TaskEvent

log = logging.getLogger(__name__)

MAX_CONNECT_ATTEMPTS: Final = 10
_FIRST_BACKOFF: Final = 0.05


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
    ) -> None:
        self.task_ids = list(task_ids or [])
        self.queues = list(queues or [])
        self.all = all
        self.until_terminal = until_terminal
        self.on_event = on_event
        self.on_error = on_error
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


class Session:
    """Owns the current Connection of one client and replaces it when it is lost."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        name: str,
        client_kind: Literal["client", "worker"],
        connect_timeout: float,
        request_timeout: float,
        reconnect: bool,
        max_reconnect_delay: float,
    ) -> None:
        self.address = parse_url(url)
        self.api_key = api_key
        self.name = name
        self.client_kind: Literal["client", "worker"] = client_kind
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self.max_reconnect_delay = max_reconnect_delay
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ever_connected = False
        self._closed = False
        self._subs: set[SubscriptionState] = set()
        #: Some subscription has no wire subscription: the next ``connection()`` re-sends it.
        self._dirty = False
        self._restorer: asyncio.Task[None] | None = None

    def deadline(self, timeout: float | None = None) -> float:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a tq AsyncClient is bound to the event loop it was first used on")
        return loop.time() + (self.request_timeout if timeout is None else timeout)

    async def call(
        self,
        build: Callable[[int], Request],
        expect: type[R],
        *,
        timeout: float | None = None,
        retry: bool = False,
    ) -> R:
        """Send one request and return its reply, connecting first if needed."""
        deadline = self.deadline(timeout)
        retried = False
        while True:
            conn = await self.connection(deadline)
            try:
                return await conn.request(build, expect, self._remaining(deadline))
            except ConnectionLostError:
                if retried or not (retry and self.reconnect):
                    raise
                retried = True

    @property
    def max_wait(self) -> float:
        """The longest claim long poll the broker honours, in seconds: WELCOME's
        ``max_wait_ms`` of the current connection (the protocol's default without one)."""
        conn = self._conn
        return MAX_WAIT_MS / 1000 if conn is None else conn.max_wait

    def current(self) -> Connection:
        """The open connection, without dialling: UnavailableError if there is none."""
        conn = self._conn
        if conn is None or not conn.is_open or self._dirty:
            raise UnavailableError(
                f"not connected to {self.address.url}: await connect() first",
                ErrorCode.SHUTTING_DOWN,
            )
        return conn

    async def connection(self, deadline: float) -> Connection:
        """The open connection, dialled (and subscriptions re-sent) if there is none."""
        conn = self._conn
        if conn is not None and conn.is_open and not self._dirty:
            return conn
        try:
            async with asyncio.timeout_at(deadline), self._lock:
                conn = self._conn
                if conn is None or not conn.is_open:
                    conn = self._conn = await self._dial(deadline)
                if self._dirty:
                    await self._rebind(conn, deadline)
                return conn
        except TimeoutError:
            raise UnavailableError(
                f"no connection to {self.address.url} before the deadline", ErrorCode.TIMEOUT
            ) from None

    async def _dial(self, deadline: float) -> Connection:
        if self._closed:
            raise UnavailableError("the client is closed")
        if self._ever_connected and not self.reconnect:
            raise ConnectionLostError(f"connection to {self.address.url} lost (reconnect=False)")
        attempts = MAX_CONNECT_ATTEMPTS if self.reconnect else 1
        backoff = _FIRST_BACKOFF
        last: UnavailableError | None = None
        for attempt in range(1, attempts + 1):
            timeout = min(self.connect_timeout, self._remaining(deadline))
            try:
                conn = await Connection.open(
                    self.address,
                    timeout=timeout,
                    client_name=self.name,
                    client_kind=self.client_kind,
                    api_key=self.api_key,
                    on_lost=self._on_lost,
                )
            except UnavailableError as e:
                last = e
                log.debug("connect.failed url=%s attempt=%d error=%s", self.address.url, attempt, e)
            else:
                self._ever_connected = True
                return conn
            # Jitter keeps the clients of a restarted broker from dialling in lockstep.
            pause = random.uniform(backoff / 2, backoff)
            if attempt == attempts or self._remaining(deadline) <= pause:
                break
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, self.max_reconnect_delay)
        assert last is not None
        raise UnavailableError(
            f"cannot reach the broker at {self.address.url} after {attempt} attempt(s): "
            f"{last.message}",
            last.code,
        ) from last

    def _remaining(self, deadline: float) -> float:
        return max(deadline - asyncio.get_running_loop().time(), 0.0)

    # --- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, sub: SubscriptionState, deadline: float) -> None:
        """Start ``sub``; raises the broker's refusal (e.g. NotFoundError for an unknown id)."""
        retried = False
        while True:
            conn = await self.connection(deadline)
            try:
                await self._bind(sub, conn, deadline)
                break
            except ConnectionLostError:
                if retried or not self.reconnect:
                    raise
                retried = True
        if sub.closed:
            return
        self._subs.add(sub)
        if not conn.is_open:  # lost between the ACK and now: the lost-handler missed it
            sub.conn = None
            self._dirty = True
            self._restore_soon()

    def unsubscribe(self, sub: SubscriptionState) -> None:
        sub.closed = True
        self._subs.discard(sub)
        if sub.conn is not None and sub.sid:
            sub.conn.unsubscribe(sub.sid)
        sub.conn = None

    async def _bind(self, sub: SubscriptionState, conn: Connection, deadline: float) -> None:
        sid = await conn.subscribe(sub.message, sub.deliver, self._remaining(deadline))
        if sub.closed:  # unsubscribed while the SUBSCRIBE was in flight
            conn.unsubscribe(sid)
            return
        if not conn.is_open:
            # Acknowledged, then the connection died in the same read: binding to it would
            # leave the subscription on a dead connection that no reconnect re-sends.
            raise ConnectionLostError(f"connection to {self.address.url} closed while subscribing")
        sub.conn, sub.sid = conn, sid

    async def _rebind(self, conn: Connection, deadline: float) -> None:
        """Re-send every subscription without one, pipelined; refusals fail their owner."""
        unbound = [s for s in self._subs if s.conn is None]
        for sub in unbound:
            if sub.until_terminal and not sub.task_ids:
                sub.conn, sub.sid = conn, 0  # every id already had its event: nothing to ask
        unbound = [s for s in unbound if s.conn is None]
        results = await asyncio.gather(
            *(self._bind(s, conn, deadline) for s in unbound), return_exceptions=True
        )
        for sub, result in zip(unbound, results, strict=True):
            if isinstance(result, UnavailableError):
                continue  # lost again or too slow: the next connection tries again
            if isinstance(result, TqError):
                self._subs.discard(sub)
                sub.on_error(result)
            elif isinstance(result, BaseException):
                raise result
        self._dirty = any(s.conn is None for s in self._subs)

    def _on_lost(self, conn: Connection, reason: TqError) -> None:
        if conn is self._conn:
            self._conn = None
        orphans = [sub for sub in self._subs if sub.conn is conn]
        for sub in orphans:
            sub.conn = None
        if not orphans or self._closed:
            return
        self._dirty = True
        log.info("connection.lost url=%s subscriptions=%d", self.address.url, len(orphans))
        if self.reconnect:
            self._restore_soon()
            return
        for sub in orphans:
            self._subs.discard(sub)
            sub.on_error(ConnectionLostError(reason.message, ErrorCode.SHUTTING_DOWN))
        self._dirty = False

    def _restore_soon(self) -> None:
        if self._restorer is None or self._restorer.done():
            self._restorer = asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        """Reconnect for live subscriptions; when that fails for good, fail them instead."""
        deadline = self.deadline(max(self.request_timeout, self.connect_timeout))
        try:
            while self._dirty and not self._closed:
                await self.connection(deadline)
        except TqError as e:
            for sub in [s for s in self._subs if s.conn is None]:
                self._subs.discard(sub)
                sub.on_error(e)
            self._dirty = False

    async def close(self) -> None:
        self._closed = True
        if self._restorer is not None:
            self._restorer.cancel()
            await asyncio.gather(self._restorer, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        subs, self._subs = self._subs, set()
        for sub in subs:
            sub.on_error(UnavailableError("the client is closed"))
