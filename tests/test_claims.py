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


# --- issue 41: the rules a statistician breaks with constructed outcomes ------------------------------

def _ranges(n: int, *spans: tuple[int, int]) -> list[bool]:
    """n outcomes, right on the inputs of the half-open ``spans``."""
    return [any(lo <= i < hi for lo, hi in spans) for i in range(n)]


def test_does_not_distill_reads_a_gain_inside_the_margin_as_no_gain():
    # GSM8k, n = 1,319: System 1 7.6%, the student +1.0 point (20 vs 7 discordant, p = 0.012), CoT 52.8%
    n = 1319
    s1, d, cot = _ranges(n, (0, 100)), _ranges(n, (7, 120)), _ranges(n, (0, 696))
    g = Comparison.of("Distill", d, "System 1", s1)
    assert g.p < 0.05 and g.diff > 0 and g.high < claims.NO_GAIN  # significant, and inside the 5-point margin
    dec = claims.does_not_distill(Comparison.of("CoT", cot, "Distill", d), g)
    assert dec.verdict == HELD, dec.why
    # a gain whose interval straddles the margin (+5.2 points, CI about +3.6 to +6.9): not shown either way
    d2 = _ranges(n, (0, 169))
    g2 = Comparison.of("Distill", d2, "System 1", s1)
    assert g2.low < claims.NO_GAIN < g2.high and g2.p < 1e-4
    assert claims.does_not_distill(Comparison.of("CoT", cot, "Distill", d2), g2).verdict == NOT_SHOWN
    # shown above the margin: something distilled
    d3 = _ranges(n, (0, 300))
    dec = claims.does_not_distill(Comparison.of("CoT", cot, "Distill", d3), Comparison.of("Distill", d3, "System 1", s1))
    assert dec.verdict == NOT_HELD and "something distilled" in dec.why
    # the student reaches CoT: a CoT at 9.9% leads it by 0.2 points, and the interval excludes a lead of 5
    weak, d4 = _ranges(n, (0, 130)), _ranges(n, (0, 128))
    dec = claims.does_not_distill(Comparison.of("CoT", weak, "Distill", d4), Comparison.of("Distill", d4, "System 1", s1))
    assert dec.verdict == NOT_HELD and "reaches" in dec.why


def test_near_needs_the_student_comparable_to_system2():
    # System 1 10%, System 2 80%, the student 50% on 1,000: it keeps 57% of a 70-point gain (significantly
    # more than half), beats System 1, at 6 of 40 tokens, yet sits 30 points below System 2
    n = 1000
    s1, s2, d = _ranges(n, (0, 100)), _ranges(n, (0, 800)), _ranges(n, (0, 500))
    t, p = stats.share_test(d, s1, s2, claims.FLOOR)
    assert t > 0 and p < 0.001
    dec = claims.near(d, s1, s2, NAMES, TOKENS)
    assert dec.verdict == NOT_HELD and "below System 2" in dec.why
    # 2 points below System 2 at n = 1,000 (CI within 5 points): held
    close = _ranges(n, (0, 780))
    gap = Comparison.of("Distill", close, "System 2", s2)
    assert gap.low > -claims.NEAR_MARGIN
    assert claims.near(close, s1, s2, NAMES, TOKENS).verdict == HELD


def test_small_counts_use_the_exact_test():
    from scipy.stats import binomtest

    # 4 discordant pairs against 0 on n = 4: the asymptotic p is 0.046, the exact one 0.125
    a, b = paired(4, 4, 0)
    c = Comparison.of("a", a, "b", b)
    assert stats.score_p(4, 0, 4) < 0.05
    assert c.p == pytest.approx(binomtest(4, 4, 0.5).pvalue) == pytest.approx(0.125)
    assert c.low < 0 < c.high
    assert claims.beats(c).verdict == NOT_SHOWN
    # 9 vs 1 on 200 inputs: exact p = 0.021 (the score test's 0.011); both held
    a, b = paired(200, 9, 1, both=50)
    c = Comparison.of("a", a, "b", b)
    assert c.p == pytest.approx(binomtest(9, 10, 0.5).pvalue) and claims.beats(c).verdict == HELD
    # the exact conditional interval is Clopper-Pearson's for only_a / (only_a + only_b), mapped to the difference
    ci = binomtest(9, 10, 0.5).proportion_ci(0.95, method="exact")
    assert stats.exact_interval(9, 1, 200) == pytest.approx(((2 * ci.low - 1) * 10 / 200, (2 * ci.high - 1) * 10 / 200))


def test_the_paired_interval_agrees_with_the_paired_test_over_a_grid_of_counts():
    from scipy.stats import binomtest

    for n in (12, 60, 400):
        for only_a in range(0, 31):
            for only_b in range(0, min(31, n - only_a + 1)):
                if only_a + only_b > n:
                    continue
                va, vb = paired(n, only_a, only_b)
                c = Comparison.of("a", va, "b", vb)
                m = only_a + only_b
                if 0 < m < stats.EXACT_BELOW:
                    assert c.p >= binomtest(only_a, m, 0.5).pvalue - 1e-12
                if abs(c.p - 0.05) > 1e-9:
                    assert (c.p < 0.05) == (c.low > 0 or c.high < 0), (n, only_a, only_b, c.p, c.low, c.high)
                for d0 in (-claims.NEAR_MARGIN, claims.MIN_GAIN, claims.NO_GAIN):
                    p = c.p_at(d0)
                    if abs(p - 0.05) > 1e-6 and min(abs(c.low - d0), abs(c.high - d0)) > 1e-6:
                        assert (p < 0.05) == (d0 < c.low or d0 > c.high), (n, only_a, only_b, d0, p, c.low, c.high)


