"""LLM-as-a-judge: System 1 judge, CoT judge, Branch-Solve-Merge (Saha et al. 2023), as distilled
in the paper's Sec. 4.3.

- System 1 judge: FastChat's pairwise prompt "pair-v2" with the explanation removed: the verdict
  only ("[[A]]", "[[B]]" or "[[C]]" for a tie).
- CoT judge: "pair-v2" itself (a short explanation, then the verdict).
- BSM: *branch* proposes up to five evaluation criteria for the question; *solve* scores each
  answer 1-5 on one criterion per call; *merge* sums each side's scores (higher wins, equal is a
  tie), the BSM paper's symbolic merge. The solve calls of a pair repeat the same long prefix
  (question and both answers) and differ only in the criterion, so the engine prefills that
  prefix once (prefix caching); the branch call depends on the question alone.

Every judge runs in both orders (the answers swapped). A pair's verdict is the two orders'
verdict if they agree, else a tie (FastChat's rule); *inconsistent* is the share of pairs whose
verdict changes when swapped. #Tokens is per judgment (one order), every call counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Sequence

from ..files import read_jsonl
from ..evaluate import SystemResult, accuracy_without, evaluate, swap_inconsistency
from ..findings import compare
from ..generation import generate
from ..models import LoadedModel
from ..registry import BSM as _ROWS
from ..tasks import Example
from . import Call, Trace, parse

# Table 3's rows (defined in the registry)
SYSTEM1, COT, BSM, DISTILL = _ROWS.SYSTEM1, _ROWS.COT, _ROWS.BSM, _ROWS.DISTILL
ROWS, STUDENTS = _ROWS.ROWS, _ROWS.STUDENTS

BRANCH = ("We want to evaluate the quality of the responses provided by two AI assistants to the user question "
          "displayed below. Your task is to propose an evaluation plan that can be executed to compare the two "
          "responses. The evaluation plan should consist of a list of up to five factors that one should consider "
          "such as helpfulness, relevance, accuracy, etc. In each line, write an evaluation criterion along with a "
          "short description of how we should evaluate that criterion.\n\nUser Question: {question}\n\nEvaluation Plan:")
SOLVE = ("You are given a user question and responses provided by two AI assistants. Your task is to evaluate and "
         "score the quality of the responses based on a single evaluation criterion displayed below. Make sure to "
         "evaluate only based on the criterion specified and none other. In the first line, provide a score between "
         "1 to 5 for Assistant A's response. In the second line, provide a score between 1 to 5 for Assistant B's "
         "response.\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
         "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
         "[The End of Assistant B's Answer]\n\n[Evaluation Criterion]\n{criterion}\n[End of Evaluation Criterion]\n\n"
         "{format_hint}Evaluation of {name}:")
# Our one addition to the BSM paper's solve prompt: small models answer it with a single number
# (measured: Qwen2.5-Coder-0.5B gives "5" to every solve call), which scores only one side; this
# line restates the two-line format the instruction already asks for. The smoke and cpu profiles
# use it (`profiles.BsmSizes.format_hint`); gpu and paper send the BSM paper's prompt unchanged.
SOLVE_FORMAT_HINT = 'Answer in exactly two lines, "Assistant A: <score>" and "Assistant B: <score>".\n\n'
MAX_CRITERIA = 5

# FastChat's pair-v2 with its explanation asked away: the System 1 judge outputs the verdict only
_EXPLAIN = "Begin your evaluation by comparing the two responses and provide a short explanation. "
_AFTER = "After providing your explanation, output your final verdict by strictly following this format"
_ONLY = "Output only your final verdict, with no explanation, by strictly following this format"


def judge_prompts(folder: Path) -> dict[str, dict]:
    """FastChat's judge prompts (``judge_prompts.jsonl`` of the MT-bench folder), by name."""
    path = Path(folder) / "judge_prompts.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: FastChat's judge prompts are needed for the pairwise judges")
    return {r["name"]: r for r in read_jsonl(path, {"name": str, "system_prompt": str, "prompt_template": str})}


