"""The statistics every table, finding and verdict uses, in one place.

- `wilson`: the 95% Wilson score interval of a proportion (an accuracy).
- `score_p`, `score_interval`: the paired score test of two systems on the same inputs (McNemar's
  asymptotic test) and the interval of their accuracy difference that inverts it (Tango, 1998), so
  test and interval never disagree; `score_power` and `detectable`: its power, computed exactly, and
  the smallest difference it finds with 80% power.
- `paired_p`, `paired_interval`, `paired_p_at`: the test the claims use. At `EXACT_BELOW` discordant
  pairs or more it is the score test; below, the asymptotic test is too liberal (4 vs 0 gives
  p = 0.046), so p is the larger of the exact conditional McNemar p (binomial at 1/2, as
  ``scipy.stats.binomtest``) and the score p, and the interval is the union of Tango's and the exact
  conditional one (Clopper-Pearson for only_a / (only_a + only_b), scaled by the observed
  discordance): it excludes a value exactly when both tests reject it.
- `sign_flip`: the test over inputs of per-input differences (a student's mean over its seeds
  against a system's single outcome): the exact sign-flip permutation p, the interval that inverts
  the same test with its permutation variance, and a paired t-test as the cross-check.
- `retained_share`, `share_test`: the share of System 2's gain a student keeps (Fieller's interval)
  and the paired t-test it inverts; `holm`: Holm's correction over a family of claims.
- `mcnemar_p`: the exact conditional McNemar test (the routing curve's).
- `group_accuracy`: accuracy per group of inputs (S2A's biased / unbiased).
- `p_text`, `pct`: how a p-value and a share are written everywhere.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Hashable, Sequence

Z95 = 1.959964
ALPHA = 0.05
# below this many discordant pairs the paired test is exact (the usual rule of thumb for McNemar's
# chi-square: b + c < 25); at and above it the score test's size is close to nominal
EXACT_BELOW = 25


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


def score_power(n: int, discordance: float, diff: float, alpha: float = ALPHA, exact_below: int = 0) -> float:
    """Power of the two-sided score test at ``alpha`` on ``n`` paired inputs when the systems disagree
    on a share ``discordance`` of them and differ by ``diff`` (0 <= diff <= discordance), computed
    exactly: the number of disagreements m is binomial(n, discordance), and given m, the inputs the
    better system alone gets right are binomial(m, (1 + diff / discordance) / 2). With
    ``exact_below``, the test at fewer disagreements is `paired_p`'s exact one."""
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
    k = max(0, min(n, exact_below - 1))  # disagreements 1..k: the exact test, rejecting at 2 P(K >= c) < alpha
    if k:
        crit = np.array(_exact_crit(k, alpha))
        upper[:k], lower[:k] = crit - 1, m[:k] - crit
    given_m = binom.sf(upper, m, theta) + np.where(lower >= 0, binom.cdf(lower, m, theta), 0.0)
    return float(np.sum(binom.pmf(m, n, psi) * given_m))


@lru_cache(maxsize=None)
def _exact_crit(k: int, alpha: float) -> tuple[int, ...]:
    """For m = 1..k disagreements: the smallest count c with 2 P(K >= c | m, 1/2) < alpha (m + 1: none)."""
    return tuple(next((c for c in range(m + 1) if 2 * sum(math.comb(m, i) for i in range(c, m + 1)) < alpha * 2 ** m),
                      m + 1) for m in range(1, k + 1))


def detectable(n: int, discordance: float, power: float = 0.8, exact_below: int = 0) -> float | None:
    """The smallest difference the score test on ``n`` paired inputs finds with ``power`` at alpha 0.05
    (exact power, `score_power`), the systems disagreeing on ``discordance`` of the inputs (at least
    the difference itself); None when no difference up to a total disagreement is found that often."""
    if n <= 0 or score_power(n, 1.0, 1.0, exact_below=exact_below) < power:
        return None

    def power_at(d: float) -> float:
        return score_power(n, max(discordance, d), d, exact_below=exact_below)

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
    teacher's gain itself is not clear). The interval has no width where the inputs have no variance
    to estimate one from (`claims.near` does not let such an interval carry a "held"). The student's
    outcomes may be per-input means over its seeds."""
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
    if var <= 0:  # no variance across inputs: the t-test cannot judge it (p = 1: not shown)
        return 0.0, 1.0
    t = mean / math.sqrt(var / n)
    return t, float(2 * student_t.sf(abs(t), n - 1))


# --- the claims' paired test: exact at few discordant pairs ------------------------------------------

def exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact conditional McNemar p: twice the smaller binomial(m, 1/2) tail, at most 1."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def _exact_p_at(only_a: int, only_b: int, n: int, d0: float) -> float:
    """Two-sided p of the exact conditional test of delta = d0, given the m discordant pairs: theta0 =
    (1 + d0 n / m) / 2 for only_a / m; outside [0, 1] it is rejected outright."""
    from scipy.stats import binom

    m = only_a + only_b
    if m == 0:
        return 1.0 if d0 == 0 else 0.0
    theta = (1 + d0 * n / m) / 2
    if not 0 <= theta <= 1:
        return 0.0
    return float(min(1.0, 2 * min(binom.sf(only_a - 1, m, theta), binom.cdf(only_a, m, theta))))


def exact_interval(only_a: int, only_b: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact conditional interval of the paired difference: Clopper-Pearson for only_a / m,
    mapped to (2 theta - 1) m / n. It excludes 0 exactly when `exact_p` < 1 - level."""
    from scipy.stats import beta

    m = only_a + only_b
    if m == 0:
        return 0.0, 0.0
    q = (1 - level) / 2
    lo = 0.0 if only_a == 0 else float(beta.ppf(q, only_a, only_b + 1))
    hi = 1.0 if only_b == 0 else float(beta.isf(q, only_a + 1, only_b))
    return (2 * lo - 1) * m / n, (2 * hi - 1) * m / n


