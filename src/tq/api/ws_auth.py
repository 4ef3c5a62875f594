"""Who a WebSocket serves: the API key in the upgrade request's ``Authorization: Bearer
<key>`` (or ``X-API-Key``) header, or, since browsers cannot set headers on a WebSocket,
in a first message ``{"op": "auth", "api_key": "<key>"}`` sent within ``AUTH_TIMEOUT_S``.
The service authenticates it; a socket it refuses is closed with ``UNAUTHENTICATED_CLOSE``
and the reason. A key is never put in a URL (query strings end up in logs).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import msgspec
import pydantic
from fastapi import WebSocket, WebSocketDisconnect

from tq.api.credentials import presented_key
from tq.api.schemas import AuthOp
from tq.broker.access import Principal
from tq.broker.service import BrokerService
from tq.errors import UnauthenticatedError

#: Seconds a socket without a key in its upgrade headers has to send the auth message.
AUTH_TIMEOUT_S: Final = 5.0
#: Close code of a socket whose caller is not (or no longer) authenticated: no key, a bad
#: one, or its key revoked or expired while the socket was open (4000-4999: the application's).
UNAUTHENTICATED_CLOSE: Final = 4401
CLOSE_TIMEOUT_S: Final = 2.0
MAX_REASON_BYTES: Final = 123  #: RFC 6455: a close frame's reason fits in 123 bytes
#: How to authenticate, as a close reason says it (every reason fits in 123 bytes).
FIRST_MESSAGE: Final = (
    'send "Authorization: Bearer <key>" with the upgrade, '
    'or first {"op": "auth", "api_key": "<key>"}'
)


_AUTH = pydantic.TypeAdapter(AuthOp)


def authenticated(who: Principal) -> dict[str, Any]:
    """The answer to an auth message: which key the socket now acts as."""
    return {"type": "authenticated", "key_id": who.key_id, "name": who.name}


async def authenticate(service: BrokerService, ws: WebSocket) -> Principal:
    """The socket's caller (raises UnauthenticatedError; WebSocketDisconnect if it left)."""
    key = presented_key(ws.headers.get)
    if key is not None:
        return await service.authenticate(key)
    with contextlib.suppress(UnauthenticatedError):
        return await service.authenticate(None)  # auth disabled: anyone
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            message = await ws.receive()
    except TimeoutError:
        raise UnauthenticatedError(
            f"no API key within {AUTH_TIMEOUT_S:g} s: {FIRST_MESSAGE}"
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text") or message.get("bytes") or b""
    try:
        op = _AUTH.validate_json(raw)
    except pydantic.ValidationError:
        # Not described further: the message may hold a key, never echoed.
        raise UnauthenticatedError(f"no API key given: {FIRST_MESSAGE}") from None
    who = await service.authenticate(op.api_key)
    await ws.send_text(msgspec.json.encode(authenticated(who)).decode())
    return who


async def refuse(ws: WebSocket, why: str) -> None:
    """Close the socket as unauthenticated, saying why (bounded: the peer may not read)."""
    reason = why.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(UNAUTHENTICATED_CLOSE, reason)
