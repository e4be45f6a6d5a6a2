"""The sentences the notebooks write under their tables are computed from the numbers: check them
on a hand-made experiment whose answers we know."""

import pytest

from handmade import call, trace
from s2d_utils import findings, pipeline, profiles
from s2d_utils.evaluate import evaluate
from s2d_utils.tasks import Example, coin_flip

TEST = [Example(f"t{i}", "q", "yes" if i < 4 else "no") for i in range(10)]  # 4 yes, 6 no


def experiment(outputs: dict[str, list[str]]) -> pipeline.Experiment:
    exp = pipeline.Experiment("nb", "rar", coin_flip, "smoke", 0, profiles.rar_sizes("coin_flip", "smoke"), None, None)
    for name, texts in outputs.items():
        traces = [[trace(e.id, coin_flip.extract(t), call("answer", "p", t))] for e, t in zip(TEST, texts)]
        exp.traces[name] = traces
        exp.rows.append(evaluate(name, TEST, traces, coin_flip))
    return exp


def test_compare_states_the_difference_only_when_mcnemar_finds_one():
    exp = experiment({"S1": ["no"] * 10, "S2": ["yes"] * 4 + ["no"] * 6, "S3": ["yes"] * 10})
    assert findings.compare(exp, "S2", "S3") == ("S2 100.0% vs S3 40.0% (McNemar p = 0.031): S2 is higher.")
    # 4 of 10 inputs one way: the score test's p = 0.046 alone would call it, the exact test's 0.125 does not
    assert findings.compare(exp, "S2", "S1") == (
        "S2 100.0% vs S1 60.0% (McNemar p = 0.12): no difference shown (95% CI -8.2 to +68.7 points; n = 10 "
        "detects 67 points or more with 80% power).")
    exp = experiment({"S1": ["no"] * 10, "S2": ["yes"] * 3 + ["no"] * 7})
    assert findings.compare(exp, "S2", "S1").endswith("(McNemar p = 0.25): no difference shown (95% CI -12.5 to +60.3 "
                                                     "points; n = 10 detects 67 points or more with 80% power).")


def test_the_numbers_those_sentences_quote_follow_from_the_counts():
    """Each number above, computed here from its counts alone (scipy, and the formulas written out),
    not through the package. With b inputs only one system gets right, c only the other (b + c below
    25), the paired test's p is the larger of the exact conditional McNemar p (binomial at 1/2) and the
    score test's (McNemar's chi-square without correction, (b - c)^2 / (b + c)); its interval is the
    union of Tango's score interval and the exact conditional one (Clopper-Pearson for b / (b + c),
    scaled by the share (b + c) / n that disagree)."""
    import math

    from scipy.optimize import brentq
    from scipy.stats import binom, binomtest, chi2, norm

    def p(b, c):
        return max(binomtest(b, b + c, 0.5).pvalue, chi2.sf((b - c) ** 2 / (b + c), 1))

    assert [p(6, 0), p(4, 0), p(3, 0)] == [0.03125, 0.125, 0.25]  # 2 / 2^b, above 0.014, 0.046, 0.083
    z = norm.isf(0.025)

    def tango(b, c, n, d):  # Tango's (1998) score statistic for the paired difference d, from his closed form
        a_, b_, c_ = 2 * n, -b - c + (2 * n - b + c) * d, -c * d * (1 - d)
        q = (math.sqrt(b_ * b_ - 4 * a_ * c_) - b_) / (2 * a_)  # the restricted MLE of the share c / n
        return (b - c - n * d) / math.sqrt(n * (2 * q + d * (1 - d)))

    def interval(b, n):  # c = 0
        share, cp = b / n, binomtest(b, b).proportion_ci(method="exact")
        tango_low = brentq(lambda d: tango(b, 0, n, d) - z, -1 + 1e-9, share)
        tango_high = brentq(lambda d: tango(b, 0, n, d) + z, share, 1 - 1e-9)
        low, high = min(tango_low, share * (2 * cp.low - 1)), max(tango_high, share * (2 * cp.high - 1))
        return round(100 * low, 1), round(100 * high, 1)

    assert interval(4, 10) == (-8.2, 68.7) and interval(3, 10) == (-12.5, 60.3)
    # the power: with a difference d at least the share that disagree, every disagreement is on the
    # better system's side, and both tests reject only at b >= 6, c = 0 (2 / 2^6 < 0.05): the power is
    # P(Binomial(10, d) >= 6), which reaches 80% at d = 67.3%
    assert round(100 * brentq(lambda d: binom.sf(5, 10, d) - 0.8, 0.4, 1)) == 67


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
                    "yes/no), S1 60.0% (table: 0.0%). Under that reading, S2 vs S1: McNemar p = 0.12, "
                    "no difference shown (95% CI -8.2 to +68.7 points; n = 10 detects 67 points or more with 80% "
                    "power).")  # the 4-0 split checked by hand above
    with pytest.raises(KeyError, match="no result row 'S9'"):
        exp.row("S9")
