"""Where each door finds the API key a caller presents, read one way for HTTP headers, the
WebSocket upgrade and gRPC metadata: ``Authorization: Bearer <key>``, else ``X-API-Key:
<key>``. Only reading: the service authenticates what is found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tq.errors import UnauthenticatedError

API_KEY_HEADER: Final = "x-api-key"
AUTHORIZATION: Final = "authorization"


def presented_key(get: Callable[[str], str | None]) -> str | None:
    """The key found through ``get`` (a lower-case header or metadata name -> its value), or
    None. An Authorization of another scheme is refused rather than ignored: the caller meant
    to authenticate, and must hear why it did not."""
    authorization = get(AUTHORIZATION)
    if authorization is not None:
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise UnauthenticatedError(
                "the authorization header must be 'Bearer <API key>' (or send the key as x-api-key)"
            )
        return key.strip()
    alone = get(API_KEY_HEADER)
    return None if alone is None else alone.strip()
