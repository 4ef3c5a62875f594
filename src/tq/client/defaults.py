"""The clients that ``@tq.task`` functions submit through when none is named.

``set_default_client`` installs one; otherwise a ``Client`` (for ``.submit``) and, per event
loop, an ``AsyncClient`` (for ``.submit_async``) are made on first use from ``TQ_BROKER_URL``
or the default URL, presenting ``TQ_API_KEY`` if set. An AsyncClient is bound to one loop,
hence one default per loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

from tq.client.client import AsyncClient
from tq.client.sync import Client

#: The API key the default clients present (the CLI and ``tq worker`` read it too).
API_KEY_ENV = "TQ_API_KEY"
_lock = threading.Lock()
_client: Client | None = None
_async_client: AsyncClient | None = None
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def set_default_client(client: Client | AsyncClient | None) -> None:
    """Make ``client`` the default of its kind (None: forget both, make new ones on demand).

    The caller keeps ownership: a replaced default is not closed. An AsyncClient set here is
    used from whichever loop calls ``submit_async``, so set it from the loop that will use it.
    """
    global _client, _async_client  # noqa: PLW0603 - the process-wide default is the point
    with _lock:
        if client is None:
            _client = _async_client = None
        elif isinstance(client, AsyncClient):
            _async_client = client
        else:
            _client = client


def default_client() -> Client:
    global _client  # noqa: PLW0603
    with _lock:
        if _client is None:
            _client = Client(api_key=_api_key())
        return _client


def _api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def default_async_client() -> AsyncClient:
    """The default AsyncClient for the running event loop."""
    loop = asyncio.get_running_loop()
    with _lock:
        if _async_client is not None:
            return _async_client
        client = _per_loop.get(loop)
        if client is None:
            client = _per_loop[loop] = AsyncClient(api_key=_api_key())
        return client
