"""System 1 and System 2 programs over `generate`.

A program returns, per input, a list of `Trace` (one per sample): every model call (prompt,
output, tokens) and the final parsed answer. The paper's #Tokens for an input is the sum of
generated tokens over its trace's calls (`Trace.n_tokens`); input tokens are not counted.
`Call`, `Trace` and the answer reading (`parse`, `rescore`) live in `s2d_utils.traces` (filters,
evaluate, records and findings read them without the programs).
"""

from __future__ import annotations

from types import ModuleType
from typing import Sequence

from ..generation import generate
from ..models import LoadedModel
from ..tasks import Example
from ..traces import CUT, Call, Trace, cut_share, parse, rescore

__all__ = ["CUT", "Call", "Trace", "cut_share", "parse", "rescore", "single_call", "system1", "system1_prompt"]


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
