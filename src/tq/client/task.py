"""The Pythonic API: ``@tq.task`` turns a function into a task, ``@tq.handler`` a raw one.

``add = tq.task(fn)`` is a ``TaskFunction[P, R]``: ``add(2, 3)`` runs locally, ``add.submit(2,
3)`` queues it and returns a ``TaskHandle[R]`` whose ``result()`` is the decoded return value;
``P`` makes mypy check the submitted arguments. The task type is ``module.qualname`` unless
named, so a worker importing the same module serves it (a function in ``__main__`` is named
``__main__.fn``: name it explicitly). ``@tq.handler("resize")`` marks ``fn(payload: bytes) ->
bytes | None`` as the handler of a task type any language may submit. Workers find both kinds
by scanning a module for ``TaskFunction`` and ``RawHandler`` instances.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Self, TypeVar, Unpack, overload

from tq.client.defaults import default_async_client, default_client
from tq.client.handle import AsyncTaskHandle, TaskHandle
from tq.client.payload import PayloadCodec
from tq.client.specs import SubmitOptions
from tq.protocol import RetrySpec, ScheduleSpec

P = ParamSpec("P")
R = TypeVar("R")

RawFn = Callable[[bytes], bytes | None] | Callable[[bytes], Awaitable[bytes | None]]


class TaskFunction(Generic[P, R]):
    """A task: the function, its task type ``name`` and its default submit options."""

    def __init__(self, fn: Callable[P, Any], name: str, options: SubmitOptions) -> None:
        self.fn = fn
        self.name = name
        self._options = options
        self._codec = PayloadCodec(fn, name)
        #: What ``@tq.periodic`` attached: declared by the worker serving the task.
        self.schedules: tuple[ScheduleSpec, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @property
    def timeout(self) -> float | None:
        """The execution time limit in seconds (None: the worker's default)."""
        return self._options.get("timeout")

    @property
    def submit_options(self) -> SubmitOptions:
        """The options each ``submit`` sends (queue, priority, ...); see ``options()``."""
        return SubmitOptions(**self._options)

    def options(self, **options: Unpack[SubmitOptions]) -> Self:
        """A copy submitting with other defaults: ``add.options(priority=250).submit(1, 2)``."""
        clone = copy.copy(self)
        clone._options = SubmitOptions(**{**self._options, **options})
        return clone

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Queue ``fn(*args, **kwargs)`` through the default Client (blocking)."""
        client = default_client()
        task_id = client.submit(self.name, self.encode_args(args, kwargs), **self._options)
        return TaskHandle(client, task_id, self.decode_result)

    async def submit_async(self, *args: P.args, **kwargs: P.kwargs) -> AsyncTaskHandle[R]:
        """Queue ``fn(*args, **kwargs)`` through the running loop's default AsyncClient."""
        client = default_async_client()
        task_id = await client.submit(self.name, self.encode_args(args, kwargs), **self._options)
        return AsyncTaskHandle(client, task_id, self.decode_result)

    def encode_args(self, args: Sequence[object], kwargs: Mapping[str, object]) -> bytes:
        """The payload: msgspec JSON ``{"args": [...], "kwargs": {...}}``."""
        return self._codec.encode_args(args, kwargs)

    def decode_args(self, payload: bytes) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` decoded against the parameters' annotations (for the worker)."""
        return self._codec.decode_args(payload)

    def encode_result(self, value: object) -> bytes:
        """The result bytes for a return value (for the worker)."""
        return self._codec.encode_result(value)

    def decode_result(self, data: bytes) -> R:
        """The return value, decoded against the return annotation (Any when there is none)."""
        value: R = self._codec.decode_result(data)
        return value


class SyncTaskFunction(TaskFunction[P, R]):
    """A task made from a plain function."""

    def __init__(self, fn: Callable[P, R], name: str, options: SubmitOptions) -> None:
        super().__init__(fn, name, options)
        self._call = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, not as a task."""
        return self._call(*args, **kwargs)


class AsyncTaskFunction(TaskFunction[P, R]):
    """A task made from an ``async def`` function; ``R`` is what it returns when awaited."""

    def __init__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], name: str, options: SubmitOptions
    ) -> None:
        super().__init__(fn, name, options)
        self._call = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the coroutine function here and now, not as a task."""
        return self._call(*args, **kwargs)


class _TaskDecorator:
    def __init__(self, name: str | None, options: SubmitOptions) -> None:
        self.name = name
        self.options = options

    # Overlapping on purpose: the first match wins, and at run time so does the async check.
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncTaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> TaskFunction[Any, Any]:
        name = self.name or f"{fn.__module__}.{fn.__qualname__}"
        if inspect.iscoroutinefunction(fn):
            return AsyncTaskFunction(fn, name, self.options)
        return SyncTaskFunction(fn, name, self.options)


@overload
def task(fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTaskFunction[P, R]: ...  # type: ignore[overload-overlap]
@overload
def task(fn: Callable[P, R], /) -> SyncTaskFunction[P, R]: ...
@overload
def task(
    name: str | None = None,
    *,
    queue: str = "default",
    priority: int = 128,
    max_retries: int | None = None,
    timeout: float | None = None,
    retry: RetrySpec | None = None,
    result_ttl: float | None = None,
    failure_ttl: float | None = None,
    aging: bool = True,
) -> _TaskDecorator: ...
def task(
    name: str | Callable[..., Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 128,
    max_retries: int | None = None,
    timeout: float | None = None,
    retry: RetrySpec | None = None,
    result_ttl: float | None = None,
    failure_ttl: float | None = None,
    aging: bool = True,
) -> TaskFunction[Any, Any] | _TaskDecorator:
    """Make a function a task: ``@tq.task`` or ``@tq.task("name", queue="emails", ...)``.
    ``result_ttl`` / ``failure_ttl``: seconds its tasks are kept once completed / dead-lettered;
    ``aging`` False: its tasks keep their priority however long they wait."""
    options = SubmitOptions(queue=queue, priority=priority)
    for key, value in (
        ("max_retries", max_retries), ("timeout", timeout), ("retry", retry),
        ("result_ttl", result_ttl), ("failure_ttl", failure_ttl),
    ):  # fmt: skip
        if value is not None:
            options[key] = value  # type: ignore[literal-required]
    if not aging:
        options["aging"] = False
    if callable(name):  # bare @tq.task
        made: TaskFunction[Any, Any] = _TaskDecorator(None, options)(name)
        return made
    return _TaskDecorator(name, options)


@dataclass(frozen=True)
class RawHandler:
    """The handler of task type ``name``: ``fn(payload) -> bytes | None``, sync or async."""

    name: str
    fn: RawFn
    timeout: float | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, payload: bytes) -> bytes | Awaitable[bytes | None] | None:
        """Run the handler here and now, not as a task."""
        return self.fn(payload)


def handler(name: str, *, timeout: float | None = None) -> Callable[[RawFn], RawHandler]:
    """Handle task type ``name`` with raw bytes: ``@tq.handler("resize")``."""

    def decorate(fn: RawFn) -> RawHandler:
        return RawHandler(name, fn, timeout)

    return decorate
