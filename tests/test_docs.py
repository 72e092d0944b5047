"""The docs hold together: every relative link and picture in the README, docs/ and the model
cards points at a file that exists, every dated lab note is listed in docs/README.md, and the
README stays a page a newcomer reads."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "studio" / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
         *sorted((ROOT / "weights").glob("*/README.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(page):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_every_lab_note_is_listed_in_the_docs_index():
    index = (ROOT / "docs" / "README.md").read_text()
    unlisted = [p.name for p in sorted((ROOT / "docs" / "notes").glob("*.md")) if f"notes/{p.name}" not in index]
    assert not unlisted, f"docs/README.md does not list {unlisted}"
    names = [p.name for p in (ROOT / "docs" / "notes").glob("*.md")]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md", n) for n in names), names


def test_the_readme_is_one_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
