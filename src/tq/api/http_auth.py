"""The HTTP door's half of API keys: read the key a request presents (``Authorization: Bearer
<key>``, or ``X-API-Key: <key>``) and have the service authenticate it (``caller``), and say so
in the OpenAPI document when auth is enabled (``secure``: the security schemes and the 401,
403 and 429 answers of every /v1 operation). Whether the caller may do what it asks is the
service's to decide; /healthz, /readyz and the documents stay open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi

from tq.api.credentials import presented_key
from tq.api.responses import ErrorResponse, RateLimitedResponse
from tq.broker.access import Principal
from tq.broker.service import BrokerService

SCHEMES: Final = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (tq_<id>_<secret>) as `Authorization: Bearer <key>`.",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key in the X-API-Key header.",
    },
}
#: The answers every secured operation may give, beside its own.
REFUSALS: Final[dict[str, dict[str, Any]]] = {
    "401": {
        "description": "no API key, or one that is malformed, unknown, wrong, revoked or expired",
        "headers": {
            "WWW-Authenticate": {
                "description": "always `Bearer`",
                "required": True,
                "schema": {"type": "string"},
            }
        },
        "model": ErrorResponse,
    },
    "403": {
        "description": "the key lacks the permission, or the queue, the operation needs",
        "model": ErrorResponse,
    },
    "429": {
        "description": "the key is over its rate limit: retry after the given seconds",
        "headers": {
            "Retry-After": {
                "description": "seconds (an integer, rounded up) until the call is allowed",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "model": RateLimitedResponse,
    },
}


async def caller(request: Request) -> Principal:
    """The request's caller: the service authenticates the presented key (a cache hit after
    the key's first request: bcrypt runs only on a miss), or ANYONE with auth disabled."""
    service: BrokerService = request.app.state.service
    return await service.authenticate(presented_key(request.headers.get))


Caller = Annotated[Principal, Depends(caller)]


def secure(app: FastAPI, prefix: str = "/v1/") -> Callable[[], dict[str, Any]]:
    """``app.openapi`` declaring the API key schemes on every operation under ``prefix``,
    with their 401/403/429 answers (for a broker with auth enabled)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = SCHEMES
        models = components.setdefault("schemas", {})
        for model in (ErrorResponse, RateLimitedResponse):
            _add_model(models, model)
        for path, item in schema.get("paths", {}).items():
            if not path.startswith(prefix):
                continue
            for operation in item.values():
                operation["security"] = [{name: []} for name in SCHEMES]
                responses = operation.setdefault("responses", {})
                for status, answer in REFUSALS.items():
                    ref = {"$ref": f"#/components/schemas/{answer['model'].__name__}"}
                    responses[status] = {
                        "description": answer["description"],
                        **({"headers": answer["headers"]} if "headers" in answer else {}),
                        "content": {"application/json": {"schema": ref}},
                    }
        app.openapi_schema = schema
        return schema

    return openapi


def _add_model(models: dict[str, Any], model: type[ErrorResponse | RateLimitedResponse]) -> None:
    """``model``'s JSON schema (and those it refers to) under components/schemas."""
    full = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in full.pop("$defs", {}).items():
        models.setdefault(name, sub)
    models.setdefault(model.__name__, full)
