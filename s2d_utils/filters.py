"""Unsupervised filters: which System 2 outputs become distillation targets (no labels used).

Every filter takes the programs' traces (one list of `Trace` per input) and returns a
`FilterResult`: the kept inputs, each with its chosen answer and the trace it came from (so a
task can train on the answer, the whole final response, or a verdict), and per-input
diagnostics (`Decision`: what the filter saw and why it kept or dropped the input).

- `self_consistency` (paper Sec. 4.1, RaR; Sec. 4.4, CoT): vote over the N sampled answers.
  A sample whose answer does not parse abstains: the vote is over the parsed answers only, and
  `Decision.abstained` says how many did not vote (an input where nothing parses is dropped).
  rule "majority" (RaR, the paper's wording "drop inputs without a majority"): keep the top
  answer only if it has more than half of the parsed votes. rule "plurality" (CoT: the paper kept
  7,461 of 7,473 GSM8k questions, a yield only a plurality vote gives): keep it if it has strictly
  more votes than the runner-up (a tie at the top drops the input).
- `no_filter`: the ablation "Distill System 2 without the filter": the first sample, whatever it
  says (inputs whose first sample does not parse have no target and are dropped).
- `perturbation_agreement` (Sec. 4.3, BSM): run the program on each input and on a perturbed
  copy (the two responses swapped); keep the input only if both give the same answer once the
  perturbed answer is mapped back (e.g. "A" on the swapped pair means "B").
- `universal_self_consistency` (Sec. 4.2, S2A; Chen et al. 2023): the model itself is shown the
  N final responses, numbered from 0, and asked which is the most consistent; see its docstring
  for the context-window rule and the fallback.

`diagnostics` measures, for the report only, how good the kept targets are against held-out gold.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .traces import Trace
from .tasks import Example

RULES = ("majority", "plurality")


@dataclass(frozen=True)
class Decision:
    """What a filter saw on one input and what it decided."""

    id: str
    n: int  # samples the filter looked at
    answer: str | None  # the chosen answer, or None when the input is dropped
    votes: dict[str, int] = field(default_factory=dict)
    margin: int = 0  # votes of the top answer minus the runner-up's (voting filters)
    detail: dict[str, Any] = field(default_factory=dict)  # filter-specific (USC's pick, a fallback, ...)

    @property
    def kept(self) -> bool:
        return bool(self.detail.get("kept", self.answer is not None))

    @property
    def abstained(self) -> int:
        """Samples whose answer did not parse (they cast no vote)."""
        return self.n - sum(self.votes.values())


@dataclass(frozen=True)
class Kept:
    """One distillation example: the (unlabeled) input, its chosen answer and the trace it came from."""

    example: Example
    answer: str | None  # None only where a filter keeps unparsed responses (S2A's whole-response targets)
    trace: Trace


@dataclass(frozen=True)
class FilterResult:
    kept: list[Kept]
    decisions: list[Decision]

    @property
    def yield_(self) -> float:
        """Share of inputs kept."""
        return len(self.kept) / len(self.decisions) if self.decisions else 0.0


def _check(examples: Sequence[Example], traces: Sequence[Sequence[Trace]]) -> None:
    if len(examples) != len(traces):
        raise ValueError(f"{len(examples)} examples but {len(traces)} trace lists")
    for ex, ts in zip(examples, traces):
        if not ts:
            raise ValueError(f"example {ex.id}: no samples to filter")
        if any(t.input_id != ex.id for t in ts):
            raise ValueError(f"example {ex.id}: paired with traces of another input")


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
    ok = top_n * 2 > sum(counts.values()) if rule == "majority" else margin > 0  # parse failures abstain
    return (top if ok else None), dict(counts), margin


def self_consistency(examples: Sequence[Example], traces: Sequence[Sequence[Trace]],
                     rule: str = "majority") -> FilterResult:
    """Keep each input whose sampled answers agree (see the module docstring); the kept trace is
    the first sample that gave the winning answer."""
    _check(examples, traces)
    kept, decisions = [], []
    for ex, ts in zip(examples, traces):
        winner, counts, margin = vote([t.answer for t in ts], rule)
        decisions.append(Decision(ex.id, len(ts), winner, counts, margin))
        if winner is not None:
            kept.append(Kept(ex, winner, next(t for t in ts if t.answer == winner)))
    return FilterResult(kept, decisions)


def no_filter(examples: Sequence[Example], traces: Sequence[Sequence[Trace]]) -> FilterResult:
    """The unfiltered ablation: each input's first sample."""
    _check(examples, traces)
    kept, decisions = [], []
    for ex, ts in zip(examples, traces):
        first = ts[0]
        decisions.append(Decision(ex.id, 1, first.answer, {first.answer: 1} if first.answer is not None else {}))
        if first.answer is not None:
            kept.append(Kept(ex, first.answer, first))
    return FilterResult(kept, decisions)


