"""Traces built by hand for the tests: the one place they are made, so a change to `Call` or `Trace`
(a field added, an order changed) is made here once and every test still builds what it means."""

from __future__ import annotations

from s2d_utils.traces import Call, Trace


def call(name: str, prompt: str, output: str, tokens: int = 3, finish: str = "stop",
         logprob: float | None = None) -> Call:
    """One model call: ``output`` generated from ``prompt`` in ``tokens`` tokens, ended by ``finish``."""
    return Call(name, prompt, output, tokens, finish, logprob)


def trace(input_id: str, answer: str | None, *calls: Call, sample: int = 0) -> Trace:
    """Sample ``sample`` of a program on ``input_id``: its ``calls`` in order and the answer parsed from them."""
    return Trace(input_id, sample, tuple(calls), answer)


def samples(input_id: str, answers, outputs=None, *, template: str = "final {}", name: str = "answer",
            prompt: str = "p", tokens: int = 3, finish: str = "stop", before: tuple[Call, ...] = ()) -> list[Trace]:
    """Samples 0, 1, ... of one input: sample i's calls are ``before`` then one that answered ``answers[i]``
    with the output ``outputs[i]`` (by default ``template`` filled with the answer)."""
    outputs = outputs if outputs is not None else [template.format(a) for a in answers]
    return [trace(input_id, a, *before, call(name, prompt, out, tokens, finish), sample=i)
            for i, (a, out) in enumerate(zip(answers, outputs, strict=True))]


def greedy(examples, answers, *, template: str = "The answer is {}.", name: str = "answer", tokens: int = 3,
           logprob: float | None = None, prompt: str | None = None) -> list[list[Trace]]:
    """A system's traces on ``examples``: one greedy call each, answering ``answers[i]`` in ``template``
    (the prompt: the example's input unless ``prompt`` is given)."""
    return [[trace(e.id, a, call(name, e.input if prompt is None else prompt, template.format(a), tokens, "stop",
                                 logprob))] for e, a in zip(examples, answers, strict=True)]


def spent(input_id: str, answer: str | None, tokens, sample: int = 0) -> Trace:
    """A trace whose calls ``c0``, ``c1``, ... generated ``tokens[0]``, ``tokens[1]``, ... tokens (for counting)."""
    return trace(input_id, answer, *(call(f"c{i}", "p", "o", t) for i, t in enumerate(tokens)), sample=sample)
