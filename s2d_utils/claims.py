"""Each of the paper's claims tested as the paper states it: one rule per claim, which the sentences
under every table (`findings`) and the verdict table (`summary`) both use, so a table and its verdict
never judge the same pair of systems by different rules.

The statistics are one method (`stats`): the paired score test (McNemar's asymptotic test) and the
interval that inverts it (Tango's), power computed exactly for that test, and Holm's correction over
the family of claims. The rules, with the margins they state:

- **beats** (a system beats another; "the filter matters" is this rule against the ablation): held
  when the test finds a higher accuracy; not held when it finds a lower one, or when the interval
  excludes a gain of `MIN_GAIN` (a margin below every gain the paper reports); else not shown, with
  the smallest difference the test detects.
- **near** (the student near System 2 at a fraction of its tokens): the student keeps more than
  `FLOOR` of System 2's gain over System 1 (Fieller's interval of the retained share clears it, which
  is the paired t-test of the student against the point `FLOOR` of the way from System 1 to System 2),
  and it beats System 1, at most `FRACTION` of System 2's tokens. Not held when it keeps significantly
  less than `FLOOR`, or spends more tokens.
- **does not distill** (CoT on GSM8k): CoT beats the student and the student's gain over System 1 is
  shown to stay below `NO_GAIN`; not held when the student beats System 1 or CoT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .stats import ALPHA, detectable, discordant, p_text, retained_share, score_interval, score_p, share_test

HELD, NOT_HELD, NOT_SHOWN, NOT_TESTABLE = "held", "not held", "not shown", "not testable"
FRACTION = 0.5  # "a fraction of System 2's tokens": at most half
MIN_GAIN = 0.02  # "beats" is contradicted only when the data exclude a gain of 2 points
FLOOR = 0.5  # "near System 2": the student keeps more than half of System 2's gain over System 1
NO_GAIN = 0.05  # "does not distill": the student's gain over System 1 shown to stay below 5 points


@dataclass(frozen=True)
class Comparison:
    """System a against system b on the same test inputs: the score test and its interval."""

    a: str
    b: str
    n: int
    acc_a: float
    acc_b: float
    only_a: int
    only_b: int
    p: float  # two-sided score test of no difference
    diff: float  # acc_a - acc_b
    low: float  # 95% interval of diff that inverts the test
    high: float
    detectable: float | None  # smallest difference this n detects with 80% power (None: none)

    @classmethod
    def of(cls, a: str, va: Sequence[bool], b: str, vb: Sequence[bool]) -> "Comparison":
        n = len(va)
        if n == 0:
            raise ValueError(f"{a} and {b}: no paired outcomes")
        only_a, only_b = discordant(va, vb)
        low, high = score_interval(only_a, only_b, n)
        return cls(a, b, n, sum(map(bool, va)) / n, sum(map(bool, vb)) / n, only_a, only_b,
                   score_p(only_a, only_b, n), (only_a - only_b) / n, low, high,
                   detectable(n, (only_a + only_b) / n))

    def significant(self, p: float | None = None) -> bool:
        return (self.p if p is None else p) < ALPHA

    @property
    def higher(self) -> bool:
        return self.significant() and self.diff > 0

    @property
    def lower(self) -> bool:
        return self.significant() and self.diff < 0

    def text(self, tokens: dict[str, float] | None = None) -> str:
        tok = tokens or {}

        def side(name, acc):
            return f"{name} {100 * acc:.1f}%" + (f" ({tok[name]:.1f} tok)" if name in tok else "")

        return (f"{side(self.a, self.acc_a)} vs {side(self.b, self.acc_b)}: {100 * self.diff:+.1f} points "
                f"(95% CI {100 * self.low:+.1f} to {100 * self.high:+.1f}; {self.only_a} vs {self.only_b} "
                f"discordant), n = {self.n}, McNemar {p_text(self.p)}")

    def not_shown(self) -> str:
        if self.detectable is None:
            return f"not shown: n = {self.n} is too small for the test to find any difference with 80% power"
        return (f"not shown: n = {self.n} detects a difference of {100 * self.detectable:.0f} points or more "
                f"with 80% power")


@dataclass(frozen=True)
class Decision:
    """A claim's verdict, why, and the p-value of its primary test (the one Holm's correction adjusts)."""

    verdict: str
    why: str
    p: float


def _adjusted(p: float, adjusted: float | None) -> str:
    return "" if adjusted is None or adjusted == p else f", Holm-adjusted {p_text(adjusted)}"


def beats(c: Comparison, adjusted: float | None = None) -> Decision:
    """"a beats b": the two-sided score test (at ``adjusted`` p, when corrected) decides the direction;
    not held also when the interval excludes a gain of `MIN_GAIN`."""
    sig = c.significant(adjusted)
    note = _adjusted(c.p, adjusted)
    if sig and c.diff > 0:
        return Decision(HELD, f"{c.a} is higher{note}", c.p)
    if sig and c.diff < 0:
        return Decision(NOT_HELD, f"{c.a} is significantly lower{note}", c.p)
    if c.high < MIN_GAIN:
        return Decision(NOT_HELD, f"the CI excludes a gain of {100 * MIN_GAIN:.0f} points or more{note}", c.p)
    return Decision(NOT_SHOWN, c.not_shown() + note, c.p)


def near(d: Sequence[bool], s1: Sequence[bool], s2: Sequence[bool], names: tuple[str, str, str],
         tokens: dict[str, float], adjusted: float | None = None) -> Decision:
    """"the student is near System 2 at a fraction of its tokens": it keeps more than `FLOOR` of
    System 2's gain (the test of `stats.share_test` at `FLOOR`, at ``adjusted`` p when corrected) and
    beats System 1, spending at most `FRACTION` of System 2's tokens."""
    dn, s1n, s2n = names
    t, p = share_test(d, s1, s2, FLOOR)
    est, low, high = retained_share(d, s1, s2)
    share = (f"it keeps {_share(est)} of {s2n}'s gain over {s1n} (95% CI {_share(low)} to {_share(high)}), "
             f"test against {FLOOR:.0%}: {p_text(p)}{_adjusted(p, adjusted)}")
    if tokens.get(dn, 0.0) > FRACTION * tokens.get(s2n, math.inf):
        return Decision(NOT_HELD, f"{dn} spends {tokens[dn]:.1f} tokens, more than {FRACTION:.0%} of {s2n}'s "
                                  f"{tokens[s2n]:.1f}; {share}", p)
    sig = (p if adjusted is None else adjusted) < ALPHA
    if sig and t < 0:
        return Decision(NOT_HELD, f"{share}: significantly less than {FLOOR:.0%}", p)
    if sig and t > 0:
        over_s1 = Comparison.of(dn, d, s1n, s1)
        if over_s1.higher:
            return Decision(HELD, share, p)
        return Decision(NOT_SHOWN, f"{share}, but {dn} does not beat {s1n} significantly", p)
    return Decision(NOT_SHOWN, f"{share}: not shown either way", p)


