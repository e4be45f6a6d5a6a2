"""Notebook smoke tests. The suite is a fresh clone of the repository (nothing beside it, no
S2D_DATA, offline) where `make reproduce PROFILE=smoke` runs every notebook as a new user would;
then we check the numbers each notebook's last cell recorded against its table files, and that the
run left the clone's `git status` clean. Other tests run one notebook with papermill into a
temporary results folder."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2d_utils import paths, registry
from s2d_utils.paper import CONSTANT
from s2d_utils.system2 import bsm, cot, rar, s2a

pytestmark = pytest.mark.notebook


NOTEBOOKS = registry.ALL
# variables that would point a run at data, results or code outside the clone, or tie the inner
# make to the outer one (`make test` runs us)
_OUTSIDE = ("S2D_DATA", "S2D_RESULTS", "S2D_FIGURES", "S2D_MODELS", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def run_notebook(name: str, tmp_path, *params: str, check: bool = True):
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    env.update(S2D_RESULTS=str(tmp_path / "results"), S2D_FIGURES=str(tmp_path / "figures"), HF_HUB_OFFLINE="1")
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / f"{name}.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                           "-p", "PROFILE", "smoke", *params, "--cwd", str(paths.NOTEBOOKS), "--log-level", "WARNING"],
                          env=env, capture_output=True, text=True, timeout=900)
    if not check:
        return proc, out
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = tmp_path / "results" / "metrics" / f"{name}.smoke.json"
    return json.loads(metrics.read_text()) if metrics.exists() else None


def git(*args: str, cwd=paths.ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120).stdout


def clone_as_it_stands(dest: Path) -> Path:
    """`git clone` the repository into ``dest``, then bring over the working tree's uncommitted
    changes and new files that git does not ignore, committed in the clone so its `git status`
    starts clean: the tests check the code being tested, and in a clean checkout (CI) this is a
    plain clone. Nothing ignored (results/, .venv/) and nothing outside the repository comes along."""
    git("clone", "--quiet", str(paths.ROOT), str(dest))
    changed = [p for p in git("ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0")
               if p and (paths.ROOT / p).is_file()]
    deleted = [p for p in git("ls-files", "-z", "--deleted").split("\0") if p]
    for rel in changed:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(paths.ROOT / rel, dest / rel)
    for rel in deleted:
        (dest / rel).unlink(missing_ok=True)
    if changed:
        git("add", "--", *changed, cwd=dest)
    if deleted:
        git("rm", "-q", "--cached", "--ignore-unmatch", "--", *deleted, cwd=dest)
    if git("status", "--porcelain", cwd=dest).strip():
        git("-c", "user.name=s2d tests", "-c", "user.email=tests@localhost", "commit", "-q", "--no-verify", "-m",
            "the working tree under test", cwd=dest)
    return dest


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Clone this repository into an empty temporary folder (`clone_as_it_stands`) and run `make
    reproduce PROFILE=smoke` there, as on a fresh machine: no ../shared beside it, no S2D_DATA,
    HF_HUB_OFFLINE on (a notebook reaching for the network fails). Shared with the clone, not rebuilt:
    the venv running these tests (make's venv targets are marked up to date with -o, the clone's code
    comes first on PYTHONPATH) and the converted embedded models (S2D_MODELS, a cache of the pinned
    wheels). Returns the clone; its results/ and figures/ hold what the notebooks wrote."""
    root = clone_as_it_stands(tmp_path_factory.mktemp("fresh") / "s2d")
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    env.update(PYTHONPATH=str(root), S2D_MODELS=str(paths.MODELS), HF_HUB_OFFLINE="1")
    where = subprocess.run([sys.executable, "-c", "import s2d_utils.paths as p; print(p.ROOT)"], env=env, cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == root, f"the clone's notebooks would import s2d_utils from {where}"
    start = time.monotonic()
    proc = subprocess.run(["make", "-o", f"{venv}/.installed", "-o", f"{venv}/.qwen", "reproduce", "PROFILE=smoke",
                           f"VENV={venv}"], cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    print(f"fresh clone: make reproduce PROFILE=smoke took {time.monotonic() - start:.0f} s\n{proc.stdout[-2000:]}")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "preflight (profile smoke):" in proc.stdout and proc.stdout.index("preflight") < proc.stdout.index("== 01_")
    return root


@pytest.mark.slow
def test_a_fresh_clone_reproduces_every_table_and_leaves_git_status_clean(suite):
    committed = git("ls-files", "figures", cwd=suite).split()
    tables = [Path(f) for f in committed if Path(f).suffix in (".md", ".csv", ".png")]
    assert len(tables) >= 17
    for f in tables:  # each committed (cpu) table and figure has its smoke counterpart, written by this run
        smoke = suite / f.with_name(f"{f.stem}.smoke{f.suffix}")
        assert smoke.exists() and smoke.stat().st_size > 0, smoke
    for name in NOTEBOOKS:
        assert (suite / "results" / "executed" / f"{name}.ipynb").exists()
        assert (suite / "results" / "metrics" / f"{name}.smoke.json").exists() or name in ("06_summary", "07_routing")
    status = git("status", "--porcelain", "--untracked-files=all", cwd=suite)
    assert status == "", f"the smoke run left these in the clone's git status:\n{status}"


def metrics_of(root, name):
    return json.loads((root / "results" / "metrics" / f"{name}.smoke.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name,task", [("01_rar_last_letter", "last_letter"), ("02_rar_coin_flip", "coin_flip")])
def test_rar_notebook_records_every_table1_row_and_its_files_agree(name, task, suite):
    m, tmp_path = metrics_of(suite, name), suite
    rows = m["rows"]
    # coin flip's answers are a closed set (yes/no): its table adds the best constant answer
    assert list(rows) == list(rar.ROWS) + ([CONSTANT] if task == "coin_flip" else [])
    assert {r["n"] for r in rows.values()} == {6}
    assert rows[rar.TWO_STEP]["tokens"] > rows[rar.SYSTEM1]["tokens"]  # two calls, both counted
    assert m["model"] == "smollm2-135m-instruct" and m["manifest"]["parameters"]["model"] == m["model"]
    assert set(m["manifest"]["stage_seconds"]) >= {"evaluate System 1 and System 2", "sample distillation data",
                                                   "fine-tune", "evaluate distilled"}
    assert set(m["filters"]) == set(rar.STUDENTS) and m["filters"][rar.DISTILL_SYSTEM2]["inputs"] == 6
    assert m["findings"] and m["findings"][0].startswith(f"{rar.TWO_STEP} ")
    figures, nb = tmp_path / "figures", registry.notebook(name)
    with open(figures / f"{nb.table}.smoke.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["Method"] for r in table] == list(rows)
    for r in table:  # the table shows the recorded numbers
        assert float(r["Acc % (ours)"]) == round(100 * rows[r["Method"]]["accuracy"], 1)
        assert float(r["#Tokens (ours)"]) == round(rows[r["Method"]]["tokens"], 1)
    md = (figures / f"{nb.table}.smoke.md").read_text()
    assert md.startswith(f"# {nb.title}\n") and all(f in md for f in m["findings"])
    assert (figures / f"{nb.figure}.smoke.png").stat().st_size > 10_000
    assert git("status", "--porcelain", "figures", cwd=tmp_path) == ""  # smoke never writes the cpu profile's files


@pytest.mark.slow
def test_s2a_notebook_records_table2_with_usc_diagnostics_and_its_files_agree(suite):
    m, tmp_path = metrics_of(suite, "03_s2a_sycophancy"), suite
    rows = m["rows"]
    assert list(rows) == list(s2a.ROWS)
    assert {r["n"] for r in rows.values()} == {6} and {r["n[unbiased]"] for r in rows.values()} == {3}
    assert rows[s2a.S2A]["tokens"] > rows[s2a.SYSTEM1]["tokens"]  # both S2A calls counted
    assert set(m["filters"]) == set(s2a.STUDENTS) and m["filters"][s2a.DISTILL]["inputs"] == 4
    usc = m["info"]["usc"]
    assert sum(usc["rules"].values()) == 4 and usc["fallbacks"] == sum(v for k, v in usc["rules"].items() if k != "usc")
    assert all(t and t["pairs"] == 4 for t in m["training"].values())  # whole responses are kept as targets
    assert set(m["mcnemar"]) == {f"{a} vs {b}" for a, b in registry.notebook("03_s2a_sycophancy").mcnemar}
    with open(tmp_path / "figures" / "table2_sycophancy.smoke.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["Method"] for r in table] == list(s2a.ROWS)
    for r in table:
        rec = rows[r["Method"]]
        assert float(r["Biased % (ours)"]) == round(100 * rec["accuracy[biased]"], 1)
        assert float(r["Unbiased % (ours)"]) == round(100 * rec["accuracy[unbiased]"], 1)
        assert float(r["#Tokens (ours)"]) == round(rec["tokens"], 1)
    md = (tmp_path / "figures" / "table2_sycophancy.smoke.md").read_text()
    assert "offline analog" in md and "replaces the paper's GPT-4 judge" in md and all(f in md for f in m["findings"])
    assert (tmp_path / "figures" / "fig_s2a_acc_vs_tokens.smoke.png").stat().st_size > 10_000


@pytest.mark.slow
def test_bsm_notebook_records_table3_in_both_orders_and_its_files_agree(suite):
    m = metrics_of(suite, "04_bsm_llm_judge")
    rows = m["rows"]
    assert list(rows) == [*bsm.ROWS, CONSTANT] and {r["n"] for r in rows.values()} == {4}
    judges = {k: r for k, r in rows.items() if k != CONSTANT}
    assert all("agreement_without_ties" in r for r in judges.values())
    # a pair is inconsistent when its two orders disagree, and then its verdict is a tie (FastChat's rule): so the
    # share of pairs whose recorded verdict is a tie is at least the inconsistent share
    out = m["outcomes"]
    for name, r in judges.items():
        ties = out["rows"][name]["answers"][out["rules"][0]].count("C") / r["n"]
        assert ties >= r["inconsistent"] - r["judgment_parse_failures"] * 2 - 1e-9, name
    assert rows[bsm.BSM]["tokens"] > rows[bsm.SYSTEM1]["tokens"]  # branch + every solve call counted
    pre = m["info"]["prefix_cache"]
    assert 0 < pre["prefix_reused_tokens"] < pre["prompt_tokens"]  # the solve calls share their pair's prefix
    assert set(m["mcnemar"]) == {f"{a} vs {b}" for a, b in registry.notebook("04_bsm_llm_judge").mcnemar}
    with open(suite / "figures" / "table3_mt_bench.smoke.csv") as f:
        table = list(csv.DictReader(f))
    for r in table:
        assert float(r["Agree % (ours)"]) == round(100 * rows[r["Method"]]["accuracy"], 1)
        if r["Method"] != CONSTANT:  # one answer for every pair: no order to swap
            assert float(r["Inconsistent % (ours)"]) == round(100 * rows[r["Method"]]["inconsistent"], 1)
    md = (suite / "figures" / "table3_mt_bench.smoke.md").read_text()
    assert "PROXY" in md and "truncated" in md and all(f in md for f in m["findings"])


@pytest.mark.slow
def test_cot_notebook_records_maj_at_k_and_its_files_agree(suite):
    m = metrics_of(suite, "05_cot_gsm8k")
    rows = m["rows"]
    assert list(rows) == list(cot.ROWS) and {r["n"] for r in rows.values()} == {4}
    for r in rows.values():
        assert r["tokens@10"] >= r["tokens@5"] >= r["tokens@1"] == r["tokens"]  # summed over k samples
        assert r["flexible_parse_failures"] <= r["strict_parse_failures"]  # the flexible rule reads whatever the strict reads
    with open(suite / "figures" / "table4_gsm8k.smoke.csv") as f:
        table = list(csv.DictReader(f))
    for r in table:
        rec = rows[r["Method"]]
        assert float(r["maj@5 Acc % (ours)"]) == round(100 * rec["accuracy@5"], 1)
        assert float(r["maj@10 #Tokens (ours)"]) == round(rec["tokens@10"], 1)


@pytest.mark.slow
def test_summary_notebook_gives_a_verdict_per_claim_from_the_metrics(suite):
    md = (suite / "figures" / f"{registry.SUMMARY_FILE}.smoke.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ") and "**" in line]
    # one line per claim of every record (S2A: per group), each quoting the recorded accuracies of its systems
    expected = sum(len(nb.claims) * max(1, len(nb.groups)) for nb in registry.NOTEBOOKS)
    assert len(lines) == expected
    for nb in registry.NOTEBOOKS:
        m = metrics_of(suite, nb.notebook)
        for claim in nb.claims:
            line = next(x for x in lines if x.startswith(f"| {claim} | {nb.label}"))
            if not nb.groups:
                s1 = m["rows"][nb.system1]["accuracy"]
                assert f"{100 * s1:.1f}%" in line, (claim, nb.notebook)
    assert (suite / "figures" / f"{registry.SUMMARY_FIGURE}.smoke.png").stat().st_size > 10_000


@pytest.mark.slow
def test_routing_notebook_routes_every_trained_student_from_the_recorded_confidences(suite):
    from s2d_utils import routing

    md = (suite / "figures" / f"{registry.ROUTING_FILE}.smoke.md").read_text()
    metrics = {b.notebook: metrics_of(suite, b.notebook) for b in registry.NOTEBOOKS}
    results = routing.analyse(metrics)
    for b, r in zip(registry.NOTEBOOKS, results):  # the file's row: the recorded System 2 accuracy and its n
        row = next(x for x in md.splitlines() if x.startswith(f"| {b.label} |"))
        if not r.problem:
            s2 = metrics[b.notebook]["rows"][b.system2]
            assert row.startswith(f"| {b.label} | {s2['n']} | {100 * s2['accuracy']:.1f}%, {s2['tokens']:.1f} |")
    for b, r in zip(registry.NOTEBOOKS, results):
        m = metrics[b.notebook]
        conf = m["info"]["confidence"][b.distilled]
        # one confidence per test input, each paired with that input's outcome (04: a pair's, the mean
        # over its two orders): as many as the row's n and its per-input outcomes
        outcomes = m["outcomes"]["rows"][b.distilled]["correct"][m["outcomes"]["rules"][0]]
        assert len(conf) == m["rows"][b.distilled]["n"] == len(outcomes), b.notebook
        assert all(0 <= c <= 1 for c in conf)
        if not r.problem:
            assert r.points[0].student_share == 0 and r.points[-1].student_share == 1
    assert (suite / "figures" / "fig_routing.smoke.png").stat().st_size > 10_000


def test_summary_names_a_notebook_whose_metrics_are_missing(tmp_path):
    proc, _ = run_notebook("06_summary", tmp_path, check=False)
    assert proc.returncode != 0 and "01_rar_last_letter: no metrics for profile 'smoke'" in proc.stderr


@pytest.mark.slow
def test_smoke_run_twice_gives_identical_metrics(suite, tmp_path):
    a = metrics_of(suite, "02_rar_coin_flip")
    b = run_notebook("02_rar_coin_flip", tmp_path / "b")  # a fresh cache and checkpoints: everything recomputed
    assert a["rows"] == b["rows"] and a["filters"] == b["filters"] and a["findings"] == b["findings"]
    assert [t and t["steps"] for t in a["training"].values()] == [t and t["steps"] for t in b["training"].values()]


def test_a_bad_parameter_fails_in_the_first_cells_naming_it(tmp_path):
    proc, out = run_notebook("01_rar_last_letter", tmp_path, "-p", "FILTER_RULE", "mode", check=False)
    assert proc.returncode != 0 and "FILTER_RULE='mode'" in proc.stderr
    code = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    failed = [i for i, c in enumerate(code) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    injected = [i for i, c in enumerate(code) if "injected-parameters" in c["metadata"].get("tags", [])]
    assert failed == [injected[0] + 1]  # the first code cell after the (injected) parameters, and only it
    assert "".join(code[failed[0]]["source"]).startswith("exp = pipeline.start(")
    assert not (tmp_path / "results" / "metrics").exists()


def test_one_method_notebook_runs_end_to_end_in_the_fast_suite(tmp_path):
    """`make test` runs one method notebook whole (the fresh-clone run of all of them is `make test-slow`):
    its table file shows the numbers its metrics recorded, under the names of its registry record."""
    nb = registry.notebook("01_rar_last_letter")
    m = run_notebook(nb.notebook, tmp_path)
    assert list(m["rows"]) == list(nb.rows) and set(m["training"]) == set(nb.students)
    with open(tmp_path / "figures" / f"{nb.table}.smoke.csv") as f:
        table = {r["Method"]: r for r in csv.DictReader(f)}
    assert list(table) == list(nb.rows)
    for name, r in m["rows"].items():
        assert float(table[name]["Acc % (ours)"]) == round(100 * r["accuracy"], 1)
        assert float(table[name]["#Tokens (ours)"]) == round(r["tokens"], 1)
    traces = (tmp_path / "results" / "traces" / f"{nb.notebook}.smoke.jsonl").read_text().splitlines()
    assert len(traces) == len(nb.rows) * m["rows"][nb.system1]["n"]  # every row's first sample, per test input
