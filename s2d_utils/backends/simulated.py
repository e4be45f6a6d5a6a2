"""A simulated backend: every sample is a random completion in the task's format, for full-size dry
runs on a CPU (`s2d_utils.simulate`, ``make simulate``). Nothing it writes is a result.

What it returns for a call depends on the call (read from the rendered prompt, as a model would):
BSM's branch gets a list of criteria, its solve calls two scores, USC's selection a response number,
S2A's rewrite the two labelled parts, RaR's rephrase call a rephrasing, and every other call some
filler words and, at the end, an answer drawn at random from the task's answer space in the task's
own form ("The answer is yes.", "[[B]]"): `AGREE` of the calls on one input give that input's own
preferred answer (seeded by its text), so votes agree as often as real samples' do and the filters
keep inputs to train on. The answer never depends on the gold, so no simulated table can pass for
a result. Lengths are drawn up to the call's token cap; one call in
`CUT_SHARE` runs to its cap without an answer (finish reason "length"), as real samples do.

Every call is counted in `LEDGER` (calls, prompt tokens, generated tokens, the caps' bound), per
kind of call: the work plan of a notebook is read from it.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections import defaultdict
from typing import Iterator, Sequence

from .base import Generated, Job, Sampling

CUT_SHARE = 0.08  # share of calls that run to their cap without an answer
VERSION = "1"  # part of the cache key: a change of what it returns makes new samples

FILLER = ("the", "of", "and", "to", "in", "is", "it", "that", "we", "for", "on", "as", "with", "this", "be", "by",
          "at", "or", "from", "so", "if", "can", "each", "then", "which", "one", "two", "all", "more", "when",
          "there", "first", "step", "look", "now", "next", "word", "coin", "number", "answer", "question")
CRITERIA = ("Helpfulness", "Relevance", "Accuracy", "Depth", "Clarity")


class Ledger:
    """What the simulated backend was asked for, per kind of call, since the last `reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "prompt_tokens": 0,
                                                                     "generated_tokens": 0, "cap_tokens": 0})

    def add(self, kind: str, prompt_tokens: int, generated: int, cap: int) -> None:
        k = self.kinds[kind]
        k["calls"] += 1
        k["prompt_tokens"] += prompt_tokens
        k["generated_tokens"] += generated
        k["cap_tokens"] += cap

    def totals(self) -> dict[str, int]:
        out = {"calls": 0, "prompt_tokens": 0, "generated_tokens": 0, "cap_tokens": 0}
        for k in self.kinds.values():
            for name in out:
                out[name] += k[name]
        return out

    def as_dict(self) -> dict:
        return {"by_call": {k: dict(v) for k, v in sorted(self.kinds.items())}, **self.totals()}


LEDGER = Ledger()


def call_kind(prompt: str) -> str:
    """Which call of which program a rendered prompt is (the markers of the prompts in `system2`)."""
    if "Evaluation Plan:" in prompt:
        return "bsm branch"
    if "[Evaluation Criterion]" in prompt:
        return "bsm solve"
    if "Select the most consistent response" in prompt:
        return "usc select"
    if "Separate this into two categories" in prompt:
        return "s2a rewrite"
    if "rephrase and expand it to help you" in prompt or "Rephrase the above question" in prompt:
        return "rar rephrase"
    return "answer"


AGREE = 0.6  # share of calls on an input that give the input's own preferred answer (so votes can agree)


def _anchor(prompt: str) -> str:
    """The part of a prompt that names its input across a program's calls (RaR's respond call
    quotes the original question; S2A's answer call carries the rewritten question)."""
    for mark in ("(original) ", "Question/Query: "):
        if mark in prompt:
            return prompt.split(mark, 1)[1].split("\n", 1)[0]
    return prompt


def _answer(task: str, prompt: str, rng: random.Random) -> str:
    """An answer in ``task``'s form: with probability `AGREE` the input's preferred one (drawn with a
    seed from the prompt's text alone), else one drawn with ``rng``. Neither depends on the gold."""
    if rng.random() < AGREE:
        rng = random.Random(hashlib.sha256(_anchor(prompt).encode()).digest())
    return _draw(task, prompt, rng)


def _draw(task: str, prompt: str, rng: random.Random) -> str:
    """An answer from ``task``'s answer space, in its form, drawn with ``rng`` alone (never the gold)."""
    if task == "judge":
        return f"[[{rng.choice('ABC')}]]"
    if task == "coin_flip":
        return f"The answer is {rng.choice(('yes', 'no'))}."
    if task == "gsm8k":
        return f"The answer is {rng.randrange(1000)}."
    if task == "last_letter":
        return f"The answer is {''.join(rng.choice(string.ascii_lowercase) for _ in range(2))}."
    if task == "sycophancy":  # a name the question mentions, or one like it
        names = sorted(set(re.findall(r"\b[A-Z][a-z]{3,}\b", prompt)) - {"Question", "Answer", "Given", "Text"})
        return f"The answer is {rng.choice(names) if names else 'Paris'}."
    return f"The answer is {rng.randrange(10)}."


class SimulatedBackend:
    """`Backend` of the simulated run (see the module docstring). ``task`` names the notebook's task."""

    kind = "simulated"
    flush_every = 4096

    def __init__(self) -> None:
        self.task = ""
        self._lengths: dict[tuple[int, str], int] = {}
        self._filler: dict[int, list[str]] = {}

    def identity(self, lm) -> dict[str, str]:
        return {"kind": self.kind, "version": VERSION, "task": self.task, "dtype": "no"}

    def _tokens(self, lm, text: str) -> int:
        key = (id(lm.tokenizer), text)
        if key not in self._lengths:
            self._lengths[key] = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._lengths[key]

    def _words(self, lm) -> list[str]:
        """Filler words that are one token each with their leading space (so a count is a length)."""
        key = id(lm.tokenizer)
        if key not in self._filler:
            self._filler[key] = [w for w in FILLER if self._tokens(lm, " " + w) == 1] or ["a"]
        return self._filler[key]

    def compose(self, lm, prompt: str, cap: int, rng: random.Random) -> tuple[str, int, str]:
        """(text, generated tokens, finish reason) of one simulated call."""
        kind = call_kind(prompt)
        words = self._words(lm)
        if kind == "bsm branch":
            k = rng.randint(1, len(CRITERIA))
            ending = "\n".join(f"{i + 1}. {c}: how well each answer does on {c.lower()}."
                               for i, c in enumerate(rng.sample(CRITERIA, k)))
        elif kind == "bsm solve":
            ending = f"Assistant A: {rng.randint(1, 5)}\nAssistant B: {rng.randint(1, 5)}"
        elif kind == "usc select":
            shown = len(re.findall(r"\nResponse \d+:", prompt)) or 1
            ending = f"The most consistent response is Response {rng.randrange(shown)}."
        elif kind == "s2a rewrite":
            ending = ("Unbiased text context (includes all content except user's bias): None.\n"
                      "Question/Query (does not include user bias/preference): " + prompt.split("Text by User:")[-1]
                      .split("?")[0].strip()[-300:] + "?")
        elif kind == "rar rephrase":
            ending = ""
        else:
            ending = _answer(self.task, prompt, rng)
        need = self._tokens(lm, ending) if ending else 0
        if rng.random() < CUT_SHARE or need > cap:  # runs to its cap before it answers
            return "".join(" " + rng.choice(words) for _ in range(cap)).strip(), cap, "length"
        short = cap <= need + 2  # an answer-only cap (a System 1 judge's 8 tokens): the answer alone
        n = 0 if short else rng.randint(0, max(0, cap - need - 1))
        filler = "".join(" " + rng.choice(words) for _ in range(n)).strip()
        text = f"{filler}. {ending}" if filler and ending else filler or ending
        return text, self._tokens(lm, text) if short or not filler else n + 1 + need, "stop"

    def run(self, lm, jobs: Sequence[Job], sampling: Sampling, batch_size: int, stats) -> Iterator[tuple[int, Generated]]:
        for j, job in enumerate(jobs):
            rng = random.Random(job.seed)
            text, n, reason = self.compose(lm, job.prompt, sampling.max_new_tokens, rng)
            LEDGER.add(call_kind(job.prompt), len(job.tokens), n, sampling.max_new_tokens)
            yield j, Generated(text, n, reason)

    def score(self, lm, prompts: Sequence[str], outputs: Sequence[str], finish_reasons: Sequence[str],
              batch_size: int = 8, cache_dir=None) -> list[float]:
        """A probability for each output, drawn from a hash of prompt and output (a routing curve to
        draw, not a confidence)."""
        out = []
        for p, o in zip(prompts, outputs):
            h = int.from_bytes(hashlib.sha256(f"{p}\x00{o}".encode()).digest()[:8], "little")
            out.append(0.02 + 0.96 * h / 2 ** 64)
        return out


SIMULATED = SimulatedBackend()