def paired_p(only_a: int, only_b: int, n: int) -> float:
    """The claims' paired test of no difference: the score p, or below `EXACT_BELOW` discordant pairs
    the larger of it and the exact p."""
    p = score_p(only_a, only_b, n)
    return max(p, exact_p(only_a, only_b)) if only_a + only_b < EXACT_BELOW else p


def paired_interval(only_a: int, only_b: int, n: int) -> tuple[float, float]:
    """The interval that inverts `paired_p`: Tango's, joined below `EXACT_BELOW` discordant pairs
    with the exact conditional one (`exact_interval`)."""
    low, high = score_interval(only_a, only_b, n)
    if only_a + only_b < EXACT_BELOW:
        lo, hi = exact_interval(only_a, only_b, n)
        low, high = min(low, lo), max(high, hi)
    return low, high


def paired_p_at(only_a: int, only_b: int, n: int, d0: float) -> float:
    """Two-sided p of `paired_p`'s test of delta = d0 (twice the smaller one-sided p): the interval
    of `paired_interval` excludes d0 exactly when this is below 0.05 (a margin's test)."""
    from scipy.stats import norm

    z = _tango_z(only_a, only_b, n, d0)
    p = float(min(1.0, 2 * norm.sf(abs(z))))
    if only_a + only_b < EXACT_BELOW:
        p = max(p, _exact_p_at(only_a, only_b, n, d0))
    return p


# --- the test over inputs of per-input differences (a student pooled over its seeds) ------------------

def sign_flip_p(x: Sequence[float], scale: int) -> float:
    """Exact two-sided p of the sign-flip permutation test of mean(x) = 0 for differences on the
    lattice 1 / ``scale`` (a mean over k seeds against one outcome: scale k): every sign pattern of
    the nonzero differences equally likely, computed by convolving one binomial per distinct size."""
    import numpy as np
    from scipy.stats import binom

    y = [round(v * scale) for v in x]
    obs = abs(sum(y))
    if obs == 0:
        return 1.0
    sizes: dict[int, int] = {}
    for v in y:
        if v:
            sizes[abs(v)] = sizes.get(abs(v), 0) + 1
    dist = np.ones(1)  # over sums -total .. +total
    for v, c in sizes.items():
        step = np.zeros(2 * v * c + 1)
        step[:: 2 * v] = binom.pmf(np.arange(c + 1), c, 0.5)
        dist = np.convolve(dist, step)
    total = (len(dist) - 1) // 2
    s = np.arange(-total, total + 1)
    return float(min(1.0, dist[np.abs(s) >= obs].sum()))


def sign_flip_z(x: Sequence[float], d0: float) -> float:
    """The sign-flip test's statistic of mean(x) = d0: sum(x - d0) over its permutation standard
    deviation sqrt(sum((x - d0)^2)); at one seed and d0 = 0 it is McNemar's z."""
    dev = [v - d0 for v in x]
    ss = sum(v * v for v in dev)
    total = sum(dev)
    if ss <= 0:
        return 0.0
    return total / math.sqrt(ss)


def sign_flip_interval(x: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """Every d0 with |`sign_flip_z`(x, d0)| < z, in closed form: mean +- z sqrt(v / (n - z^2)) with
    v the variance of x (divisor n); (-1, 1) where x has no variance or n <= z^2."""
    n = len(x)
    mean = sum(x) / n
    v = sum((a - mean) ** 2 for a in x) / n
    if v <= 0 or n <= z * z:
        return -1.0, 1.0
    half = z * math.sqrt(v / (n - z * z))
    return mean - half, mean + half


def paired_t(x: Sequence[float]) -> float:
    """Two-sided p of the paired t-test of mean(x) = 0 (the cross-check of the sign-flip test)."""
    from scipy.stats import t as student_t

    n = len(x)
    mean = sum(x) / n
    var = sum((a - mean) ** 2 for a in x) / (n - 1) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    return float(2 * student_t.sf(abs(mean / math.sqrt(var / n)), n - 1))
