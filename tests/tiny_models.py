"""Tiny random checkpoints (2 layers, hidden size 64) with SmolLM2's real tokenizer and chat
template: fast enough for exact generation tests, loaded through `load_model` like any folder.
The test fixtures build them (tests/conftest.py); `benchmarks/device_kit.py` saves them for a GPU
machine, where the embedded SmolLM2 the tokenizer comes from is not installed."""

from __future__ import annotations

from pathlib import Path

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512)
NAMES = ("tiny-llama", "tiny-qwen2")


def _llama(cfg):
    """A random Llama with tied embeddings, like SmolLM2."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    return LlamaForCausalLM(LlamaConfig(**cfg, tie_word_embeddings=True))


def _qwen2(cfg):
    """A random Qwen2: q/k/v biases, untied LM head, Qwen's rope theta."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(4321)
    model = Qwen2ForCausalLM(Qwen2Config(**cfg, tie_word_embeddings=False,
                                         rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}))
    with torch.no_grad():  # transformers initializes biases to zero: make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
        model.lm_head.weight.normal_(0, 0.05)  # untied: differs from the embeddings
    return model


def build(name: str, out: Path, dtype: str | None = None) -> Path:
    """Save the tiny model ``name`` (one of `NAMES`) and SmolLM2's tokenizer to ``out``; ``dtype``
    (e.g. "bfloat16") halves the files where size matters (the tests load them in their own dtype)."""
    import torch
    from transformers import AutoTokenizer

    from s2d_utils.embedded import default_checkpoint

    tok = AutoTokenizer.from_pretrained(default_checkpoint())
    cfg = dict(TINY, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    model = {"tiny-llama": _llama, "tiny-qwen2": _qwen2}[name](cfg)
    if dtype:
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)
