"""The HTTP front door: a FastAPI app (REST under /v1, WebSocket /ws, OpenAPI, health) served
by uvicorn inside the broker's event loop.

Rules: every error leaves as ``{"error": {"code", "name", "message"}}`` with the status of its
``ErrorCode`` (request validation: 422 INVALID_ARGUMENT; malformed JSON: 400 PROTOCOL_ERROR;
unknown route: 404 ROUTE_NOT_FOUND; a method the path does not serve: 405 METHOD_NOT_ALLOWED
with ``Allow`` listing every method of every route of that path; a plain GET of /ws: 426
UPGRADE_REQUIRED; body above api.max_request_body_bytes: 413 PAYLOAD_TOO_LARGE); any other
exception is logged once and answered 500 INTERNAL, never with a traceback. uvicorn runs with
no signal handlers of its own: the broker owns SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tq.api import (
    http_errors,
    rest,
    rest_cluster,
    rest_flow,
    rest_keys,
    rest_schedules,
    rest_workers,
    ws,
)
from tq.api.http_auth import secure
from tq.api.http_errors import error_response
from tq.broker.service import BrokerService
from tq.broker.tls import ServerTls
from tq.config import Settings
from tq.errors import ErrorCode, TqError
from tq.version import __version__

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024  #: HTTP + WebSocket connections; beyond it uvicorn answers 503
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 8.0
DRAIN_BYTES = 8 << 20  #: of a refused oversize body, read and dropped before the 413
DRAIN_TIMEOUT_S = 5.0
GRACEFUL_S = 5  #: in-flight requests get this long to finish at stop


DESCRIPTION = """Management API of the tq broker.

- **Errors**: `{"error": {"code", "name", "message"}}` with a stable code (the table of codes
  is in docs/protocol.md); the message names the bad field or parameter.
- **Times** are taken as unix seconds (a JSON number) or RFC 3339 text with an offset
  (`2024-07-01T12:00:00Z`, `2024-07-01T14:00:00+02:00`); the listing filters `created_after`
  and `created_before` also take an age, `10m` for ten minutes ago (units s, m, h, d, w), as
  `tq list --since` does. An instant before 1970 counts as 1970. Answers show each time twice:
  `<name>` in unix seconds and `<name>_rfc3339` in UTC, as the CLI shows it.
- **Ids** are UUIDs, answered in the 36-character form.
- **Unknown** body fields and query parameters are refused (422), as is a parameter given twice.
- **Live events**: the WebSocket `/ws` (docs/websocket.md).
- **API keys**: with auth enabled, every /v1 route needs a key, sent as
  `Authorization: Bearer <key>` (or `X-API-Key: <key>`): 401 without a valid one, 403 when it
  lacks the permission or queue, 429 with `Retry-After` over its rate limit. /healthz,
  /readyz and these documents stay open (docs/security.md).