def test_a_retained_share_without_variance_is_not_shown():
    # n = 4: System 2 right everywhere, System 1 nowhere, the student as System 2: "100% to 100%"
    s1, s2 = [False] * 4, [True] * 4
    d = list(s2)
    est, low, high = stats.retained_share(d, s1, s2)
    assert high - low == 0
    dec = claims.near(d, s1, s2, NAMES, TOKENS)
    assert dec.verdict == NOT_SHOWN and "no width" in dec.why


def test_a_compound_claim_enters_holm_with_its_largest_p():
    # n = 300: System 1 20%, System 2 60%, the student 57.7% (7 inputs below System 2): it keeps 94% of the
    # gain (share test p < 1e-4) and beats System 1 (p < 1e-4); within 5 points of System 2 at p = 0.034
    n = 300
    s1, s2, d = _ranges(n, (0, 60)), _ranges(n, (0, 180)), _ranges(n, (0, 173))
    share_p = stats.share_test(d, s1, s2, claims.FLOOR)[1]
    dec = claims.near(d, s1, s2, NAMES, TOKENS)
    assert dec.verdict == HELD and dec.p > share_p  # the claim's p is its largest test's, not the share test's
    gap = Comparison.of("Distill", d, "System 2", s2)
    over = Comparison.of("Distill", d, "System 1", s1)
    assert dec.p == pytest.approx(max(share_p, over.p, gap.p_at(-claims.NEAR_MARGIN))) == pytest.approx(0.034, abs=1e-3)
    # in a family with two claims at p = 0.02, Holm's adjusted p of this one is 0.06: every condition is
    # judged at that level, so it is not held, where the share test alone would have passed
    adjusted = stats.holm([dec.p, 0.02, 0.02])[0]
    assert adjusted == pytest.approx(0.06)
    assert claims.near(d, s1, s2, NAMES, TOKENS, adjusted).verdict == NOT_SHOWN


def test_beats_and_its_margin_never_both_apply():
    # +1.0 point at n = 20,000 (300 vs 100 discordant): significant, and the interval excludes 2 points.
    # "Beats" is the paper's gain, not any gain: a gain shown below MIN_GAIN is not held
    a, b = paired(20000, 300, 100, both=5000)
    c = Comparison.of("a", a, "b", b)
    assert c.p < 1e-4 and c.high < claims.MIN_GAIN
    dec = claims.beats(c)
    assert dec.verdict == NOT_HELD and "excludes a gain of 2 points" in dec.why and "a is higher" in dec.why
    # a significant gain whose interval reaches 2 points is held
    a, b = paired(2000, 80, 30, both=500)
    c = Comparison.of("a", a, "b", b)
    assert c.p < 0.05 and c.high > claims.MIN_GAIN and claims.beats(c).verdict == HELD


def test_the_sign_flip_test_is_exact_and_its_interval_agrees_with_it():
    import itertools

    from scipy.stats import binomtest

    # one seed: the sign-flip test of per-input differences is the exact McNemar test
    x = [1.0] * 10 + [-1.0] * 2 + [0.0] * 50
    assert stats.sign_flip_p(x, 1) == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    # three seeds: against every sign pattern of the nonzero differences, enumerated
    x = [1 / 3, 2 / 3, 1.0, 1 / 3, -1 / 3, 2 / 3, 1 / 3, -2 / 3, 1.0, 1 / 3, 0.0]
    nz = [v for v in x if v]
    obs = abs(sum(nz))
    hits = sum(abs(sum(s * v for s, v in zip(signs, nz))) >= obs - 1e-9
               for signs in itertools.product((1, -1), repeat=len(nz)))
    assert stats.sign_flip_p(x, 3) == pytest.approx(hits / 2 ** len(nz))
    # pooled comparisons: the interval excludes 0 exactly when p < 0.05, over random seeds' outcomes
    rng = random.Random(3)
    for _ in range(60):
        n = rng.choice((20, 80, 300))
        base = [rng.random() < 0.4 for _ in range(n)]
        lift = rng.uniform(-0.1, 0.2)
        runs = [[(b if rng.random() > 0.3 else rng.random() < 0.4 + lift) for b in base] for _ in range(3)]
        c = Comparison.pooled("d", runs, "s1", [base])
        assert (c.p < 0.05) == (c.low > 0 or c.high < 0), (c.p, c.low, c.high)
        assert c.p_t is not None and c.seeds == 3


def test_a_pooled_interval_over_few_differing_inputs_holds_every_seeds_exact_one():
    """Three seeds of a student right on one or two of 100 inputs where System 1 is right on none: pooled,
    the sign-flip interval alone is about -0.3 to +1.6 points and would exclude a 2-point gain (a
    'not held' for 'beats'); with so few differing inputs each seed's exact interval (up to +5.4)
    must stay inside it, and the claim is not shown."""
    from s2d_utils import claims

    s1 = [False] * 100
    seeds = [[i == 0 for i in range(100)], [i in (0, 1) for i in range(100)], [False] * 100]
    c = claims.Comparison.pooled("student", seeds, "System 1", [s1])
    one = claims.Comparison.of("student", seeds[1], "System 1", s1)
    assert c.high >= one.high > claims.MIN_GAIN and c.low <= 0.0
    assert claims.beats(c).verdict == claims.NOT_SHOWN
