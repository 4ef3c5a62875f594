"""The HTTP door's one error shape: every refusal leaves as ``{"error": {"code", "name",
"message"}}`` with the HTTP status of its ``ErrorCode``, whether the service, pydantic,
Starlette's router (404, 405) or the door itself (426 for a plain GET of /ws) refused it.
A 401 carries ``WWW-Authenticate: Bearer``; a 429 ``Retry-After`` and ``retry_after``; a
503 NOT_LEADER ``leader`` (the leader's TCP address, null while none is known).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from tq.api.responses import (
    ErrorBody,
    ErrorResponse,
    RateLimitedBody,
    RateLimitedResponse,
    UnavailableBody,
    UnavailableResponse,
)
from tq.api.schemas import describe_errors
from tq.errors import ErrorCode, NotLeaderError, RateLimitedError, TqError


def install(app: FastAPI) -> None:
    """Route every refusal of ``app`` through the error shape."""
    app.add_exception_handler(TqError, _on_tq_error)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(HTTPException, _on_http_error)


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
    return tq_error_response(exc)


def tq_error_response(exc: TqError) -> JSONResponse:
    """The answer to a TqError: 401 names the Bearer scheme (``WWW-Authenticate``); 429 says
    when to retry (``Retry-After``, whole seconds rounded up, and ``retry_after`` exact);
    503 NOT_LEADER names the leader (``leader``, null when no node leads now)."""
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        body = RateLimitedBody(
            code=int(exc.code), name=exc.code.name, message=exc.message,
            retry_after=exc.retry_after,
        )  # fmt: skip
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        content = RateLimitedResponse(error=body).model_dump()
        return JSONResponse(content, exc.code.http_status, headers)
    if isinstance(exc, NotLeaderError):
        unavailable = UnavailableBody(
            code=int(exc.code), name=exc.code.name, message=exc.message, leader=exc.leader
        )
        content = UnavailableResponse(error=unavailable).model_dump()
        return JSONResponse(content, exc.code.http_status)
    if exc.code is ErrorCode.UNAUTHENTICATED:
        return error_response(exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
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


async def upgrade_required(request: Request) -> JSONResponse:
    """A plain GET of /ws (a browser, curl): say what the endpoint is instead of a 404."""
    message = (
        f"{request.url.path} is a WebSocket endpoint: connect with a WebSocket client "
        "(the request needs the headers Upgrade: websocket and Connection: Upgrade)"
    )
    headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
    return error_response(ErrorCode.UPGRADE_REQUIRED, message, headers=headers)
