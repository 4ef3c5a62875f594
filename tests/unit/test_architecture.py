"""Dependencies point inward (STYLE.md): the import-linter contracts of pyproject.toml hold.

cli -> bench -> broker.server (composition root) -> api | broker.tcp | broker.jobs | broker.node
| worker | testing -> broker.service | client | cluster -> storage | protocol
-> core | config -> errors
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tq

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_the_import_contracts_hold() -> None:
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_public_namespace_is_curated() -> None:
    exported = set(tq.__all__)
    assert all(hasattr(tq, name) for name in exported)
    assert {"TqError", "ErrorCode", "TaskState"} <= exported
    assert not {n for n in exported if n.startswith("_") and n != "__version__"}
