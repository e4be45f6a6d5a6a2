"""The statistics every table, finding and verdict uses, in one place.

- `wilson`: the 95% Wilson score interval of a proportion (an accuracy).
- `score_p`, `score_interval`: the paired score test of two systems on the same inputs (McNemar's
  asymptotic test) and the interval of their accuracy difference that inverts it (Tango, 1998), so
  test and interval never disagree; `score_power` and `detectable`: its power, computed exactly, and
  the smallest difference it finds with 80% power.
- `retained_share`, `share_test`: the share of System 2's gain a student keeps (Fieller's interval)
  and the paired t-test it inverts; `holm`: Holm's correction over a family of claims.
- `mcnemar_p`: the exact conditional McNemar test (the routing curve's).
- `group_accuracy`: accuracy per group of inputs (S2A's biased / unbiased).
- `p_text`, `pct`: how a p-value and a share are written everywhere.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

Z95 = 1.959964
ALPHA = 0.05


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(inputs only a gets right, inputs only b gets right)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} outcomes: paired comparisons need the same inputs")
    return sum(bool(x) and not y for x, y in zip(a, b)), sum(bool(y) and not x for x, y in zip(a, b))


def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for two outcome vectors on the same inputs."""
    from scipy.stats import binomtest

    only_a, only_b = discordant(a, b)
    return 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def group_accuracy(correct: Sequence[bool], groups: Sequence[Hashable]) -> dict[str, tuple[float, int]]:
    """Per group (in sorted order of its name): (accuracy, n). Groups are compared as strings."""
    names = [str(g) for g in groups]
    out = {}
    for g in sorted(set(names)):
        hits = [c for c, x in zip(correct, names) if x == g]
        out[g] = (sum(hits) / len(hits), len(hits))
    return out


def p_text(p: float) -> str:
    """A p-value as every table and verdict writes it."""
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def pct(x: float) -> str:
    """A share in [0, 1] as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


# --- one method for paired accuracies: the score test and the interval that inverts it ---------------
#
# Tango (1998): for the paired difference delta = p(a right, b wrong) - p(a wrong, b right), the score
# statistic of H0: delta = d0. At d0 = 0 it is McNemar's z = (b - c) / sqrt(b + c), the test Fagerland,
# Lydersen and Laake (2013) recommend for paired proportions; its 95% interval is every d0 the test does
# not reject, so the interval excludes 0 exactly when p < 0.05, and lies below a margin exactly when the
# one-sided test of "delta >= margin" rejects at 2.5%.

def _tango_z(only_a: int, only_b: int, n: int, d0: float) -> float:
    """Tango's score statistic of H0: delta = d0 (decreasing in d0)."""
    b, c = only_a, only_b
    big_a = 2 * n
    big_b = -b - c + (2 * n - b + c) * d0
    big_c = -c * d0 * (1 - d0)
    p21 = (-big_b + math.sqrt(max(big_b * big_b - 4 * big_a * big_c, 0.0))) / (2 * big_a)
    var = n * (2 * p21 + d0 * (1 - d0))
    diff = b - c - n * d0
    if var <= 1e-15:
        return 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def score_p(only_a: int, only_b: int, n: int) -> float:
    """Two-sided p of the paired score test of no difference (McNemar's asymptotic test, no continuity
    correction); 1 when the systems never disagree."""
    from scipy.stats import norm

    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2 * norm.sf(abs(only_a - only_b) / math.sqrt(only_a + only_b))))


