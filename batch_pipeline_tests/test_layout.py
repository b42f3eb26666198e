"""The layout shows the job: every product folder is one subject of a few modules, no module
grows past a few hundred lines, and ``docs/architecture.md`` names what the tree holds and
nothing it no longer holds."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "batch_pipeline"
MAX_MODULES = 9  # "at most about 8" per folder, besides __init__ and __main__
MAX_LINES = 420  # "no product module over about 400 lines"


def modules(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]


def folders() -> list[Path]:
    return [p.parent for p in PACKAGE.rglob("__init__.py")]


def test_no_folder_holds_more_than_a_few_modules() -> None:
    crowded = {str(f.relative_to(ROOT)): len(modules(f)) for f in folders()}
    assert {f: n for f, n in crowded.items() if n > MAX_MODULES} == {}


def test_no_module_is_long() -> None:
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in
               PACKAGE.rglob("*.py")}  # fmt: skip
    assert {p: n for p, n in lengths.items() if n > MAX_LINES} == {}


def test_the_architecture_names_every_package_and_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    missing = [
        str(p.relative_to(ROOT))
        for f in folders()
        for p in [f, *modules(f)]
        if p != PACKAGE and p.stem not in words
    ]
    assert missing == []


def test_the_architecture_names_no_module_that_is_gone() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"([a-z_]+)\.py\b", text))
    present = {p.stem for folder in (PACKAGE, ROOT / "batch_pipeline_tests") for p in
               folder.rglob("*.py")}  # fmt: skip
    assert named - present == set()
