"""Score a system's traces on labeled test examples.

Reported per system, as in the paper's tables: accuracy and #Tokens (mean generated tokens per
input, summed over all calls of the program). We add what a small-sample replication needs: a
95% Wilson interval on accuracy, the parse-failure rate, and exact McNemar tests between systems
evaluated on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Sequence

from .system2 import Trace
from .tasks import Example


@dataclass(frozen=True)
class SystemResult:
    """One row of a results table."""

    name: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float
    parse_failures: float
    correct: tuple[bool, ...] = field(repr=False)

    def as_dict(self) -> dict:
        return {"name": self.name, "n": self.n, "accuracy": self.accuracy, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "tokens": self.tokens, "parse_failures": self.parse_failures}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(name: str, examples: Sequence[Example], traces: Sequence[Sequence[Trace]], task: ModuleType) -> SystemResult:
    """Score the first trace of each input (evaluation decodes greedily, one sample per input)."""
    if len(examples) != len(traces):
        raise ValueError(f"{name}: {len(examples)} examples but {len(traces)} trace lists")
    if not examples:
        raise ValueError(f"{name}: nothing to evaluate")
    correct, tokens, failures = [], [], 0
    for ex, ts in zip(examples, traces):
        if ex.gold is None:
            raise ValueError(f"{name}: example {ex.id} has no gold answer; evaluation needs labeled data")
        t = ts[0]
        if t.input_id != ex.id:
            raise ValueError(f"{name}: trace for {t.input_id} paired with example {ex.id}")
        correct.append(bool(task.score(t.answer, ex.gold)))
        tokens.append(t.n_tokens)
        failures += t.answer is None
    k, n = sum(correct), len(correct)
    lo, hi = wilson(k, n)
    return SystemResult(name, n, k / n, lo, hi, sum(tokens) / n, failures / n, tuple(correct))


def mcnemar(a: SystemResult, b: SystemResult) -> float:
    """Exact two-sided McNemar p-value: do systems a and b differ on the same inputs?"""
    from scipy.stats import binomtest

    if a.n != b.n:
        raise ValueError(f"{a.name} ({a.n}) and {b.name} ({b.n}) were not evaluated on the same inputs")
    only_a = sum(x and not y for x, y in zip(a.correct, b.correct))
    only_b = sum(y and not x for x, y in zip(a.correct, b.correct))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