def random_sample(examples: Sequence[Example], traces: Sequence[Sequence[Trace]], seed: int = 0,
                  require_answer: bool = True) -> FilterResult:
    """The S2A ablation "without USC": one of the samples at random (seeded per input). With
    ``require_answer`` an input whose pick does not parse is dropped; without it the pick is kept
    whatever it says (the target is then the whole response)."""
    _check(examples, traces)
    kept, decisions = [], []
    keep = (lambda t: t.answer is not None) if require_answer else (lambda t: True)
    for ex, ts in zip(examples, traces):
        pick = random.Random(f"{seed}|{ex.id}").randrange(len(ts))
        t = ts[pick]
        decisions.append(Decision(ex.id, len(ts), t.answer, detail={"pick": pick, "kept": keep(t)}))
        if keep(t):
            kept.append(Kept(ex, t.answer, t))
    return FilterResult(kept, decisions)


def perturbation_agreement(examples: Sequence[Example], traces: Sequence[Sequence[Trace]],
                           perturbed: Sequence[Sequence[Trace]], map_back: Callable[[str], str]) -> FilterResult:
    """Keep an input when the program's answer on it and on its perturbed copy agree.

    ``traces[i]`` and ``perturbed[i]`` are the program's samples on input i and on its perturbed
    copy (their first samples are compared); ``map_back`` turns an answer on the perturbed input
    into the answer it means on the original (for swapped responses: A <-> B, a tie stays a tie).
    The kept answer is the original order's; the kept trace is the original order's too.
    """
    _check(examples, traces)
    if len(perturbed) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(perturbed)} perturbed trace lists")
    kept, decisions = [], []
    for ex, ts, ps in zip(examples, traces, perturbed):
        if not ps:
            raise ValueError(f"example {ex.id}: no samples on the perturbed input")
        a, b = ts[0].answer, ps[0].answer
        b_back = map_back(b) if b is not None else None
        agree = a is not None and a == b_back
        decisions.append(Decision(ex.id, 2, a if agree else None, detail={"original": a, "perturbed": b,
                                                                          "perturbed_mapped_back": b_back}))
        if agree:
            kept.append(Kept(ex, a, ts[0]))
    return FilterResult(kept, decisions)


USC_PROMPT = ("I have generated the following responses to the question: {question}\n\n{responses}\n\n"
              "Evaluate these responses.\nSelect the most consistent response based on majority consensus.\n"
              'Start your answer with "The most consistent response is Response X" (without quotes).')
_USC_PICK = re.compile(r"most consistent response is\s*\**\s*Response\s*(\d+)", re.IGNORECASE)


def usc_prompt(question: str, responses: Sequence[str]) -> str:
    """The USC paper's selection prompt (Chen et al. 2023, App. B); responses numbered from 0."""
    body = "\n\n".join(f"Response {i}: {r.strip()}" for i, r in enumerate(responses))
    return USC_PROMPT.format(question=question, responses=body)


def parse_usc(text: str, n: int) -> int | None:
    """The index in "The most consistent response is Response X", or None (also for X >= n)."""
    m = _USC_PICK.search(text)
    if m is None or int(m.group(1)) >= n:
        return None
    return int(m.group(1))


