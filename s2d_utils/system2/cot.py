"""Chain-of-Thought on GSM8k, as distilled (or not) in the paper's Sec. 4.4.

- System 1: 8-shot, answers only (each exemplar's answer is "The answer is N.").
- CoT zero-shot: the question, then a request to reason step by step and end with the answer
  in a fixed format ("The answer is N.").
- CoT 8-shot: the exemplars' worked solutions (GSM8k's rationales without the <<calc>> notes),
  each ending in the same fixed format.

Exemplars come from the train file and never from the unlabeled pool or the test set
(`tasks.gsm8k.exemplars`); they are chat turns (user: question, assistant: answer), so the
8-shot prompts of all questions share one long prefix, prefilled once by the engine.

Evaluation samples k = max(``ks``) answers per question; maj@k is the majority over the first k
parsed answers, #Tokens sums the k samples (the paper's Table 4 convention).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Callable, Sequence

from ..evaluate import SystemResult, evaluate
from ..findings import compare
from ..models import LoadedModel
from ..registry import COT as _ROWS
from ..tasks import Example
from . import Trace, parse, single_call
from . import system1 as direct_answer

# Table 4's rows (defined in the registry)
SYSTEM1, COT0, COT8, DISTILL = _ROWS.SYSTEM1, _ROWS.COT0, _ROWS.COT8, _ROWS.DISTILL
ROWS, STUDENTS = _ROWS.ROWS, _ROWS.STUDENTS
KS = (1, 5, 10)

ZERO_SHOT = ('{question}\nLet\'s think step by step. At the end, write the final answer on its own line as '
             '"The answer is N." where N is a number.')
ANSWER = "The answer is {answer}."


def few_shot(example: Example, shots: Sequence[Example], cot: bool) -> list[dict]:
    """Chat turns: each exemplar's question and its answer (with its worked solution if ``cot``), then the question."""
    messages = []
    for s in shots:
        answer = ANSWER.format(answer=s.gold)
        messages += [{"role": "user", "content": s.input},
                     {"role": "assistant", "content": f"{s.meta['solution']}\n{answer}" if cot else answer}]
    return messages + [{"role": "user", "content": example.input}]


def zero_shot(example: Example) -> str:
    return ZERO_SHOT.format(question=example.input)


def system1(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, shots: Sequence[Example], **kw):
    kw.setdefault("desc", "System 1 (8-shot)")
    return single_call(lm, examples, task, [few_shot(e, shots, cot=False) for e in examples], "answer", **kw)


def cot_zero_shot(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, **kw):
    kw.setdefault("desc", "CoT zero-shot")
    return single_call(lm, examples, task, [zero_shot(e) for e in examples], "cot", **kw)


def cot_few_shot(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, shots: Sequence[Example], **kw):
    kw.setdefault("desc", "CoT 8-shot")
    return single_call(lm, examples, task, [few_shot(e, shots, cot=True) for e in examples], "cot", **kw)


def sample_test(run: Callable[[Sequence[Example], int | list[int]], list[list[Trace]]], examples: Sequence[Example],
                samples: int, n_k: int | None = None) -> list[list[Trace]]:
    """Test-time samples: ``samples`` per question for the first ``n_k`` questions (maj@k), one for
    the rest (maj@1), in one call: ``run(examples, n)`` runs a program with n samples per input (one
    count per input here). Samples are seeded per (prompt, index), so each question's first sample
    is the same either way."""
    n_k = len(examples) if n_k is None else min(n_k, len(examples))
    return run(examples, [samples] * n_k + [1] * (len(examples) - n_k))


def maj_k(program: Callable[..., list[list[Trace]]], examples: Sequence[Example], sizes, sampling: dict):
    """`sample_test` with the profile's protocol: ``sizes.samples`` sampled answers on the first
    ``sizes.n_test_k`` questions, one on the rest, each drawn with ``sampling`` (temperature,
    top-p, seed, batch size: `pipeline.Experiment.test_sampling`)."""
    return sample_test(lambda ex, n: program(ex, n=n, **sampling), examples, sizes.samples, sizes.n_test_k)