def does_not_distill(cot_vs_student: Comparison, student_vs_s1: Comparison, adjusted: float | None = None) -> Decision:
    """"CoT does not distill": CoT beats the student (at ``adjusted`` p, when corrected) and the
    student's interval against System 1 stays below `NO_GAIN`; not held when the student beats
    System 1 (something distilled) or CoT."""
    c, g = cot_vs_student, student_vs_s1
    note = _adjusted(c.p, adjusted)
    if g.higher:
        return Decision(NOT_HELD, f"{g.a} beats {g.b} ({g.text()}): something distilled", c.p)
    if c.significant(adjusted) and c.diff < 0:
        return Decision(NOT_HELD, f"{c.b} beats {c.a}{note}", c.p)
    if c.significant(adjusted) and c.diff > 0:
        if g.high < NO_GAIN:
            return Decision(HELD, f"{c.a} is higher{note}, and {g.a}'s gain over {g.b} stays below "
                                  f"{100 * NO_GAIN:.0f} points (CI up to {100 * g.high:+.1f})", c.p)
        return Decision(NOT_SHOWN, f"{c.a} is higher{note}, but {g.a}'s CI against {g.b} reaches "
                                   f"{100 * g.high:+.1f} points, above the {100 * NO_GAIN:.0f}-point margin", c.p)
    return Decision(NOT_SHOWN, c.not_shown() + note, c.p)


def _share(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "+inf"
    return f"{100 * x:.0f}%"
