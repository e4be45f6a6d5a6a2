"""The README's results are the committed table files (tables, notes and computed findings), not
numbers typed by hand: its generated block must equal what `make readme` builds from figures/."""

from pathlib import Path

from s2d_utils import report

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_block_is_generated_from_the_committed_tables():
    readme = (ROOT / "README.md").read_text()
    assert report.readme_results(ROOT) in readme, "README.md is out of date with figures/: run `make readme`"


def test_every_committed_table_has_its_figure_and_the_readme_shows_it():
    for table, figure, _ in report.README_TABLES:
        assert (ROOT / "figures" / f"{table}.csv").exists() and (ROOT / "figures" / f"{figure}.png").exists()


def test_update_readme_rewrites_only_the_block(tmp_path):
    (tmp_path / "figures").mkdir()
    for table, _, _ in report.README_TABLES:
        (tmp_path / "figures" / f"{table}.md").write_text(f"# title\n\n| a |\n|---|\n| {table} |\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nstale 99.9%\n{report.README_END}\nafter\n")
    assert report.update_readme(readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "stale" not in text
    assert "| table1_coin_flip |" in text and not report.update_readme(readme)
