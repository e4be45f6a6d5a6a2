"""How the sentences under a table are grouped: one line per comparison over seeds, one line per
system that gives one answer to nearly every input (with its seeds). Hand-built experiments."""

from types import SimpleNamespace

import pytest

from handmade import greedy
from s2d_utils import findings, stats
from s2d_utils.evaluate import SystemResult
from s2d_utils.tasks import Example, coin_flip

TEST = [Example(f"t{i}", "q", "yes" if i < 4 else "no") for i in range(10)]  # 4 yes, 6 no


def _row(name, correct):
    lo, hi = stats.wilson(sum(correct), len(correct))
    return SystemResult(name, len(correct), sum(correct) / len(correct), lo, hi, 5.0, 0.0, tuple(correct))


def _exp(rows, seed_rows=None, traces=None, seed_traces=None):
    by_name = {r.name: r for r in rows}
    return SimpleNamespace(rows=rows, row=lambda n: by_name[n], seed_rows=seed_rows or {}, student_seeds=[0, 1, 2],
                           traces=traces or {}, seed_traces=seed_traces or {}, task=coin_flip, test=TEST, filters={})


def test_a_comparison_over_seeds_is_one_line_with_the_mean_the_count_and_the_range_of_p():
    s1 = _row("S1", [False] * 10)
    seeds = [_row("student", [True] * 8 + [False] * 2), _row("student", [True] * 2 + [False] * 8),
             _row("student", [True] * 9 + [False])]
    mean = _row("student", [True] * 6 + [False] * 4)
    text = findings.compare(_exp([mean, s1], {"student": seeds}), "student", "S1")
    assert text.startswith("student 63.3% vs S1 0.0% (mean over 3 seeds): student is higher in 2 and lower in 0 of "
                           "3 seeds, McNemar p ")
    assert "(seed 0: 80.0% vs 0.0%, seed 1: 20.0% vs 0.0%, seed 2: 90.0% vs 0.0%)" in text
    lo, hi = (stats.p_text(findings.difference(s, s1, "student")[0]) for s in (seeds[2], seeds[1]))
    assert f"McNemar p {lo[2:].removeprefix('= ')} to {hi[2:].removeprefix('= ')} (" in text
    assert "; where none is shown, n = 10 detects" in text and text.count("\n") == 0 and text.count("McNemar") == 1


def test_the_same_p_on_every_seed_is_said_once():
    s1 = _row("S1", [True] + [False] * 9)
    same = [_row("student", [True] + [False] * 9)] * 3
    text = findings.compare(_exp([same[0], s1], {"student": same}), "student", "S1")
    assert "is higher in 0 and lower in 0 of 3 seeds, McNemar p = 1 on every seed (seed 0: 10.0% vs 10.0%" in text


def test_a_constant_student_is_one_line_with_its_seeds():
    yes = ["yes"] * 10
    student = _row("student", [e.gold == "yes" for e in TEST])
    exp = _exp([student], traces={"student": greedy(TEST, yes)},
               seed_traces={"student": [greedy(TEST, yes), greedy(TEST, ["yes"] * 9 + ["no"]), greedy(TEST, yes)]})
    lines = findings.guard_findings(exp)
    assert lines == ["student gives one answer ('yes') to 9 to 10 of 10 test inputs on every seed (0, 1, 2) (that answer "
                     "alone scores 40.0%): its accuracy is that answer's, and it cannot carry a verdict on the paper's "
                     "claims."]


def test_seeds_with_different_constants_are_named_in_one_line_and_others_left_out():
    student = _row("student", [False] * 10)
    runs = [greedy(TEST, ["no"] * 10), greedy(TEST, ["yes", "no"] * 5), greedy(TEST, ["yes"] * 10)]
    lines = findings.guard_findings(_exp([student], traces={"student": runs[0]}, seed_traces={"student": runs}))
    assert lines == ["student gives one answer to nearly every one of its 10 test inputs on seeds 0, 2 of 3: 'no' to 10 "
                     "(seed 0), 'yes' to 10 (seed 2) (alone, 'no' scores 60.0%, 'yes' scores 40.0%): its accuracy is "
                     "that answer's, and it cannot carry a verdict on the paper's claims."]


def test_a_single_run_system_keeps_its_one_sentence():
    s1 = _row("S1", [False] * 10)
    lines = findings.guard_findings(_exp([s1], traces={"S1": greedy(TEST, [None] * 10)}))
    assert lines == ["S1 gives one answer (no parsed answer) to 10 of 10 test inputs: its accuracy is that answer's, "
                     "and it cannot carry a verdict on the paper's claims."]


def test_group_row_is_gone():
    with pytest.raises(AttributeError):
        findings.group_row  # noqa: B018
