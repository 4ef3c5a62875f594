"""Settings the model knows but the product does not do yet, and what will build each one.

``load()`` refuses a non-default value of any key listed here, so a setting never pretends (a
broker told ``auth.enabled=true`` must not serve plaintext). The issue that builds a feature
deletes its keys from ``UNBUILT``; a test then insists that some code reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pydantic

from tq.config.model import SECTIONS

_DASHBOARD = "the web dashboard comes with the dashboard work"

#: Dotted key -> what will build it. Delete an entry in the change that makes code read the key.
UNBUILT: Mapping[str, str] = MappingProxyType(
    {
        "api.dashboard_enabled": _DASHBOARD,
    }
)


def default_of(section: str, key: str) -> object:
    """The value a setting has when nothing sets it."""
    return getattr(SECTIONS[section](), key)


def is_default(section: str, key: str, value: object) -> bool:
    """Whether ``value`` (as a source gave it: text, YAML data or a typed value) validates to
    the setting's default. It is validated in a section of otherwise default settings, so the
    section's own rules apply; a value that fails them is not the default."""
    model = SECTIONS[section]
    try:
        validated = getattr(model.model_validate({key: value}), key)
    except pydantic.ValidationError:
        return False
    return bool(validated == default_of(section, key))


def unbuilt_reason(section: str, key: str, value: object) -> str | None:
    """Why ``value`` cannot be used for ``section.key`` yet; None when it may be."""
    why = UNBUILT.get(f"{section}.{key}")
    if why is None or is_default(section, key, value):
        return None
    return why
