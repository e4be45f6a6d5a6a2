"""The README's result tables are the committed figure files, not numbers typed by hand."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("table", sorted((ROOT / "figures").glob("table1_*.md")), ids=lambda p: p.name)
def test_readme_shows_each_committed_table_row(table):
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert len(rows) == 6, f"{table.name}: expected the 6 rows of Table 1"
    missing = [r for r in rows if r not in readme]
    assert not missing, f"README.md is out of date with {table.name}; rows not in it: {missing}"
