"""The sentences the notebooks write under their tables are computed from the numbers: check them
on a hand-made experiment whose answers we know."""

import pytest

from s2d_utils import findings, pipeline, profiles
from s2d_utils.evaluate import evaluate
from s2d_utils.system2 import Call, Trace
from s2d_utils.tasks import Example, coin_flip

TEST = [Example(f"t{i}", "q", "yes" if i < 4 else "no") for i in range(10)]  # 4 yes, 6 no


def experiment(outputs: dict[str, list[str]]) -> pipeline.Experiment:
    exp = pipeline.Experiment("nb", "rar", coin_flip, "smoke", 0, profiles.rar_sizes("coin_flip", "smoke"), None, None)
    for name, texts in outputs.items():
        traces = [[Trace(e.id, 0, (Call("answer", "p", t, 3, "stop"),), coin_flip.extract(t))] for e, t in zip(TEST, texts)]
        exp.traces[name] = traces
        exp.rows.append(evaluate(name, TEST, traces, coin_flip))
    return exp


def test_compare_states_the_difference_only_when_mcnemar_finds_one():
    exp = experiment({"S1": ["no"] * 10, "S2": ["yes"] * 4 + ["no"] * 6, "S3": ["yes"] * 10})
    assert findings.compare(exp, "S2", "S3") == ("S2 100.0% vs S3 40.0% (McNemar p = 0.014): S2 is higher.")
    # 4 of 10 inputs one way: the score test's p = 0.046, and its interval excludes 0 with it
    assert findings.compare(exp, "S2", "S1") == "S2 100.0% vs S1 60.0% (McNemar p = 0.046): S2 is higher."
    exp = experiment({"S1": ["no"] * 10, "S2": ["yes"] * 3 + ["no"] * 7})
    assert findings.compare(exp, "S2", "S1").endswith("(McNemar p = 0.083): no difference shown (95% CI -6.1 to +60.3 "
                                                     "points; n = 10 detects 48 points or more with 80% power).")


def test_constant_answers_and_repeated_completions_are_named():
    exp = experiment({"student": ["The answer is yes."] * 8 + ["The answer is no."] * 2,
                      "constant": ["The answer is yes."] * 9 + ["The answer is no."],
                      "S1": ["No, the coin is still heads up."] * 10})
    exp.test = list(TEST)
    assert findings.answer_profile(exp, "student", TEST) == (
        "student answers 'yes' to 8 of 10 test inputs; that answer alone would score 40.0%, so compare its "
        "accuracy with this, not with 0.")
    # 90% or more: one sentence, from guard_findings, with the constant's score (not two)
    assert findings.answer_profile(exp, "constant", TEST) is None
    assert ("constant gives one answer ('yes') to 9 of 10 test inputs (that answer alone scores 40.0%): its accuracy "
            "is that answer's, and it cannot carry a verdict on the paper's claims.") in findings.guard_findings(exp)
    assert findings.answer_profile(exp, "S1", TEST) is None  # its answers do not parse: nothing constant to name
    assert findings.output_profile(exp, "S1") == (
        "S1 gives the same completion to 10 of 10 test inputs: 'No, the coin is still heads up.' (parsed as None).")
    assert findings.output_profile(exp, "student", share=0.95) is None


def test_lenient_reading_is_reported_with_its_own_test():
    exp = experiment({"S1": ["No, the coin is still heads up."] * 10, "S2": ["Yes, so yes."] * 4 + ["no"] * 6})
    line = findings.lenient_accuracy(exp, ["S1", "S2"], TEST)
    assert line == ("The parse rule matters: read leniently (a self-contradicting answer counts as its explicit "
                    "yes/no), S1 60.0% (table: 0.0%). Under that reading, S2 vs S1: McNemar p = 0.046, "
                    "S2 is higher.")
    with pytest.raises(KeyError, match="no result row 'S9'"):
        exp.row("S9")
