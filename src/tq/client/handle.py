"""Handles of submitted tasks: the id plus typed access to the outcome.

``TaskHandle[R]`` (blocking, over a ``Client``) and ``AsyncTaskHandle[R]`` (over an
``AsyncClient``) decode the result bytes with the task function's return type, so
``add.submit(2, 3).result()`` is an ``int``. A remote failure is raised as TaskFailedError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from tq.client.client import AsyncClient
from tq.client.sync import Client
from tq.protocol import TaskInfo

R = TypeVar("R")


class TaskHandle(Generic[R]):
    """A submitted task, seen through a blocking ``Client``."""

    def __init__(self, client: Client, task_id: str, decode: Callable[[bytes], R]) -> None:
        self.client = client
        self.id = task_id
        self._decode = decode

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    def result(self, timeout: float | None = None) -> R:
        """Wait for the task and return its decoded result; TaskFailedError (with the
        remote exception type and message) if it failed, UnavailableError TIMEOUT if late."""
        return self._decode(self.client.result(self.id, timeout))

    def wait(self, timeout: float | None = None) -> TaskInfo:
        return self.client.wait(self.id, timeout)

    def status(self) -> TaskInfo:
        return self.client.status(self.id)

    def cancel(self) -> None:
        self.client.cancel(self.id)


class AsyncTaskHandle(Generic[R]):
    """A submitted task, seen through an ``AsyncClient``."""

    def __init__(self, client: AsyncClient, task_id: str, decode: Callable[[bytes], R]) -> None:
        self.client = client
        self.id = task_id
        self._decode = decode

    def __repr__(self) -> str:
        return f"AsyncTaskHandle({self.id!r})"

    async def result(self, timeout: float | None = None) -> R:
        """As ``TaskHandle.result``, without blocking the event loop."""
        return self._decode(await self.client.result(self.id, timeout))

    async def wait(self, timeout: float | None = None) -> TaskInfo:
        return await self.client.wait(self.id, timeout)

    async def status(self) -> TaskInfo:
        return await self.client.status(self.id)

    async def cancel(self) -> None:
        await self.client.cancel(self.id)
