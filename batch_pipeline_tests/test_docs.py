"""The docs point at what exists: a README section named in dagster.yaml is a heading of the
README, and every in-page link of the README reaches a heading."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def headings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return {m.group(1).strip() for m in re.finditer(r"^#{2,3} (.+)$", text, re.MULTILINE)}


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def test_sections_named_in_dagster_yaml_exist() -> None:
    comments = "\n".join(
        line for line in (ROOT / "dagster.yaml").read_text().splitlines() if line.startswith("#")
    )
    named = re.findall(r'README(?:\'s|,)? "([^"]+)"', comments)
    assert named, "dagster.yaml names no README section"
    assert set(named) <= headings(), (named, headings())


def test_readme_links_within_the_page_reach_a_heading() -> None:
    text = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links
    assert links <= {anchor(h) for h in headings()}
