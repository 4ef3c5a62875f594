"""Field types of the HTTP API's JSON and query parameters, each validated exactly as its
OpenAPI schema says: numbers of a body are JSON numbers (pydantic alone would also take
``true`` or ``"5"``), times are read by ``tq.core.times`` (as the CLI reads them), cursors and
base64 follow the patterns the schema publishes. Query text is a number's only form there.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from tq.core.times import AGE_PATTERN, MAX_INSTANT, parse_instant
from tq.protocol.records import MAX_BACKOFF_FACTOR, MAX_SECONDS, NAME_MAX_LEN

MAX_INT = 2**31 - 1
#: Standard base64 with its padding, as ``payload_base64`` must be.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_C = "[A-Za-z0-9_-]"
#: A ``next_cursor``: URL-safe base64 of 1 to 64 bytes, its padding optional.
CURSOR_PATTERN = (
    f"^(?:(?:{_C}{{4}}){{1,21}}|(?:{_C}{{4}}){{0,20}}(?:{_C}{{2}}(?:==)?|{_C}{{3}}=?)"
    f"|(?:{_C}{{4}}){{21}}{_C}{{2}}(?:==)?)$"
)


def _no_surrogates(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


def _number(value: object) -> object:
    """A body's number is a JSON number: not ``true``, not ``"5"``."""
    if isinstance(value, bool | str):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return value


def _instant(value: object) -> object:
    """A body's time: a number stays one (bounded by the field), text is RFC 3339."""
    return parse_instant(value, unix=False) if isinstance(value, str) else _number(value)


def _since(value: object) -> object:
    """A body filter's time: also an age, counted back from now."""
    if isinstance(value, str):
        return parse_instant(value, time.time(), unix=False)
    return _number(value)


def _query_since(value: object) -> object:
    """A query filter's time: query text, where unix seconds are text too."""
    return parse_instant(value, time.time()) if isinstance(value, str) else value


def _cursor(text: str) -> str:
    if not re.fullmatch(CURSOR_PATTERN, text):
        raise ValueError(f"{text[:60]!r} is not a next_cursor value")
    return text


def base64_text(value: str) -> str:
    if not re.fullmatch(BASE64_PATTERN, value):
        raise ValueError("not base64 (A-Z a-z 0-9 + /, padded with =)")
    return value


def not_both(a: str, b: str) -> dict[str, Any]:
    """JSON Schema: ``a`` and ``b`` are not both given (null counts as not given)."""
    given = {"not": {"type": "null"}}
    return {"not": {"required": [a, b], "properties": {a: given, b: given}}}


_UNIX = {"type": "number", "minimum": 0, "maximum": MAX_INSTANT, "description": "unix seconds"}
_RFC3339 = {"type": "string", "format": "date-time", "description": "RFC 3339, with an offset"}
_AGE = {"type": "string", "pattern": AGE_PATTERN, "description": "that long ago: 10m, 2h, 1d"}
#: A body number: refuses booleans and text (see ``_number``).
NUMBER = BeforeValidator(_number)

Text = Annotated[str, AfterValidator(_no_surrogates)]
Name = Annotated[Text, Field(min_length=1, max_length=NAME_MAX_LEN)]
Base64 = Annotated[
    str,
    AfterValidator(base64_text),
    WithJsonSchema({"type": "string", "pattern": BASE64_PATTERN, "contentEncoding": "base64"}),
]
Count = Annotated[int, Field(ge=0, le=MAX_INT), NUMBER]
Priority = Annotated[int, Field(ge=0, le=255), NUMBER]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS), NUMBER]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS), NUMBER]
Factor = Annotated[float, Field(ge=1, le=MAX_BACKOFF_FACTOR), NUMBER]
Fraction = Annotated[float, Field(ge=0, le=1), NUMBER]
Instant = Annotated[
    float,
    Field(ge=0, le=MAX_INSTANT),
    BeforeValidator(_instant),
    WithJsonSchema({"anyOf": [_UNIX, _RFC3339]}),
]
Since = Annotated[
    float,
    Field(ge=0, le=MAX_INSTANT),
    BeforeValidator(_since),
    WithJsonSchema({"anyOf": [_UNIX, _RFC3339, _AGE]}),
]
QueryPriority = Annotated[int, Field(ge=0, le=255)]
QuerySince = Annotated[
    float,
    Field(ge=0, le=MAX_INSTANT),
    BeforeValidator(_query_since),
    WithJsonSchema({"anyOf": [_UNIX, _RFC3339, _AGE]}),
]
Cursor = Annotated[
    str,
    AfterValidator(_cursor),
    WithJsonSchema({"type": "string", "pattern": CURSOR_PATTERN}),
]
