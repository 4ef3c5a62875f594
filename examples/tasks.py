"""Tasks of the examples; `tq worker examples.tasks` (run from the repository root) serves them.

Each task is named explicitly, so the name does not depend on how the module is imported.
"""

import asyncio

import tq


@tq.task("examples.add")
def add(x: int, y: int) -> int:
    return x + y


@tq.task("examples.fail", max_retries=0)
def fail(message: str) -> None:
    raise ValueError(message)


@tq.task("examples.slow_square", timeout=10)
async def slow_square(x: int, seconds: float = 0.1) -> int:
    await asyncio.sleep(seconds)
    return x * x
