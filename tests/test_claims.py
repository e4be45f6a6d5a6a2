"""The claim rules (`s2d_utils.claims`) and their statistics (`s2d_utils.stats`) on constructed
outcomes, each with the verdict a statistician would give it."""

import math
import random

import pytest

from s2d_utils import claims, stats
from s2d_utils.claims import HELD, NOT_HELD, NOT_SHOWN, Comparison


def paired(n: int, only_a: int, only_b: int, both: int = 0) -> tuple[list[bool], list[bool]]:
    """Two outcome vectors on n inputs: ``only_a`` right for a alone, ``only_b`` for b alone, ``both``."""
    a = [True] * only_a + [False] * only_b + [True] * both
    b = [False] * only_a + [True] * only_b + [True] * both
    rest = n - len(a)
    return a + [False] * rest, b + [False] * rest


def three(n: int, cells: dict[tuple[bool, bool, bool], int]) -> tuple[list[bool], list[bool], list[bool]]:
    """(student, System 1, System 2) outcome vectors from counts of each (d, s1, s2) pattern."""
    rows = [key for key, count in cells.items() for _ in range(count)]
    rows += [(False, False, False)] * (n - len(rows))
    return tuple(list(col) for col in zip(*rows))


# --- the statistics: one method, test and interval agree ---------------------------------------------

