"""The records a program leaves: `Call` (one model call) and `Trace` (one sample of a program on one input).

They sit below every module that reads them (filters, evaluate, the programs in `system2`), so
reading a trace never imports the programs or the model. `system2` re-exports both.
The paper's #Tokens for an input is the sum of generated tokens over its trace's calls
(`Trace.n_tokens`); input tokens are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
