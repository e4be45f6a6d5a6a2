"""The records a program leaves: `Call` (one model call) and `Trace` (one sample of a program on one
input), and the one reading of a call's answer (`parse`, `rescore`).

They sit below every module that reads them (filters, evaluate, records, findings, the programs
in `system2`), so reading a trace never imports the programs or the model. `system2` re-exports
them.
The paper's #Tokens for an input is the sum of generated tokens over its trace's calls
(`Trace.n_tokens`); input tokens are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Callable, Sequence

from .tasks import Example

CUT = "length"  # a call's finish reason when the token cap stopped it


@dataclass(frozen=True)
class Call:
    """One model call of a program."""

    name: str
    prompt: str
    output: str
    n_tokens: int
    finish_reason: str
    logprob: float | None = field(default=None, compare=False)  # the model's log-probability of its output (`generation.Completion`)

    @classmethod
    def of(cls, name: str, prompt: str, completion) -> "Call":
        """The call that produced ``completion`` (a `generation.Completion`) from ``prompt``."""
        c = completion
        return cls(name, prompt, c.text, c.n_tokens, c.finish_reason, c.logprob)


@dataclass(frozen=True)
class Trace:
    """One sample of a program on one input."""

    input_id: str
    sample: int
    calls: tuple[Call, ...]
    answer: str | None

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.calls)

    @property
    def final(self) -> str:
        return self.calls[-1].output


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
