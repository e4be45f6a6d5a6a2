"""Which backend generates (and scores) for a model. Laid out as lm-evaluation-harness lays out its
models: the interface (`base`), one module per backend kind (`KINDS`), and a factory, `backend_for`,
that gives the backend the one setting chooses for a model.

- ``local`` (`local.LocalBackend`, `LOCAL`): the model in this process, through our engine
  (continuous batching, shared prefixes) or the model's own forward. Bit-for-bit reproducible.
- ``simulated`` (`simulated.SIMULATED`): random answers in the task's format, for full-size dry
  runs on a CPU (`s2d_utils.simulate`); nothing it returns is a result.
- ``openai`` (`openai.OpenAIBackend`): any OpenAI-compatible server (vLLM, SGLang, llama.cpp's
  ``llama-server``, ``transformers serve``), one ``/v1/completions`` request per sample carrying
  the sample's seed; the prompt is rendered here, with the model's own chat template.

One setting chooses: the environment (``S2D_BACKEND=openai S2D_BASE_URL=http://host:8000/v1
S2D_SERVED_MODEL=<name>``), or a notebook's ``BACKEND`` / ``BASE_URL`` / ``SERVED_MODEL`` passed to
`pipeline.start` (which writes the same variables). A distilled student (a LoRA adapter on the
base model) follows the setting: with ``openai`` it goes to the server as that adapter, loaded at
run time under its content hash (`openai.OpenAIBackend.with_adapter`); only where the server cannot
load adapters does it generate locally, said once per adapter (`ADAPTER_FALLBACKS`).

The seam itself (`Job`, `Sampling`, `Generated`, the `Backend` protocol, `Settings`) is `base`;
`answer_confidence` is the student's confidence in its own answers, through the same backend.
"""

from __future__ import annotations

import json
import math
import warnings

from .base import (KINDS, Backend, Generated, Job, Prompt, Sampling, Settings, answer_tokens,  # noqa: F401
                   configure, render, stop_token_ids)
from .local import LOCAL, LocalBackend  # noqa: F401
from .openai import AdapterUnsupported, OpenAIBackend, ServerError, TokenCountMismatch, connect  # noqa: F401
from .simulated import LEDGER, SIMULATED  # noqa: F401

ADAPTER_FALLBACKS: dict[str, str] = {}  # adapter folder -> why the server could not serve it


def backend_for(lm) -> Backend:
    """The backend the settings (`Settings.from_env`) choose for ``lm``.

    A distilled student (``lm.adapter``: a LoRA adapter on the base) goes to the server as that
    adapter, loaded at run time under its content hash (`OpenAIBackend.with_adapter`); a
    server that cannot load adapters is said once per adapter (`ADAPTER_FALLBACKS`), and the
    student generates locally (its weights load then).
    """
    settings = Settings.from_env()
    if settings.kind == "local":
        return LOCAL
    if settings.kind == "simulated":  # students too: a simulated student is the base (nothing trained)
        return SIMULATED
    backend = connect(settings, lm)
    if lm.adapter is None:
        return backend
    if lm.adapter in ADAPTER_FALLBACKS:
        return LOCAL
    try:
        return backend.with_adapter(lm.adapter)
    except AdapterUnsupported as err:
        ADAPTER_FALLBACKS[lm.adapter] = str(err)
        warnings.warn(str(err), stacklevel=2)
        return LOCAL


def sharing_order(prompts: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, int]]:
    """`engine.sharing_order`: the order `generate` hands a backend its jobs in (imported when first
    needed: the engine imports torch)."""
    from ..engine import sharing_order as order

    return order(prompts)


# ----- the student's confidence in its own answer -----

def call_messages(prompt: str) -> Prompt:
    """A call's prompt as the model got it: a chat (BSM stores its messages as JSON) or a user turn."""
    if prompt.startswith("[{"):
        try:
            messages = json.loads(prompt)
        except ValueError:
            return prompt
        if isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages):
            return messages
    return prompt


def answer_confidence(lm, traces, batch_size: int = 8, cache_dir=None,
                      backend: Backend | None = None) -> list[float] | None:
    """Per input, the probability the model gives its own greedy answer: the product of its
    next-token probabilities over the last call's output tokens (and the end-of-turn token when the
    call stopped there). Inputs with several traces (a judge's two orders) get the mean.

    A call that carries its log-probability (`Call.logprob`: the engine records it from the logits
    each token was drawn from) costs nothing more. The others are scored by ``backend`` (`Backend.score`:
    the output teacher-forced on the exact prompt it saw, re-tokenized from its text). Its default:
    `LOCAL` when ``lm``'s weights are in memory (or nothing needs scoring), else the backend that
    generates for ``lm`` (`backend_for`: a student served as an adapter is scored by its server).
    The local backend caches its scores per model fingerprint in ``cache_dir`` (default
    ``<results>/cache/confidence/``, one JSON file), so a rerun computes nothing it has computed
    before. None where the backend cannot score (a server without prompt log-probabilities): no
    confidence for that model.
    """
    marks = []  # per input, per trace: ("logprob", the call's own) or ("score", index into the pairs)
    pairs = []  # (rendered prompt, output, finish reason) of each call to score
    for ts in traces:
        keys = []
        for t in ts:
            call = t.calls[-1]
            if call.logprob is not None:
                keys.append(("logprob", call.logprob))
                continue
            keys.append(("score", len(pairs)))
            pairs.append((render(lm, call_messages(call.prompt)), call.output, call.finish_reason))
        marks.append(keys)
    if backend is None:  # nothing to score, or the weights are here: scored here, as the routing notebook always was
        simulated = Settings.from_env().kind == "simulated"  # a dry run scores nothing for real
        backend = SIMULATED if simulated else LOCAL if lm.loaded or not pairs else backend_for(lm)
    scores = backend.score(lm, [p for p, _, _ in pairs], [o for _, o, _ in pairs], [r for _, _, r in pairs],
                           batch_size=batch_size, cache_dir=cache_dir)
    if scores is None:
        return None
    probs = [[math.exp(v) if kind == "logprob" else scores[v] for kind, v in keys] for keys in marks]
    return [sum(ps) / len(ps) if ps else 0.0 for ps in probs]
