"""The one door to the model: `generate(lm, prompts, n, temperature, ...)`.

Contract:
- ``prompts`` are user messages (str) or chat message lists; each is rendered with the model's
  chat template (`render`, defined with the backends' seam, whose jobs carry rendered prompts), so
  every method and the fine-tuning data see exactly the same prompt text.
- Returns one list of ``n`` `Completion` per prompt, in input order.
- ``n_tokens`` counts generated tokens, not counting the end-of-turn token that stopped a sample
  (paper's #Tokens: generated tokens per call, summed over a System 2 program's calls).
- Per-sample seeds: each sample draws from its own RNG, seeded from (seed, rendered prompt,
  sample index). A sample does not depend on which other prompts share its batch, on batch size,
  or on whether it came from the cache.
- Cached: samples already in the `GenerationCache` are not regenerated; finished samples are
  committed every ``batch_size`` samples, so a killed run loses at most the rows in flight.
- Greedy (temperature 0) generates sample 0 once; n > 1 greedy samples are copies of it.

- Backends (`backends`): the missing samples go to one backend, chosen by one setting
  (``S2D_BACKEND``, `backends.backend_for`): `backends.local.LocalBackend` (this process: our
  engine, per-row RNGs) or `backends.openai.OpenAIBackend` (any OpenAI-compatible server). The
  backend's identity (kind, server version, served model, dtype) joins the model's fingerprint in
  every cache key (`model_key`), so samples from a bf16 server never stand in for the local fp32
  model's.
- Returns a `Generations` list; its ``.stats`` (`GenerationStats`) says what the call did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

from . import paths
from .backends import Job, Prompt, Sampling, backend_for, render, sharing_order  # noqa: F401 (`generation.render`)
from .cache import CachedSample, GenerationCache, sample_key
from .models import LoadedModel


@dataclass(frozen=True)
class Completion:
    """One generated sample."""

    text: str
    n_tokens: int
    finish_reason: str  # "stop": ended with end-of-turn; "length": hit max_new_tokens
    # the model's log-probability (temperature 1) of these tokens, the stop token included when it
    # stopped there: what `backends.answer_confidence` needs, known without a second forward pass
    # (None from a server, or from a cache written before it was recorded). Not part of a sample's
    # identity in comparisons: it rounds with the batch the sample was drawn in, the tokens do not
    logprob: float | None = field(default=None, compare=False)


@dataclass
class GenerationStats:
    """What one `generate` call did (for tests, benchmarks and the curious): ``generate(...).stats``."""

    requested: int = 0
    cached: int = 0
    computed: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    prefill_tokens: int = 0  # prompt tokens run through prefill (fast engine)
    prefix_reused_tokens: int = 0  # prompt tokens whose K/V came from a shared prefix instead (prefix caching)
    computed_keys: list[str] = field(default_factory=list)
    backend: str = "local"
    engine_runs: list = field(default_factory=list)  # one `engine.RunStats` per engine run (local fast path)


class Generations(list):
    """`generate`'s result: one list of `Completion` per prompt, plus ``stats`` of the call."""

    stats: GenerationStats


_DEFAULT_CACHE: dict[str, GenerationCache] = {}


def default_cache() -> GenerationCache:
    """The project's generation cache (``results/cache/generations.sqlite``), opened once."""
    key = str(paths.GENERATION_CACHE)
    if key not in _DEFAULT_CACHE:
        _DEFAULT_CACHE[key] = GenerationCache(paths.GENERATION_CACHE)
    return _DEFAULT_CACHE[key]


def context_window(lm: LoadedModel) -> int | None:
    """The model's context length in tokens (None when its config does not say)."""
    return getattr(lm.config, "max_position_embeddings", None)


def fits(lm: LoadedModel, prompt: Prompt, max_new_tokens: int) -> bool:
    """Whether ``prompt`` (rendered) plus ``max_new_tokens`` fits the model's context window."""
    limit = context_window(lm)
    if limit is None:
        return True
    return len(lm.tokenizer(render(lm, prompt), add_special_tokens=False)["input_ids"]) + max_new_tokens <= limit


