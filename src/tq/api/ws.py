"""WebSocket /ws: live task events and periodic stats for the dashboard and for clients.
docs/websocket.md is its normative description (messages both ways, caps, errors, close
codes); this docstring keeps the reasons.

Client -> server, JSON: ``{"op": "subscribe" | "unsubscribe", "task_ids": [...], "queues":
[...], "all": bool}`` (a socket's interest is the union of what it subscribed; unsubscribe
with no fields drops all of it), ``{"op": "stats", "interval": s}`` (0 or null stops),
``{"op": "ping"}``. Server -> client: ``{"type": "task", ...}`` per event (published after
durability; subscribing to an already finished task pushes its final state once, after the
``subscribed`` answer), ``{"type": "stats", ...}``, ``{"type": "subscribed" | "unsubscribed",
...}``, ``{"type": "pong"}`` and ``{"type": "error", "error": {...}}`` for a bad message (the
socket stays open; a subscribe naming an unknown task id is refused whole with TASK_NOT_FOUND,
one taking the socket past the service's caps on followed ids and queues with
INVALID_ARGUMENT). Times are unix seconds (``at``) and RFC 3339 (``at_rfc3339``), as in REST.

Slow consumers: the event hub calls ``push_event`` synchronously, which only appends to this
socket's bounded queue; one writer task per socket drains it. When more than ``max_buffered``
messages, or more than ``max_bytes`` of results and texts (events may carry results of many
MiB), wait, the socket is closed with code 1013 (try again later) and a reason: the client
lost events and must resynchronise (e.g. GET /v1/tasks), rather than miss them silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import pydantic
from fastapi import WebSocket, WebSocketDisconnect

from tq.api import ws_auth
from tq.api.responses import ErrorBody, StatsOut, task_id_text, text_and_base64
from tq.api.schemas import CONTROL, AuthOp, StatsOp, SubscribeOp, describe_errors
from tq.broker.access import Principal
from tq.broker.requests import Watch
from tq.broker.service import BrokerService
from tq.core.effects import TaskEvent
from tq.core.ids import TaskId
from tq.core.times import format_rfc3339
from tq.errors import ErrorCode, NotLeaderError, RateLimitedError, TqError, ValidationError

log = logging.getLogger(__name__)

MAX_BUFFERED = 65_536  #: messages waiting per socket before it is closed as too slow
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  #: their bytes (``message_size``), the same way
MESSAGE_BYTES = 256  #: what a message counts beside its result and texts
CLOSE_TIMEOUT_S = 2.0
MIN_STATS_INTERVAL_S = 0.1
SLOW_CONSUMER: Final = 1013  # "try again later"
_SUB = 1  # one hub subscription per socket, replaced as its interest changes
_STATS: Final = object()  # queued marker: render fresh stats when it is this one's turn
_encode = msgspec.json.Encoder().encode


def endpoint(
    service: BrokerService, max_buffered: int, max_bytes: int = MAX_BUFFERED_BYTES
) -> Callable[[WebSocket], Awaitable[None]]:
    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            who = await ws_auth.authenticate(service, websocket)
        except WebSocketDisconnect:
            return
        except TqError as e:
            log.info("ws.unauthenticated client=%s why=%s", websocket.client, e.message)
            await ws_auth.refuse(websocket, e.message)
            return
        await Session(service, websocket, max_buffered, max_bytes, who).run()

    return ws_endpoint


def message_size(item: object) -> int:
    """What a queued message counts against ``max_bytes``: its result and texts, the bulk of
    a task event, plus a constant for the rest."""
    if isinstance(item, TaskEvent):
        texts = (item.error, item.error_type, item.progress_message)
        return MESSAGE_BYTES + len(item.result or b"") + sum(len(t) for t in texts if t)
    return MESSAGE_BYTES


class Session:
    def __init__(
        self,
        service: BrokerService,
        websocket: WebSocket,
        max_buffered: int,
        max_bytes: int = MAX_BUFFERED_BYTES,
        who: Principal = Principal.ANYONE,
    ) -> None:
        self.service = service
        self.who = who
        #: Set when the key is revoked or expires: the socket is closed with 4401 and why.
        self.refused: TqError | None = None
        self.gone = asyncio.Event()
        self.ws = websocket
        self.max_buffered = max_buffered
        self.max_bytes = max_bytes
        self.out_bytes = 0
        self.out: deque[object] = deque()
        self.wake = asyncio.Event()
        self.overflow = False
        self.task_ids: set[TaskId] = set()
        self.queues: set[str] = set()
        self.all = False
        self.ticker: asyncio.Task[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.stats_queued = False
        self.loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ the hub's side (sync)

    def push_event(self, subscription_id: int, event: TaskEvent) -> None:
        self.send(event)

    def watch_ended(self, subscription_id: int) -> None:
        """Never: a socket's subscription is not one-shot."""

    def send(self, item: object) -> None:
        if self.overflow:
            return
        size = message_size(item)
        if len(self.out) >= self.max_buffered or self.out_bytes + size > self.max_bytes:
            self.overflow = True
            self.out.clear()
            self.out_bytes = 0
            # Not unsubscribed here (we may be inside the hub's publish loop), but at once.
            self.loop.call_soon(self._drop)
        else:
            self.out.append(item)
            self.out_bytes += size
            self.wake.set()

    def _drop(self) -> None:
        self.service.detach(self)
        if self.writer is not None:
            self.writer.cancel()  # it may wait on a full transport: nothing half-written

    # ------------------------------------------------------------------ the socket's side

    def _refuse(self, why: TqError) -> None:
        """The key was revoked or expired (called by the service): stop serving at once."""
        self.refused = why
        self.service.detach(self)
        self.gone.set()

    async def run(self) -> None:
        held = self.service.hold(self.who, self._refuse)
        reader = asyncio.create_task(self._read())
        writer = self.writer = asyncio.create_task(self._write())
        gone = asyncio.create_task(self.gone.wait())
        try:
            await asyncio.wait({reader, writer, gone}, return_when=asyncio.FIRST_COMPLETED)
            if self.refused is not None:
                log.info("ws.refused client=%s why=%s", self.ws.client, self.refused.message)
                writer.cancel()
                await ws_auth.refuse(self.ws, self.refused.message)
            elif self.overflow:
                await self._close_slow()
        finally:
            held.release()
            self.service.detach(self)
            tasks = [t for t in (reader, writer, gone, self.ticker) if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or b""
            try:
                self._control(raw)
            except pydantic.ValidationError as e:
                # An API key is never echoed, not even one too long to be a key.
                errors = e.errors()
                for err in errors:
                    if "api_key" in err["loc"]:
                        err["input"] = None
                self._error(ErrorCode.INVALID_ARGUMENT, describe_errors(errors))
            except TqError as e:
                self.send(error_message(e))
            except Exception as e:  # a bug costs this one message, not the socket
                log.exception("ws.control_crashed client=%s", self.ws.client)
                self._error(ErrorCode.INTERNAL, f"internal error: {type(e).__name__}")

    async def _write(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.out:
                    item = self.out.popleft()
                    self.out_bytes -= message_size(item)
                    await self.ws.send_text(self._render(item))
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            # The peer went away mid-send (the reader sees that too), or closed first.
            log.debug("ws.send_failed error=%r", e)

    async def _close_slow(self) -> None:
        reason = (
            f"slow consumer: more than {self.max_buffered} messages or {self.max_bytes} bytes "
            "waiting; resubscribe"
        )
        log.warning("ws.slow_consumer client=%s", self.ws.client)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(SLOW_CONSUMER, reason)
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            # It reads nothing, so even the close frame cannot go out: uvicorn closes the
            # transport once its buffer drains or the peer goes away.
            pass

    # ------------------------------------------------------------------ control messages

    def _control(self, raw: str | bytes) -> None:
        op = CONTROL.validate_json(raw)
        if isinstance(op, SubscribeOp):
            self._subscribe(op)
        elif isinstance(op, StatsOp):
            self._stats(op.interval or 0.0)
        elif isinstance(op, AuthOp):
            if self.who.key_id is not None:
                raise ValidationError("this socket is already authenticated: one key per socket")
            self.send(ws_auth.authenticated(self.who))  # auth disabled: the key is not read
        else:
            self.send({"type": "pong"})

    def _subscribe(self, op: SubscribeOp) -> None:
        ids = [TaskId(i.bytes) for i in op.task_ids]
        if op.op == "subscribe":
            task_ids = self.task_ids.union(ids)
            queues = self.queues.union(op.queues)
            everything = self.all or op.all
        elif ids or op.queues or op.all:
            task_ids = self.task_ids.difference(ids)
            queues = self.queues.difference(op.queues)
            everything = self.all and not op.all
        else:  # unsubscribe with no fields: drop everything
            task_ids, queues, everything = set(), set(), False
        # The socket's interest is one subscription, replaced as it changes; an unknown task
        # id (NotFoundError) or an interest beyond the service's caps (ValidationError:
        # broker.max_watched_task_ids, broker.max_watched_queues) refuses the whole op and
        # changes nothing.
        self.service.watch(self.who, self, _SUB, Watch(tuple(task_ids), tuple(queues), everything))
        self.task_ids, self.queues, self.all = task_ids, queues, everything
        self.send({
            "type": f"{op.op}d", "task_ids": sorted(map(task_id_text, self.task_ids)),
            "queues": sorted(self.queues), "all": self.all,
        })  # fmt: skip

    def _stats(self, interval: float) -> None:
        if interval > 0:
            self.service.stats(self.who)  # the request is checked (and rate-limited) once
        if self.ticker is not None:
            self.ticker.cancel()
            self.ticker = None
        if interval > 0:
            self.ticker = asyncio.create_task(self._tick(max(interval, MIN_STATS_INTERVAL_S)))

    async def _tick(self, interval: float) -> None:
        while True:
            if not self.stats_queued:
                self.stats_queued = True
                self.send(_STATS)
            await asyncio.sleep(interval)

    def _error(self, code: ErrorCode, message: str) -> None:
        self.send({"type": "error", "error": ErrorBody.of(code, message).model_dump()})

    # ------------------------------------------------------------------ rendering

    def _render(self, item: object) -> str:
        if isinstance(item, TaskEvent):
            msg = event_message(item)
        elif item is _STATS:
            self.stats_queued = False
            at = time.time()
            try:
                stats = self.service.stats(self.who, tick=True)
            except TqError as refused:
                return _encode(error_message(refused)).decode()
            msg = {
                "type": "stats",
                "at": at,
                "at_rfc3339": format_rfc3339(at),
                **StatsOut.of(stats).model_dump(),
            }
        else:
            assert isinstance(item, dict)
            msg = item
        return _encode(msg).decode()


def event_message(ev: TaskEvent) -> dict[str, Any]:
    """A task event as JSON: fields that are None are left out."""
    result, result_b64 = text_and_base64(ev.result)
    msg: dict[str, Any] = {
        "type": "task", "task_id": task_id_text(ev.task_id), "state": ev.state.value,
        "queue": ev.queue, "task_type": ev.task_type, "at": ev.at,
        "at_rfc3339": format_rfc3339(ev.at), "attempts": ev.attempts,
        "result": result, "result_base64": result_b64, "error": ev.error,
        "error_type": ev.error_type, "worker_id": ev.worker_id, "progress": ev.progress,
        "progress_message": ev.progress_message,
    }  # fmt: skip
    return {k: v for k, v in msg.items() if v is not None}


def error_message(e: TqError) -> dict[str, Any]:
    """An error message; a rate-limited one says when to retry (``retry_after`` seconds), a
    NOT_LEADER one where the leader is (``leader``, null while none is known)."""
    body: dict[str, Any] = ErrorBody.of(e.code, e.message).model_dump()
    if isinstance(e, RateLimitedError) and e.retry_after is not None:
        body["retry_after"] = e.retry_after
    if isinstance(e, NotLeaderError):
        body["leader"] = e.leader
    return {"type": "error", "error": body}
