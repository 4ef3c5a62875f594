"""Programs from outside Python that some tests use; ``make test`` installs them
(``scripts/install-test-deps``) where apt-get and root (or sudo) are available."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The path of ``name``; else skip saying why, or fail under CI (``CI=true``): CI machines
    have apt and root, so a missing tool there is a broken install step, not a skip."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} not installed (make test installs it: scripts/install-test-deps)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI installs it, so its absence is a broken install step")
    pytest.skip(reason)
