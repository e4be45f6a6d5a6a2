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


def _tiny(tmp_path_factory, name: str) -> Path:
    """A tiny random checkpoint (`tiny_models`): built here, or taken from ``S2D_TINY_MODELS`` (a
    folder `benchmarks/device_kit.py` filled, for a GPU machine where the tokenizer they are built
    with is not installed)."""
    import tiny_models

    kit = os.environ.get("S2D_TINY_MODELS")
    if kit:
        path = Path(kit) / name
        assert (path / "config.json").exists(), f"S2D_TINY_MODELS={kit}: no {name} in it"
        return path
    return tiny_models.build(name, tmp_path_factory.mktemp(name) / name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama (tied embeddings, like SmolLM2)."""
    return _tiny(tmp_path_factory, "tiny-llama")


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
    return _tiny(tmp_path_factory, "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_qwen(tiny_qwen_dir):
    from s2d_utils.models import load_model

    return load_model(str(tiny_qwen_dir), device="cpu")
