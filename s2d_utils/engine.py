"""A fast decode step for Llama-architecture models (SmolLM2, Llama-2/3, ...), on CPU or CUDA.

`generation.generate` runs the prompt through the model's own forward (prefill) and then, for
models this module supports, decodes with `LlamaDecoder.step` instead of the transformers
forward. It computes the same function, with the work a 2-core CPU cannot afford removed:

- a preallocated KV buffer per layer, written in place. transformers' DynamicCache appends with
  ``torch.cat``, copying the whole cache of every layer at every step (O(length^2) traffic).
- grouped-query attention without materializing repeated K/V heads (transformers repeats them
  whenever a padding mask is present): the queries of a KV group are batched against it.
- q/k/v and gate/up projections fused into one matrix multiply each (fewer, larger GEMMs).

All rows of a batch write the same cache column at each step (prompts are left-padded), so the
step needs no per-row bookkeeping beyond a padding mask. Numerics: the same operations in the
same precision as transformers' Llama; fused GEMMs and a different attention kernel may change
the last bits of a logit, so a greedy near-tie can in principle resolve differently (the
benchmark reports greedy agreement with ``model.generate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


@dataclass
class _Layer:
    wqkv: torch.Tensor
    wo: torch.Tensor
    wgu: torch.Tensor
    wdown: torch.Tensor
    ln1: torch.Tensor
    ln2: torch.Tensor


def supports(model) -> bool:
    """True for plain Llama-architecture causal LMs in eval mode (no adapters, biases or scaling)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama" or type(model).__name__ != "LlamaForCausalLM":
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (not model.training and not getattr(cfg, "attention_bias", False) and not getattr(cfg, "mlp_bias", False)
            and getattr(cfg, "hidden_act", "silu") == "silu" and rope.get("rope_type", "default") == "default"
            and getattr(cfg, "pretraining_tp", 1) == 1)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype  # as transformers' LlamaRMSNorm: normalize in fp32, scale in the model dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaDecoder:
    """Holds fused weights and the KV buffers of one batch; `step` decodes one token per row."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not supported by the fast decoder")
        cfg = model.config
        self.model = model
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
                self.layers.append(_Layer(
                    wqkv=torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).contiguous(),
                    wo=att.o_proj.weight, wgu=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(),
                    wdown=mlp.down_proj.weight, ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight))
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def allocate(self, slots: int, capacity: int, like: torch.Tensor) -> None:
        """KV buffers for ``slots`` rows of up to ``capacity`` tokens each."""
        shape = (slots, self.n_kv, capacity, self.head_dim)
        self.keys = [like.new_zeros(shape) for _ in self.layers]
        self.values = [like.new_zeros(shape) for _ in self.layers]

    def store_prompt(self, cache, source_row: int, width: int, length: int, slot: int) -> None:
        """Copy one prompt's KV from a left-padded transformers prefill cache into ``slot``."""
        for i, layer in enumerate(cache.layers):
            self.keys[i][slot, :, :length] = layer.keys[source_row, :, width - length : width]
            self.values[i][slot, :, :length] = layer.values[source_row, :, width - length : width]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the slots in ``rows`` (shrinks the batch once the queue is empty)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits for the next token of every slot.

        ``ids``: [S] the token to feed per slot; ``lengths``: [S] tokens already stored per slot,
        which is also the new token's position. Its K/V are written at that column; each slot
        attends to its own columns only, so slots may hold sequences of any length.
        """
        b = ids.shape[0]
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        group = hq // hk
        x = F.embedding(ids, self.embed)  # [S, hidden]
        cos, sin = self.rotary(x[:, None, :], lengths[:, None])
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [S, 1, 1, D], broadcast over heads
        span = int(lengths.max()) + 1
        visible = torch.arange(span, device=x.device)[None, :] <= lengths[:, None]
        bias = torch.zeros(visible.shape, dtype=x.dtype, device=x.device).masked_fill_(~visible, float("-inf"))
        bias = bias[:, None, None, :]  # [S, 1, 1, span]
        rows = torch.arange(b, device=x.device)
        for i, L in enumerate(self.layers):
            h = _rms(x, L.ln1, self.eps)
            qkv = h @ L.wqkv.T
            q = qkv[:, : hq * d].view(b, hk, group, d)
            k = qkv[:, hq * d : (hq + hk) * d].view(b, hk, 1, d)
            v = qkv[:, (hq + hk) * d :].view(b, hk, 1, d)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            K, V = self.keys[i], self.values[i]
            K[rows, :, lengths] = k[:, :, 0]
            V[rows, :, lengths] = v[:, :, 0]
            # the queries of one KV group attend to it together: [S, Hkv, group, span]
            att = F.scaled_dot_product_attention(q, K[:, :, :span], V[:, :, :span], attn_mask=bias, scale=self.scale)
            x = x + att.reshape(b, hq * d) @ L.wo.T
            h = _rms(x, L.ln2, self.eps)
            gate, up = (h @ L.wgu.T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ L.wdown.T
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


def run_continuous(model, decoder: LlamaDecoder, jobs: list[list[int]], sample: Callable, max_new_tokens: int,
                   stops: set[int], slots: int, pad_id: int, device: str) -> Iterator[tuple[int, list[int], str]]:
    """Continuous batching: decode ``jobs`` (token lists) in ``slots`` rows, refilling a row as
    soon as its sequence stops, so the batch stays full instead of decoding padding.

    ``sample(logits, job_indices)`` picks the next token of each row (each job has its own RNG).
    Jobs with identical prompts admitted together share one prefill. Yields
    ``(job index, generated tokens without the stop token, "stop" | "length")`` as jobs finish.
    """
    from transformers import DynamicCache

    slots = max(1, min(slots, len(jobs)))
    capacity = max(len(t) for t in jobs) + max_new_tokens
    queue = list(range(len(jobs)))
    queue.reverse()  # pop() from the end keeps the caller's order
    job_of = [-1] * slots  # job in each slot, -1 = free
    produced: dict[int, list[int]] = {}
    feed = torch.zeros(slots, dtype=torch.long, device=device)
    lengths = torch.zeros(slots, dtype=torch.long, device=device)
    admit_at = max(1, slots // 8)  # admit in groups: one prefill call per group, not per row
    decoder.allocate(slots, capacity, decoder.embed)

    def finish(slot: int, reason: str):
        j = job_of[slot]
        job_of[slot] = -1
        return j, produced.pop(j), reason

    while queue or any(j >= 0 for j in job_of):
        free = [s for s, j in enumerate(job_of) if j < 0]
        if queue and free and (len(free) >= min(admit_at, len(queue)) or len(free) == len(job_of)):
            take = [queue.pop() for _ in range(min(len(free), len(queue)))]
            unique: dict[tuple[int, ...], int] = {}
            source = [unique.setdefault(tuple(jobs[j]), len(unique)) for j in take]
            ids, mask, width = left_pad(list(unique), pad_id, device)
            cache = DynamicCache(config=model.config)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            first = sample(logits[torch.tensor(source, device=device)], take).tolist()
            for j, src, slot, tok in zip(take, source, free, first):
                job_of[slot] = j
                produced[j] = []
                if tok in stops:
                    yield finish(slot, "stop")
                    continue
                produced[j].append(tok)
                if max_new_tokens == 1:
                    yield finish(slot, "length")
                    continue
                decoder.store_prompt(cache, src, width, len(jobs[j]), slot)
                lengths[slot] = len(jobs[j])
                feed[slot] = tok
            del cache
            continue  # admit again if rows stopped at once; otherwise decode
        active = [s for s, j in enumerate(job_of) if j >= 0]
        if not queue and len(active) <= 0.75 * len(job_of):  # tail: shrink the batch to the live rows
            idx = torch.tensor(active, device=device)
            decoder.select(idx)
            feed, lengths = feed[idx], lengths[idx]
            job_of = [job_of[s] for s in active]
            active = list(range(len(job_of)))
        logits = decoder.step(feed, lengths)
        act = torch.tensor(active, device=device)
        lengths[act] += 1  # free slots stay put (their rows are computed but ignored)
        nxt = sample(logits[act], [job_of[s] for s in active]).tolist()
        for slot, tok in zip(active, nxt):
            j = job_of[slot]
            if tok in stops:
                yield finish(slot, "stop")
            else:
                produced[j].append(tok)
                if len(produced[j]) >= max_new_tokens:
                    yield finish(slot, "length")
                else:
                    feed[slot] = tok
