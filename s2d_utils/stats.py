"""The statistics every table, finding and verdict uses, in one place.

- `wilson`: the 95% Wilson score interval of a proportion (an accuracy).
- `mcnemar_p`: the exact two-sided McNemar test of two systems on the same inputs.
- `paired_difference_ci`: the 95% interval of their accuracy difference (Agresti and Min, 2005).
- `detectable_difference`: the smallest difference such a test finds with 80% power.
- `group_accuracy`: accuracy per group of inputs (S2A's biased / unbiased).
- `p_text`, `pct`: how a p-value and a share are written everywhere.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

Z95 = 1.959964
Z80 = 0.841621  # one-sided z for 80% power
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


def paired_difference_ci(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> tuple[float, float, float]:
    """(accuracy of a minus b, 95% CI low, high) for paired outcomes: Agresti and Min's (2005)
    adjusted Wald interval (half a count added to each cell of the 2x2 table), which keeps its
    coverage at small n and when the systems rarely disagree."""
    n = len(a)
    if n == 0:
        raise ValueError("no paired outcomes")
    only_a, only_b = discordant(a, b)
    diff = (only_a - only_b) / n
    n2, b2, c2 = n + 2, only_a + 0.5, only_b + 0.5
    centre = (b2 - c2) / n2
    se = math.sqrt(max((b2 + c2) - (b2 - c2) ** 2 / n2, 0.0)) / n2
    return diff, max(-1.0, centre - z * se), min(1.0, centre + z * se)


def detectable_difference(n: int, discordance: float, power_z: float = Z80, z: float = Z95) -> float:
    """The smallest difference in accuracy a McNemar test on ``n`` paired inputs detects with 80%
    power at alpha 0.05 (normal approximation, Connor 1987), given the share of inputs on which
    the two systems disagree (at least the difference itself)."""
    if n <= 0:
        return 1.0
    for step in range(1, 1001):
        d = step / 1000
        psi = max(discordance, d)
        spread = math.sqrt(max(psi - d * d, 1e-12))
        if (d * math.sqrt(n) - z * math.sqrt(psi)) / spread >= power_z:
            return d
    return 1.0


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
