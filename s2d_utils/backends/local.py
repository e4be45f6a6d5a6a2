"""The ``local`` backend: the model in this process. Bit-for-bit reproducible.

For Llama and Qwen2 models the decode loop is `engine.run_continuous` (continuous batching: a row
that stops is refilled with the next sample at once) over `decoder.Decoder`'s decode step, whose
rows share one copy of their prompt's K/V. Other models take `_decode_batch`, fixed batches over
the model's own forward. Either way each sample draws from its own RNG (`_sample_rows`), so it
does not depend on its batch; the loop is ours, not ``model.generate``, for those per-row RNGs.

`LocalBackend.score` teacher-forces outputs on their prompts (prefix caching as in generation),
caching the probabilities per model fingerprint in ``<results>/cache/confidence/`` (one JSON file).
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Sequence

from .. import paths
from ..files import write_atomic
from ..models import LoadedModel, free_memory
from .base import Generated, Job, Sampling, answer_tokens, stop_token_ids

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
    from .. import engine

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

    from .. import engine

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
              max_new_tokens: int, batch_size: int, stats=None):
    """Yield (job index, generated tokens, finish reason, log-probability) as jobs finish, by the
    fastest path. The log-probability is the model's (temperature 1) over the generated tokens and
    the stop token when it stopped there, taken from the logits the tokens were drawn from.
    ``stats``: a `generation.GenerationStats` the engine's prefill counts and runs are added to."""
    import torch

    from .. import engine

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

    def identity(self, lm) -> dict[str, str]:
        return {"kind": self.kind, "dtype": lm.dtype}

    def run(self, lm, jobs: Sequence[Job], sampling: Sampling, batch_size: int, stats=None):
        for j, toks, reason, logprob in _run_jobs(lm, [list(job.tokens) for job in jobs], [job.seed for job in jobs],
                                                  float(sampling.temperature), float(sampling.top_p),
                                                  sampling.max_new_tokens, batch_size, stats):
            yield j, Generated(lm.tokenizer.decode(toks, skip_special_tokens=True), len(toks), reason, logprob)

    def score(self, lm, prompts: Sequence[str], outputs: Sequence[str], finish_reasons: Sequence[str],
              batch_size: int = 8, cache_dir=None) -> list[float]:
        """Teacher-forced probabilities (`base.Backend.score`), cached per model fingerprint in
        ``cache_dir`` (default ``<results>/cache/confidence/``), so a rerun computes nothing it has
        computed before."""
        if not prompts:
            return []
        folder = paths.ensure(Path(cache_dir) if cache_dir else paths.CACHE / "confidence")
        store = folder / f"{lm.fingerprint[:24]}.json"
        known: dict[str, float] = json.loads(store.read_text()) if store.exists() else {}
        tok = lm.tokenizer
        keys, jobs = [], []  # jobs: (key, prompt ids, answer ids), in order, repeats included
        for text, output, reason in zip(prompts, outputs, finish_reasons):
            key = hashlib.sha256(f"{text}\0{output}\0{reason}".encode()).hexdigest()[:32]
            keys.append(key)
            if key not in known:
                jobs.append((key, tok(text, add_special_tokens=False)["input_ids"], answer_tokens(lm, output, reason)))
        if jobs:
            _teacher_forced(lm, jobs, batch_size, known)
            write_atomic(store, json.dumps(known))
        return [known[k] for k in keys]


def _teacher_forced(lm, jobs: list[tuple[str, list[int], list[int]]], batch_size: int, known: dict) -> None:
    """Fill ``known[key]`` with each job's answer probability, in batches of similar lengths. Prefix
    caching, as in generation: the tokens every prompt begins with (the chat template's header; a
    judge's system prompt) run once, and each batch attends to their K/V."""
    import torch

    from ..engine import common_prefix, prefill_prefix, repeat_prefix

    model = lm.model
    device = next(model.parameters()).device
    pad = lm.tokenizer.pad_token_id
    shared = common_prefix([p for _, p, _ in jobs])
    jobs.sort(key=lambda j: len(j[1]) + len(j[2]))  # similar lengths together: less padding
    base = prefill_prefix(model, jobs[0][1][:shared], device) if shared else None
    with torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = [(key, p[shared:], a) for key, p, a in jobs[start : start + batch_size]]
            width = max(len(p) + len(a) for _, p, a in chunk)
            keep = max(len(a) for _, _, a in chunk) + 1
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (_, p, a) in enumerate(chunk):  # left padding: every row's answer ends at the last position
                ids[r, width - len(p) - len(a):] = torch.tensor(p + a)
                mask[r, width - len(p) - len(a):] = 1
            position = (mask.cumsum(-1) - 1).clamp(min=0) + shared
            extra = {}
            if base is not None:
                mask = torch.cat([mask.new_ones((len(chunk), shared)), mask], dim=-1)
                extra = {"past_key_values": repeat_prefix(model, base, len(chunk)), "use_cache": True}
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position.to(device),
                           logits_to_keep=keep, **extra).logits  # [rows, keep, vocab]: only the answers' predictions
            logprobs = torch.log_softmax(logits.float(), -1)
            for r, (key, p, a) in enumerate(chunk):
                if not a:
                    known[key] = 1.0
                    continue
                rows = logprobs[r, keep - len(a) - 1 : keep - 1]  # position i predicts token i + 1
                target = torch.tensor(a, device=rows.device)
                known[key] = float(rows.gather(-1, target[:, None]).sum().exp())


LOCAL = LocalBackend()
