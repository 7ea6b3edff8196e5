"""The documentation points at files that exist: Markdown links, and archived result folders by path."""
from __future__ import annotations

import re

import pytest

from conftest import REPO

pytestmark = pytest.mark.unit

DOCS = [REPO / "README.md", REPO / "results" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_archived_paths_exist(doc):
    text = doc.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):  # [text](target) and ![alt](target)
        if not re.match(r"[a-z]+:|#", target) and not (doc.parent / target.split("#")[0]).exists():
            missing.append(target)
    # Result sets moved under results/archive/ keep no copy at their old place: a path to one must be the new one.
    for path in re.findall(r"`(results/[^`*<> ]+)`", text):
        archived = path.startswith("results/archive/")
        moved = not archived and (REPO / "results" / "archive" / path[len("results/"):]).exists()
        if (archived or moved) and not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"{doc.name} points at missing files: {missing}"
