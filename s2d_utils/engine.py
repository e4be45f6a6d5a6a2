"""A fast decode step for Llama- and Qwen2-architecture models (SmolLM2, Llama-2/3, Qwen2/2.5, ...),
on CPU or CUDA.

`generation.generate` runs each prompt once through the model's own forward (prefill) and then,
for models this module supports, decodes with `Decoder.step` instead of the transformers
forward. It computes the same function, with the work a 2-core CPU cannot afford removed:

- shared-prefix attention: the n samples of a prompt keep ONE copy of the prompt's K/V (a
  "prefix slot"); each row stores only the tokens it generated itself. A step attends in two
  parts, merged exactly with their softmax maxima and sums (the log-sum-exp trick):
  the rows of a prefix attend to it together (one [rows x heads, d] x [d, prompt] product per
  prefix, reading the prompt's K/V once instead of n times), and each row attends to its own
  tokens. Attention was a third of a decode step before this; most of it was re-reading
  the same prompt n times.
- a root shared by every prompt of a run (8-shot exemplars, a judge's instructions: at least
  `ROOT_MIN` tokens) is held once and read by all rows in one [Hkv, rows x group, d] x [d, root]
  product per layer, a third part of the same merged softmax; the prefix slots hold only what
  follows it. Measured on the 0.5B model, 48 GSM8k 8-shot CoT prompts (root 1,286 tokens), 96
  greedy tokens: 214 s without, 133 s with, identical outputs on 48/48 (`benchmarks/bench_root.py`).
- preallocated K/V buffers, written in place. transformers' DynamicCache appends with
  ``torch.cat``, copying the whole cache of every layer at every step.
- grouped-query attention without materializing repeated K/V heads: the queries of a KV group
  are batched against it.
- prefill in chunks of at most `PREFILL_TOKENS` padded tokens, so the transient K/V cache and
  activations of a prefill call stay small however many prompts arrive at once.
- no copy of the weights: the decoder multiplies by the model's own tensors. (Fusing q/k/v and
  gate/up into one GEMM each was measured: no faster at 128 rows on 2 cores, and it cost a
  second copy of 2/3 of the weights.)

Qwen2 differs from Llama only where it matters here: q/k/v projections carry biases, the LM head
is untied (both read from the model), and its rope theta comes from the config (the decoder uses the
model's own rotary embedding). Sliding-window attention is not implemented, so models that use
it are left to the fallback path.

Numerics: the same operations in the same precision as transformers' Llama, except that the
two-part softmax rounds differently in the last bits of a logit, so a greedy
near-tie can in principle resolve differently (the benchmark reports greedy agreement with
``model.generate`` prompt by prompt).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


@dataclass
class _Layer:
    """The model's own weight tensors of one decoder layer (references, not copies)."""

    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    wgate: torch.Tensor
    wup: torch.Tensor
    wdown: torch.Tensor
    ln1: torch.Tensor
    ln2: torch.Tensor
    bq: torch.Tensor | None = None  # Qwen2: q/k/v biases
    bk: torch.Tensor | None = None
    bv: torch.Tensor | None = None


ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def supports(model) -> bool:
    """True for plain Llama or Qwen2 causal LMs in eval mode (no adapters, MLP biases, sliding
    windows or rope scaling)."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if cfg is None or ARCHITECTURES.get(kind) != type(model).__name__:
        return False
    if len(set((getattr(model, "hf_device_map", None) or {}).values())) > 1:
        return False  # spread over several devices: the model's own forward moves activations between them
    rope = getattr(cfg, "rope_parameters", None) or {}
    if kind == "llama" and getattr(cfg, "attention_bias", False):
        return False
    if kind == "qwen2" and (getattr(cfg, "use_sliding_window", False)
                            or any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or [])):
        return False
    return (not model.training and not getattr(cfg, "mlp_bias", False)
            and getattr(cfg, "hidden_act", "silu") == "silu" and rope.get("rope_type", "default") == "default"
            and getattr(cfg, "pretraining_tp", 1) == 1)


def _linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return h @ w.T if b is None else torch.addmm(b, h, w.T)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype  # as transformers' LlamaRMSNorm: normalize in fp32, scale in the model dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _partial_attention(q, keys, values, bias, scale):
    """Unnormalized attention of ``q`` over one part of the context, with its softmax max and sum.

    Returns ``(e @ V, m, l)`` with ``m`` the row max of the scores and ``e = exp(scores - m)``,
    ``l = sum(e)``: two parts merge exactly into one softmax (see `_merge`). The scores, ``m``,
    ``l`` and the output are fp32 (fp64 for fp64 weights) whatever the weights' dtype (bf16 sums of a long context lose
    whole tokens' weight); ``e`` goes into the product with V in V's dtype, as flash attention does.
    On fp32 weights nothing is converted.
    """
    acc = torch.promote_types(q.dtype, torch.float32)  # fp32, or fp64 for a float64 model (the tests')
    s = torch.matmul(q, keys.transpose(-1, -2)).to(acc)
    s.mul_(scale).add_(bias)
    m = s.amax(-1, keepdim=True)
    e = s.sub_(m).exp_()
    return torch.matmul(e.to(values.dtype), values).to(acc), m, e.sum(-1, keepdim=True)


def _merge(*parts):
    """softmax over the union of the parts, from their `_partial_attention` results."""
    m = parts[0][1]
    for _, mp, _ in parts[1:]:
        m = torch.maximum(m, mp)
    out = total = None
    for o, mp, lp in parts:
        w = (mp - m).exp_()
        out = o * w if out is None else out.add_(o * w)
        total = lp * w if total is None else total.add_(lp * w)
    return out / total


MAX_PADDING = 4  # a step's [prefix, row] grid may be at most this many times the rows; else rows copy their prefix


@dataclass
class RunStats:
    """What a `run_continuous` call did (for tests and the curious): the caller passes one in and
    reads it after the run (no module-level state: two runs never overwrite each other's counts)."""

    prefilled_prompts: int = 0  # prompts run through prefill (once per stay in a prefix slot)
    prefill_tokens: int = 0  # prompt tokens computed in prefill
    prefix_reused_tokens: int = 0  # prompt tokens not computed: their K/V came from a shared prefix
    root_tokens: int = 0  # the run's root: tokens every prompt begins with, held once for all rows
    decode_steps: int = 0
    gathered_steps: int = 0  # steps that fell back to copying each row's prefix (too uneven a grid)



@dataclass
class _Layout:
    """Which rows read which prefix slot in a step: ``members[p, g]`` is the g-th row on prefix p
    (padding repeats row 0, whose extra results are dropped); ``entry[row]`` is the row's place
    in the flattened [prefix, g] grid."""

    members: torch.Tensor  # [P, G] row index
    entry: torch.Tensor  # [S] index into P * G
    prefixes: int  # P: prefix slots 0..P-1 are read (a view, no copy), unless ``gather`` is set
    per_prefix: int  # G
    gather: torch.Tensor | None = None  # fallback: copy these prefix slots (one per row)


class Decoder:
    """Reads the model's weights and holds the K/V buffers of one run; `step` decodes one token per row."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not supported by the fast decoder")
        cfg = model.config
        # no reference to ``model`` itself: generation keeps decoders in a WeakKeyDictionary keyed
        # by the model, and a value that refers to its key keeps the key (a whole model) alive
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight
        self.rotary = inner.rotary_emb
        self.layers = []
        with torch.no_grad():
            for layer in inner.layers:
                att, mlp = layer.self_attn, layer.mlp
                self.layers.append(_Layer(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight, att.o_proj.weight,
                                          mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight,
                                          layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                                          att.q_proj.bias, att.k_proj.bias, att.v_proj.bias))
        self.release()

    def allocate(self, slots: int, prefixes: int, prefix_capacity: int, own_capacity: int, root: int = 0) -> None:
        """Buffers for ``prefixes`` prompts of up to ``prefix_capacity`` tokens (after the root),
        for ``slots`` rows of up to ``own_capacity`` generated tokens each, and for a root of
        ``root`` tokens that every prompt of the run begins with (0: none)."""
        like = self.embed
        self.root_len = root
        rshape = (self.n_kv, root, self.head_dim)
        self.root_keys = [like.new_zeros(rshape) for _ in self.layers] if root else []
        self.root_values = [like.new_zeros(rshape) for _ in self.layers] if root else []
        pshape = (prefixes, self.n_kv, prefix_capacity, self.head_dim)
        oshape = (slots, self.n_kv, own_capacity, self.head_dim)
        self.prefix_keys = [like.new_zeros(pshape) for _ in self.layers]
        self.prefix_values = [like.new_zeros(pshape) for _ in self.layers]
        # an unused prefix slot holds one zero token, so padded rows that read it stay finite
        self.prefix_len = torch.ones(prefixes, dtype=torch.long, device=like.device)
        self.keys = [like.new_zeros(oshape) for _ in self.layers]
        self.values = [like.new_zeros(oshape) for _ in self.layers]

    def release(self) -> None:
        """Free the K/V buffers (they can be large); `allocate` makes new ones."""
        self.prefix_keys, self.prefix_values, self.keys, self.values = [], [], [], []
        self.root_keys, self.root_values, self.root_len = [], [], 0
        self.prefix_len = None

    def store_root(self, cache, length: int) -> None:
        """Copy the first ``length`` positions of a one-row transformers cache into the root."""
        for i, layer in enumerate(cache.layers):
            self.root_keys[i].copy_(layer.keys[0, :, :length])
            self.root_values[i].copy_(layer.values[0, :, :length])

    def store_prefix(self, cache, source_row: int, spans: list[tuple[int, int]], prefix: int) -> None:
        """Copy one prompt's K/V from a transformers prefill cache into a prefix slot: the cache
        positions ``spans`` ([start, end) each, in order) hold the prompt's tokens (a left-padded
        prompt is one span; a prompt prefilled after a shared prefix is two)."""
        at = 0
        for start, end in spans:
            for i, layer in enumerate(cache.layers):
                self.prefix_keys[i][prefix, :, at:at + end - start] = layer.keys[source_row, :, start:end]
                self.prefix_values[i][prefix, :, at:at + end - start] = layer.values[source_row, :, start:end]
            at += end - start
        self.prefix_len[prefix] = at

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the rows in ``rows`` (shrinks the batch once the queue is empty)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    def layout(self, prefix_of: list[int]) -> _Layout:
        """Group the rows by prefix slot (``prefix_of[row]``; -1 for a free row)."""
        device = self.prefix_len.device
        groups: dict[int, list[int]] = {}
        for row, p in enumerate(prefix_of):
            if p >= 0:
                groups.setdefault(p, []).append(row)
        if not groups:
            groups = {0: [0]}
        n_pref = max(groups) + 1
        per = max(len(rs) for rs in groups.values())
        rows = len(prefix_of)
        if n_pref * per > MAX_PADDING * rows:  # too much padding: copy each row's prefix instead (rare)
            gather = torch.tensor([max(p, 0) for p in prefix_of], device=device)
            return _Layout(torch.arange(rows, device=device)[:, None], torch.arange(rows, device=device), rows, 1, gather)
        members = [[0] * per for _ in range(n_pref)]
        entry = [0] * rows  # free rows read any entry; their output is ignored
        for p, rs in groups.items():
            for g, row in enumerate(rs):
                members[p][g] = row
                entry[row] = p * per + g
        return _Layout(torch.tensor(members, device=device), torch.tensor(entry, device=device), n_pref, per)

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, own: torch.Tensor, prefix: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """Logits for the next token of every row.

        ``ids``: [S] the token to feed per row; ``own``: [S] tokens the row has stored itself
        (the new token's K/V go to that column); ``prefix``: [S] the row's prefix slot (any valid
        slot for a free row); ``layout``: `layout` of the rows. Position = prefix length + own.
        """
        b = ids.shape[0]
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        group = hq // hk
        P, G = layout.prefixes, layout.per_prefix
        x = F.embedding(ids, self.embed)  # [S, hidden]
        plen = self.prefix_len[:P] if layout.gather is None else self.prefix_len.index_select(0, layout.gather)
        positions = self.prefix_len.index_select(0, prefix) + own + self.root_len
        cos, sin = self.rotary(x[:, None, :], positions[:, None])
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [S, 1, 1, D], broadcast over heads

        def bias(visible):
            return torch.zeros(visible.shape, dtype=x.dtype, device=x.device).masked_fill_(~visible, float("-inf"))[:, None, None, :]

        span_p = int(plen.max())
        bias_p = bias(torch.arange(span_p, device=x.device)[None, :] < plen[:, None])  # [P, 1, 1, span_p]
        span_o = int(own.max()) + 1
        bias_o = bias(torch.arange(span_o, device=x.device)[None, :] <= own[:, None])  # [S, 1, 1, span_o]
        members = layout.members.reshape(-1)
        rows = torch.arange(b, device=x.device)
        for i, L in enumerate(self.layers):
            h = _rms(x, L.ln1, self.eps)
            q = _linear(h, L.wq, L.bq).view(b, hk, group, d)
            k = _linear(h, L.wk, L.bk).view(b, hk, 1, d)
            v = _linear(h, L.wv, L.bv).view(b, hk, 1, d)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            K, V = self.keys[i], self.values[i]
            K[rows, :, own] = k[:, :, 0]
            V[rows, :, own] = v[:, :, 0]
            mine = _partial_attention(q, K[:, :, :span_o], V[:, :, :span_o], bias_o, self.scale)
            # the rows of one prefix slot read it together: [P, Hkv, G * group, d]
            qp = q.index_select(0, members).view(P, G, hk, group, d).transpose(1, 2).reshape(P, hk, G * group, d)
            if layout.gather is None:
                Kp, Vp = self.prefix_keys[i][:P, :, :span_p], self.prefix_values[i][:P, :, :span_p]
            else:
                Kp = self.prefix_keys[i].index_select(0, layout.gather)[:, :, :span_p]
                Vp = self.prefix_values[i].index_select(0, layout.gather)[:, :, :span_p]
            shared = [t.view(P, hk, G, group, -1).transpose(1, 2).reshape(P * G, hk, group, -1).index_select(0, layout.entry)
                      for t in _partial_attention(qp, Kp, Vp, bias_p, self.scale)]
            parts = [shared, mine]
            if self.root_len:  # every row reads the root: one [Hkv, S * group, d] x [d, root] product
                qr = q.transpose(0, 1).reshape(hk, b * group, d)
                parts.append([t.view(hk, b, group, -1).transpose(0, 1)
                              for t in _partial_attention(qr, self.root_keys[i], self.root_values[i], 0.0, self.scale)])
            att = _merge(*parts)  # [S, Hkv, group, d]
            x = x + att.to(x.dtype).reshape(b, hq * d) @ L.wo.T
            h = _rms(x, L.ln2, self.eps)
            x = x + (F.silu(h @ L.wgate.T) * (h @ L.wup.T)) @ L.wdown.T
        return _rms(x, self.norm, self.eps) @ self.lm_head.T


def left_pad(prompts: list[tuple[int, ...]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded ids and attention mask for a prefill batch, so every row's last token aligns."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, toks in enumerate(prompts):
        ids[r, width - len(toks):] = torch.tensor(toks)
        mask[r, width - len(toks):] = 1
    return ids.to(device), mask.to(device), width


PREFILL_TOKENS = 4096  # padded prompt tokens per prefill call: large enough for efficient GEMMs, small
# enough that the call's transient K/V cache and activations stay a few hundred MB


PREFILL_CONTEXT = 4 * PREFILL_TOKENS  # rows x (cached prefix + padded prompt) per prefill call: the
# prefix's K/V is copied into every row of the call


def _prefill_chunks(prompts: list[tuple[int, ...]], offset: int = 0) -> Iterator[list[tuple[int, ...]]]:
    """Consecutive groups of ``prompts`` of at most `PREFILL_TOKENS` padded tokens, and at most
    `PREFILL_CONTEXT` once each row's ``offset`` tokens of cached prefix count too (one prompt at least)."""
    chunk: list[tuple[int, ...]] = []
    width = 0
    for p in prompts:
        w = max(width, len(p))
        if chunk and (w * (len(chunk) + 1) > PREFILL_TOKENS or (w + offset) * (len(chunk) + 1) > PREFILL_CONTEXT):
            yield chunk
            chunk, width = [], 0
        chunk.append(p)
        width = max(width, len(p))
    if chunk:
        yield chunk


MIN_SHARED = 16  # tokens: prompts sharing a shorter prefix are prefilled whole. 16 lets the chat template
# header (system prompt, ~30 tokens with Qwen) be shared: measured 38 s instead of 55-60 s for System 1 on
# 100 coin-flip prompts of 56 tokens (0.5B model, 2 cores), identical greedy outputs


def _common(a: tuple[int, ...], b: tuple[int, ...], limit: int) -> int:
    n = min(limit, len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def common_prefix(prompts) -> int:
    """Tokens every prompt begins with, leaving each at least one of its own (0 for fewer than two)."""
    if len(prompts) < 2:
        return 0
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = _common(prompts[0], p, n)
    return max(n, 0)


def prefill_prefix(model, prefix, device: str, past=None):
    """A transformers cache holding ``prefix``'s K/V (one row), for `repeat_prefix`; with ``past``
    (a one-row cache, left unchanged) ``prefix`` continues it."""
    from transformers import DynamicCache

    base = DynamicCache(config=model.config) if past is None else repeat_prefix(model, past, 1)
    offset = base.get_seq_length()
    positions = torch.arange(offset, offset + len(prefix), device=device)[None]
    with torch.inference_mode():
        model(input_ids=torch.tensor([list(prefix)], device=device), past_key_values=base, use_cache=True,
              position_ids=positions, logits_to_keep=1)
    return base


def repeat_prefix(model, base, rows: int):
    """A fresh cache with ``base``'s one row of K/V copied for ``rows`` rows (what a batch of prompts
    sharing that prefix continues from)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(base.layers):
        cache.update(layer.keys.expand(rows, -1, -1, -1).contiguous(), layer.values.expand(rows, -1, -1, -1).contiguous(), i)
    return cache


def shared_prefix_groups(prompts, min_shared: int | None = None) -> list[tuple[int, list[tuple[int, ...]]]]:
    """Cluster distinct prompts by a common token prefix of at least ``min_shared`` tokens.

    Returns ``[(shared, members)]``: ``shared`` tokens begin every member (and every member has
    at least one token after them); ``shared`` is 0 for a prompt that shares nothing, and such
    prompts come last, in one group. Prefix caching (as in vLLM and SGLang, here per prefill
    batch): the shared part of a group is prefilled once and its K/V reused by each member,
    e.g. the solve calls of Branch-Solve-Merge, which repeat the question and both answers and
    differ only in the criterion at the end.
    """
    min_shared = MIN_SHARED if min_shared is None else min_shared
    ordered = sorted(set(map(tuple, prompts)))
    groups: list[tuple[int, list[tuple[int, ...]]]] = []
    for p in ordered:
        if groups:
            shared, members = groups[-1]
            head = members[0]
            limit = shared if len(members) > 1 else len(head)
            common = min(_common(head, p, limit), len(p) - 1, len(head) - 1)
            # join if the group still saves at least as much with the shorter shared part
            # (BSM: the next pair's solve calls share only the instruction: they start a group)
            saved_now = shared * (len(members) - 1) if len(members) > 1 else 0
            if common >= min_shared and common * len(members) >= saved_now:
                groups[-1] = (common, members + [p])
                continue
        groups.append((0, [p]))
    alone = [m[0] for s, m in groups if len(m) == 1]
    return [(s, m) for s, m in groups if len(m) > 1] + ([(0, alone)] if alone else [])


def sharing_order(prompts: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, int]]:
    """A sort key per prompt that keeps prompts with a shared prefix next to each other (so one
    admission prefills them together), groups ordered by their longest prompt, short first."""
    key = {}
    for g, (shared, members) in enumerate(shared_prefix_groups(prompts)):
        if shared:
            width = max(len(m) for m in members)
            for m in members:
                key[m] = (width, g + 1)
        else:
            for m in members:
                key[m] = (len(m), 0)
    return key


def _prefill(model, decoder: "Decoder", prompts: list[tuple[int, ...]], pad_id: int, device: str, slot_for,
             stats: RunStats, root=None):
    """Prefill ``prompts`` into prefix slots (``slot_for(prompt)`` picks one) with prefix caching;
    yields (slot, last-position logits) per prompt. ``root``: a one-row cache of the decoder's root
    (the first ``decoder.root_len`` tokens of every prompt): prompts continue it, and their slots
    hold only what follows it."""
    from transformers import DynamicCache

    R = decoder.root_len
    head = prompts[0][:R] if prompts else ()
    for shared, members in shared_prefix_groups([p[R:] for p in prompts]):
        base = root
        if shared:
            base = prefill_prefix(model, members[0][:shared], device, past=root)
            stats.prefill_tokens += shared
            stats.prefix_reused_tokens += shared * (len(members) - 1)
        offset = R + shared
        rests = [m[shared:] for m in members]
        done = 0
        for chunk in _prefill_chunks(rests, offset):
            ids, mask, width = left_pad(chunk, pad_id, device)
            position = (mask.cumsum(-1) - 1).clamp(min=0) + offset
            if base is not None:
                cache = repeat_prefix(model, base, len(chunk))
                mask = torch.cat([mask.new_ones((len(chunk), offset)), mask], dim=-1)
            else:
                cache = DynamicCache(config=model.config)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                               use_cache=True, logits_to_keep=1).logits[:, -1, :]
            for r, rest in enumerate(chunk):
                slot = slot_for(head + members[done + r])
                spans = ([(R, offset)] if shared else []) + [(offset + width - len(rest), offset + width)]
                decoder.store_prefix(cache, r, spans, slot)
                yield slot, logits[r]
            stats.prefill_tokens += sum(len(c) for c in chunk)
            stats.prefix_reused_tokens += R * len(chunk)
            stats.prefilled_prompts += len(chunk)
            done += len(chunk)
            del cache, logits


ROOT_MIN = 64  # tokens: a run whose prompts all begin with at least this many tokens in common (8-shot
# exemplars, a judge's instructions) holds their K/V once, read by every row, instead of once per prompt


def run_root(prompts) -> int:
    """The root of a run over ``prompts``: their common prefix if at least `ROOT_MIN` tokens, else 0."""
    n = common_prefix(list(set(map(tuple, prompts))))
    return n if n >= ROOT_MIN else 0


def run_continuous(model, decoder: Decoder, jobs: list[list[int]], sample: Callable, max_new_tokens: int,
                   stops: set[int], slots: int, pad_id: int, device: str,
                   stats: RunStats | None = None) -> Iterator[tuple[int, list[int], str]]:
    """Continuous batching: decode ``jobs`` (token lists) in ``slots`` rows, refilling a row as
    soon as its sequence stops, so the batch stays full instead of decoding padding.

    ``sample(logits, job_indices)`` picks the next token of each row (each job has its own RNG).
    A prompt is prefilled once while any of its jobs runs: its K/V sit in a prefix slot that all
    its rows read, and its last-position logits give every such job its first token. Prompts
    admitted together that share a long prefix prefill it once (`shared_prefix_groups`).
    Yields ``(job index, generated tokens without the stop token, "stop" | "length")`` as jobs finish;
    ``stats`` (if given) counts the run's prefill and decode work as it goes.
    """
    slots = max(1, min(slots, len(jobs)))
    prompts = [tuple(t) for t in jobs]
    # live prefixes are distinct prompts and each has a running row: this many slots always suffice
    n_prefix = min(slots, len(set(prompts)))
    queue = list(range(len(jobs)))
    queue.reverse()  # pop() from the end keeps the caller's order
    job_of = [-1] * slots  # job in each row, -1 = free
    prefix_of = [-1] * slots  # prefix slot each row reads, -1 = free
    live: dict[tuple[int, ...], int] = {}  # prompt -> its prefix slot
    users = [0] * n_prefix  # running rows per prefix slot
    free_prefix = list(range(n_prefix))  # a heap: the lowest free slot first keeps the used ones packed
    first_logits: torch.Tensor | None = None  # [n_prefix, vocab]: each live prompt's next-token logits
    produced: dict[int, list[int]] = {}
    feed = torch.zeros(slots, dtype=torch.long, device=device)
    own = torch.zeros(slots, dtype=torch.long, device=device)
    admit_at = max(1, slots // 8)  # admit in groups: one prefill call per group, not per row
    R = run_root(prompts)
    decoder.allocate(slots, n_prefix, max(len(t) for t in jobs) - R, max_new_tokens, root=R)
    stats = RunStats() if stats is None else stats
    root = None

    def finish(row: int, reason: str):
        j, p = job_of[row], prefix_of[row]
        job_of[row] = prefix_of[row] = -1
        users[p] -= 1
        if users[p] == 0:
            del live[prompts[j]]
            heapq.heappush(free_prefix, p)
        return j, produced.pop(j), reason

    try:
        if R:  # the root's K/V, once for the run
            root = prefill_prefix(model, prompts[0][:R], device)
            decoder.store_root(root, R)
            stats.prefill_tokens += R
            stats.root_tokens = R
        layout = None
        while queue or any(j >= 0 for j in job_of):
            free = [s for s, j in enumerate(job_of) if j < 0]
            if queue and free and (len(free) >= min(admit_at, len(queue)) or len(free) == len(job_of)):
                take = [queue.pop() for _ in range(min(len(free), len(queue)))]
                new = list(dict.fromkeys(prompts[j] for j in take if prompts[j] not in live))

                def slot_for(prompt):
                    live[prompt] = heapq.heappop(free_prefix)
                    return live[prompt]

                # prefill the prompts not already held in a prefix slot (shared prefixes once)
                for p, logits in _prefill(model, decoder, new, pad_id, device, slot_for, stats, root):
                    if first_logits is None:
                        first_logits = logits.new_empty((n_prefix, logits.shape[-1]))
                    first_logits[p] = logits
                for j, row in zip(take, free):
                    job_of[row], prefix_of[row] = j, live[prompts[j]]
                    users[prefix_of[row]] += 1
                    produced[j] = []
                first = sample(first_logits[torch.tensor([live[prompts[j]] for j in take], device=device)], take).tolist()
                for j, row, tok in zip(take, free, first):
                    if tok in stops:
                        yield finish(row, "stop")
                        continue
                    produced[j].append(tok)
                    if max_new_tokens == 1:
                        yield finish(row, "length")
                        continue
                    own[row] = 0
                    feed[row] = tok
                layout = None
                continue  # admit again if rows stopped at once; otherwise decode
            active = [s for s, j in enumerate(job_of) if j >= 0]
            if not queue and len(active) <= 0.75 * len(job_of):  # tail: shrink the batch to the live rows
                idx = torch.tensor(active, device=device)
                decoder.select(idx)
                feed, own = feed[idx], own[idx]
                job_of = [job_of[s] for s in active]
                prefix_of = [prefix_of[s] for s in active]
                active = list(range(len(job_of)))
                layout = None
            if layout is None:
                layout = decoder.layout(prefix_of)
                prefix = torch.tensor([max(p, 0) for p in prefix_of], device=device)
            logits = decoder.step(feed, own, prefix, layout)
            stats.decode_steps += 1
            stats.gathered_steps += layout.gather is not None
            act = torch.tensor(active, device=device)
            own[act] += 1  # free rows stay put (their rows are computed but ignored)
            nxt = sample(logits[act], [job_of[s] for s in active]).tolist()
            for row, tok in zip(active, nxt):
                j = job_of[row]
                if tok in stops:
                    own[row] = 0
                    layout = None
                    yield finish(row, "stop")
                else:
                    produced[j].append(tok)
                    if len(produced[j]) >= max_new_tokens:
                        own[row] = 0
                        layout = None
                        yield finish(row, "length")
                    else:
                        feed[row] = tok
    finally:
        decoder.release()
        del root