def system1_system_prompt(pair_v2: dict) -> str:
    text = pair_v2["system_prompt"]
    if _EXPLAIN not in text or _AFTER not in text:
        raise ValueError("pair-v2's system prompt is not the one this module edits (FastChat changed it?)")
    return text.replace(_EXPLAIN, "").replace(_AFTER, _ONLY)


def pair_messages(system: str, template: str, example: Example) -> list[dict]:
    user = template.format(question=example.input, answer_a=example.meta["answer_a"], answer_b=example.meta["answer_b"])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class Judges:
    """The judges' prompts, built from FastChat's pair-v2 (read once from the data folder)."""

    def __init__(self, folder: Path):
        pair = judge_prompts(folder)["pair-v2"]
        self.template = pair["prompt_template"]
        self.cot_system = pair["system_prompt"]
        self.system1_system = system1_system_prompt(pair)

    def system1(self, example: Example) -> list[dict]:
        return pair_messages(self.system1_system, self.template, example)

    def cot(self, example: Example) -> list[dict]:
        return pair_messages(self.cot_system, self.template, example)


def _single(lm, examples, task, prompts, call, max_new_tokens, **gen) -> list[list[Trace]]:
    outs = generate(lm, prompts, max_new_tokens=max_new_tokens, **gen)
    return [[Trace(e.id, 0, (Call.of(call, json.dumps(p), c),),
                   parse(task, c.text, c.finish_reason, e))] for e, p, (c,) in zip(examples, prompts, outs)]


def system1_judge(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, judges: Judges,
                  max_new_tokens: int = 8, **gen) -> list[list[Trace]]:
    gen.setdefault("desc", "System 1 judge")
    return _single(lm, examples, task, [judges.system1(e) for e in examples], "verdict", max_new_tokens, **gen)


def cot_judge(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, judges: Judges,
              max_new_tokens: int = 256, **gen) -> list[list[Trace]]:
    gen.setdefault("desc", "CoT judge")
    return _single(lm, examples, task, [judges.cot(e) for e in examples], "explain+verdict", max_new_tokens, **gen)


_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\)|[a-e][.)])?\s*")


def parse_criteria(text: str) -> list[str]:
    """Up to five criteria: one per non-empty line, bullets and numbering stripped, headers skipped."""
    out = []
    for line in text.splitlines():
        c = _BULLET.sub("", line).strip().strip("*").strip()
        if len(c) < 3 or c.lower().rstrip(":") in ("evaluation plan", "criteria", "factors"):
            continue
        out.append(c)
        if len(out) == MAX_CRITERIA:
            break
    return out


def criterion_name(criterion: str) -> str:
    """The criterion's name: the text before its first ':' or ' - ', else its first four words."""
    for sep in (":", " - ", " – "):
        if sep in criterion:
            head = criterion.split(sep, 1)[0].strip(" *")
            if head:
                return head
    return " ".join(criterion.split()[:4])


_OUT_OF = re.compile(r"\s*(?:/\s*5|out of 5)\b", re.IGNORECASE)
_SCORE = re.compile(r"(?<![\d.])([1-5])(?![\d.]\d)")


def parse_scores(text: str) -> tuple[int, int] | None:
    """(score of A, score of B): the first two scores 1-5 in the solve output ("4/5" reads as 4)."""
    found = [int(x) for x in _SCORE.findall(_OUT_OF.sub("", text))]
    return (found[0], found[1]) if len(found) >= 2 else None


def merge(scores: Sequence[tuple[int, int] | None]) -> str | None:
    """The symbolic merge: sum each side over the criteria that scored; None if none did."""
    valid = [s for s in scores if s is not None]
    if not valid:
        return None
    a, b = sum(s[0] for s in valid), sum(s[1] for s in valid)
    return "A" if a > b else "B" if b > a else "C"


