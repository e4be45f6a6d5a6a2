"""System 1 and System 2 programs over `generate`.

A program returns, per input, a list of `Trace` (one per sample): every model call (prompt,
output, tokens) and the final parsed answer. The paper's #Tokens for an input is the sum of
generated tokens over its trace's calls (`Trace.n_tokens`); input tokens are not counted.
`Call` and `Trace` live in `s2d_utils.traces` (filters and evaluate read them without the programs).
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Callable, Sequence

from ..generation import generate
from ..models import LoadedModel
from ..tasks import Example
from ..traces import Call, Trace  # re-exported: `from s2d_utils.system2 import Call, Trace` keeps working


CUT = "length"  # a call's finish reason when the token cap stopped it


def parse(task: ModuleType, text: str, finish_reason: str, example: Example | None, mode: str = "flexible",
          **kw) -> str | None:
    """The one reading of a completion's answer, used by every program and by `rescore`.

    A completion cut by the token cap has not finished: it states an answer only in the task's
    strict form ("The answer is 12", "[[A]]"); the flexible fallbacks (the last number, the last
    word, a bare "yes") would read a half-written thought as an answer ("... 4. Harry's" -> 4).
    """
    if finish_reason == CUT and mode == "flexible":
        mode = "strict"
    return task.extract(text, mode, example, **kw)


def rescore(traces: Sequence[Sequence[Trace]], examples: Sequence[Example], task: ModuleType,
            reader: "Callable[[Call, Example], str | None] | None" = None, mode: str = "flexible") -> list[list[Trace]]:
    """The same traces with each answer read again from the final call's cached output: another
    parse rule (``mode``, or any ``reader(call, example)``), nothing regenerated."""
    def read(t: Trace, e: Example) -> str | None:
        c = t.calls[-1]
        return reader(c, e) if reader else parse(task, c.output, c.finish_reason, e, mode)

    return [[replace(t, answer=read(t, e)) for t in ts] for ts, e in zip(traces, examples)]


def cut_share(traces: Sequence[Sequence[Trace]]) -> float:
    """Share of calls (all samples, all calls) the token cap stopped."""
    calls = [c for ts in traces for t in ts for c in t.calls]
    return sum(c.finish_reason == CUT for c in calls) / len(calls) if calls else 0.0


def system1_prompt(example: Example) -> str:
    """System 1 (zero-shot): the question itself; the model answers directly."""
    return example.input


def single_call(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, prompts: Sequence[str],
                call: str, *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 64,
                seed: int = 0, extract_mode: str = "flexible", **gen) -> list[list[Trace]]:
    """A one-call program: generate on ``prompts`` and parse each output's answer."""
    outs = generate(lm, prompts, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    seed=seed, **gen)
    return [
        [Trace(e.id, i, (Call.of(call, p, c),), parse(task, c.text, c.finish_reason, e, extract_mode))
         for i, c in enumerate(cs)]
        for e, p, cs in zip(examples, prompts, outs)
    ]


def system1(lm: LoadedModel, examples: Sequence[Example], task: ModuleType, **kw) -> list[list[Trace]]:
    """Answer each question directly (one call); keyword arguments as `single_call`."""
    kw.setdefault("desc", "System 1")
    return single_call(lm, examples, task, [system1_prompt(e) for e in examples], "answer", **kw)
