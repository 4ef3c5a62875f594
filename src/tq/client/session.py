"""The client's link to its broker (one node of several, ``tq.client.brokers``): lazy connect,
reconnect until the caller's deadline, and following the cluster's leader.

Rules. Connecting: a call that finds no open connection dials, and retries a refused or lost
connection (the next node at once, the Backoff between rounds over every node) until the
call's own deadline, however many attempts that takes; then UnavailableError TIMEOUT names
the deadline and each node's last error. A handshake refused by the broker (AuthError,
ProtocolError) is final. ``reconnect=False``: one round of attempts, and a lost connection
stays lost (moving to the leader is not a loss).
Requests: one lost with its connection has an unknown outcome. It is sent again on the next
connection (until its deadline) only when the caller says repeating it is harmless
(``retry=True``); otherwise the caller gets ConnectionLostError. So is one the broker answers
TIMEOUT (a deposed leader whose log append was not confirmed: outcome unknown). A NOT_LEADER
refusal changed nothing: the request is always sent again, to the leader it names (at once),
or, when it names none, to the next node after a pause, until the call's deadline. The
connection left behind closes once its outstanding replies are in.
Subscriptions outlive connections and moves: ``tq.client.resubscribe`` says how.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Literal

from tq.client.address import BrokerAddress
from tq.client.brokers import Brokers
from tq.client.connection import (
    Connection,
    ConnectionLostError,
    OrdersCallback,
    R,
    ReplyTimeoutError,
)
from tq.client.pacing import Backoff, Deadline
from tq.client.resubscribe import Subscriptions, SubscriptionState
from tq.client.tls import TlsConfig, TlsOption, client_context
from tq.errors import ErrorCode, NotLeaderError, RateLimitedError, TqError, UnavailableError
from tq.protocol import MAX_WAIT_MS, Request

log = logging.getLogger(__name__)


class Session:
    """Owns the current Connection of one client and replaces it when it is lost or when the
    cluster's leader is elsewhere."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        api_key: str | None,
        name: str,
        client_kind: Literal["client", "worker"],
        connect_timeout: float,
        request_timeout: float,
        reconnect: bool,
        max_reconnect_delay: float,
        tls: TlsOption = None,
    ) -> None:
        self.backoff = Backoff(max_reconnect_delay)
        self.brokers = Brokers(urls, self.backoff)
        # One TLS setting for every node (parse_urls made sure they agree on TLS).
        self.ssl_context = client_context(self.brokers.urls, self.brokers.address.tls, tls)
        # A caller's own SSLContext may hold a client certificate: we cannot tell.
        self.client_cert = isinstance(tls, ssl.SSLContext) or (
            isinstance(tls, TlsConfig) and tls.cert_file is not None
        )
        self.api_key = api_key
        self.name = name
        self.client_kind: Literal["client", "worker"] = client_kind
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The last connection was lost (not left for the leader): reconnect=False ends here.
        self._lost = False
        #: Connections left for the leader, closing once their replies are in.
        self._retired: set[Connection] = set()
        self.closed = False
        self._closing = asyncio.Event()
        #: Why the last attempt failed or the last connection ended (None while connected).
        self._last_error: TqError | None = None
        self.subs = Subscriptions(self)
        #: A worker's listener for pushed orders, set on every connection opened.
        self._on_orders: OrdersCallback | None = None

    def set_order_listener(self, callback: OrdersCallback | None) -> None:
        self._on_orders = callback
        if self._conn is not None:
            self._conn.on_orders = callback

    def until(self, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` from now (None: none), on the loop this client is bound to."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a tq AsyncClient is bound to the event loop it was first used on")
        return Deadline.after(seconds)

    def deadline(self, timeout: float | None = None) -> Deadline:
        """A call's deadline: ``timeout`` seconds from now, ``request_timeout`` if None."""
        return self.until(self.request_timeout if timeout is None else timeout)

    @property
    def address(self) -> BrokerAddress:
        """The node calls go to now."""
        return self.brokers.address

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    def late_error(self, deadline: Deadline, waiting_for: str = "") -> UnavailableError:
        """The error of a call whose deadline passed without a connection to the broker."""
        suffix = f" while waiting for {waiting_for}" if waiting_for else ""
        return UnavailableError(
            self.brokers.nowhere(deadline.describe(), self._last_error) + suffix,
            ErrorCode.TIMEOUT,
        )

    async def call(
        self,
        build: Callable[[int], Request],
        expect: type[R],
        *,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        retry: bool = False,
    ) -> R:
        """Send one request and return its reply, connecting first if needed; ``deadline``
        (else ``timeout`` seconds from now) bounds the whole call. A RATE_LIMITED refusal
        (which changed nothing) is sent again after its ``retry_after`` while that fits in
        the deadline (once, without a deadline); then it is raised. NOT_LEADER, and with
        ``retry`` a lost connection or a TIMEOUT answer: see the module docstring."""
        if deadline is None:
            deadline = self.deadline(timeout)
        limited = False
        pacing: Backoff | None = None  # spaces this call's resends to a cluster in flux
        while True:
            conn = await self.connection(deadline)
            # Without a deadline, a silent broker still fails the call after request_timeout.
            within = self.request_timeout if deadline.at is None else deadline.remaining()
            try:
                return await conn.request(build, expect, within)
            except ConnectionLostError:
                if not (retry and self.reconnect):
                    raise
                log.debug("request.resent url=%s", conn.address.url)
            except NotLeaderError as e:
                pacing = pacing or Backoff(self.backoff.cap)
                await self.refused(conn, e, deadline, pacing)
            except RateLimitedError as e:
                pause = e.retry_after
                if pause is None:
                    raise
                if not (deadline.remaining() > pause if deadline.at is not None else not limited):
                    raise
                limited = True
                log.debug("request.rate_limited url=%s retry_after=%.3f", conn.address.url, pause)
                await asyncio.sleep(pause)
            except ReplyTimeoutError:
                raise
            except UnavailableError as e:
                # The broker's own TIMEOUT (e.g. a deposed leader's unconfirmed append): the
                # outcome is unknown, so only a harmless request is sent again.
                if not (retry and e.code is ErrorCode.TIMEOUT):
                    raise
                pacing = pacing or Backoff(self.backoff.cap)
                pause = pacing.failed()
                if deadline.remaining() <= pause:
                    raise
                log.debug("request.resent url=%s after=%s", conn.address.url, e.code.name)
                await self._pause(pause)

    async def refused(
        self, conn: Connection, refusal: NotLeaderError, deadline: Deadline, pacing: Backoff
    ) -> None:
        """``conn``'s node refused a request as not the leader (nothing applied): follow the
        leader, pausing first if none was named or this call was sent on before. Raises the
        refusal, naming the nodes, if the pause would not fit in ``deadline``."""
        named = self.follow(conn, refusal)
        pause = pacing.failed()
        if named and pacing.failures == 1:
            return  # the first move to a named leader goes at once
        if deadline.remaining() <= pause:
            raise NotLeaderError(
                f"{refusal.message} (no leader reached among {self.brokers.urls} "
                f"{deadline.describe()})",
                leader=refusal.leader,
            ) from refusal
        await self._pause(pause)

    def follow(self, conn: Connection, refusal: NotLeaderError) -> bool:
        """Move calls to the leader ``refusal`` names (True), else to the next node (False).
        The first caller to hear it retires ``conn`` (unless it is still the node to ask: a
        single URL): it closes once its replies are in."""
        named = self.brokers.follow(refusal, conn.address)
        if conn is self._conn and self.brokers.address != conn.address:
            self._conn = None
            self._retired.add(conn)
            conn.retire(self.request_timeout)
        return named

    @property
    def max_wait(self) -> float:
        """The longest claim long poll the broker honours, in seconds: WELCOME's
        ``max_wait_ms`` of the current connection (the protocol's default without one)."""
        conn = self._conn
        return MAX_WAIT_MS / 1000 if conn is None else conn.max_wait

    def current(self) -> Connection:
        """The open connection, without dialling: UnavailableError if there is none."""
        conn = self._conn
        if conn is None or not conn.is_open or self.subs.dirty:
            raise UnavailableError(
                f"not connected to {self.address.url}: await connect() first",
                ErrorCode.SHUTTING_DOWN,
            )
        return conn

    async def connection(self, deadline: Deadline, *, once: bool = False) -> Connection:
        """The open connection; if there is none, dial (retrying until ``deadline``, or one
        attempt of our own with ``once``) and re-send the subscriptions first."""
        conn = self._conn
        if conn is not None and conn.is_open and not self.subs.dirty:
            return conn
        try:
            async with asyncio.timeout_at(deadline.at):
                return await self._connect(once)
        except TimeoutError:
            raise self.late_error(deadline) from None

    async def _connect(self, once: bool) -> Connection:
        while True:
            if self.closed:
                raise UnavailableError("the client is closed")
            if not self.connected:
                if self._lost and not self.reconnect:
                    raise ConnectionLostError(
                        f"connection to {self.address.url} lost (reconnect=False)"
                    )
                await self._pause(self.backoff.wait())
            async with self._lock:
                conn = self._conn
                if conn is None or not conn.is_open:
                    if self.backoff.wait() > 0:
                        continue  # another caller's attempt failed meanwhile: wait our turn
                    address = self.address
                    try:
                        conn = self._conn = await self._open(address)
                    except UnavailableError as e:
                        if self.closed:
                            raise
                        self._last_error = e
                        round_over = self.brokers.failed(address, e)
                        log.debug(
                            "connect.failed url=%s client=%s rounds=%d retry_in=%.2fs error=%s",
                            address.url, self.name, self.backoff.failures, self.backoff.wait(),
                            e.message,
                        )  # fmt: skip
                        if round_over and (once or not self.reconnect):
                            raise UnavailableError(self.brokers.unreachable(e), e.code) from e
                        continue
                if self.subs.dirty:
                    await self.subs.rebind(conn)
                    if conn is not self._conn:
                        continue  # a SUBSCRIBE was refused NOT_LEADER: we moved
                return conn

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the client is closed meanwhile."""
        if seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await self._closing.wait()
            except TimeoutError:
                pass

    async def _open(self, address: BrokerAddress) -> Connection:
        """One attempt. The caller's deadline cancels it; ``connect_timeout`` bounds it."""
        conn = await Connection.open(
            address,
            timeout=self.connect_timeout,
            client_name=self.name,
            client_kind=self.client_kind,
            api_key=self.api_key,
            on_lost=self._on_lost,
            ssl_context=self.ssl_context,
            client_cert=self.client_cert,
        )
        if self.closed:  # closed while this attempt was under way: do not leak it
            conn.close()
            raise UnavailableError("the client is closed")
        conn.on_orders = self._on_orders
        if self.backoff.failures:
            log.info(
                "connection.restored url=%s client=%s rounds=%d",
                address.url, self.name, self.backoff.failures,
            )  # fmt: skip
        self.brokers.succeeded()
        self._last_error = None
        self._lost = False
        return conn

    # --- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, sub: SubscriptionState, deadline: Deadline) -> None:
        await self.subs.subscribe(sub, deadline)

    def unsubscribe(self, sub: SubscriptionState) -> None:
        self.subs.unsubscribe(sub)

    def _on_lost(self, conn: Connection, reason: TqError) -> None:
        self._retired.discard(conn)
        moved = conn is not self._conn  # retired after a NOT_LEADER: the calls went on
        if isinstance(reason, NotLeaderError):  # the node said so for the whole connection
            self.brokers.follow(reason, conn.address)
            moved = True
        if conn is self._conn:
            self._conn = None
        if not self.closed:
            if not moved:
                self._lost = True
                self._last_error = reason
            self.subs.lost(conn, reason, moved=moved)

    async def close(self) -> None:
        self.closed = True
        self._closing.set()
        await self.subs.close()
        for conn in [*self._retired, self._conn]:
            if conn is not None:
                conn.close()
        self._conn = None
        self._retired.clear()
