"""Shared fixtures. Nothing here reaches the network: HF_HUB_OFFLINE is forced on (tests only; the
defaults of the package never touch the network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from s2d_utils import paths


def repo_data(*parts: str) -> Path:
    """A file or folder of the repository's data/ (committed, checksummed: never skipped)."""
    path = paths.DATA.joinpath(*parts)
    assert path.exists(), f"{path}: missing from the repository's data/ (restore it with git)"
    return path


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512)


def _tiny_checkpoint(tmp_path_factory, name: str, build) -> Path:
    """Save ``build(tokenizer)`` (a random model) with SmolLM2's real tokenizer and chat template
    as a local checkpoint: fast enough for exact generation tests, loaded through `load_model`."""
    from transformers import AutoTokenizer

    from s2d_utils.models import default_checkpoint

    tok = AutoTokenizer.from_pretrained(default_checkpoint())
    model = build(tok, dict(TINY, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id))
    out = tmp_path_factory.mktemp(name) / name
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama (tied embeddings, like SmolLM2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(tok, cfg):
        torch.manual_seed(1234)
        return LlamaForCausalLM(LlamaConfig(**cfg, tie_word_embeddings=True))

    return _tiny_checkpoint(tmp_path_factory, "tiny-llama", build)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from s2d_utils.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def smollm():
    from s2d_utils.models import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A 2-layer random Qwen2 (q/k/v biases, untied LM head, Qwen's rope theta): the architecture
    is what the engine must get right, not the vocabulary."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def build(tok, cfg):
        torch.manual_seed(4321)
        model = Qwen2ForCausalLM(Qwen2Config(**cfg, tie_word_embeddings=False,
                                             rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}))
        with torch.no_grad():  # transformers initializes biases to zero: make them matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
            model.lm_head.weight.normal_(0, 0.05)  # untied: differs from the embeddings
        return model

    return _tiny_checkpoint(tmp_path_factory, "tiny-qwen2", build)


@pytest.fixture(scope="session")
def tiny_qwen(tiny_qwen_dir):
    from s2d_utils.models import load_model

    return load_model(str(tiny_qwen_dir), device="cpu")
