"""How REST routes keep to their OpenAPI document where pydantic alone does not: a query
parameter the route does not take is refused (422 naming it, with the name meant when it is
a near miss such as the CLI's ``since``), as an unknown body field is, since a misspelt filter
would otherwise list everything; a task id segment never swallows the ``batch`` and ``bulk``
routes; links from a submit's answer to the routes taking its id.
"""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor

from tq.errors import ValidationError

#: Names a user of the CLI (or of other APIs) may try, and what this API calls them.
_ALIASES = {"since": "created_after", "until": "created_before", "type": "task_type"}
_QUERY_NAMES: dict[str, frozenset[str]] = {}


async def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take, or one given twice."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route)
    seen: set[str] = set()
    for name, value in request.query_params.multi_items():
        if name not in known:
            raise ValidationError(
                f"query.{name}: unknown parameter (got {value[:60]!r}){_hint(name, known)}; "
                f"{request.method} {route.path_format} takes "
                f"{', '.join(sorted(known)) or 'no query parameters'}"
            )
        if name in seen:
            raise ValidationError(f"query.{name}: given more than once; give it once")
        seen.add(name)


def _query_names(route: APIRoute) -> frozenset[str]:
    # Cached per route id (routes are unhashable); every app's copy of a route takes the same.
    if (cached := _QUERY_NAMES.get(route.unique_id)) is not None:
        return cached
    names: set[str] = set()
    dependants = [route.dependant]
    while dependants:
        dependant = dependants.pop()
        dependants.extend(dependant.dependencies)
        for param in dependant.query_params:
            model = param.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):  # a Query() model
                names.update(f.alias or n for n, f in model.model_fields.items())
            else:
                names.add(param.alias)
    known = _QUERY_NAMES[route.unique_id] = frozenset(names)
    return known


def _hint(name: str, known: frozenset[str]) -> str:
    near = _ALIASES.get(name.lower())
    if near not in known:
        near = next(iter(difflib.get_close_matches(name, sorted(known), n=1)), None)
    return f" (did you mean {near}?)" if near else ""


class _TaskIdSegment(Convertor[str]):
    """A path segment that may be a task id: any but "batch" and "bulk", which are routes of
    their own, so ``GET /v1/tasks/batch`` is a 405 (POST only), not a bad task id."""

    regex = "(?!(?:batch|bulk)(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("tq_task_id", _TaskIdSegment())
#: The path of one task: its segment is never "batch" or "bulk" (see ``_TaskIdSegment``).
TASK_PATH = "/v1/tasks/{task_id:tq_task_id}"


def links(task_id: str) -> dict[str, Any]:
    """OpenAPI links from a response holding task ids to the routes taking one (what a
    client, or schemathesis's stateful phase, may call next)."""
    ops = ("get_task", "cancel_task", "retry_task", "delete_task")
    return {op: {"operationId": op, "parameters": {"task_id": task_id}} for op in ops}
