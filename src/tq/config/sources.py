"""The three configuration sources (YAML file, ``TQ_*`` environment, dotted overrides), each read
into a flat layer of ``(section, key) -> Provided`` that remembers where every value came from.

Typo protection lives here: an unknown section or key is a problem naming its origin and the
nearest known key. Problems are collected, not raised, so one run reports all of them.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml

from tq.config.model import SECTIONS
from tq.errors import ConfigError

ENV_PREFIX = "TQ_"
ENV_SEPARATOR = "__"
#: Names the YAML file when ``load()`` gets no path.
CONFIG_ENV = "TQ_CONFIG"


@dataclass(frozen=True, slots=True)
class Provided:
    """A value for one setting and a human description of where it came from."""

    value: object
    origin: str


Layer = dict[tuple[str, str], Provided]


# -- schema questions -------------------------------------------------------------------------


def _keys(section: str) -> list[str]:
    return list(SECTIONS[section].model_fields)


def _suggest(word: str, candidates: list[str], render: str = "{}") -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {render.format(close[0])}?)" if close else ""


def _unknown(section: object, key: object | None) -> str | None:
    """Why (section, key) names no setting, with a suggestion; None if it does."""
    if not isinstance(section, str) or section not in SECTIONS:
        return f"unknown section {section!r}" + _suggest(str(section), list(SECTIONS))
    if key is None:
        return None
    if not isinstance(key, str) or key not in SECTIONS[section].model_fields:
        return f"unknown key {section}.{key}" + _suggest(
            str(key), _keys(section), f"{section}.{{}}"
        )
    return None


def _shape(section: str, key: str) -> tuple[type | None, bool]:
    """(list or dict for a collection, else None; accepts null) for a setting, read from its
    annotation."""
    annotation: Any = SECTIONS[section].model_fields[key].annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        optional = type(None) in args
        annotation = next(arg for arg in args if arg is not type(None))
    origin = get_origin(annotation)
    kind = list if origin in (tuple, list) else dict if origin is dict else None
    return kind, optional


def parse_text(section: str, key: str, text: str) -> object:
    """Turn the text of an env var or CLI flag into the value it means for this setting.

    Lists: a JSON array, or comma-separated items (blanks dropped; "" is the empty list).
    Mappings (auth.rate_limits): a JSON object ("" is the empty mapping).
    Settings that accept null: "" means null. Everything else stays text for the validator,
    which parses numbers and booleans (true/false, 1/0, yes/no, on/off).
    """
    kind, optional = _shape(section, key)
    stripped = text.strip()
    if optional and not stripped:
        return None
    if kind is dict:
        if not stripped:
            return {}
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"is not a valid JSON object ({exc.msg} at column {exc.pos + 1})"
            ) from None
        if not isinstance(value, dict):
            raise ValueError("is not a JSON object")
        return value
    if kind is list:
        if stripped.startswith("["):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"is not a valid JSON list ({exc.msg} at column {exc.pos + 1})"
                ) from None
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return text


# -- YAML file --------------------------------------------------------------------------------


def read_file(path: Path, problems: list[str], named_by: str = "") -> Layer:
    """Read the YAML file; malformed or unreadable files raise at once (nothing else to say)."""
    label = f"config file {path}{named_by}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 ({exc.reason})"
        raise ConfigError(f"{label} cannot be read: {reason}") from exc
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{label}{where}: malformed YAML: {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: malformed YAML: {exc}") from exc
    finally:
        loader.dispose()

    lines = _key_lines(root, label, problems)

    def origin(*loc: str) -> str:
        line = lines.get(loc)
        return f"{label} line {line}" if line else label

    layer: Layer = {}
    if data is None:
        return layer
    if not isinstance(data, dict):
        problems.append(
            f"{label}: the top level must be a mapping of sections "
            f"({', '.join(SECTIONS)}), not {type(data).__name__}"
        )
        return layer
    for section, body in data.items():
        if (why := _unknown(section, None)) is not None:
            problems.append(f"{why} in {origin(str(section))}")
            continue
        if body is None:  # a section whose keys are all commented out
            continue
        if not isinstance(body, dict):
            problems.append(
                f"section {section} in {origin(section)} must be a mapping of settings, "
                f"not {type(body).__name__}"
            )
            continue
        for key, value in body.items():
            if (why := _unknown(section, key)) is not None:
                problems.append(f"{why} in {origin(section, str(key))}")
                continue
            layer[(section, key)] = Provided(value, origin(section, key))
    return layer


def _key_lines(
    root: yaml.Node | None, label: str, problems: list[str]
) -> dict[tuple[str, ...], int]:
    """1-based line of each section and setting key, and duplicate keys as problems (PyYAML
    silently keeps the last one, which hides exactly the kind of mistake this module exists for).
    """
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            loc = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if loc in lines:
                problems.append(
                    f"duplicate key {'.'.join(loc)} in {label} line {line} "
                    f"(first set on line {lines[loc]})"
                )
            lines[loc] = line
            if not prefix:
                walk(value_node, loc)

    if root is not None:
        walk(root, ())
    return lines


# -- environment ------------------------------------------------------------------------------


def read_env(env: Mapping[str, str], problems: list[str]) -> Layer:
    """``TQ_<SECTION>__<KEY>`` variables, names matched case-insensitively.

    Other ``TQ_*`` names are left alone (clients and tools may own some, like ``TQ_CONFIG``),
    except ``TQ_<SECTION>_<KEY>`` with one underscore, a typo that would otherwise do nothing.
    """
    layer: Layer = {}
    seen: dict[tuple[str, str], str] = {}
    for name, text in sorted(env.items()):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        rest = upper[len(ENV_PREFIX) :]
        origin = f"environment variable {name}"
        if ENV_SEPARATOR not in rest:
            for section in SECTIONS:
                key = rest[len(section) + 1 :].lower()
                if rest.startswith(f"{section.upper()}_") and key in SECTIONS[section].model_fields:
                    problems.append(
                        f"{origin} is not a setting: did you mean "
                        f"{ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}{key.upper()}?"
                    )
            continue
        section, _, key = (part.lower() for part in rest.partition(ENV_SEPARATOR))
        if (why := _unknown(section, key)) is not None:
            problems.append(f"{why} from {origin}")
            continue
        if (section, key) in seen:
            # Env names are case-sensitive on POSIX, so TQ_BROKER__PORT and tq_broker__port
            # can both exist; silently picking one would be a coin toss.
            problems.append(
                f"{origin} sets {section}.{key} again (already set by {seen[section, key]})"
            )
            continue
        seen[section, key] = name
        try:
            layer[(section, key)] = Provided(parse_text(section, key, text), origin)
        except ValueError as exc:
            problems.append(f"{section}.{key} = {text!r} from {origin}: {exc}")
    return layer


# -- overrides (CLI flags) --------------------------------------------------------------------


def read_overrides(
    overrides: Mapping[str, Any], problems: list[str], origins: Mapping[str, str] | None = None
) -> Layer:
    """``{"broker.port": 7421}``. String values are parsed like environment values, so a CLI
    can pass flag text through unchanged; other values are taken as they are. ``origins``
    names where an override came from (a CLI flag, ``"--port"``); else "override KEY"."""
    layer: Layer = {}
    for dotted, value in overrides.items():
        section, sep, key = str(dotted).partition(".")
        origin = (origins or {}).get(str(dotted)) or f"override {dotted}"
        if not isinstance(dotted, str) or not sep:
            problems.append(
                f"override key {dotted!r} must look like section.key (e.g. broker.port)"
            )
            continue
        if (why := _unknown(section, key)) is not None:
            problems.append(f"{why} from {origin}")
            continue
        try:
            parsed = parse_text(section, key, value) if isinstance(value, str) else value
        except ValueError as exc:
            problems.append(f"{dotted} = {value!r} from {origin}: {exc}")
            continue
        layer[(section, key)] = Provided(parsed, origin)
    return layer
