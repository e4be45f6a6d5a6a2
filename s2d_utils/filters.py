"""Unsupervised filters: which System 2 outputs become distillation targets (no labels used).

Each filter returns the kept (example, answer) pairs and per-input diagnostics.

- `self_consistency` (paper Sec. 4.1, RaR; Sec. 4.4, CoT): vote over the N sampled answers.
  Parse failures are votes for nothing: they count in N but never win.
  rule "majority" (default, the paper's wording "drop inputs without a majority"): keep the top
  answer only if it has more than N/2 votes. rule "plurality": keep it if it has strictly more
  votes than the runner-up (a tie at the top drops the input).
- `no_filter`: the ablation "Distill System 2 without the filter": the first sample's answer,
  whatever it is (inputs whose first sample does not parse have no target and are dropped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from .tasks import Example

RULES = ("majority", "plurality")


@dataclass(frozen=True)
class Vote:
    """Diagnostics for one input."""

    id: str
    votes: dict[str, int]
    n: int
    answer: str | None  # the winning answer, or None when the input is dropped
    margin: int  # votes of the top answer minus the runner-up's

    @property
    def kept(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True)
class FilterResult:
    kept: list[tuple[Example, str]]
    diagnostics: list[Vote]

    @property
    def yield_(self) -> float:
        """Share of inputs kept."""
        return len(self.kept) / len(self.diagnostics) if self.diagnostics else 0.0


def vote(answers: Sequence[str | None], rule: str = "majority") -> tuple[str | None, dict[str, int], int]:
    """(winner or None, vote counts, margin) for one input's sampled answers."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: expected one of {RULES}")
    counts = Counter(a for a in answers if a is not None)
    ranked = counts.most_common()
    if not ranked:
        return None, {}, 0
    top, top_n = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0
    margin = top_n - second
    if rule == "majority":
        ok = top_n * 2 > len(answers)
    else:
        ok = margin > 0
    return (top if ok else None), dict(counts), margin


def self_consistency(examples: Sequence[Example], answers: Sequence[Sequence[str | None]],
                     rule: str = "majority") -> FilterResult:
    """Keep each input whose sampled answers agree (see module docstring)."""
    if len(examples) != len(answers):
        raise ValueError(f"{len(examples)} examples but {len(answers)} answer lists")
    kept, diags = [], []
    for ex, ans in zip(examples, answers):
        if not ans:
            raise ValueError(f"example {ex.id}: no samples to vote over")
        winner, counts, margin = vote(ans, rule)
        diags.append(Vote(ex.id, counts, len(ans), winner, margin))
        if winner is not None:
            kept.append((ex, winner))
    return FilterResult(kept, diags)


def no_filter(examples: Sequence[Example], answers: Sequence[Sequence[str | None]]) -> FilterResult:
    """The unfiltered ablation: each input's first sampled answer."""
    kept, diags = [], []
    for ex, ans in zip(examples, answers):
        first = ans[0] if ans else None
        diags.append(Vote(ex.id, dict(Counter(a for a in ans[:1] if a is not None)), min(len(ans), 1), first, 0))
        if first is not None:
            kept.append((ex, first))
    return FilterResult(kept, diags)


def precision(result: FilterResult, gold: dict[str, str], score) -> float | None:
    """Diagnostic only (uses labels): share of kept answers that are correct."""
    if not result.kept:
        return None
    return sum(bool(score(a, gold[ex.id])) for ex, a in result.kept) / len(result.kept)


def diagnostics(result: FilterResult, examples: Sequence[Example], answers: Sequence[Sequence[str | None]],
                score) -> dict[str, float | int | None]:
    """Does the filter work? Uses the gold labels of the training inputs, for this report only.

    - yield: share of inputs kept; kept: how many
    - precision: share of kept answers that are correct
    - unfiltered_accuracy: share of all sampled answers that are correct (what training on
      every sample would teach)
    - parse_failures: share of samples with no parsable answer
    """
    gold = {e.id: e.gold for e in examples}
    if any(g is None for g in gold.values()):
        raise ValueError("filter diagnostics need the gold answers of the training inputs")
    flat = [(e.id, a) for e, ans in zip(examples, answers) for a in ans]
    return {
        "inputs": len(examples),
        "kept": len(result.kept),
        "yield": result.yield_,
        "precision": precision(result, gold, score),
        "unfiltered_accuracy": sum(bool(score(a, gold[i])) for i, a in flat) / len(flat) if flat else None,
        "parse_failures": sum(a is None for _, a in flat) / len(flat) if flat else None,
    }
