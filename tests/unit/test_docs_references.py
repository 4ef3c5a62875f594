"""The user documentation points only at what a user of this repository has: no folder outside
it, no path of the machine it was written on, no internal issue number, and every relative
link of a page names a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTSIDE = [
    (r"\.\./[\w.-]+", "a folder outside the repository"),
    (r"/work/", "a path of the machine the page was written on"),
    (r"\bissues? (?:#\s*)?\d+\b", "an internal issue number"),
]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_points_at_nothing_a_user_lacks(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [
        f"{match.group(0)!r}: {why}"
        for pattern, why in OUTSIDE
        for match in re.finditer(pattern, text, re.IGNORECASE)
    ]
    assert found == [], f"{page.name}: {found}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_names_a_file_of_the_repository(page: Path) -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert missing == [], f"{page.name} links to {missing}"
