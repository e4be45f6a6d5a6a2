"""The one door to the model: `generate(lm, prompts, n, temperature, ...)`.

Contract:
- ``prompts`` are user messages (str) or chat message lists; each is rendered with the model's
  chat template, so every method and the fine-tuning data see exactly the same prompt text.
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
  (``S2D_BACKEND``): `LocalBackend` (this process, below) or `served.OpenAIBackend` (any
  OpenAI-compatible server). The backend's identity (kind, server version, served model, dtype)
  joins the model's fingerprint in every cache key (`model_key`), so samples from a bf16 server
  never stand in for the local fp32 model's.
- Returns a `Generations` list; its ``.stats`` (`GenerationStats`) says what the call did.

The local decode loop is our own (not ``model.generate``) for the per-row RNGs. For Llama and Qwen2
models it is `engine.run_continuous`: continuous batching (a row that stops is refilled with the
next sample at once) over `engine.Decoder`'s decode step, whose rows share one copy of
their prompt's K/V. Other models take `_decode_batch`, fixed batches over the model's own forward.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass, field
from typing import Sequence, Union

from . import paths
from .backends import Generated, Job, Sampling, Settings
from .cache import CachedSample, GenerationCache, sample_key
from .models import LoadedModel, free_memory

Prompt = Union[str, Sequence[dict]]


@dataclass(frozen=True)
class Completion:
    """One generated sample."""

    text: str
    n_tokens: int
    finish_reason: str  # "stop": ended with end-of-turn; "length": hit max_new_tokens
    # the model's log-probability (temperature 1) of these tokens, the stop token included when it
    # stopped there: what `routing.answer_confidence` needs, known without a second forward pass
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


def render(lm: LoadedModel, prompt: Prompt) -> str:
    """The exact text the model sees for ``prompt``: chat template plus the assistant header."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("empty prompt: a System 1 or System 2 call needs some input text")
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
        if not messages:
            raise ValueError("empty chat: a prompt needs at least one message")
    return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


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


def stop_token_ids(lm: LoadedModel) -> set[int]:
    ids = {lm.tokenizer.eos_token_id}
    eos = getattr(lm.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    return {i for i in ids if i is not None}


TOP_K_FIRST = 128  # candidates taken before top-p; rows whose top-k mass is short of top_p fall back to a full sort


def _sample_rows(logits, temperature: float, top_p: float, generators):
    """Next token per row: argmax if greedy, else top-p sampling with each row's own RNG.

    Top-p needs the tokens in probability order; sorting 49k logits per row per step is the
    costly part, so we take the top ``TOP_K_FIRST`` first and sort the full row only where those
    hold less than ``top_p`` of the mass. The result is the same as sorting everything.
    """
    import torch

    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    k = min(TOP_K_FIRST, probs.shape[-1])
    sorted_p, order = probs.topk(k, dim=-1)
    short = sorted_p.sum(dim=-1) < top_p
    # each row's RNG lives on the CPU, so a seed gives the same draws on any device
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]).float().to(probs.device)
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    for rows, full_sort in ((~short, False), (short, True)):
        if not rows.any():
            continue
        if full_sort:  # rare: a flat distribution needs the whole sorted row
            sp, od = probs[rows].sort(dim=-1, descending=True)
        else:
            sp, od = sorted_p[rows], order[rows]
        cum = sp.cumsum(dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        sp = sp.masked_fill((cum - sp) >= top_p, 0.0)
        cum = sp.cumsum(dim=-1)
        pick = torch.searchsorted(cum, (u[rows] * cum[:, -1]).unsqueeze(-1)).clamp_(max=cum.shape[-1] - 1)
        out[rows] = od.gather(-1, pick).squeeze(-1)
    return out


_DECODERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
COMPACT_SHARE = 0.25  # (fallback path) finished rows leave the batch once they are this share of it


def _decoder_for(model):
    """The fast decoder for ``model`` (built once), or None where it does not apply.

    ``S2D_ENGINE=hf`` forces the fallback path (the model's own forward, fixed batches).
    """
    from . import engine

    if os.environ.get("S2D_ENGINE", "fast") != "fast" or not engine.supports(model):
        return None
    if model not in _DECODERS:
        _DECODERS[model] = engine.Decoder(model)
    return _DECODERS[model]


def _decode_batch(lm: LoadedModel, token_lists: list[list[int]], sample, max_new_tokens: int,
                  stops: set[int]) -> list[tuple[list[int], str]]:
    """Fallback for models the fast engine does not cover: one fixed batch, the model's forward.

    Rows with the same prompt share one prefill; finished rows leave the batch once they are
    `COMPACT_SHARE` of it (dropping rows copies the cache, so not one at a time).
    """
    import torch
    from transformers import DynamicCache

    from . import engine

    device = lm.device
    pad = lm.tokenizer.pad_token_id
    unique: dict[tuple[int, ...], int] = {}
    row_of = [unique.setdefault(tuple(t), len(unique)) for t in token_lists]
    prompts = list(unique)
    ids, mask, _ = engine.left_pad(prompts, pad, device)
    out: list[list[int]] = [[] for _ in token_lists]
    reason = ["length"] * len(token_lists)
    finished = [False] * len(token_lists)
    rows = list(range(len(token_lists)))  # original row index of each current batch row
    cache = DynamicCache(config=lm.model.config)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                          use_cache=True, logits_to_keep=1).logits[:, -1, :]
        expand = torch.tensor(row_of, device=device)
        logits, mask = logits[expand.to(logits.device)], mask[expand]
        position = position[expand][:, -1] + 1  # next position of each row
        if len(prompts) < len(token_lists):  # fan the shared prefill out to the sample rows
            select_rows(cache, expand)
        for step in range(max_new_tokens):
            nxt = sample(logits, rows).tolist()
            for r, tok in zip(rows, nxt):
                if finished[r]:
                    continue
                if tok in stops:
                    reason[r], finished[r] = "stop", True
                else:
                    out[r].append(tok)
            live = [b for b, r in enumerate(rows) if not finished[r]]
            if not live or step == max_new_tokens - 1:
                break
            if len(rows) - len(live) >= max(1, int(COMPACT_SHARE * len(rows))):
                idx = torch.tensor(live, device=device)
                select_rows(cache, idx)
                mask, position = mask.index_select(0, idx), position.index_select(0, idx)
                rows = [rows[b] for b in live]
                nxt = [nxt[b] for b in live]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            logits = lm.model(input_ids=torch.tensor(nxt, device=device)[:, None], attention_mask=mask,
                              position_ids=position[:, None], past_key_values=cache, use_cache=True,
                              logits_to_keep=1).logits[:, -1, :]
            position = position + 1
    return list(zip(out, reason))