def test_score_test_is_mcnemars_and_its_interval_inverts_it():
    assert stats.score_p(19, 9, 350) == pytest.approx(0.0588, abs=1e-4)  # z = 10 / sqrt(28)
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(5, 400)
        only_a = rng.randint(0, n // 3)
        only_b = rng.randint(0, n - only_a) // 3
        low, high = stats.score_interval(only_a, only_b, n)
        assert low <= (only_a - only_b) / n <= high
        # the interval excludes 0 exactly when the test rejects at 0.05 (away from the boundary)
        p = stats.score_p(only_a, only_b, n)
        if abs(p - 0.05) > 1e-6:
            assert (p < 0.05) == (low > 0 or high < 0), (only_a, only_b, n, p, low, high)


def test_tangos_constrained_estimate_is_the_maximum_likelihood_one():
    from scipy.optimize import minimize_scalar

    b, c, n, d0 = 30, 12, 200, 0.05

    def nll(p21):
        return -(b * math.log(p21 + d0) + c * math.log(p21) + (n - b - c) * math.log(1 - 2 * p21 - d0))

    best = minimize_scalar(nll, bounds=(1e-9, (1 - d0) / 2 - 1e-9), method="bounded").x
    z = stats._tango_z(b, c, n, d0)
    assert z == pytest.approx((b - c - n * d0) / math.sqrt(n * (2 * best + d0 * (1 - d0))), rel=1e-5)


def test_interval_at_zero_disagreements_still_has_width():
    low, high = stats.score_interval(0, 0, 10)
    assert low < -0.2 and high > 0.2  # 10 inputs cannot rule out a large difference
    low, high = stats.score_interval(0, 0, 1333)
    assert -0.004 < low < 0 < high < 0.004


def test_power_is_exact_for_the_test_used():
    rng = random.Random(1)
    n, psi, d = 100, 0.3, 0.15
    hits = 0
    for _ in range(3000):
        draws = [rng.random() for _ in range(n)]
        b = sum(x < psi * (1 + d / psi) / 2 for x in draws)
        c = sum(psi * (1 + d / psi) / 2 <= x < psi for x in draws)
        hits += stats.score_p(b, c, n) < 0.05
    assert stats.score_power(n, psi, d) == pytest.approx(hits / 3000, abs=0.03)
    found = stats.detectable(n, psi)
    assert stats.score_power(n, psi, found) >= 0.8 > stats.score_power(n, psi, found - 0.01)
    assert stats.detectable(400, 0.3) < stats.detectable(100, 0.3) < stats.detectable(30, 0.3)
    assert stats.detectable(3, 0.3) is None  # at n = 3 even 3 of 3 one way is not significant


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([]) == []


def test_retained_share_interval_inverts_the_share_test():
    d, s1, s2 = three(400, {(True, True, True): 40, (True, False, True): 60, (False, False, True): 40,
                            (True, False, False): 10})
    est, low, high = stats.retained_share(d, s1, s2)
    assert est == pytest.approx((110 - 40) / (140 - 40))
    t_low = stats.share_test(d, s1, s2, low)[1]
    t_high = stats.share_test(d, s1, s2, high)[1]
    assert t_low == pytest.approx(0.05, abs=1e-3) and t_high == pytest.approx(0.05, abs=1e-3)


# --- the rules on the constructed cases ---------------------------------------------------------------

TOKENS = {"Distill": 6.0, "System 1": 6.0, "System 2": 40.0}
NAMES = ("Distill", "System 1", "System 2")


def test_case_student_equal_to_system1_keeps_nothing():
    # n = 1,333, System 2 ahead of System 1 by 5 points (167 vs 100 discordant), the student = System 1
    s2, s1 = paired(1333, 167, 100, both=400)
    d = list(s1)
    near = claims.near(d, s1, s2, NAMES, TOKENS)
    assert near.verdict == NOT_HELD and "keeps 0%" in near.why
    assert claims.beats(Comparison.of("Distill", d, "System 1", s1)).verdict == NOT_HELD  # excludes a 2-point gain


def test_case_the_papers_s2a_filter_numbers_are_not_shown():
    # 81.3 vs 78.6 on 350 biased inputs, 19 vs 9 discordant: the data neither show nor exclude the filter
    a, b = paired(350, 19, 9, both=266)
    c = Comparison.of("Distill S2A", a, "without USC", b)
    assert c.low < 0 < c.high and c.high > claims.MIN_GAIN
    assert claims.beats(c).verdict == NOT_SHOWN


def test_case_a_significantly_worse_student_contradicts_beats():
    # S2A's unbiased inputs: 34.4% vs 45.3% on 64, 1 vs 8 discordant
    d, s1 = paired(64, 1, 8, both=21)
    dec = claims.beats(Comparison.of("Distill", d, "System 1", s1))
    assert dec.verdict == NOT_HELD and "significantly lower" in dec.why


def test_case_cot_student_that_gains_over_system1_contradicts_does_not_distill():
    # GSM8k: System 1 8%, student 30%, CoT 52% on 1,319
    n = 1319
    s1 = [i < 106 for i in range(n)]
    d = [i < 396 for i in range(n)]
    cot = [i < 686 for i in range(n)]
    dec = claims.does_not_distill(Comparison.of("CoT", cot, "Distill", d), Comparison.of("Distill", d, "System 1", s1))
    assert dec.verdict == NOT_HELD and "something distilled" in dec.why
    # the paper's: 7.6% / 52.8% / 7.1%: does not distill
    s1 = [i < 100 for i in range(n)]
    d = [i < 94 for i in range(n)]
    cot = [i < 696 for i in range(n)]
    dec = claims.does_not_distill(Comparison.of("CoT", cot, "Distill", d), Comparison.of("Distill", d, "System 1", s1))
    assert dec.verdict == HELD


def test_case_a_genuine_distillation_holds():
    # System 1 30%, System 2 45%, student 44% on 1,000: it keeps most of the gain, at 6 of 40 tokens
    n = 1000
    s1 = [i < 300 for i in range(n)]
    s2 = [i < 450 for i in range(n)]
    d = [i < 440 for i in range(n)]
    assert claims.beats(Comparison.of("Distill", d, "System 1", s1)).verdict == HELD
    assert claims.near(d, s1, s2, NAMES, TOKENS).verdict == HELD
    # the same accuracies at more than half of System 2's tokens: not "at a fraction"
    assert claims.near(d, s1, s2, NAMES, {**TOKENS, "Distill": 30.0}).verdict == NOT_HELD
    # at n = 60, with the systems right on overlapping but different inputs, the same shares are not shown
    small = [[lo <= i < hi for i in range(60)] for lo, hi in ((30, 56), (0, 18), (10, 37))]
    assert [sum(x) for x in small] == [26, 18, 27]
    assert claims.near(*small, NAMES, TOKENS).verdict == NOT_SHOWN


def test_holm_adjusted_p_decides():
    a, b = paired(200, 20, 8, both=50)  # p = 0.023 raw
    c = Comparison.of("a", a, "b", b)
    assert claims.beats(c).verdict == HELD
    dec = claims.beats(c, adjusted=min(1.0, 5 * c.p))
    assert dec.verdict == NOT_SHOWN and "Holm-adjusted" in dec.why


def test_not_shown_at_tiny_n_says_so():
    a, b = paired(3, 1, 0)
    assert "too small" in claims.beats(Comparison.of("a", a, "b", b)).why
