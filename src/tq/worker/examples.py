"""The example handlers shipped with tq: ``echo``, ``sleep`` and ``json``.

All are raw handlers (JSON bytes in, JSON bytes out), so a client in any language can call
them: ``tq worker tq.worker.examples`` serves them. They double as smoke tests of a
deployment (``echo``), of timeouts and graceful shutdown (``sleep``), and of Reject (``json``
refuses invalid JSON for good rather than retrying it).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

import msgspec

from tq.client.task import handler
from tq.worker.outcomes import Reject

#: Longest sleep the example accepts: a typo should not park a worker slot for a day.
MAX_SLEEP_S = 3600.0


@handler("echo")
def echo(payload: bytes) -> bytes:
    """Return the payload unchanged (any bytes, not only JSON)."""
    return payload


@handler("sleep")
async def sleep(payload: bytes) -> bytes:
    """``{"seconds": s}``: sleep ``s`` seconds (0..3600), return ``{"slept": s}``."""
    spec = _decode(payload)
    seconds = spec.get("seconds") if isinstance(spec, dict) else None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= MAX_SLEEP_S
    ):
        raise Reject(f'sleep expects {{"seconds": 0..{MAX_SLEEP_S:g}}}, got {_short(payload)}')
    await asyncio.sleep(seconds)
    return msgspec.json.encode({"slept": seconds})


@handler("json")
def json_summary(payload: bytes) -> bytes:
    """Parse a JSON document and describe it: type, size, SHA-256, keys or length, depth."""
    doc = _decode(payload)
    summary: dict[str, Any] = {
        "type": _json_type(doc),
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "depth": _depth(doc),
    }
    if isinstance(doc, dict):
        summary["keys"] = sorted(doc)
    elif isinstance(doc, list | str):
        summary["length"] = len(doc)
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        summary["finite"] = math.isfinite(doc)
    return msgspec.json.encode(summary)


def _decode(payload: bytes) -> Any:
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        # Invalid input stays invalid on every retry: reject it at once.
        raise Reject(f"payload is not valid JSON ({exc}): {_short(payload)}") from None
    except RecursionError:
        raise Reject(f"payload JSON is nested too deeply: {_short(payload)}") from None


def _json_type(doc: Any) -> str:
    if doc is None:
        return "null"
    if isinstance(doc, bool):
        return "boolean"
    if isinstance(doc, int | float):
        return "number"
    if isinstance(doc, str):
        return "string"
    return "array" if isinstance(doc, list) else "object"


def _depth(doc: Any) -> int:
    """Containers nested in one another (a scalar is 0, ``{"a": [1]}`` is 2), found without
    recursion: a deeply nested document must not hit the recursion limit."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, above = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, above + 1)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, above + 1) for child in children)
    return deepest


def _short(payload: bytes, limit: int = 80) -> str:
    text = payload[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(payload) > limit else ""))
