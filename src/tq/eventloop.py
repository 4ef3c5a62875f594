"""The event loop every tq process runs on: uvloop where it is installed (CPython on Linux and
macOS: pyproject.toml's platform marker), else asyncio's own loop, which works the same, slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """``uvloop.new_event_loop`` when uvloop imports, else ``asyncio.new_event_loop``."""
    try:
        import uvloop  # noqa: PLC0415 - optional: absent where the platform marker excludes it
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop of ``loop_factory()``."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