"""


class Guard:
    """Outermost own layer: refuses oversize bodies before the app reads them and turns any
    exception that escaped the handlers into one logged 500 INTERNAL."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            replay = await self._read_body(scope, receive)
            if replay is None:
                too_big = error_response(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"request body above the limit of {self.max_body} bytes",
                    headers={"connection": "close"},
                )
                await too_big(scope, receive, tracked)
                return
            await self.app(scope, replay, tracked)
        except Exception as e:
            log.exception("http.crashed method=%s path=%s", scope.get("method"), scope.get("path"))
            if not started:
                crash = error_response(ErrorCode.INTERNAL, f"internal error: {type(e).__name__}")
                await crash(scope, receive, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """The body read whole (None: above the limit) as a ``receive`` that replays it."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                if int(value) <= self.max_body + DRAIN_BYTES:
                    await _drain(receive)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client went away: let the app see it
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                if message.get("more_body", False):
                    await _drain(receive)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        pending: list[Message] = [first]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        return replay


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of a refused body (bounded): a client still sending when the
    connection closes would see a reset instead of our 413."""
    budget = DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while budget > 0:
                message = await receive()
                budget -= len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return


def create_app(
    service: BrokerService,
    settings: Settings,
    *,
    ws_buffer: int,
    ws_buffer_bytes: int = ws.MAX_BUFFERED_BYTES,
    checkpoint: rest_cluster.CheckpointSource | None = None,
) -> FastAPI:
    """The app of ``service``; ``checkpoint`` (a cluster node's) mounts
    ``GET /v1/cluster/checkpoint``, which streams what it makes."""
    app = FastAPI(
        title="tq",
        version=__version__,
        description=DESCRIPTION,
    )
    app.state.service = service
    app.state.stopping = False
    http_errors.install(app)
    app.include_router(rest.health)
    if settings.api.rest_enabled:
        app.include_router(rest.router)
        app.include_router(rest_keys.router)
        app.include_router(rest_schedules.router)
        app.include_router(rest_flow.router)
        app.include_router(rest_workers.router)
    if checkpoint is not None:
        app.state.checkpoint_source = checkpoint
        app.include_router(rest_cluster.router)
    if settings.auth.enabled:
        app.openapi = secure(app)  # type: ignore[method-assign]
    if settings.api.websocket_enabled:
        app.add_api_websocket_route("/ws", ws.endpoint(service, ws_buffer, ws_buffer_bytes))
        app.add_api_route(
            "/ws", http_errors.upgrade_required, methods=["GET"], include_in_schema=False
        )
    app.add_middleware(Guard, max_body=settings.api.max_request_body_bytes)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the broker owns SIGTERM/SIGINT and stops us through stop()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class HttpServer:
    """Front door (see ``tq.broker.server``): ``start`` binds and returns the port in use."""

    name = "rest"

    def __init__(
        self,
        service: BrokerService,
        settings: Settings,
        *,
        ws_buffer: int = ws.MAX_BUFFERED,
        ws_buffer_bytes: int = ws.MAX_BUFFERED_BYTES,
        tls: ServerTls | None = None,
        checkpoint: rest_cluster.CheckpointSource | None = None,
    ) -> None:
        self.settings = settings
        self.tls = tls
        self.port = settings.api.rest_port
        self.app = create_app(
            service,
            settings,
            ws_buffer=ws_buffer,
            ws_buffer_bytes=ws_buffer_bytes,
            checkpoint=checkpoint,
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        api = self.settings.api
        sock = _bind(api.rest_host, api.rest_port)
        config = uvicorn.Config(
            self.app, loop="none", lifespan="off", access_log=False, log_config=None,
            limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=GRACEFUL_S,
            ws="websockets-sansio", ws_max_size=min(api.max_request_body_bytes, 1 << 20),
            ws_per_message_deflate=False, proxy_headers=False, server_header=False,
        )  # fmt: skip
        if self.tls is not None:
            # The broker's one context (not one uvicorn would build from the files), so a
            # SIGHUP reload reaches this door too: https and wss only.
            config.load()
            config.ssl = self.tls.context
        server = self._server = _Server(config)
        task = self._task = asyncio.create_task(server.serve(sockets=[sock]), name="tq-http")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({task, ready}, timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED")
        ready.cancel()
        if not server.ready.is_set():
            why = task.exception() if task.done() else f"not serving after {START_TIMEOUT_S} s"
            await self.stop()
            sock.close()
            raise TqError(f"HTTP server on {api.rest_host}:{api.rest_port} failed: {why}")
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Refuse new connections, let in-flight requests finish (bounded), close sockets."""
        self.app.state.stopping = True
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        _, pending = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
        if pending:
            log.warning("http.stop_timeout seconds=%s: cancelling", STOP_TIMEOUT_S)
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("http.failed error=%r", task.exception())


def _bind(host: str, port: int) -> socket.socket:
    """Bind here (not in uvicorn) so a bind error is an exception, not ``sys.exit``."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise TqError(
            f"cannot listen on {host}:{port} for HTTP: {e}", ErrorCode.CONFIG_ERROR
        ) from e
    sock.setblocking(False)
    return sock
