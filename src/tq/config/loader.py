"""``load()``: layer defaults < YAML file < environment < overrides, validate once, and translate
every pydantic error into one ``ConfigError`` naming key, value, origin and reason. A value for
a setting that is not built yet (``unbuilt``) is refused first, before any rule it would break.

pydantic-settings' own sources are not used: they ignore unknown ``TQ_*`` variables and cannot
say which source a bad value came from, and those two things are what this module is for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import pydantic
from pydantic_core import ErrorDetails

from tq.config.fields import CONFLICT_ERROR
from tq.config.model import SECTIONS, Settings
from tq.config.sources import (
    CONFIG_ENV,
    Layer,
    Provided,
    read_env,
    read_file,
    read_overrides,
)
from tq.config.unbuilt import default_of, unbuilt_reason
from tq.errors import ConfigError

_DEFAULT_ORIGIN = "the default"
#: Errors whose "value" is not the user's (a whole mapping, or nothing at all).
_NO_VALUE = {"missing": "is required", "extra_forbidden": "is not a known key"}


def load(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    origins: Mapping[str, str] | None = None,
) -> Settings:
    """The effective settings: defaults < YAML file < ``TQ_*`` environment < ``overrides``.

    ``path`` None falls back to ``$TQ_CONFIG``, then to no file. ``env`` None reads
    ``os.environ`` (pass ``{}`` to ignore it). ``overrides`` maps ``"section.key"`` to a value;
    ``origins`` may name where one came from (``"--port"``) for the error messages.
    Raises ``ConfigError`` listing every problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    problems: list[str] = []
    layers: list[Layer] = []
    if path is not None:
        layers.append(read_file(Path(path), problems))
    elif named := _config_env(environ):
        layers.append(read_file(Path(named[1]), problems, f" (named by {named[0]})"))
    layers.append(read_env(environ, problems))
    layers.append(read_overrides(overrides or {}, problems, origins or {}))
    if problems:
        raise ConfigError(_summary(problems))

    merged: Layer = {}
    for layer in layers:
        merged.update(layer)  # later sources win, whole values (lists are replaced, not merged)
    data: dict[str, dict[str, object]] = {}
    for (section, key), provided in merged.items():
        if (why := unbuilt_reason(section, key, provided.value)) is not None:
            # Reported as not built, and left out: a rule it breaks (a TLS key without its
            # certificate) would only distract from the one thing to do, removing it.
            default = _show(default_of(section, key))
            problems.append(
                f"{_setting(f'{section}.{key}', provided.value, merged)}: not available yet "
                f"\N{EM DASH} {why}; leave it at its default {default}"
            )
            continue
        data.setdefault(section, {})[key] = provided.value
    try:
        settings = Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        problems += [_describe(err, merged) for err in exc.errors()]
        raise ConfigError(_summary(problems)) from exc
    if problems:
        raise ConfigError(_summary(problems))
    return settings


def dump(settings: Settings) -> dict[str, Any]:
    """Plain JSON/YAML data of every setting (``tq config``); ``load`` of it gives ``settings``."""
    return settings.model_dump(mode="json")


def setting_keys() -> list[str]:
    """Every dotted key, in file order (for CLI help and completion)."""
    return [f"{section}.{key}" for section, model in SECTIONS.items() for key in model.model_fields]


def _config_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    for name, value in environ.items():
        if name.upper() == CONFIG_ENV and value.strip():
            return name, value
    return None


def _summary(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"invalid configuration: {problems[0]}"
    return f"invalid configuration ({len(problems)} problems):\n" + "\n".join(
        f"  - {problem}" for problem in problems
    )


def _describe(err: ErrorDetails, merged: Layer) -> str:
    """One line: ``broker.port = 70000 from environment variable TQ_BROKER__PORT: <why>``."""
    loc = err["loc"]
    ctx = err.get("ctx") or {}
    if err["type"] == CONFLICT_ERROR:
        key = str(ctx["tq_key"])
        line = f"{_setting(key, ctx['tq_value'], merged)}: {ctx['reason']}"
        related = str(ctx["tq_related"])
        if related != key:
            line += f" ({_setting(related, ctx['tq_related_value'], merged)})"
        return line
    key = ".".join(str(part) for part in loc[:2]) or "settings"
    # Inside a list or a member the element is named, and the origin is the whole setting's.
    inner = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[2:])
    if err["type"] in _NO_VALUE:
        return f"{key}{inner} from {_origin(key, merged)}: {_NO_VALUE[err['type']]}"
    return f"{_setting(key, err['input'], merged, inner)}: {_reason(err)}"


def _setting(key: str, value: object, merged: Layer, inner: str = "") -> str:
    return f"{key}{inner} = {_show(value)} from {_origin(key, merged)}"


def _origin(key: str, merged: Layer) -> str:
    section, _, name = key.partition(".")
    provided: Provided | None = merged.get((section, name))
    return provided.origin if provided else _DEFAULT_ORIGIN


def _show(value: object) -> str:
    """The value in YAML/JSON spelling (null, true, 'text', [..]): no PosixPath(...) wrappers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, PurePath):
        value = str(value)
    elif isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _reason(err: ErrorDetails) -> str:
    if err["type"] == "path_type":
        return "input should be a path"
    msg = err["msg"].removeprefix("Value error, ")
    # Lists are validated into tuples (hashable, frozen); users wrote lists.
    msg = msg.replace("tuple", "list")
    return msg[:1].lower() + msg[1:]
