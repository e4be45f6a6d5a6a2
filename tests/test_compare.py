"""`make compare` (s2d_utils.compare): two runs' tables side by side, each row's move in points and
in spreads (seeds' sd, else the binomial SE), each run's CPU; docs/machines.md written from the
measured pair of runs; the record's "cpu" field (benchmarks/record_run.py)."""

import json
import math
import subprocess
import sys

import pytest

from s2d_utils import compare, paths

HEADER = "Method,n,Acc % (ours),95% CI,#Tokens (ours),Acc over seeds,Parse fail %"
BASE = f"""{HEADER}
System 1,100,20.0,13.3-28.9,5.0,,0.0
Distill System 1,100,50.0,40.4-59.6,5.0,sd 2.0: 48.0 / 50.0 / 52.0,0.0
Distill same seeds,100,40.0,31.0-49.7,5.0,sd 0.0: 40.0 / 40.0 / 40.0,0.0
Only in base,100,10.0,5.5-17.4,5.0,,0.0
"""
OTHER = f"""{HEADER}
System 1,100,30.0,21.9-39.6,5.0,,0.0
Distill System 1,100,44.0,34.7-53.8,5.0,sd 4.0: 40.0 / 44.0 / 48.0,0.0
Distill same seeds,100,40.0,31.0-49.7,5.0,sd 0.0: 40.0 / 40.0 / 40.0,0.0
"""
GROUPS = """Method,n,Biased % (ours),Biased 95% CI,Unbiased % (ours),Unbiased 95% CI,Inconsistent % (ours)
System 2,200,32.4,25.1-40.6,40.6,29.5-52.9,10.0
"""


def figures(folder, table, record=None, groups=None):
    folder.mkdir(parents=True)
    (folder / "table1_toy.csv").write_text(table)
    (folder / "table1_toy.smoke.csv").write_text(HEADER + "\nSystem 1,10,99.0,1-2,1,,0\n")  # another profile's
    if groups:
        (folder / "table2_groups.csv").write_text(groups)
    if record:
        (folder / "reproduce_cpu.json").write_text(json.dumps(record))
    return folder


def test_each_row_moves_in_points_and_in_seed_spreads_or_binomial_ses(tmp_path):
    base = compare.load_run(figures(tmp_path / "a", BASE))
    other = compare.load_run(figures(tmp_path / "b", OTHER))
    assert set(base.tables) == {"table1_toy"}  # the smoke table is another profile's
    rows = {i["row"]: i for i in compare.compare_tables(base, other)}
    # System 1 (no seeds): 20 -> 30, +10 points; binomial SE at the mean p 0.25, n 100:
    # sqrt(0.25 * 0.75 / 100) = 0.0433 -> 4.33 points; 10 / 4.33 = 2.31
    s1 = rows["System 1"]
    assert (s1["base"], s1["other"], s1["move"], s1["kind"]) == (20.0, 30.0, 10.0, "binomial SE")
    assert s1["spread"] == pytest.approx(4.3301, abs=1e-4) and s1["spreads"] == pytest.approx(2.3094, abs=1e-4)
    # a student: 50 -> 44, -6 points; seed sds 2 and 4 (n - 1), root mean square sqrt((4 + 16) / 2) = 3.162
    d = rows["Distill System 1"]
    assert (d["move"], d["kind"]) == (-6.0, "seed sd")
    assert d["spread"] == pytest.approx(math.sqrt(10)) and d["spreads"] == pytest.approx(-6 / math.sqrt(10))
    # seeds that agree exactly give no spread: the binomial SE at p 0.4, n 100 = 4.90; no move
    same = rows["Distill same seeds"]
    assert same["kind"] == "binomial SE" and same["spread"] == pytest.approx(4.899, abs=1e-3) and same["spreads"] == 0
    gone = rows["Only in base"]
    assert gone["other"] is None and gone["move"] is None


def test_a_measure_on_a_subset_takes_its_n_from_its_wilson_interval(tmp_path):
    assert compare.n_from_interval(0.3, *compare.wilson(0.3, 50)) == 50
    assert compare.n_from_interval(0.0, *compare.wilson(0.0, 32)) == 32
    lo, hi = compare.wilson(44 / 136, 136)
    assert (round(100 * lo, 1), round(100 * hi, 1)) == (25.1, 40.6)  # table 2's biased inputs: 44 of 136 (32.4%)
    base = compare.load_run(figures(tmp_path / "a", BASE, groups=GROUPS))
    other = compare.load_run(figures(tmp_path / "b", OTHER, groups=GROUPS.replace("32.4,", "29.4,")))
    items = [i for i in compare.compare_tables(base, other) if i["table"] == "table2_groups"]
    assert [i["measure"] for i in items] == ["Biased", "Unbiased"]  # Inconsistent: no interval, not a measure
    biased = items[0]
    # -3 points; SE at the mean p 0.309 with n from the biased interval (137 from the rounded 32.4 and
    # 25.1-40.6: about 136, not the table's 200): sqrt(0.309 * 0.691 / 137) = 3.95 points
    assert biased["move"] == -3.0
    assert compare.n_from_interval(0.324, 0.251, 0.406) == 137
    assert biased["spread"] == pytest.approx(100 * math.sqrt(0.309 * 0.691 / 137))


