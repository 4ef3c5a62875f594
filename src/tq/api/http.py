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
from collections.abc import Generator, Mapping

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tq.api import rest, ws
from tq.api.responses import ErrorBody, ErrorResponse
from tq.api.schemas import describe_errors
from tq.broker.service import BrokerService
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


def error_response(
    code: ErrorCode,
    message: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody.of(code, message))
    return JSONResponse(body.model_dump(), status or code.http_status, headers)


async def _on_tq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TqError)
    return error_response(exc.code, exc.message)


async def _on_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    bad_json = [e for e in errors if e["type"] == "json_invalid"]
    if bad_json:
        why = bad_json[0].get("ctx", {}).get("error", "malformed")
        return error_response(ErrorCode.PROTOCOL_ERROR, f"request body is not valid JSON: {why}")
    if any(tuple(e["loc"]) == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
        # FastAPI parses JSON only when the request says it is JSON (curl -d says it is a form).
        message = "the request body must be a JSON object sent as Content-Type: application/json"
        return error_response(ErrorCode.INVALID_ARGUMENT, message)
    return error_response(ErrorCode.INVALID_ARGUMENT, describe_errors(errors))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        code = ErrorCode.ROUTE_NOT_FOUND
        message = f"no route for {where} (the routes are listed at /docs)"
    elif exc.status_code == 405:
        allowed = headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        code = ErrorCode.METHOD_NOT_ALLOWED
        message = f"{request.url.path} does not serve {request.method}: it serves {allowed}"
    else:
        code, message = ErrorCode.PROTOCOL_ERROR, f"{where}: {exc.detail}"
    return error_response(code, message, exc.status_code, headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: Starlette, scope: Scope) -> list[str]:
    """Every method some route serves at this path. (Starlette's own ``Allow`` names only the
    first route whose path matched, e.g. GET of GET and DELETE /v1/tasks/{id}.) Asked of each
    route through ``matches`` alone, as included routers nest theirs."""
    return [
        method
        for method in _METHODS
        if any(r.matches({**scope, "method": method})[0] == Match.FULL for r in app.router.routes)
    ]


async def _upgrade_required(request: Request) -> JSONResponse:
    """A plain GET of /ws (a browser, curl): say what the endpoint is instead of a 404."""
    message = (
        f"{request.url.path} is a WebSocket endpoint: connect with a WebSocket client "
        "(the request needs the headers Upgrade: websocket and Connection: Upgrade)"
    )
    headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    return error_response(ErrorCode.UPGRADE_REQUIRED, message, headers=headers)


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
) -> FastAPI:
    app = FastAPI(
        title="tq",
        version=__version__,
        description="Management API of the tq broker. Errors: "
        '`{"error": {"code", "name", "message"}}` with a stable code.',
    )
    app.state.service = service
    app.state.stopping = False
    app.add_exception_handler(TqError, _on_tq_error)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.include_router(rest.health)
    if settings.api.rest_enabled:
        app.include_router(rest.router)
    if settings.api.websocket_enabled:
        app.add_api_websocket_route("/ws", ws.endpoint(service, ws_buffer, ws_buffer_bytes))
        app.add_api_route("/ws", _upgrade_required, methods=["GET"], include_in_schema=False)
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
    ) -> None:
        self.settings = settings
        self.port = settings.api.rest_port
        self.app = create_app(
            service, settings, ws_buffer=ws_buffer, ws_buffer_bytes=ws_buffer_bytes
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