def sample_seed(seed: int, rendered: str, index: int) -> int:
    """A 63-bit RNG seed for one sample, independent of its batch."""
    digest = hashlib.sha256(f"{seed}|{index}|{rendered}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


LEGACY_IDENTITY = {"kind": "local", "dtype": "float32"}  # keys made before backends had identities


def model_key(lm: LoadedModel, identity: dict[str, str]) -> str:
    """The model part of a cache key: the weights' fingerprint plus the backend's identity.

    The local fp32 backend keeps the bare fingerprint (the key it always had, so existing caches
    stay valid); any other backend or dtype extends it, so a bf16 GPU run, or a served model,
    never reuses the local fp32 samples.
    """
    import json

    if identity == LEGACY_IDENTITY:
        return lm.fingerprint
    return f"{lm.fingerprint}|{json.dumps(identity, sort_keys=True)}"


def generate(lm: LoadedModel, prompts: Sequence[Prompt], n: int | Sequence[int] = 1, temperature: float = 0.0,
             top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0, batch_size: int = 32,
             cache: GenerationCache | None | str = "default", progress: bool = True,
             desc: str = "generate", backend=None) -> Generations:
    """Generate ``n`` completions for each prompt (see the module docstring for the contract);
    ``n`` may also be one count per prompt (maj@k on some questions, one sample on the rest: one
    call keeps the batch full where two would each end in a thin tail).

    ``backend``: None takes the one the settings choose (`backends.backend_for`); or
    `backends.LOCAL`, a `backends.openai.OpenAIBackend`, ...
    """
    import time

    from tqdm import tqdm

    counts = [n] * len(prompts) if isinstance(n, int) else [int(c) for c in n]
    if len(counts) != len(prompts):
        raise ValueError(f"n has {len(counts)} counts for {len(prompts)} prompts: give one per prompt, or one int")
    if any(c < 1 for c in counts) or max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"n={n}, max_new_tokens={max_new_tokens}, batch_size={batch_size}: each must be >= 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature={temperature} must be >= 0 and top_p={top_p} in (0, 1]")
    store = default_cache() if cache == "default" else cache
    backend = backend_for(lm) if backend is None else backend
    t0 = time.perf_counter()
    greedy = temperature == 0
    params = {"temperature": float(temperature), "top_p": 1.0 if greedy else float(top_p),
              "max_new_tokens": int(max_new_tokens), "seed": 0 if greedy else int(seed)}
    rendered = [render(lm, p) for p in prompts]
    mkey = model_key(lm, backend.identity(lm))
    keys = [[sample_key(mkey, r, params, i) for i in range(1 if greedy else c)] for r, c in zip(rendered, counts)]
    found = store.get_many(k for ks in keys for k in ks) if store is not None else {}
    todo = [(p, i) for p, ks in enumerate(keys) for i, k in enumerate(ks) if k not in found]
    requested = sum(len(ks) for ks in keys)
    stats = GenerationStats(requested=requested, cached=requested - len(todo), backend=backend.kind)

    if todo:
        limit = context_window(lm)
        tokenized: dict[int, list[int]] = {}
        for p in sorted({p for p, _ in todo}):
            toks = lm.tokenizer(rendered[p], add_special_tokens=False)["input_ids"]
            if limit is not None and len(toks) + max_new_tokens > limit:
                raise ValueError(f"prompt {p}: {len(toks)} tokens + max_new_tokens={max_new_tokens} "
                                 f"exceeds the model's context of {limit} tokens")
            tokenized[p] = toks
        # prompt order: samples of one prompt together (they share a prefill), prompts with a long
        # common prefix together (they share its prefill), short first; per-sample seeds make the
        # order irrelevant to the results
        order = sharing_order([tuple(t) for t in tokenized.values()])
        todo.sort(key=lambda pi: (order[tuple(tokenized[pi[0]])], pi))
        bar = tqdm(total=len(todo), desc=desc, disable=not progress, unit="sample")
        pending: dict[str, CachedSample] = {}
        flush_every = backend.flush_every or batch_size

        def flush() -> None:
            if store is not None and pending:
                store.put_many(pending)
            found.update(pending)
            stats.computed_keys.extend(pending)
            pending.clear()

        jobs = [Job(rendered[p], tuple(tokenized[p]), sample_seed(seed, rendered[p], i)) for p, i in todo]
        sampling = Sampling(float(temperature), float(top_p), int(max_new_tokens))
        try:
            for j, out in backend.run(lm, jobs, sampling, batch_size, stats):
                p, i = todo[j]
                pending[keys[p][i]] = CachedSample(out.text, out.n_tokens, out.finish_reason, out.logprob)
                stats.generated_tokens += out.n_tokens
                stats.computed += 1
                bar.update(1)
                if len(pending) >= flush_every:  # commit: a kill loses at most the rows in flight
                    flush()
        finally:  # what finished is kept, even when the backend fails halfway (a server gone)
            flush()
            bar.close()
    stats.seconds = time.perf_counter() - t0
    out = Generations()
    for ks, c in zip(keys, counts):
        samples = [found[k] for k in ks]
        if greedy:
            samples = samples * c
        out.append([Completion(s.text, s.n_tokens, s.finish_reason, s.logprob) for s in samples])
    out.stats = stats
    return out