def bsm(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, *, branch_tokens: int = 128,
        solve_tokens: int = 24, format_hint: bool = True, **gen) -> list[list[Trace]]:
    """Branch-Solve-Merge on each pair (one order); the trace holds the branch and every solve call.
    ``format_hint``: `SOLVE_FORMAT_HINT` in every solve prompt (the sizes' ``format_hint``: the smoke
    and cpu profiles only, a concession to the 0.5B model; the BSM paper's prompt has none)."""
    desc = gen.pop("desc", "BSM")
    b_prompts = [BRANCH.format(question=e.input) for e in examples]
    branches = generate(lm, b_prompts, max_new_tokens=branch_tokens, desc=f"{desc}: branch", **gen)
    jobs, owners = [], []
    for i, (e, (b,)) in enumerate(zip(examples, branches)):
        for c in parse_criteria(b.text):
            jobs.append(SOLVE.format(question=e.input, answer_a=e.meta["answer_a"], answer_b=e.meta["answer_b"],
                                     criterion=c, name=criterion_name(c),
                                     format_hint=SOLVE_FORMAT_HINT if format_hint else ""))
            owners.append(i)
    solves = generate(lm, jobs, max_new_tokens=solve_tokens, desc=f"{desc}: solve", **gen) if jobs else []
    per: list[list[Call]] = [[] for _ in examples]
    for i, p, (c,) in zip(owners, jobs, solves):
        per[i].append(Call.of("solve", p, c))
    out = []
    for e, bp, (b,), calls in zip(examples, b_prompts, branches, per):
        verdict = merge([parse_scores(c.output) for c in calls])
        out.append([Trace(e.id, 0, (Call.of("branch", bp, b), *calls), verdict)])
    return out


def solve_prompts(traces: Sequence[Sequence[Trace]]) -> list[str]:
    """The solve calls' prompts of BSM traces (the calls whose prefill prefix caching shares)."""
    return [c.prompt for ts in traces for t in ts for c in t.calls if c.name == "solve"]


