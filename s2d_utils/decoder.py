"""The decode step of the fast engine for Llama- and Qwen2-architecture models (SmolLM2,
Llama-2/3, Qwen2/2.5, ...), on CPU or CUDA: `Decoder` reads the model's own weights, holds a run's
K/V buffers and decodes one token per row (`Decoder.step`). `engine` runs it (prefill, prefix
caching, continuous batching).

It computes the same function as the transformers forward, with the work a 2-core CPU cannot
afford removed:

- shared-prefix attention: the n samples of a prompt keep ONE copy of the prompt's K/V (a
  "prefix slot"); each row stores only the tokens it generated itself. A step attends in two
  parts, merged exactly with their softmax maxima and sums (the log-sum-exp trick):
  the rows of a prefix attend to it together (one [rows x heads, d] x [d, prompt] product per
  prefix, reading the prompt's K/V once instead of n times), and each row attends to its own
  tokens. Attention was a third of a decode step before this; most of it was re-reading
  the same prompt n times.
- a root shared by every prompt of a run (`engine.run_root`) is held once and read by all rows in
  one [Hkv, rows x group, d] x [d, root] product per layer, a third part of the same merged softmax.
- preallocated K/V buffers, written in place. transformers' DynamicCache appends with
  ``torch.cat``, copying the whole cache of every layer at every step.
- grouped-query attention without materializing repeated K/V heads: the queries of a KV group
  are batched against it.
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

from dataclasses import dataclass

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
        # no reference to ``model`` itself: backends.local keeps decoders in a WeakKeyDictionary keyed
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