def test_the_markdown_names_each_runs_cpu_and_the_largest_move(tmp_path):
    cpu = {"model": "AMD EPYC", "cores": 2, "torch": "2.0", "transformers": "5.0",
           "flags": {"amx_bf16": False, "avx512_bf16": True, "avx2": True}}
    a = figures(tmp_path / "a", BASE, record={"machine": "Intel(R) Xeon(R) Processor, 2 cores"})
    b = figures(tmp_path / "b", OTHER, record={"machine": "AMD EPYC, 2 cores", "cpu": cpu})
    text = compare.compare(b, a)
    assert "CPU: Intel(R) Xeon(R) Processor, 2 cores (flags not recorded)" in text
    assert "CPU: AMD EPYC, 2 cores, flags: avx512_bf16 avx2; torch 2.0, transformers 5.0" in text
    assert "| table1_toy | System 1 | Acc | 20.0 | 30.0 | +10.0 | 4.33 | +2.3 | binomial SE |" in text
    assert "| table1_toy | Distill System 1 | Acc | 50.0 | 44.0 | -6.0 | 3.16 | -1.9 | seed sd |" in text
    assert text.rstrip().endswith(
        "largest move: +10.0 points (2.3 binomial SEs) in row System 1 (Acc) of table table1_toy")
    assert compare.largest(compare.compare_tables(compare.load_run(a), compare.load_run(a))).startswith(
        "largest move: 0 points")


def test_a_folder_without_tables_is_named_in_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty}: no table\\*.csv for profile cpu"):
        compare.load_run(empty)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        compare.load_run(tmp_path / "missing")
    assert compare.main(["--other", str(empty)]) == 2
    assert f"make compare: {empty}: no table*.csv" in capsys.readouterr().err


def test_the_default_compares_with_the_committed_figures(tmp_path, monkeypatch):
    if subprocess.run(["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout: no committed figures")
    head = compare.load_run(compare.HEAD)
    assert head.tables and head.record and head.label.startswith("committed")
    monkeypatch.setattr(compare, "OUT", tmp_path / "compare.md")
    assert compare.main(["--other", str(figures(tmp_path / "b", OTHER))]) == 0
    assert "largest move:" in (tmp_path / "compare.md").read_text()


def test_the_machines_page_is_written_from_the_measured_pair(tmp_path):
    data = json.loads(compare.CROSS_CPU.read_text())
    rows = {r["row"]: r for r in compare.cross_cpu_rows(data)}
    # coin flip, Distill System 1: 53.3 -> 43.8 = -9.5; seed sds 6.18 (56.2 / 57.5 / 46.2) and 1.25
    # (43.8 / 42.5 / 45.0): variances 38.23 and 1.563, root mean square sqrt(19.90) = 4.461; -2.13 spreads
    coin = rows["Distill System 1"]
    assert coin["move"] == -9.5 and coin["kind"] == "seed sd"
    assert coin["spread"] == pytest.approx(4.4606, abs=1e-3) and coin["spreads"] == pytest.approx(-2.130, abs=1e-3)
    # BSM, CoT judge (no seeds): 0.0 -> 9.4 on n = 32; binomial SE at p 0.047: sqrt(0.047 * 0.953 / 32) = 3.74
    judge = rows["CoT judge"]
    assert judge["move"] == 9.4 and judge["kind"] == "binomial SE"
    assert judge["spread"] == pytest.approx(3.741, abs=1e-3) and judge["spreads"] == pytest.approx(2.513, abs=1e-3)
    assert rows["System 2: S2A"]["move"] == -3.0 and rows["Distill CoT"]["move"] == -3.6
    text = compare.page()
    assert (paths.ROOT / "docs" / "machines.md").read_text() == text, "run `python -m s2d_utils.compare --page`"
    assert "| table1_coin_flip | Distill System 1 | Acc | 80 | 53.3 (56.2 / 57.5 / 46.2) | 43.8 (43.8 / 42.5 / 45.0) " \
           "| -9.5 | 4.46 | -2.1 | seed sd |" in text
    assert "largest move: -9.5 points (2.1 seed-spreads) in row Distill System 1" in text
    assert "predate the current pipeline" in text and "each seed redraws the teacher's samples" in text
    assert "36ccd0a" in text and "743bfb8" in text and "58.7 min" in text and "no AMX" in text


def _record_run():
    sys.path.insert(0, str(paths.ROOT / "benchmarks"))
    import record_run

    return record_run


def test_the_record_names_the_cpu_its_flags_and_the_versions(tmp_path, monkeypatch):
    rr = _record_run()
    info = "processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile\nprocessor\t: 1\n"
    assert rr.cpu_flags(info) == {"amx_bf16": False, "amx_tile": True, "amx_int8": False, "avx512_bf16": True,
                                  "avx512f": True, "avx2": True, "fma": True}
    assert not any(rr.cpu_flags("").values())
    monkeypatch.setattr(rr, "ROOT", tmp_path)  # no manifests there
    log = "== 01_a (profile cpu)\n   01_a: 3 s\npeak resident memory\n    1.00 GB  python x\n"
    data = rr.record(log, tmp_path / "reproduce_cpu.json")
    assert isinstance(data["machine"], str) and data["machine"].endswith("cores")
    assert set(data["cpu"]) == {"model", "cores", "flags", "torch", "transformers"}
    assert set(data["cpu"]["flags"]) == set(rr.KERNEL_FLAGS) and data["cpu"]["torch"]
    assert "flags:" in compare.describe_cpu(data)
