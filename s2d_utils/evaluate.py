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
from typing import Callable, Sequence, Union

from .traces import Trace
from .tasks import Example


@dataclass(frozen=True)
class SystemResult:
    """One row of a results table.

    ``k``: test-time samples per input (maj@k; 1 = the first sample). ``tokens``: mean generated
    tokens per input, summed over every call of the program and over the k samples (the paper's
    Table 4 convention). ``extra``: task metrics beyond accuracy (per-group accuracy, agreement
    with and without ties, share of verdicts that change under swapping, ...), flat name -> value.
    """

    name: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float
    parse_failures: float
    correct: tuple[bool, ...] = field(repr=False)
    k: int = 1
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "n": self.n, "k": self.k, "accuracy": self.accuracy, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "tokens": self.tokens, "parse_failures": self.parse_failures, **self.extra}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """maj@k's answer: the most frequent parsed answer (ties go to the one seen first); None if none parses."""
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    return max(counts, key=counts.get) if counts else None  # max keeps the first of equal counts


Metric = Callable[[Sequence[Example], Sequence[Union[str, None]], Sequence[bool]], float]


def accuracy_without(gold_value: str) -> Metric:
    """A metric: accuracy over the examples whose gold is not ``gold_value`` (e.g. agreement with
    human verdicts without ties, the FastChat / BSM convention, with ``gold_value="C"``)."""
    def metric(examples, answers, correct):
        kept = [c for e, c in zip(examples, correct) if e.gold != gold_value]
        return sum(kept) / len(kept) if kept else float("nan")
    return metric


def evaluate(name: str, examples: Sequence[Example], traces: Sequence[Sequence[Trace]], task: ModuleType,
             k: int = 1, groups: bool = True, metrics: dict[str, Metric] | None = None) -> SystemResult:
    """Score a system on labeled examples: maj@k over the first ``k`` traces of each input.

    With ``groups`` and examples carrying ``meta["group"]`` (e.g. biased / unbiased inputs), the
    accuracy of each group is reported in ``extra`` as ``accuracy[<group>]``. ``metrics`` adds
    task metrics to the same record: name -> f(examples, maj@k answers, correct flags).
    """
    if len(examples) != len(traces):
        raise ValueError(f"{name}: {len(examples)} examples but {len(traces)} trace lists")
    if not examples:
        raise ValueError(f"{name}: nothing to evaluate")
    if k < 1:
        raise ValueError(f"{name}: k={k} must be at least 1")
    correct, tokens, failures, answers = [], [], 0, []
    for ex, ts in zip(examples, traces):
        if ex.gold is None:
            raise ValueError(f"{name}: example {ex.id} has no gold answer; evaluation needs labeled data")
        if len(ts) < k:
            raise ValueError(f"{name}: example {ex.id} has {len(ts)} samples, maj@{k} needs {k}")
        if any(t.input_id != ex.id for t in ts[:k]):
            raise ValueError(f"{name}: trace for {ts[0].input_id} paired with example {ex.id}")
        answer = majority_answer([t.answer for t in ts[:k]])
        answers.append(answer)
        correct.append(bool(task.score(answer, ex.gold)))
        tokens.append(sum(t.n_tokens for t in ts[:k]))
        failures += answer is None
    n = len(correct)
    lo, hi = wilson(sum(correct), n)
    extra = {}
    if groups and any("group" in ex.meta for ex in examples):
        for g in sorted({str(ex.meta.get("group")) for ex in examples}):
            hits = [c for c, ex in zip(correct, examples) if str(ex.meta.get("group")) == g]
            extra[f"accuracy[{g}]"] = sum(hits) / len(hits)
            extra[f"n[{g}]"] = len(hits)
    for metric_name, metric in (metrics or {}).items():
        extra[metric_name] = metric(examples, answers, correct)
    return SystemResult(name, n, sum(correct) / n, lo, hi, sum(tokens) / n, failures / n, tuple(correct), k, extra)


def swap_inconsistency(original: Sequence[str | None], swapped: Sequence[str | None],
                       map_back) -> float:
    """Share of inputs whose answer changes when the input is perturbed (e.g. the two responses of a
    judge swapped), after mapping the perturbed answer back; a parse failure on either side counts
    as a change. The paper's Table 3 "% inconsistent" column."""
    if len(original) != len(swapped) or not original:
        raise ValueError(f"{len(original)} original and {len(swapped)} swapped answers: need equal, non-zero counts")
    changed = sum(a is None or b is None or a != map_back(b) for a, b in zip(original, swapped))
    return changed / len(original)


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


# --- paired comparisons: effect, interval, power ---------------------------------------------------

Z95 = 1.959964
Z80 = 0.841621  # one-sided z for 80% power


def _discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} outcomes: paired comparisons need the same inputs")
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for two outcome vectors on the same inputs."""
    from scipy.stats import binomtest

    only_a, only_b = _discordant(a, b)
    return 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_difference_ci(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> tuple[float, float, float]:
    """(accuracy of a minus b, 95% CI low, high) for paired outcomes: Agresti and Min's (2005)
    adjusted Wald interval (half a count added to each cell of the 2x2 table), which keeps its
    coverage at small n and when the systems rarely disagree."""
    n = len(a)
    if n == 0:
        raise ValueError("no paired outcomes")
    only_a, only_b = _discordant(a, b)
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
