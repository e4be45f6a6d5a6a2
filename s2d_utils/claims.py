"""Each of the paper's claims tested as the paper states it: one rule per claim, which the sentences
under every table (`findings`) and the verdict table (`summary`) both use, so a table and its verdict
never judge the same pair of systems by different rules.

The statistics are one method (`stats`). Two systems on the same inputs: the paired McNemar test
(the score test at 25 discordant pairs or more; below, the larger of the exact conditional p and the
score p, since 4 pairs against 0 give an asymptotic p = 0.046 where the exact one is 0.125) with the
interval that inverts it (Tango's, joined below 25 pairs with the exact conditional one), so an
interval excludes a value exactly when the test rejects it. A student trained on several seeds is
judged once, pooled: each input's mean correctness over the seeds against the other system's
outcome on that input, tested over inputs by the exact sign-flip permutation test (the seeds share
their test inputs, so they are not independent samples; a paired t-test is the cross-check) with the
interval that inverts it; where fewer than 25 inputs differ, that test is no bolder than any seed's own
exact one (its p at least theirs, its interval holding theirs). Holm's correction runs over the family of claims: a claim that needs
several tests enters it with one p, the largest of its tests' (a test whose estimate points against
what the claim needs counts as p = 1), and every one of its tests (the conditions it needs and the
ones that contradict it) is judged at its Holm-adjusted level: alpha times its p over its adjusted p. The rules,
with the margins they state:

- **beats** (a system beats another; "the filter matters" is this rule against the ablation): held
  when the test finds a higher accuracy (and, where the answers are a closed set, one above the best
  constant answer) and the interval does not lie wholly below `MIN_GAIN`; not held when the test
  finds a lower accuracy, or when the interval excludes a gain of `MIN_GAIN` (a margin below every
  gain the paper reports), even where the gain is significant: a gain shown to be smaller than any the
  paper reports is not the paper's "beats", so held and not held never both apply; else not shown,
  with the smallest difference the test detects.
- **near** (the student near System 2 at a fraction of its tokens): held when the student keeps more
  than `FLOOR` of System 2's gain over System 1 (Fieller's interval of the retained share clears it,
  which is the paired t-test of the student against the point `FLOOR` of the way from System 1 to
  System 2), beats System 1, is not below System 2 by more than `NEAR_MARGIN` (the paired interval's
  lower end is above -`NEAR_MARGIN`: "comparable to System 2"), and spends at most `FRACTION` of
  System 2's tokens. Not held when it keeps significantly less than `FLOOR`, is shown more than
  `NEAR_MARGIN` below System 2, or spends more tokens. A retained share whose interval has no width
  or no bound (no variance across inputs, e.g. "100% to 100%" at n = 4) never carries a "held": not
  shown (the share test against `FLOOR` has no variance there either, and is not significant).
- **does not distill** (CoT on GSM8k): held when CoT beats the student and the student's gain over
  System 1 is shown below `NO_GAIN` (the interval's upper end is below it); not held when that gain is
  shown above `NO_GAIN` (the interval's lower end is above it: something distilled) or the student
  reaches CoT (CoT does not beat it, and the interval of CoT minus the student excludes a CoT lead of
  `NO_GAIN`); else not shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

from .stats import (ALPHA, EXACT_BELOW, detectable, discordant, p_text, paired_interval, paired_p, paired_p_at,
                    paired_t, retained_share, share_test, sign_flip_interval, sign_flip_p, sign_flip_z)

HELD, NOT_HELD, NOT_SHOWN, NOT_TESTABLE = "held", "not held", "not shown", "not testable"
FRACTION = 0.5  # "a fraction of System 2's tokens": at most half
MIN_GAIN = 0.02  # "beats": a gain shown to stay below 2 points is not the paper's (below every gain it reports)
FLOOR = 0.5  # "near System 2": the student keeps more than half of System 2's gain over System 1
NEAR_MARGIN = 0.05  # "near System 2": the student not below System 2 by more than 5 points
NO_GAIN = 0.05  # "does not distill": the student's gain over System 1 shown to stay below 5 points


@dataclass(frozen=True)
class Comparison:
    """System a against system b on the same test inputs: the paired test and its interval. With
    several seeds on either side (``seeds`` > 1) the test is over inputs of the per-input means."""

    a: str
    b: str
    n: int
    acc_a: float
    acc_b: float
    only_a: int  # inputs where a is right and b is not (pooled: where a's mean is higher)
    only_b: int
    p: float  # two-sided test of no difference
    diff: float  # acc_a - acc_b
    low: float  # 95% interval of diff that inverts the test
    high: float
    seeds: int = 1  # seeds pooled per input (1: McNemar on one outcome each)
    p_t: float | None = None  # pooled: the paired t-test's p, the cross-check
    diffs: tuple[float, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, a: str, va: Sequence[bool], b: str, vb: Sequence[bool]) -> "Comparison":
        n = len(va)
        if n == 0:
            raise ValueError(f"{a} and {b}: no paired outcomes")
        only_a, only_b = discordant(va, vb)
        low, high = paired_interval(only_a, only_b, n)
        return cls(a, b, n, sum(map(bool, va)) / n, sum(map(bool, vb)) / n, only_a, only_b,
                   paired_p(only_a, only_b, n), (only_a - only_b) / n, low, high)

    @classmethod
    def pooled(cls, a: str, runs_a: Sequence[Sequence[bool]], b: str, runs_b: Sequence[Sequence[bool]]) -> "Comparison":
        """a against b with each side's outcomes per seed (one run: a system without seeds): McNemar
        (`of`) when both have one; else the sign-flip test over inputs of mean_a - mean_b per input
        (p: the larger of the exact and the asymptotic one; the interval inverts the asymptotic one
        and reaches 0 where the exact one does not reject)."""
        from scipy.stats import norm

        if len(runs_a) == 1 and len(runs_b) == 1:
            return cls.of(a, runs_a[0], b, runs_b[0])
        n = len(runs_a[0])
        if n == 0 or any(len(r) != n for r in (*runs_a, *runs_b)):
            raise ValueError(f"{a} and {b}: paired comparisons need the same inputs on every seed")
        mean_a = [sum(bool(r[i]) for r in runs_a) / len(runs_a) for i in range(n)]
        mean_b = [sum(bool(r[i]) for r in runs_b) / len(runs_b) for i in range(n)]
        x = tuple(u - v for u, v in zip(mean_a, mean_b))
        scale = len(runs_a) * len(runs_b) // math.gcd(len(runs_a), len(runs_b))
        p = max(sign_flip_p(x, scale), float(min(1.0, 2 * norm.sf(abs(sign_flip_z(x, 0.0))))))
        low, high = sign_flip_interval(x)
        if p >= ALPHA:
            low, high = min(low, 0.0), max(high, 0.0)
        up, down = sum(v > 0 for v in x), sum(v < 0 for v in x)
        if up + down < EXACT_BELOW:  # few inputs differ: the asymptotic test is too bold; it must hold
            # every seed's own exact test (p and interval), so that two right answers in 100 exclude nothing
            pairs = zip(runs_a, runs_b) if len(runs_a) == len(runs_b) else [(u, v) for u in runs_a for v in runs_b]
            for u, v in pairs:
                one = cls.of(a, u, b, v)
                p, low, high = max(p, one.p), min(low, one.low), max(high, one.high)
        return cls(a, b, n, sum(mean_a) / n, sum(mean_b) / n, up, down, p, sum(x) / n, low, high,
                   max(len(runs_a), len(runs_b)), paired_t(x), x)

    @cached_property
    def detectable(self) -> float | None:
        """The smallest difference this n detects with 80% power (None: none), for the paired test on one
        outcome each with this share of disagreeing inputs (computed when a verdict needs it)."""
        return detectable(self.n, (self.only_a + self.only_b) / self.n, exact_below=EXACT_BELOW)

    def p_at(self, d0: float) -> float:
        """Two-sided p of the test of diff = d0 (a margin's): below 0.05 exactly when the interval
        excludes d0."""
        from scipy.stats import norm

        if d0 == 0:
            return self.p
        if self.diffs is None:
            return paired_p_at(self.only_a, self.only_b, self.n, d0)
        p = float(min(1.0, 2 * norm.sf(abs(sign_flip_z(self.diffs, d0)))))
        return max(p, ALPHA) if self.low <= d0 <= self.high else p

    def significant(self, p: float | None = None) -> bool:
        return (self.p if p is None else p) < ALPHA

    @property
    def higher(self) -> bool:
        return self.significant() and self.diff > 0

    @property
    def lower(self) -> bool:
        return self.significant() and self.diff < 0

    @property
    def test_name(self) -> str:
        if self.seeds > 1:
            return f"sign-flip test over inputs, {self.seeds} seeds pooled"
        return "exact McNemar" if self.only_a + self.only_b < EXACT_BELOW else "McNemar"

    def text(self, tokens: dict[str, float] | None = None) -> str:
        tok = tokens or {}

        def side(name, acc):
            return f"{name} {100 * acc:.1f}%" + (f" ({tok[name]:.1f} tok)" if name in tok else "")

        if self.seeds > 1:
            return (f"{side(self.a, self.acc_a)} vs {side(self.b, self.acc_b)} (means over {self.seeds} seeds): "
                    f"{100 * self.diff:+.1f} points (95% CI {100 * self.low:+.1f} to {100 * self.high:+.1f}; higher on "
                    f"{self.only_a}, lower on {self.only_b} inputs), n = {self.n}, {self.test_name} {p_text(self.p)} "
                    f"(paired t-test {p_text(self.p_t)})")
        return (f"{side(self.a, self.acc_a)} vs {side(self.b, self.acc_b)}: {100 * self.diff:+.1f} points "
                f"(95% CI {100 * self.low:+.1f} to {100 * self.high:+.1f}; {self.only_a} vs {self.only_b} "
                f"discordant), n = {self.n}, {self.test_name} {p_text(self.p)}")

    def short(self) -> str:
        """The comparison in a few words: means, difference, interval, p."""
        return (f"{self.a} {100 * self.acc_a:.1f}% vs {self.b} {100 * self.acc_b:.1f}%: {100 * self.diff:+.1f} pts "
                f"(CI {100 * self.low:+.1f} to {100 * self.high:+.1f}), {p_text(self.p)}")

    def not_shown(self) -> str:
        if self.detectable is None:
            return f"not shown: n = {self.n} is too small for the test to find any difference with 80% power"
        return (f"not shown: n = {self.n} detects a difference of {100 * self.detectable:.0f} points or more "
                f"with 80% power")


@dataclass(frozen=True)
class Decision:
    """A claim's verdict, why, the p-value it enters Holm's correction with (the largest of its tests'),
    and the reason in a few words."""

    verdict: str
    why: str
    p: float
    reason: str = ""


def level(p: float, adjusted: float | None) -> float:
    """The level a claim's tests are judged at: alpha, or after Holm's correction alpha p / adjusted
    (the claim's own p is below it exactly when its adjusted p is below alpha)."""
    if adjusted is None or adjusted <= p:
        return ALPHA
    return ALPHA * p / adjusted


def _toward(p: float, right_way: bool) -> float:
    """A condition's p as it enters its claim's: 1 where the estimate points against what the claim needs."""
    return p if right_way else 1.0


def _adjusted(p: float, adjusted: float | None) -> str:
    return "" if adjusted is None or adjusted == p else f", Holm-adjusted {p_text(adjusted)}"


def beats(c: Comparison, adjusted: float | None = None, floor: Comparison | None = None) -> Decision:
    """"a beats b": the test (at the Holm-adjusted level, when corrected) finds a higher accuracy, above
    the best constant answer too where ``floor`` (a against it) is given, and the interval does not
    lie wholly below `MIN_GAIN`. Not held when a is significantly lower or the interval excludes a gain
    of `MIN_GAIN`; the claim's p is the larger of its tests'."""
    p = c.p if floor is None else max(c.p, _toward(floor.p, floor.diff > 0))
    lvl, note = level(p, adjusted), _adjusted(p, adjusted)
    small = c.diff < MIN_GAIN and c.p_at(MIN_GAIN) < lvl
    if c.p < lvl and c.diff < 0:
        return Decision(NOT_HELD, f"{c.a} is significantly lower{note}", p, f"{c.a} is significantly lower")
    if small:
        higher = f"{c.a} is higher, but " if c.p < lvl and c.diff > 0 else ""
        return Decision(NOT_HELD, f"{higher}the CI excludes a gain of {100 * MIN_GAIN:.0f} points or more{note}", p,
                        f"{higher}gain shown below {100 * MIN_GAIN:.0f} points")
    if c.p < lvl and c.diff > 0:
        if floor is not None and not (floor.p < lvl and floor.diff > 0):
            return Decision(NOT_SHOWN, f"{c.a} is higher{note}, but does not beat the best constant answer "
                                       f"({floor.text()})", p, f"{c.a} does not beat the best constant answer")
        return Decision(HELD, f"{c.a} is higher{note}", p, f"{c.a} is higher ({p_text(p)}{note})")
    return Decision(NOT_SHOWN, c.not_shown() + note, p, "no difference shown" + (
        f"; n = {c.n} detects {100 * c.detectable:.0f}+ points" if c.detectable is not None else ""))


def near(d: Sequence[float], s1: Sequence[bool], s2: Sequence[bool], names: tuple[str, str, str],
         tokens: dict[str, float], adjusted: float | None = None,
         d_runs: Sequence[Sequence[bool]] | None = None) -> Decision:
    """"the student is near System 2 at a fraction of its tokens": it keeps more than `FLOOR` of System
    2's gain (`stats.share_test` at `FLOOR`), beats System 1, is not below System 2 by more than
    `NEAR_MARGIN`, and spends at most `FRACTION` of System 2's tokens. ``d_runs``: the student's
    outcomes per seed (``d`` is then ignored: the per-input mean is used). The claim's p is the
    largest of its three tests', all judged at the Holm-adjusted level."""
    dn, s1n, s2n = names
    runs = [list(r) for r in d_runs] if d_runs else [list(d)]
    d = [sum(bool(r[i]) for r in runs) / len(runs) for i in range(len(runs[0]))]
    t, p_share = share_test(d, s1, s2, FLOOR)
    est, low, high = retained_share(d, s1, s2)
    over, gap = Comparison.pooled(dn, runs, s1n, [s1]), Comparison.pooled(dn, runs, s2n, [s2])
    p_gap = gap.p_at(-NEAR_MARGIN)
    p = max(_toward(p_share, t > 0), _toward(over.p, over.diff > 0), _toward(p_gap, gap.diff > -NEAR_MARGIN))
    lvl, note = level(p, adjusted), _adjusted(p, adjusted)
    share = (f"it keeps {_share(est)} of {s2n}'s gain over {s1n} (95% CI {_share(low)} to {_share(high)}), "
             f"test against {FLOOR:.0%}: {p_text(p_share)}; against {s2n}: {100 * gap.diff:+.1f} points (95% CI "
             f"{100 * gap.low:+.1f} to {100 * gap.high:+.1f}); claim {p_text(p)}{note}")
    kept = f"keeps {_share(est)} of the gain, {100 * gap.diff:+.1f} pts vs {s2n}"
    if tokens.get(dn, 0.0) > FRACTION * tokens.get(s2n, math.inf):
        return Decision(NOT_HELD, f"{dn} spends {tokens[dn]:.1f} tokens, more than {FRACTION:.0%} of {s2n}'s "
                                  f"{tokens[s2n]:.1f}; {share}", p, f"spends more than {FRACTION:.0%} of {s2n}'s tokens")
    degenerate = not (math.isfinite(low) and math.isfinite(high)) or high - low <= 1e-12
    if p_share < lvl and t < 0:
        return Decision(NOT_HELD, f"{share}: significantly less than {FLOOR:.0%}", p,
                        f"keeps significantly less than {FLOOR:.0%} of the gain")
    if p_gap < lvl and gap.diff < -NEAR_MARGIN:
        return Decision(NOT_HELD, f"{share}: shown more than {100 * NEAR_MARGIN:.0f} points below {s2n}", p,
                        f"shown more than {100 * NEAR_MARGIN:.0f} points below {s2n}")
    missing = []
    if degenerate:
        missing.append("the retained share's interval has no width or no bound (no variance to estimate it from)")
    elif not (p_share < lvl and t > 0):
        missing.append(f"keeping more than {FLOOR:.0%} is not shown")
    if not (over.p < lvl and over.diff > 0):
        missing.append(f"{dn} does not beat {s1n} significantly ({p_text(over.p)})")
    if not (p_gap < lvl and gap.diff > -NEAR_MARGIN):
        missing.append(f"being within {100 * NEAR_MARGIN:.0f} points of {s2n} is not shown")
    if not missing:
        return Decision(HELD, share, p, kept)
    return Decision(NOT_SHOWN, f"{share}; but {'; '.join(missing)}", p, f"{kept}; " + missing[0].split(" (")[0])


def does_not_distill(cot_vs_student: Comparison, student_vs_s1: Comparison, adjusted: float | None = None) -> Decision:
    """"CoT does not distill": held when CoT beats the student and the student's gain over System 1
    is shown below `NO_GAIN`; not held when that gain is shown above `NO_GAIN` (something distilled)
    or the student reaches CoT (CoT does not beat it and the interval of CoT minus the student
    excludes a CoT lead of `NO_GAIN`); else not shown. The claim's p is the larger of its two tests'."""
    c, g = cot_vs_student, student_vs_s1
    p_gain = g.p_at(NO_GAIN)
    p = max(_toward(c.p, c.diff > 0), _toward(p_gain, g.diff < NO_GAIN))
    lvl, note = level(p, adjusted), _adjusted(p, adjusted)
    margin = f"{100 * NO_GAIN:.0f}-point margin"
    gain = f"{g.a}'s gain over {g.b} {100 * g.diff:+.1f} points (CI {100 * g.low:+.1f} to {100 * g.high:+.1f})"
    if p_gain < lvl and g.diff > NO_GAIN:
        return Decision(NOT_HELD, f"{gain}, shown above the {margin}: something distilled{note}", p,
                        f"{g.a} gains more than {100 * NO_GAIN:.0f} pts over {g.b}: something distilled")
    if not (c.p < lvl and c.diff > 0) and c.p_at(NO_GAIN) < lvl and c.diff < NO_GAIN:
        return Decision(NOT_HELD, f"{c.b} reaches {c.a}: {c.a} does not beat it and the CI of {c.a} minus {c.b} "
                                  f"({100 * c.low:+.1f} to {100 * c.high:+.1f}) excludes a lead of the {margin}{note}",
                        p, f"{c.b} reaches {c.a} (within {100 * NO_GAIN:.0f} pts)")
    if c.p < lvl and c.diff > 0 and p_gain < lvl and g.diff < NO_GAIN:
        return Decision(HELD, f"{c.a} is higher{note}, and {gain} stays below the {margin}", p,
                        f"{c.a} higher; {g.a}'s gain over {g.b} shown below {100 * NO_GAIN:.0f} pts")
    if c.p < lvl and c.diff > 0:
        return Decision(NOT_SHOWN, f"{c.a} is higher{note}, but {gain} reaches the {margin}", p,
                        f"{g.a}'s gain not shown below {100 * NO_GAIN:.0f} pts")
    return Decision(NOT_SHOWN, c.not_shown() + note, p, f"{c.a} does not beat {c.b} significantly")


def _share(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    return f"{100 * x:.0f}%"