def programs(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, shots: Sequence[Example], sizes,
             sampling: dict) -> dict[str, Callable[[], list[list[Trace]]]]:
    """Table 4's three systems on ``examples``, each a no-argument program sampled as `maj_k` says."""
    return {
        SYSTEM1: lambda: maj_k(lambda ex, **kw: system1(lm, ex, task, shots, max_new_tokens=sizes.system1_tokens, **kw),
                               examples, sizes, sampling),
        COT0: lambda: maj_k(lambda ex, **kw: cot_zero_shot(lm, ex, task, max_new_tokens=sizes.cot_tokens, **kw),
                            examples, sizes, sampling),
        COT8: lambda: maj_k(lambda ex, **kw: cot_few_shot(lm, ex, task, shots, max_new_tokens=sizes.cot_tokens, **kw),
                            examples, sizes, sampling),
    }


def student(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, sizes, sampling: dict):
    """The distilled System 1 on ``examples``: a direct answer (no exemplars), sampled as `maj_k` says."""
    return maj_k(lambda ex, **kw: direct_answer(lm, ex, task, max_new_tokens=sizes.student_tokens, **kw),
                 examples, sizes, sampling)


def evaluate_k(name: str, examples: Sequence[Example], traces: list[list[Trace]], task: ModuleType,
               ks: Sequence[int] = KS) -> SystemResult:
    """The k=1 row (every question's first sample), with maj@k accuracy, #Tokens and n for every k
    in ``extra`` ("accuracy@5", "tokens@5", "n@5", ...) over the questions that have k samples,
    and the parse-failure rates of the first sample under the strict and the flexible rule."""
    first = evaluate(name, examples, [ts[:1] for ts in traces], task, k=1)
    extra = dict(first.extra)
    for k in ks:
        idx = [i for i, ts in enumerate(traces) if len(ts) >= k]
        if not idx:
            continue
        r = evaluate(name, [examples[i] for i in idx], [traces[i] for i in idx], task, k=k)
        extra[f"accuracy@{k}"], extra[f"tokens@{k}"], extra[f"n@{k}"] = r.accuracy, r.tokens, r.n
    calls = [ts[0].calls[-1] for ts in traces]
    for mode in ("strict", "flexible"):
        extra[f"{mode}_parse_failures"] = sum(parse(task, c.output, c.finish_reason, e, mode) is None
                                              for c, e in zip(calls, examples)) / len(calls)
    return replace(first, extra=extra)


def score_k(task: ModuleType, ks: Sequence[int] = KS):
    """A `pipeline` scorer: `evaluate_k` over a program's traces."""
    return lambda name, test, traces: (evaluate_k(name, test, traces, task, ks), traces)


def findings(exp, test) -> list[str]:
    """What Table 4's numbers say, computed from them."""
    rows = {r.name: r for r in exp.rows}
    out = []
    for name in ROWS:
        r = rows.get(name)
        if r:
            accs = ", ".join(f"maj@{k} {100 * r.extra[f'accuracy@{k}']:.1f}% ({r.extra[f'tokens@{k}']:.0f} tokens, "
                             f"n = {r.extra[f'n@{k}']})" for k in KS if f"accuracy@{k}" in r.extra)
            out.append(f"{name}: {accs}; parse failures of the first sample: strict "
                       f"{100 * r.extra['strict_parse_failures']:.0f}%, flexible {100 * r.extra['flexible_parse_failures']:.0f}%.")
    out.append(compare(exp, COT0, SYSTEM1))
    f = exp.filters.get(DISTILL)
    if f is not None:
        if f["kept"]:
            out.append(f"Self-consistency kept {f['kept']} of {f['inputs']} unlabeled questions; "
                       f"{100 * f['precision']:.0f}% of the kept targets are right (the paper: 56.8%), against "
                       f"{100 * f['unfiltered_accuracy']:.0f}% of all CoT samples.")
        else:
            out.append(f"Self-consistency kept none of the {f['inputs']} unlabeled questions (no majority), so "
                       f"{DISTILL} ran no fine-tuning step and is the base model.")
    out.append("The negative result (paper: 52.8% CoT vs 7.1% distilled): " + compare(exp, DISTILL, COT0))
    out.append(compare(exp, DISTILL, SYSTEM1))
    return out


NOTE = ("maj@k: k sampled answers per question (temperature 0.7, top-p 0.95), majority over the parsed ones; "
        "#Tokens: the k samples' generated tokens summed (the paper's convention). Answers read by the flexible rule "
        "(\"The answer is N\", else the last number); McNemar tests and the CI use maj@1.")
