"""Value types of the settings: constrained scalars, enums, and ``conflict()`` for rules that
tie two settings together (the loader renders its context into a message naming both keys).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

KiB = 1024
MiB = 1024 * KiB

#: Error type of cross-field rule violations; the loader reads the ``tq_*`` context keys.
CONFLICT_ERROR = "tq_conflict"


def conflict(
    key: str, value: object, reason: str, related: str, related_value: object
) -> Exception:
    """A cross-field error naming both keys (dotted) and their values, for the loader to render."""
    return PydanticCustomError(
        CONFLICT_ERROR,
        "{reason}",
        {
            "reason": reason,
            "tq_key": key,
            "tq_value": value,
            "tq_related": related,
            "tq_related_value": related_value,
        },
    )


# -- value types ------------------------------------------------------------------------------


def _name(value: str) -> str:
    # Node and cluster names end up in etcd keys, metric labels and file names.
    if (
        not (1 <= len(value) <= 64)
        or not value[0].isalnum()
        or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in value)
    ):
        raise ValueError(
            "must be 1-64 ASCII letters, digits, '_', '.' or '-', starting alphanumeric"
        )
    return value


def _host(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a host name or IP address without spaces")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be host:port with a port in 1-65535")
    _host(host)
    return value


def url(schemes: tuple[str, ...]) -> AfterValidator:
    return AfterValidator(lambda value: _check_url(value, schemes))


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    example = f"{schemes[0]}://host:port"
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError(f"must be a URL like {example}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a URL like {example} (scheme {' or '.join(schemes)})")
    return value


def url_list(schemes: tuple[str, ...]) -> AfterValidator:
    """One URL, or several separated by commas (the nodes of a cluster), each in full and all
    with the same scheme; kept as written (the client splits it)."""

    def check(value: str) -> str:
        items = [item.strip() for item in value.split(",")]
        if len(items) > 1 and not all(items):
            raise ValueError("has an empty item in its comma-separated list (a stray comma?)")
        for item in items:
            try:
                _check_url(item, schemes)
            except ValueError as e:
                if len(items) == 1:
                    raise
                raise ValueError(f"item {item!r} {e}") from None
        if len({urlsplit(item).scheme for item in items}) > 1:
            raise ValueError(f"mixes {' and '.join(schemes)} URLs: use one scheme for every node")
        return value

    return AfterValidator(check)


def origin_url(value: str) -> str:
    if value != "*" and urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("must be '*' or an origin like https://example.com")
    return value


def _path(value: object) -> object:
    # Path("") is ".", which would silently put data in the working directory.
    if isinstance(value, str) and not value.strip():
        raise ValueError("must be a non-empty path")
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def unique(value: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for item in value:
        if item in seen:
            raise ValueError(f"lists {item!r} twice")
        seen.add(item)
    return value


Port = Annotated[int, Field(ge=0, le=65535)]  # 0: the OS picks a free port (tests, embedding)
FixedPort = Annotated[int, Field(ge=1, le=65535)]  # others must know it, so no ephemeral port
#: Durations stop here: the wire protocol's bound on seconds (tq.protocol.records.MAX_SECONDS,
#: ~300 years), so whatever the broker announces in WELCOME a client can decode.
MAX_SECONDS = 1e10
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
Count = Annotated[int, Field(ge=1)]
Bytes = Annotated[int, Field(ge=1)]
Name = Annotated[str, AfterValidator(_name)]
Host = Annotated[str, AfterValidator(_host)]
HostPort = Annotated[str, AfterValidator(_host_port)]
FilePath = Annotated[Path, BeforeValidator(_path)]
NonEmpty = Annotated[str, Field(min_length=1)]


class SyncMode(StrEnum):
    FSYNC = "fsync"  # every acknowledged write is on disk (group-committed)
    RELAXED = "relaxed"  # synced every relaxed_sync_interval_ms; power loss loses that window


class LogLevel(StrEnum):
    """Values are the ``logging`` level names."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Pool(StrEnum):
    ASYNCIO = "asyncio"
    THREAD = "thread"
    PROCESS = "process"


# Enum settings are matched case-insensitively: "FSYNC", "Json" and "info" are what people type.
SyncModeField = Annotated[SyncMode, BeforeValidator(_lower)]
LogLevelField = Annotated[LogLevel, BeforeValidator(_upper)]
LogFormatField = Annotated[LogFormat, BeforeValidator(_lower)]
PoolField = Annotated[Pool, BeforeValidator(_lower)]