def score_interval(only_a: int, only_b: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The interval of the paired difference that inverts the score test (Tango 1998): every d0 with
    |Z(d0)| < z, found by bisection (Z decreases in d0)."""
    if n <= 0:
        raise ValueError("no paired outcomes")
    est = (only_a - only_b) / n

    def edge(target: float, lo: float, hi: float) -> float:  # Z(lo) > target >= Z(hi)
        for _ in range(60):
            mid = (lo + hi) / 2
            if _tango_z(only_a, only_b, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = -1.0 if _tango_z(only_a, only_b, n, -1 + 1e-12) <= z else edge(z, -1 + 1e-12, est)
    high = 1.0 if _tango_z(only_a, only_b, n, 1 - 1e-12) >= -z else edge(-z, est, 1 - 1e-12)
    return low, high


def score_power(n: int, discordance: float, diff: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided score test at ``alpha`` on ``n`` paired inputs when the systems disagree
    on a share ``discordance`` of them and differ by ``diff`` (0 <= diff <= discordance), computed
    exactly: the number of disagreements m is binomial(n, discordance), and given m, the inputs the
    better system alone gets right are binomial(m, (1 + diff / discordance) / 2)."""
    import numpy as np
    from scipy.stats import binom, norm

    if n <= 0 or discordance <= 0:
        return 0.0
    psi = min(1.0, discordance)
    theta = min(1.0, max(0.0, (1 + diff / psi) / 2))
    z = norm.isf(alpha / 2)
    m = np.arange(1, n + 1)
    half = z * np.sqrt(m)
    # reject when |2k - m| > half: k > (m + half) / 2 or k < (m - half) / 2
    upper = np.floor((m + half) / 2)  # P(K > upper)
    lower = np.ceil((m - half) / 2) - 1  # P(K <= lower)
    given_m = binom.sf(upper, m, theta) + np.where(lower >= 0, binom.cdf(lower, m, theta), 0.0)
    return float(np.sum(binom.pmf(m, n, psi) * given_m))


def detectable(n: int, discordance: float, power: float = 0.8) -> float | None:
    """The smallest difference the score test on ``n`` paired inputs finds with ``power`` at alpha 0.05
    (exact power, `score_power`), the systems disagreeing on ``discordance`` of the inputs (at least
    the difference itself); None when no difference up to a total disagreement is found that often."""
    if n <= 0 or score_power(n, 1.0, 1.0) < power:
        return None

    def power_at(d: float) -> float:
        return score_power(n, max(discordance, d), d)

    lo, hi = 0.0, 1.0
    if power_at(hi) < power:
        return None
    for _ in range(30):
        mid = (lo + hi) / 2
        if power_at(mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as ``ps``): a family of claims each tested at
    alpha keeps its family-wise error at alpha."""
    k = len(ps)
    order = sorted(range(k), key=lambda i: ps[i])
    out, running = [0.0] * k, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * ps[i]))
        out[i] = running
    return out


def retained_share(d: Sequence[bool], s1: Sequence[bool], s2: Sequence[bool],
                   level: float = 0.95) -> tuple[float, float, float]:
    """(share of System 2's gain over System 1 that the student keeps, 95% CI low, high): the
    estimate (acc_d - acc_s1) / (acc_s2 - acc_s1) with Fieller's interval, which inverts the paired
    t-test of mean(d - s1 - f (s2 - s1)) = 0 over f. The low end clears f exactly when that test
    finds the student above f of the way from System 1 to System 2. Unbounded ends are +-inf (the
    teacher's gain itself is not clear)."""
    from scipy.stats import t as student_t

    n = len(d)
    if not (n == len(s1) == len(s2)) or n < 2:
        raise ValueError("retained share needs the same inputs (at least 2) for the three systems")
    u = [float(x) - float(y) for x, y in zip(d, s1)]
    v = [float(x) - float(y) for x, y in zip(s2, s1)]
    mu, mv = sum(u) / n, sum(v) / n
    suu = sum((x - mu) ** 2 for x in u) / (n - 1)
    svv = sum((y - mv) ** 2 for y in v) / (n - 1)
    suv = sum((x - mu) * (y - mv) for x, y in zip(u, v)) / (n - 1)
    q = student_t.ppf(1 - (1 - level) / 2, n - 1) ** 2
    a = mv * mv - q * svv / n
    b = -2 * (mu * mv - q * suv / n)
    c = mu * mu - q * suu / n
    est = mu / mv if mv else math.nan
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:
        return est, -math.inf, math.inf
    r1, r2 = (-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)
    return est, min(r1, r2), max(r1, r2)


def share_test(d: Sequence[bool], s1: Sequence[bool], s2: Sequence[bool], share: float) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test that the student sits ``share`` of the way from System 1 to
    System 2: mean(d - s1 - share (s2 - s1)) = 0. The test `retained_share`'s interval inverts."""
    from scipy.stats import t as student_t

    n = len(d)
    x = [float(a) - float(b) - share * (float(c) - float(b)) for a, b, c in zip(d, s1, s2)]
    mean = sum(x) / n
    var = sum((v - mean) ** 2 for v in x) / (n - 1)
    if var <= 0:
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / math.sqrt(var / n)
    return t, float(2 * student_t.sf(abs(t), n - 1))