def select_rows(cache, idx) -> None:
    """Keep rows ``idx`` of every layer of a `DynamicCache`, each layer indexed on its own device.

    A model split over devices (``device_map``) keeps each layer's K/V where the layer runs;
    `DynamicCache.batch_select_indices` would index them all with ``idx`` where it lies. Each layer
    selects its own rows (its `batch_select_indices`: layers with state beyond keys and values
    select that too), with ``idx`` moved to the device of the layer's tensors.
    """
    import torch

    moved: dict = {}
    for layer in cache.layers:
        device = next((v.device for v in vars(layer).values() if torch.is_tensor(v) and v.numel()), None)
        if device is not None:  # a layer that holds nothing yet has no rows to keep
            layer.batch_select_indices(moved.setdefault(device, idx.to(device)))


KV_BUDGET_MB = os.environ.get("S2D_KV_BUDGET_MB")  # K/V buffers of one engine run; unset: from the device
CPU_KV_BUDGET_BYTES = 1 << 30  # on CPU: 1 GiB (the notebooks' K/V is small; RAM also holds the model)
GPU_KV_SHARE = 0.5  # on a GPU: half of the memory free when the run starts


def kv_budget_bytes(model) -> int:
    """The K/V budget of one engine run: ``S2D_KV_BUDGET_MB`` if set; on CUDA, `GPU_KV_SHARE` of the
    device's free memory, counting what this process has cached but not allocated as free (a 1 GiB
    budget would hold a few thousand tokens of an 8B model); on CPU
    `CPU_KV_BUDGET_BYTES`."""
    import torch

    if KV_BUDGET_MB:
        return int(KV_BUDGET_MB) << 20
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # blocks this process's allocator keeps reserved but holds nothing in (the last run's K/V)
        # count as used for the driver; they are free to this process
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return max(CPU_KV_BUDGET_BYTES // 4, int(GPU_KV_SHARE * free))
    return CPU_KV_BUDGET_BYTES


def kv_token_budget(model) -> int:
    """How many tokens of K/V fit in `kv_budget_bytes` for ``model`` (all layers, keys and values)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    return max(1, kv_budget_bytes(model) // per_token)


def token_budget_groups(jobs: list[list[int]], slots: int, max_new_tokens: int, budget: int,
                        root: int = 0) -> list[list[int]]:
    """Split ``jobs`` (in order) into consecutive runs whose K/V buffers fit ``budget`` tokens.

    An engine run holds one K/V copy of each distinct prompt it serves (up to ``slots`` of them,
    each sized to the run's longest prompt) and ``slots`` rows of ``max_new_tokens`` generated
    tokens. Judge prompts of 1-2k tokens would make that gigabytes; grouping keeps memory bounded
    whatever the prompt lengths. A single job always forms a group, even over budget. The jobs
    arrive sorted by prompt length, so groups are of similar lengths; per-sample seeds make the
    grouping invisible in the results. ``root``: tokens every job begins with, which a run holds
    once for all its prompts (`engine.run_root`).
    """
    groups: list[list[int]] = []
    cur: list[int] = []
    distinct: set[tuple[int, ...]] = set()
    longest = 0
    for j, toks in enumerate(jobs):
        key = tuple(toks)
        n_distinct = len(distinct | {key})
        width = max(longest, len(toks))
        rows = min(slots, len(cur) + 1)
        need = root + min(slots, n_distinct) * (width - root) + rows * max_new_tokens
        if cur and need > budget:
            groups.append(cur)
            cur, distinct, longest = [], set(), 0
        cur.append(j)
        distinct.add(key)
        longest = max(longest, len(toks))
    if cur:
        groups.append(cur)
    return groups


def _run_jobs(lm: LoadedModel, jobs: list[list[int]], seeds: list[int], temperature: float, top_p: float,
              max_new_tokens: int, batch_size: int, stats: GenerationStats | None = None):
    """Yield (job index, generated tokens, finish reason, log-probability) as jobs finish, by the
    fastest path. The log-probability is the model's (temperature 1) over the generated tokens and
    the stop token when it stopped there, taken from the logits the tokens were drawn from."""
    import torch

    from . import engine

    generators = [torch.Generator().manual_seed(s) for s in seeds]
    steps: list[list[float]] = [[] for _ in jobs]  # each job's per-token log-probabilities, in order

    def sample(logits, job_indices):
        chosen = _sample_rows(logits, temperature, top_p, [generators[j] for j in job_indices])
        scores = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 for bf16, fp64 stays
        logp = (scores.gather(-1, chosen[:, None]).squeeze(-1) - scores.logsumexp(-1)).tolist()
        for j, lp in zip(job_indices, logp):
            steps[j].append(lp)
        return chosen

    def done(j, toks, reason):
        # the fallback keeps sampling rows that already stopped: only the first tokens (+ stop) count
        used = steps[j][: len(toks) + (reason == "stop")]
        steps[j] = []
        return j, toks, reason, float(sum(used))

    def sample_group(group):
        return lambda logits, idx: sample(logits, [group[i] for i in idx])

    stops = stop_token_ids(lm)
    decoder = _decoder_for(lm.model)
    if decoder is not None:
        groups = token_budget_groups(jobs, batch_size, max_new_tokens, kv_token_budget(lm.model), engine.run_root(jobs))
        for group in groups:
            run = engine.RunStats()
            try:
                for j, toks, reason in engine.run_continuous(lm.model, decoder, [jobs[j] for j in group], sample_group(group),
                                                             max_new_tokens, stops, batch_size,
                                                             lm.tokenizer.pad_token_id, lm.device, run):
                    yield done(group[j], toks, reason)
            finally:
                if stats is not None:
                    stats.prefill_tokens += run.prefill_tokens
                    stats.prefix_reused_tokens += run.prefix_reused_tokens
                    stats.engine_runs.append(run)
                free_memory()  # the run's K/V buffers go back to the OS, not to a heap the next phase may not reuse
        return
    for start in range(0, len(jobs), batch_size):
        chunk = list(range(start, min(start + batch_size, len(jobs))))
        results = _decode_batch(lm, [jobs[j] for j in chunk], lambda lg, rows: sample(lg, [chunk[r] for r in rows]),
                                max_new_tokens, stops)
        for j, (toks, reason) in zip(chunk, results):
            yield done(j, toks, reason)


class LocalBackend:
    """The model in this process: the fast engine for Llama / Qwen2, the model's forward otherwise."""

    kind = "local"
    flush_every = None  # commit every batch_size samples: a kill loses at most the rows in flight

    def identity(self, lm: LoadedModel) -> dict[str, str]:
        return {"kind": self.kind, "dtype": lm.dtype}

    def run(self, lm: LoadedModel, jobs: Sequence[Job], sampling: Sampling, batch_size: int,
            stats: GenerationStats | None = None):
        for j, toks, reason, logprob in _run_jobs(lm, [list(job.tokens) for job in jobs], [job.seed for job in jobs],
                                                  float(sampling.temperature), float(sampling.top_p),
                                                  sampling.max_new_tokens, batch_size, stats):
            yield j, Generated(lm.tokenizer.decode(toks, skip_special_tokens=True), len(toks), reason, logprob)


LOCAL = LocalBackend()


def backend_for(lm: LoadedModel):
    """The backend the settings (`backends.Settings.from_env`) choose for ``lm``.

    A distilled student (``lm.adapter``: a LoRA adapter on the base) goes to the server as that
    adapter, loaded at run time under its content hash (`served.OpenAIBackend.with_adapter`); a
    server that cannot load adapters is said once per adapter (`ADAPTER_FALLBACKS`), and the
    student generates locally (its weights load then).
    """
    settings = Settings.from_env()
    if settings.kind == "local":
        return LOCAL
    from . import served

    backend = served.connect(settings, lm)
    if lm.adapter is None:
        return backend
    if lm.adapter in ADAPTER_FALLBACKS:
        return LOCAL
    try:
        return backend.with_adapter(lm.adapter)
    except served.AdapterUnsupported as err:
        ADAPTER_FALLBACKS[lm.adapter] = str(err)
        import warnings

        warnings.warn(str(err), stacklevel=2)
        return LOCAL


ADAPTER_FALLBACKS: dict[str, str] = {}  # adapter folder -> why the server could not serve it


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

    ``backend``: None takes the one the settings choose (`backend_for`); or a `LocalBackend`,
    a `served.OpenAIBackend`, ...
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
        from .engine import sharing_order

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
