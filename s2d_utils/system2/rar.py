"""Rephrase and Respond (Deng et al., 2023), as distilled in the paper's Sec. 4.1.

- 1-step RaR: one call; the question plus "Rephrase and expand the question, and respond."
- 2-step RaR: call 1 rephrases the question; call 2 answers, given the original and the
  rephrased question. For last-letter the paper asks the rephrasing to keep the words
  unchanged and separate them (its Sec. 4.1); other tasks use the RaR paper's general request.

With ``n`` samples, 2-step RaR samples ``n`` rephrasings and answers each ``n_answer`` times
(paper, coin flip: both stages sampled), giving ``n * n_answer`` traces per input.
"""

from __future__ import annotations

from types import ModuleType
from typing import Sequence

from ..findings import answer_profile, compare, lenient_accuracy, output_profile
from ..generation import generate
from ..models import LoadedModel
from ..registry import RAR
from ..tasks import Example
from . import Call, Trace, parse, single_call

# Table 1's rows, in the paper's order (defined in the registry, which every table and verdict reads)
SYSTEM1, ONE_STEP, TWO_STEP = RAR.SYSTEM1, RAR.ONE_STEP, RAR.TWO_STEP
DISTILL_SYSTEM1, DISTILL_SYSTEM2, DISTILL_NO_FILTER = RAR.DISTILL_SYSTEM1, RAR.DISTILL_SYSTEM2, RAR.DISTILL_NO_FILTER
ROWS, STUDENTS = RAR.ROWS, RAR.STUDENTS

ONE_STEP_SUFFIX = "Rephrase and expand the question, and respond."
REPHRASE = {
    "default": '"{question}"\nGiven the above question, rephrase and expand it to help you do better answering. '
               "Maintain all information in the original question.",
    # Sec. 4.1: for last letter, rephrase so the words are separated and kept unchanged
    "last_letter": '"{question}"\nRephrase the above question: list the words one per line, exactly as written '
                   "(do not change them), and say what to do with their last letters. Do not answer it.",
}
RESPOND = "(original) {question}\n(rephrased) {rephrased}\nUse your answer to the rephrased question to answer the original question."


def one_step_prompt(example: Example) -> str:
    return f"{example.input}\n{ONE_STEP_SUFFIX}"


def rephrase_prompt(example: Example, task: ModuleType) -> str:
    template = REPHRASE.get(getattr(task, "NAME", ""), REPHRASE["default"])
    return template.format(question=example.input)


def respond_prompt(example: Example, rephrased: str) -> str:
    return RESPOND.format(question=example.input, rephrased=rephrased.strip())


def one_step(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, **kw) -> list[list[Trace]]:
    """1-step RaR: rephrase, expand and respond in one call; keyword arguments as `single_call`."""
    kw.setdefault("desc", "RaR 1-step")
    kw.setdefault("max_new_tokens", 128)
    return single_call(lm, examples, task, [one_step_prompt(e) for e in examples], "rar1", **kw)


def two_step(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, *, n: int = 1, n_answer: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, rephrase_tokens: int = 64, answer_tokens: int = 96,
             seed: int = 0, extract_mode: str = "flexible", **gen) -> list[list[Trace]]:
    """2-step RaR: sample ``n`` rephrasings, then ``n_answer`` answers to each."""
    desc = gen.pop("desc", "RaR 2-step")
    r_prompts = [rephrase_prompt(e, task) for e in examples]
    rephrasings = generate(lm, r_prompts, n=n, temperature=temperature, top_p=top_p,
                           max_new_tokens=rephrase_tokens, seed=seed, desc=f"{desc}: rephrase", **gen)
    a_prompts = [respond_prompt(e, c.text) for e, cs in zip(examples, rephrasings) for c in cs]
    answers = generate(lm, a_prompts, n=n_answer, temperature=temperature, top_p=top_p,
                       max_new_tokens=answer_tokens, seed=seed, desc=f"{desc}: respond", **gen)
    out, j = [], 0
    for e, rp, cs in zip(examples, r_prompts, rephrasings):
        traces = []
        for c in cs:
            first = Call.of("rephrase", rp, c)
            for a in answers[j]:
                second = Call.of("respond", a_prompts[j], a)
                traces.append(Trace(e.id, len(traces), (first, second), parse(task, a.text, a.finish_reason, e, extract_mode)))
            j += 1
        out.append(traces)
    return out


def target(sizes):
    """The students' target the sizes choose (`profiles.TARGETS`): the respond call's response
    (``"final"``: gpu and paper) or the answer in a fixed sentence (``"template"``: smoke and cpu)."""
    from .. import distill

    return distill.final_call_target if sizes.target == "final" else distill.answer_target


def findings(exp, test) -> list[str]:
    """What Table 1's numbers say, computed from them (true under any model, or silent)."""
    out = [compare(exp, TWO_STEP, SYSTEM1)]
    s1, s2 = exp.row(SYSTEM1), exp.row(TWO_STEP)
    if abs(s1.parse_failures - s2.parse_failures) >= 0.1:
        out.append(f"Parse failures: {SYSTEM1} {100 * s1.parse_failures:.1f}%, {TWO_STEP} "
                   f"{100 * s2.parse_failures:.1f}%; part of the gap is whether the model commits to an answer at all.")
    for name in (SYSTEM1, TWO_STEP):
        out += [x for x in [output_profile(exp, name)] if x]
    lenient = lenient_accuracy(exp, (SYSTEM1, ONE_STEP, TWO_STEP), test)
    if lenient:
        out.append(lenient)
    f = exp.filters.get(DISTILL_SYSTEM2)
    if f is not None:
        if f["kept"] == 0:
            out.append(f"The {exp.filter_rule} vote kept none of the {f['inputs']} unlabeled inputs: the samples never "
                       f"agreed, so {DISTILL_SYSTEM2} ran no fine-tuning step and is the base model.")
        else:
            out.append(f"The {exp.filter_rule} vote kept {f['kept']} of {f['inputs']} unlabeled inputs; "
                       f"{100 * f['precision']:.0f}% of the kept targets are right, against "
                       f"{100 * f['unfiltered_accuracy']:.0f}% of all 2-step RaR samples.")
    d = exp.row(DISTILL_SYSTEM2)
    out.append(f"{DISTILL_SYSTEM2} answers in {d.tokens:.1f} tokens per input, against {s2.tokens:.1f} for its teacher: "
               + compare(exp, DISTILL_SYSTEM2, TWO_STEP))
    out.append(compare(exp, DISTILL_SYSTEM2, SYSTEM1))
    out.append("The filter (ablation): " + compare(exp, DISTILL_SYSTEM2, DISTILL_NO_FILTER))
    for name in STUDENTS:
        note = answer_profile(exp, name, test)
        if note:
            out.append(note)
    return out