def prefix_sharing(lm: LoadedModel, prompts: Sequence) -> dict[str, int]:
    """Prompt tokens of ``prompts`` and how many of them a shared prefix covers (prefilled once
    per group instead of once per prompt): what prefix caching saves when each group is
    admitted together, as the engine's ordering arranges. Deterministic, unlike the measured
    counts (which are 0 for generations read back from the cache)."""
    from ..engine import shared_prefix_groups
    from ..generation import render

    toks = [tuple(lm.tokenizer(render(lm, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    reused = sum(shared * (len(members) - 1) for shared, members in shared_prefix_groups(toks) if shared)
    return {"prompt_tokens": sum(map(len, set(toks))), "prefix_reused_tokens": reused}


def both_orders(run, examples: Sequence[Example], task: ModuleType) -> tuple[list[list[Trace]], list[list[Trace]]]:
    """Run a judge (``run(examples)`` -> traces) on the pairs and on the swapped pairs, in one call."""
    swapped = [task.swapped(e) for e in examples]
    traces = run(list(examples) + swapped)
    return traces[:len(examples)], traces[len(examples):]


def combine(name: str, examples: Sequence[Example], first: list[list[Trace]], second: list[list[Trace]],
            task: ModuleType) -> tuple[SystemResult, list[list[Trace]]]:
    """One result row from both orders: the pair's verdict (agreeing orders, else a tie), agreement
    with the label with and without label ties, % inconsistent, and #Tokens per judgment."""
    joined = []
    for e, (a,), (b,) in zip(examples, first, second):
        va, vb = a.answer, (task.map_back(b.answer) if b.answer is not None else None)
        verdict = va if va is not None and va == vb else ("C" if va is not None and vb is not None else None)
        joined.append([Trace(e.id, 0, a.calls + b.calls, verdict)])
    r = evaluate(name, examples, joined, task, metrics={"agreement_without_ties": accuracy_without("C")})
    inconsistent = swap_inconsistency([ts[0].answer for ts in first], [ts[0].answer for ts in second], task.map_back)
    failures = sum(ts[0].answer is None for ts in first + second) / (2 * len(examples))
    extra = {**r.extra, "inconsistent": inconsistent, "judgment_parse_failures": failures}
    return replace(r, tokens=r.tokens / 2, extra=extra), joined


def findings(exp, test) -> list[str]:
    """What Table 3's numbers say, computed from them. The label's name is ``exp.info["label"]``
    (default: the proxy label); with label ties (human votes) agreement without ties is given too."""
    out = []
    rows = {r.name: r for r in exp.rows}
    label = exp.info.get("label", "the proxy label")
    decisive = sum(e.gold != "C" for e in test)
    for name in ROWS:
        if name in rows:
            r = rows[name]
            ties = (f" ({100 * r.extra['agreement_without_ties']:.1f}% of the {decisive} that pick a side, ties "
                    f"left out)" if decisive < len(test) and decisive else "")
            out.append(f"{name}: agrees with {label} on {100 * r.accuracy:.1f}% of the {len(test)} test pairs{ties}; "
                       f"its verdict changes under swapping on {100 * r.extra['inconsistent']:.1f}%; {r.tokens:.1f} "
                       "tokens per judgment.")
    out.append(compare(exp, BSM, SYSTEM1))
    f = exp.filters.get(DISTILL)
    if f is not None:
        if f["kept"]:
            prec = f"{100 * f['precision']:.0f}%" if f.get("precision") is not None else "n.a."
            train_label = exp.info.get("train_label", "the proxy label, on the kept strong-vs-weak pairs")
            out.append(f"The swap filter kept {f['kept']} of {f['inputs']} unlabeled pairs (both orders agree); "
                       f"the kept verdict matches {train_label} {prec} of the time, "
                       f"against {100 * (f['unfiltered_accuracy'] or 0):.0f}% for unfiltered BSM verdicts.")
            ties = (f.get("targets") or {}).get("C", 0)
            out.append(f"{ties} of the {f['kept']} kept pairs are tie/tie (both orders said tie, which the swap filter "
                       f"counts as consistent); the kept verdicts are {f.get('targets')}.")
        else:
            out.append(f"The swap filter kept none of the {f['inputs']} unlabeled pairs: BSM's two orders never gave "
                       "the same parsed verdict, so Distill BSM ran no fine-tuning step and is the base model.")
    if DISTILL in rows and BSM in rows:
        out.append(f"{DISTILL} judges in {rows[DISTILL].tokens:.1f} tokens against {rows[BSM].tokens:.1f} for BSM: "
                   + compare(exp, DISTILL, BSM))
        out.append(compare(exp, DISTILL, SYSTEM1))
    pre = exp.info.get("prefix_cache")
    if pre and pre.get("prompt_tokens"):
        out.append(f"Prefix caching: BSM's solve calls on the test pairs hold {pre['prompt_tokens']:,} prompt tokens; "
                   f"{pre['prefix_reused_tokens']:,} of them ({100 * pre['prefix_reused_tokens'] / pre['prompt_tokens']:.0f}%) "
                   "sit in a prefix shared with another solve call of the same pair and are prefilled once, not per call.")
    return out


def both_order_targets(result, task: ModuleType):
    """Training pairs in both orders (paper: the verdict for each order): the kept pairs as they
    are and swapped, each with its verdict mapped."""
    from ..filters import FilterResult, Kept

    swapped = [Kept(task.swapped(k.example), task.map_back(k.answer), k.trace) for k in result.kept]
    return FilterResult(list(result.kept) + swapped, result.decisions)


def score_both_orders(task: ModuleType):
    """A `pipeline` scorer for judges whose program returns (first order, second order) traces.
    Its ``answer_traces`` gives each pair's two orders, whose verdicts the student's confidence
    averages (`backends.answer_confidence`)."""
    def score(name, test, out):
        return combine(name, test, out[0], out[1], task)

    score.answer_traces = lambda out: [[a, b] for (a,), (b,) in zip(out[0], out[1])]
    return score


PROXY_NOTE = ("Label: a PROXY, not human judgment (the MT-bench human judgments are not obtainable here): each test "
              "pair puts a strong model (gpt-4, claude-v1, gpt-3.5-turbo) against a weak one (llama-13b, alpaca-13b, "
              "dolly-v2-12b, stablelm-tuned-alpha-7b), in random order, labelled 'the strong model's answer is "
              "better'. The paper's columns are agreement with humans.")
SOLVE_NOTE = ("BSM's solve prompt is the BSM paper's plus one line restating its two-line output format "
              "(bsm.SOLVE_FORMAT_HINT), in the smoke and cpu profiles only: without it the 0.5B model answers every "
              "solve call with a single number.")
PAPER_SOLVE_NOTE = "BSM's solve prompt is the BSM paper's, word for word (no format hint: that is for the 0.5B model)."


def solve_note(sizes) -> str:
    """The table note on the solve prompt the sizes ran (with or without the format hint)."""
    return SOLVE_NOTE if getattr(sizes, "format_hint", True) else PAPER_SOLVE_NOTE
VERDICT_NOTE = ("Every judge runs in both orders; a pair's verdict is the orders' common verdict, else a tie "
                "(FastChat's rule). Agree %: that verdict equals the label (a tie never does: the proxy has no ties). "
                "Inconsistent %: the verdict changes when the answers are swapped (a parse failure counts as a "
                "change). #Tokens: per judgment (one order), every call counted.")
VERDICT_NOTE_TIES = ("Every judge runs in both orders; a pair's verdict is the orders' common verdict, else a tie "
                     "(FastChat's rule). Agree %: that verdict equals the vote, a tie vote matched only by a tie "
                     "verdict (the paper's 'with ties'; agreement without ties is under the table). Inconsistent %: "
                     "the verdict changes when the answers are swapped (a parse failure counts as a change). "
                     "#Tokens: per judgment (one order), every call counted.")


def verdict_note(test) -> str:
    """The note on how verdicts are scored: with label ties (human votes) or without (proxy, OASST2)."""
    return VERDICT_NOTE_TIES if any(e.gold == "C" for e in test) else VERDICT_NOTE


def human_note(source, test, scope: str) -> str:
    """The label note of a test on MT-bench human votes."""
    ties = sum(e.gold == "C" for e in test)
    pairs = len({(e.input, e.meta["answer_a"], e.meta["answer_b"]) for e in test})
    return (f"Label: MT-bench human judgments from {source}: every vote of turn 1 on {scope}, {len(test)} votes on "
            f"{pairs} distinct pairs, {ties} of them ties (kept). Each vote is scored on its own, as FastChat counts "
            "agreement; votes on one pair or one question share the judge's verdict and are not independent, so "
            "the intervals and tests here, which treat them as independent, are narrower than the data support.")


OASST2_NOTE = ("Label: OASST2's human ranking (the rank-0 reply is better than the rank-1 reply; no ties). Test pairs: "
               "every English first turn of OASST2's validation split with two ranked replies.")


def judge_programs(lm: LoadedModel, pairs: Sequence[Example], task: ModuleType, judges: Judges, sizes, greedy: dict):
    """The three judges of Table 3 on ``pairs``, each as a no-argument program run in both orders."""
    return {
        SYSTEM1: lambda: both_orders(lambda ex: system1_judge(lm, ex, task, judges, max_new_tokens=sizes.system1_tokens,
                                                              **greedy), pairs, task),
        COT: lambda: both_orders(lambda ex: cot_judge(lm, ex, task, judges, max_new_tokens=sizes.cot_tokens, **greedy),
                                 pairs, task),
        BSM: lambda: both_orders(lambda ex: bsm(lm, ex, task, branch_tokens=sizes.branch_tokens,
                                                solve_tokens=sizes.solve_tokens, format_hint=sizes.format_hint,
                                                **greedy), pairs, task),
    }
