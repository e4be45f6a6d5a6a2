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

    def load_prefill(self, cache, rows: torch.Tensor, capacity: int) -> None:
        """Copy a transformers prefill cache into preallocated buffers, fanned out to ``rows``."""
        self.keys, self.values = [], []
        for layer in cache.layers:
            k, v = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
            b, h, n, d = k.shape
            kb = k.new_empty((b, h, capacity, d))
            vb = v.new_empty((b, h, capacity, v.shape[-1]))
            kb[:, :, :n] = k
            vb[:, :, :n] = v
            self.keys.append(kb)
            self.values.append(vb)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the batch (finished rows leave)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, positions: torch.Tensor, column: int, valid: torch.Tensor) -> torch.Tensor:
        """Logits for the next token. ``ids``/``positions``: [B]; the new K/V go to ``column``;
        ``valid``: [B, column + 1] bool, False on left padding."""
        b = ids.shape[0]
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        group = hq // hk
        x = F.embedding(ids, self.embed)  # [B, hidden]
        cos, sin = self.rotary(x[:, None, :], positions[:, None])
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B, 1, 1, D], broadcast over heads
        bias = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill_(~valid, float("-inf"))
        bias = bias[:, None, None, :]  # [B, 1, 1, T]
        for i, L in enumerate(self.layers):
            h = _rms(x, L.ln1, self.eps)
            qkv = h @ L.wqkv.T
            q = qkv[:, : hq * d].view(b, hk, group, d)
            k = qkv[:, hq * d : (hq + hk) * d].view(b, hk, 1, d)
            v = qkv[:, (hq + hk) * d :].view(b, hk, 1, d)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            K, V = self.keys[i], self.values[i]
            K[:, :, column] = k[:, :, 0]
            V[:, :, column] = v[:, :, 0]
            # queries of one KV group attend to its keys together: [B, Hkv, group, T]
            att = F.scaled_dot_product_attention(q, K[:, :, : column + 1], V[:, :, : column + 1], attn_mask=bias,
                                                 scale=self.scale)
            x = x + att.reshape(b, hq * d) @ L.wo.T
            h = _rms(x, L.ln2, self.eps)
            gate, up = (h @ L.wgu.T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ L.wdown.T
        return _rms(x, self.norm, self.eps) @ self.lm_head.T
