"""Score a system's traces on labeled test examples.

Reported per system, as in the paper's tables: accuracy and #Tokens (mean generated tokens per
input, summed over all calls of the program). We add what a small-sample replication needs: a
95% Wilson interval on accuracy and the parse-failure rate; the paired tests between systems
live in `stats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Sequence, Union

from .stats import group_accuracy, wilson
from .tasks import Example
from .traces import Trace


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
        for g, (acc, size) in group_accuracy(correct, [ex.meta.get("group") for ex in examples]).items():
            extra[f"accuracy[{g}]"], extra[f"n[{g}]"] = acc, size
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


def over_seeds(rows: Sequence[SystemResult], seeds: Sequence[int]) -> SystemResult:
    """One table row for a student trained on several seeds (``rows``: one per seed, same inputs).

    Its accuracy, #Tokens, parse failures and numeric task metrics are the means over the seeds;
    ``extra["seed_accuracy"]`` gives each seed's accuracy and ``extra["seeds"]`` the seeds. The
    95% interval is Wilson's at the test's n for the mean accuracy: a mean over seeds varies less
    over test inputs than one seed does, so it is if anything too wide. ``correct`` is the first
    seed's (the paired tests are per seed: `findings`, `summary`)."""
    if not rows:
        raise ValueError("over_seeds: no rows")
    if len(rows) != len(seeds):
        raise ValueError(f"{rows[0].name}: {len(rows)} rows for {len(seeds)} seeds")
    first = rows[0]
    if any(r.n != first.n for r in rows):
        raise ValueError(f"{first.name}: the seeds were evaluated on different numbers of inputs "
                         f"({[r.n for r in rows]})")
    if len(rows) == 1:
        return first

    def mean(values):
        return sum(values) / len(values)

    accuracy = mean([r.accuracy for r in rows])
    lo, hi = wilson(accuracy * first.n, first.n)
    extra = {}
    for key, value in first.extra.items():
        values = [r.extra.get(key) for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        # counts (n[group], n@k) are the same on every seed: kept, not averaged into a float
        extra[key] = mean(values) if numeric and len(set(values)) > 1 else value
    extra["seed_accuracy"] = [r.accuracy for r in rows]
    extra["seed_tokens"] = [r.tokens for r in rows]
    extra["seeds"] = list(seeds)
    return SystemResult(first.name, first.n, accuracy, lo, hi, mean([r.tokens for r in rows]),
                        mean([r.parse_failures for r in rows]), first.correct, first.k, extra)