def universal_self_consistency(examples: Sequence[Example], traces: Sequence[Sequence[Trace]],
                               select: Callable[[list[str]], list[str]], fits: Callable[[str], bool],
                               sizes: Sequence[int] = (20, 10), seed: int = 0,
                               require_answer: bool = True) -> FilterResult:
    """USC: the model picks the most consistent of an input's final responses.

    Paper Sec. 4.2: show 20 samples; if 20 do not fit the context window, 10; if 10 still do not
    fit, pick one at random. ``fits(prompt)`` says whether a selection prompt fits the model's
    context; ``select(prompts)`` runs the model on the selection prompts (one output each, e.g.
    greedy `generate`). A reply that does not parse to a valid response number also falls back
    to a random pick; `Decision.detail` records which rule chose (``usc``, ``random: too long``,
    ``random: unparsed``) and the selection call's output. The kept answer is the chosen
    response's parsed answer; an input whose chosen response does not parse is dropped unless
    ``require_answer`` is False (S2A: the target is the whole response, whatever it names).
    """
    _check(examples, traces)
    prompts, shown = [], []
    for ex, ts in zip(examples, traces):
        chosen = None
        for size in sizes:
            prompt = usc_prompt(ex.input, [t.final for t in ts[:size]])
            if fits(prompt):
                chosen = (prompt, min(size, len(ts)))
                break
        shown.append(chosen)
        if chosen is not None:
            prompts.append(chosen[0])
    replies = iter(select(prompts) if prompts else [])
    kept, decisions = [], []
    for ex, ts, chosen in zip(examples, traces, shown):
        rng = random.Random(f"usc|{seed}|{ex.id}")
        detail: dict[str, Any] = {}
        if chosen is None:
            pick, detail["rule"] = rng.randrange(len(ts)), "random: too long"
        else:
            reply = next(replies)
            idx = parse_usc(reply, chosen[1])
            detail.update(shown=chosen[1], reply=reply)
            if idx is None:
                pick, detail["rule"] = rng.randrange(chosen[1]), "random: unparsed"
            else:
                pick, detail["rule"] = idx, "usc"
        detail["pick"] = pick
        t = ts[pick]
        detail["kept"] = t.answer is not None or not require_answer
        decisions.append(Decision(ex.id, len(ts), t.answer, dict(Counter(x.answer for x in ts if x.answer is not None)),
                                  detail=detail))
        if detail["kept"]:
            kept.append(Kept(ex, t.answer, t))
    return FilterResult(kept, decisions)


def diagnostics(result: FilterResult, labeled: Sequence[Example], traces: Sequence[Sequence[Trace]],
                score: Callable[[str | None, str], bool]) -> dict[str, float | int | None]:
    """Does the filter work? Uses the gold labels of the training inputs, for this report only.

    - yield: share of inputs kept; kept: how many
    - precision: share of kept answers that are correct (over the kept inputs that have gold;
      ``kept_with_gold`` says how many)
    - unfiltered_accuracy: share of all sampled answers that are correct (what training on
      every sample would teach)
    - parse_failures: share of samples with no parsable answer
    - majority_agreement: share of kept inputs (with a parsed answer) whose answer is also the
      plurality of the samples' parsed answers (how often a model-based filter, e.g. USC, picks
      what a plain vote would)
    """
    gold = {e.id: e.gold for e in labeled}
    if all(g is None for g in gold.values()):
        raise ValueError("filter diagnostics need the gold answers of the training inputs")
    missing = [k.example.id for k in result.kept if k.example.id not in gold]
    if missing:
        raise ValueError(f"filter diagnostics: no gold for kept inputs {missing[:3]}")
    # inputs without gold (e.g. judge pairs with no proxy label) count in yield, not in precision
    flat = [(ts[0].input_id, t.answer) for ts in traces for t in ts if gold.get(ts[0].input_id) is not None]
    by_id = {ts[0].input_id: ts for ts in traces}
    agree = [vote([t.answer for t in by_id[k.example.id]], "plurality")[0] == k.answer for k in result.kept
             if k.answer is not None]
    judged = [k for k in result.kept if gold[k.example.id] is not None]
    prec = sum(bool(score(k.answer, gold[k.example.id])) for k in judged) / len(judged) if judged else None
    voted = [[t.answer for t in by_id[d.id]] for d in result.decisions if d.id in by_id]
    targets = Counter(k.answer for k in result.kept)
    top_target = targets.most_common(1)[0] if targets else (None, 0)
    return {
        "inputs": len(result.decisions),
        "kept": len(result.kept),
        **{f"kept if {rule}": sum(vote(a, rule)[0] is not None for a in voted) for rule in RULES},
        "abstained": sum(a is None for answers in voted for a in answers) / max(1, sum(map(len, voted))),
        "targets": dict(targets.most_common()),
        "top_target_share": top_target[1] / len(result.kept) if result.kept else None,
        "kept_with_gold": len(judged),
        "yield": result.yield_,
        "precision": prec,
        "unfiltered_accuracy": sum(bool(score(a, gold[i])) for i, a in flat) / len(flat) if flat else None,
        "parse_failures": sum(a is None for _, a in flat) / len(flat) if flat else None,
        "majority_agreement": sum(agree) / len(agree) if agree else None,
    }
