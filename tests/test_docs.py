"""The README and docs: short enough to start from, links that resolve, and every benchmark table equal to
what its results file gives, from a results file that says where and from what it was measured."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import tables  # noqa: E402

README_LIMIT_BYTES = 13 * 1024
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_a_short_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT_BYTES
    for heading in ("## Install", "## Quickstart", "## Measured", "## Documentation"):
        assert heading in readme


def test_generated_tables_equal_their_results_files() -> None:
    assert tables.stale_blocks() == [], "run .venv/bin/python benchmarks/tables.py"


def test_stale_tables_are_found(tmp_path) -> None:
    """The check itself: a figure edited by hand in a generated block is reported."""
    document = tmp_path / "page.md"
    fresh = tables.render("int8_accuracy", document)
    edited = fresh.replace("%", " %", 1)
    document.write_text(f"<!-- table: int8_accuracy -->\n{edited}<!-- /table -->\n")
    assert tables.stale_blocks((document,)) != []
    document.write_text(f"<!-- table: int8_accuracy -->\n{fresh}<!-- /table -->\n")
    assert tables.stale_blocks((document,)) == []


@pytest.mark.parametrize("results", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.stem)
def test_every_results_file_records_where_it_was_measured(results: Path) -> None:
    data = json.loads(results.read_text())
    assert data["schema_version"] >= 1
    for key in tables.PROVENANCE:
        assert data.get(key), f"{results.name} lacks {key}"
    assert data["machine"]["cpu_model"] and data["machine"]["cores"] and "cpu_flags" in data["machine"]
    assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?", data["commit"]), data["commit"]


def test_every_results_file_is_shown_and_every_block_has_one() -> None:
    shown = {m.group("name") for doc in tables.DOCUMENTS for m in tables.BLOCK.finditer(doc.read_text())}
    files = {path.stem for path in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert shown - {tables.SUMMARY_BLOCK} == files


@pytest.mark.parametrize("document", tables.DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_resolve(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if "://" in target:
            continue
        assert (document.parent / target).exists(), f"{document.name} links {target}, which does not exist"
