"""The handler registry: task type name -> handler, built from a module or an iterable.

Handlers are what ``@tq.task`` (``TaskFunction``: arguments and result encoded by the client
layer, msgspec, never pickle) and ``@tq.handler("name")`` (``RawHandler``: bytes in, bytes or
None out) make. ``Handler`` hides the difference behind ``call_sync``/``call_async`` taking
and returning bytes, so the pools never look inside a payload.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

from tq.client.task import RawHandler, TaskFunction
from tq.errors import ConfigError, TqError
from tq.worker.outcomes import Reject

HandlerSource = ModuleType | Iterable[TaskFunction[Any, Any] | RawHandler]


@dataclass(frozen=True, eq=False)
class Handler:
    """One registered handler, callable with a payload and returning the result bytes."""

    name: str
    source: TaskFunction[Any, Any] | RawHandler

    @property
    def is_async(self) -> bool:
        return self.source.is_async

    @property
    def timeout(self) -> float | None:
        return self.source.timeout

    @property
    def module(self) -> str:
        return str(getattr(self.source.fn, "__module__", "") or "")

    def call_sync(self, payload: bytes) -> bytes | None:
        fn: Callable[..., Any] = self.source.fn
        if isinstance(self.source, TaskFunction):
            args, kwargs = self._arguments(self.source, payload)
            return self.source.encode_result(fn(*args, **kwargs))
        return self._checked(fn(payload))

    async def call_async(self, payload: bytes) -> bytes | None:
        fn = cast(Callable[..., Awaitable[Any]], self.source.fn)
        if isinstance(self.source, TaskFunction):
            args, kwargs = self._arguments(self.source, payload)
            return self.source.encode_result(await fn(*args, **kwargs))
        return self._checked(await fn(payload))

    @staticmethod
    def _arguments(
        source: TaskFunction[Any, Any], payload: bytes
    ) -> tuple[list[Any], dict[str, Any]]:
        try:
            return source.decode_args(payload)
        except TqError as exc:
            # Arguments that do not decode never will: retrying would only waste attempts.
            raise Reject(f"cannot decode the arguments of {source.name!r}: {exc.message}") from exc

    def _checked(self, value: object) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise TypeError(
            f"handler {self.name!r} returned {type(value).__name__}; a raw handler must return"
            " bytes or None"
        )


class Registry:
    """Handlers by task type. Duplicate names are refused: which one would run is a guess."""

    def __init__(self, handlers: Iterable[TaskFunction[Any, Any] | RawHandler] = ()) -> None:
        self._by_name: dict[str, Handler] = {}
        for source in handlers:
            self.add(source)

    @classmethod
    def from_source(cls, source: HandlerSource) -> Registry:
        if isinstance(source, ModuleType):
            return cls(handlers_in(source))
        return cls(source)

    def add(self, source: TaskFunction[Any, Any] | RawHandler) -> Handler:
        if not isinstance(source, TaskFunction | RawHandler):
            raise ConfigError(
                f"{source!r} is not a tq handler: decorate it with @tq.task or @tq.handler(name)"
            )
        existing = self._by_name.get(source.name)
        if existing is not None and existing.source is not source:
            raise ConfigError(
                f"two handlers for task type {source.name!r}: {_where(existing.source)} and"
                f" {_where(source)}"
            )
        handler = Handler(source.name, source)
        self._by_name[source.name] = handler
        return handler

    def get(self, task_type: str) -> Handler | None:
        return self._by_name.get(task_type)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def modules(self) -> list[str]:
        """Modules a child process must import to rebuild this registry."""
        return sorted({h.module for h in self._by_name.values()})

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._by_name.values())


def handlers_in(module: ModuleType) -> list[TaskFunction[Any, Any] | RawHandler]:
    """The module's attributes that are handlers (imported ones included: re-exporting a
    handler from a package ``__init__`` is how several modules are served together)."""
    return [v for _, v in inspect.getmembers(module) if isinstance(v, TaskFunction | RawHandler)]


def import_handlers(module_name: str) -> ModuleType:
    """Import the handlers module by name; a failure names the module and the cause."""
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # any import-time error of user code is a configuration error
        raise ConfigError(
            f"cannot import handlers module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def handlers_of(modules: Iterable[str]) -> list[TaskFunction[Any, Any] | RawHandler]:
    """The handlers of several modules, imported in order (``tq worker A B``); a module with
    none is refused by name: it is a typo or the wrong module, not something to serve."""
    found: list[TaskFunction[Any, Any] | RawHandler] = []
    for name in modules:
        handlers = handlers_in(import_handlers(name))
        if not handlers:
            raise ConfigError(f"no tq handlers found in {name}")
        found += handlers
    if not found:
        raise ConfigError("name at least one handlers module")
    return found


def _where(source: TaskFunction[Any, Any] | RawHandler) -> str:
    fn = source.fn
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
