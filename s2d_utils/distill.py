"""Distillation: (input -> final answer) pairs, LoRA fine-tuning, and loading the result.

Paper Sec. 3: the student is the *same* model, fine-tuned on the System 2 program's final
answers only (no intermediate tokens), with the loss on the answer tokens only.

Training is a short, explicit loop over peft LoRA rather than TRL's SFTTrainer: the prompt is
rendered by the same `generation.render` the evaluation uses (so train and test prompts are
byte-identical), the loss mask is exact, and on a 2-core CPU the loop has no trainer overhead.
It runs on CUDA unchanged. The adapter is saved in the standard peft format.

Adapters are content-addressed: the folder name hashes the base model's fingerprint, the
training pairs and the hyperparameters, so a rerun loads the finished adapter instead of
retraining, and an interrupted run (no ``train_log.json`` yet) trains again from scratch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import paths
from .generation import render
from .filters import Kept
from .models import LoadedModel, adapter_hash, free_memory, load_model, own_mappings, trim_heap

ANSWER_TEMPLATE = "The answer is {answer}."


def answer_completion(answer: str) -> str:
    """The final answer only, in a fixed sentence the tasks' strict parsers read."""
    return ANSWER_TEMPLATE.format(answer=answer)


def answer_target(kept: Kept) -> str:
    """Distillation target for short-answer tasks (RaR, CoT): "The answer is X." (Sec. 4.1, 4.4)."""
    return answer_completion(kept.answer)


def final_response_target(kept: Kept) -> str:
    """Distillation target for S2A (Sec. 4.2): the chosen sample's whole final response."""
    return kept.trace.final.strip()


def verdict_target(kept: Kept) -> str:
    """Distillation target for an LLM judge (Sec. 4.3): the verdict token string, e.g. "[[A]]"."""
    return f"[[{kept.answer}]]"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA fine-tuning hyperparameters (dropout 0.1 as in the paper; the rest are LoRA defaults
    that fit a 135M model on CPU, not tuned on test data)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    learning_rate: float = 2e-4
    epochs: int = 3
    batch_size: int = 8
    max_steps: int | None = None  # a cap (smoke runs)
    min_steps: int = 1  # a floor: at least this many optimizer steps, however few the pairs
    steps: int | None = None  # an exact budget (the paper's step counts); wins over epochs and the floor
    seed: int = 0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    examples: int
    tokens: int
    seconds: float
    losses: tuple[float, ...]
    reused: bool

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def sft_pairs(kept: Sequence[Kept], target: Callable[[Kept], str] = answer_target,
              prompt: Callable | None = None) -> list[dict]:
    """Prompt/completion records: System 1 prompt (the bare input, or ``prompt(example)``, e.g. a
    judge's chat messages) -> the task's target (final answer only, never the intermediate tokens)."""
    return [{"id": k.example.id, "prompt": prompt(k.example) if prompt else k.example.input, "completion": target(k)}
            for k in kept]


def _tokenize(lm: LoadedModel, pair: dict[str, str]) -> tuple[list[int], list[int]]:
    tok = lm.tokenizer
    prompt_ids = tok(render(lm, pair["prompt"]), add_special_tokens=False)["input_ids"]
    answer_ids = tok(pair["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids  # loss on answer tokens only


def _load_dtype(base: LoadedModel) -> str:
    """The dtype to load another copy of ``base`` in (a student, a training process): its own."""
    return "auto" if base.dtype == "unknown" else base.dtype


def adapter_key(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings) -> str:
    key = {"base": base.fingerprint, "pairs": list(pairs), "settings": asdict(settings)}
    if base.dtype not in ("float32", "unknown"):  # a bf16 base trains another student (fp32 keys as they were)
        key["dtype"] = base.dtype
    payload = json.dumps(key, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def read_trained(out: Path, reused: bool = True) -> TrainResult | None:
    """The `TrainResult` of an adapter folder already trained (its ``train_log.json``), else None."""
    log_file = out / "train_log.json"
    if not log_file.exists():
        return None
    log = json.loads(log_file.read_text())
    return TrainResult(out, log["steps"], log["examples"], log["tokens"], log["seconds"], tuple(log["losses"]), reused)


def with_lora(model, settings: LoraSettings):
    """``model`` wrapped with fresh LoRA layers (peft) as ``settings`` say (the in-notebook loop and
    `s2d_utils.train` alike; seed the torch RNG first: it draws the A matrices)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        task_type="CAUSAL_LM", r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules)))


def optimizer(model, settings: LoraSettings, total: int):
    """AdamW over the trainable (LoRA) parameters and its linear decay to 0 over ``total`` steps."""
    import torch

    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                              weight_decay=0.0)
    return optim, torch.optim.lr_scheduler.LambdaLR(optim, lambda s: max(0.0, 1.0 - s / max(total, 1)))


def adapter_dir(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings, name: str,
                out_dir: Path | None = None) -> Path:
    """Where the adapter for these pairs and settings lives: ``<checkpoints>/<name slug>-<adapter_key>``
    (the in-notebook loop, `launch` and the `s2d_utils.train` entry point all use it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (out_dir or paths.CHECKPOINTS) / f"{slug}-{adapter_key(base, pairs, settings)}"


def finetune(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings = LoraSettings(),
             out_dir: Path | None = None, progress: bool = True, name: str = "distill") -> TrainResult:
    """LoRA-fine-tune ``base`` on ``pairs``; return where the adapter is.

    The adapter is trained on ``base.model`` itself (no second copy of the weights: a 70B model
    could not afford one) and removed again afterwards, so ``base`` answers exactly as before;
    its dropout, cache and eval settings are restored even if training fails.
    """
    import torch
    from tqdm import tqdm

    if not pairs:
        raise ValueError(f"{name}: no training pairs (the filter kept nothing); cannot fine-tune")
    out = adapter_dir(base, pairs, settings, name, out_dir)
    if (done := read_trained(out)) is not None:
        return done

    processes = train_processes()
    if processes > 1:  # data parallel / FSDP / ZeRO-3 in processes of their own
        return launch(base, pairs, settings, name, out_dir, processes)
    torch.manual_seed(settings.seed)
    inner = base.model
    use_cache = inner.config.use_cache
    # recompute each layer's activations in the backward pass instead of keeping them: same
    # gradients, about a quarter more compute, and a fraction of the memory (~2.5 GB at batch 8).
    # Short batches (RaR, CoT answers: < 2k tokens a step) keep their activations: they are small.
    checkpointing = needs_checkpointing([_tokenize(base, p) for p in pairs], settings)
    inner.config.use_cache = False
    if checkpointing:
        inner.activation_checkpointing_enable({"use_reentrant": False})
    model = with_lora(inner, settings)
    try:
        model.train()
        # long batches only: their freed activations are what fragments the heap; on short ones
        # (RaR, CoT answers) the mappings cost time (CoT's 12 steps: 126 s -> 171 s) and save nothing
        with own_mappings() if checkpointing else contextlib.nullcontext():
            return _train(base, model, pairs, settings, out, name, progress)
    finally:
        model.unload()  # take the LoRA layers out again: base.model is the unchanged base model
        if checkpointing:
            inner.activation_checkpointing_disable()
        if getattr(inner, "_require_grads_hooks", None):
            inner.disable_input_require_grads()  # the hook checkpointing put on the embeddings
        inner.config.use_cache = use_cache
        inner.eval()
        for p in inner.parameters():
            p.requires_grad_(False)
        del model
        free_memory()


def needs_checkpointing(data: Sequence[tuple[list[int], list[int]]], settings: LoraSettings) -> bool:
    """Whether a step's padded tokens (longest tokenized pair x rows) exceed `CHECKPOINT_TOKENS`:
    then activations are recomputed in the backward pass instead of kept."""
    return max(len(ids) for ids, _ in data) * min(settings.batch_size, len(data)) > CHECKPOINT_TOKENS


def train_processes() -> int:
    """``S2D_TRAIN_PROCESSES`` (a notebook's ``TRAIN_PROCESSES``): 1 trains in this process; more
    launch `s2d_utils.train` with ``accelerate launch`` on that many processes."""
    raw = os.environ.get("S2D_TRAIN_PROCESSES", "1") or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"S2D_TRAIN_PROCESSES={raw!r}: expected a whole number >= 1")
    return int(raw)


def accelerate_config(config: str | None) -> str | None:
    """The accelerate config file as an absolute path: as given, or relative to the repository
    (notebooks run in notebooks/, so ``configs/accelerate/fsdp.yaml`` is read from the root)."""
    if not config:
        return None
    for path in (Path(config).expanduser(), paths.ROOT / config):
        if path.is_file():
            return str(path.resolve())
    raise FileNotFoundError(f"S2D_ACCELERATE_CONFIG={config!r}: no such file (here or under {paths.ROOT}); "
                            f"the shipped ones: {sorted(p.name for p in (paths.ROOT / 'configs' / 'accelerate').glob('*.yaml'))}")


def launch(base: LoadedModel, pairs: Sequence[dict], settings: LoraSettings, name: str, out_dir: Path | None,
           processes: int, config: str | None = None, save_every: int = 50) -> TrainResult:
    """Train with ``accelerate launch --num_processes N -m s2d_utils.train`` (``config``, else
    ``S2D_ACCELERATE_CONFIG``: one of configs/accelerate/*.yaml or the user's own) and return the
    adapter it wrote: the folder `finetune` would have written, found there by the notebooks.
    With neither a GPU nor a config, torchrun starts the N processes (data parallel over gloo)."""
    import subprocess
    import sys
    import tempfile

    import torch

    config = accelerate_config(config or os.environ.get("S2D_ACCELERATE_CONFIG") or None)
    if torch.cuda.is_available():
        # the kernel keeps the base on its GPUs (it evaluates the students next); what its allocator
        # holds cached beyond that (the last runs' K/V) goes back to the driver for the processes
        free_memory()
        torch.cuda.empty_cache()
    env = dict(os.environ)
    if config or torch.cuda.is_available():
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                    *(["--config_file", config] if config else [])]
    else:
        # no GPU: accelerate launches several CPU processes only through MPI; torchrun starts them
        # and accelerate joins them over gloo (ACCELERATE_USE_CPU), each with its share of the cores
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        env.update(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // processes)))
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        cmd = [*launcher, "-m", "s2d_utils.train", "--model", base.name, "--dtype", _load_dtype(base),
               "--pairs", str(pairs_file), "--name", name, "--settings", json.dumps(asdict(settings)),
               "--out-dir", str(out_dir or paths.CHECKPOINTS), "--save-every", str(save_every), "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return read_trained(adapter_dir(base, pairs, settings, name, out_dir), reused=False)


CHECKPOINT_TOKENS = 2048  # padded tokens per step above which activations are recomputed, not kept


def step_batches(n_pairs: int, settings: LoraSettings) -> Iterator[list[int]]:
    """The pairs (by index) of each optimizer step: epochs of a seeded shuffle cut into batches,
    `training_steps` of them. The in-notebook loop and the `s2d_utils.train` entry point both
    follow it, so they see the same batches in the same order."""
    rng = random.Random(settings.seed)
    step, total = 0, training_steps(n_pairs, settings)
    while step < total:
        order = list(range(n_pairs))
        rng.shuffle(order)
        for start in range(0, n_pairs, settings.batch_size):
            if step >= total:
                return
            yield order[start : start + settings.batch_size]
            step += 1


def collate(batch: Sequence[tuple[list[int], list[int]]], pad: int):
    """(ids, attention mask, labels) of tokenized pairs, right-padded (labels -100 off the answer)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (x, y) in enumerate(batch):
        ids[r, : len(x)] = torch.tensor(x)
        labels[r, : len(y)] = torch.tensor(y)
        mask[r, : len(x)] = 1
    return ids, mask, labels


def training_steps(n_pairs: int, settings: LoraSettings) -> int:
    """Optimizer steps for ``n_pairs`` pairs: the exact budget if set, else ``epochs`` passes but at
    least ``min_steps``; ``max_steps`` caps either."""
    total = settings.steps or max(math.ceil(n_pairs / settings.batch_size) * settings.epochs, settings.min_steps)
    return min(total, settings.max_steps) if settings.max_steps else total


MICRO_TOKENS = 1024  # padded tokens per forward/backward pass: a step's rows beyond it accumulate
# gradients in several passes (same gradient). Measured on the 0.5B model, BSM judge prompts at batch
# 4 (~3,000 tokens in one pass) held 13.8 GB resident in the 04 notebook; activations scale with this


def micro_batches(batch: Sequence[tuple[list[int], list[int]]], limit: int | None = None) -> list[list[int]]:
    """The rows of one optimizer step cut into consecutive passes of at most ``limit`` padded
    tokens (`MICRO_TOKENS`; one row at least)."""
    limit = MICRO_TOKENS if limit is None else limit
    parts: list[list[int]] = []
    width = 0
    for r, (ids, _) in enumerate(batch):
        w = max(width, len(ids))
        if parts and w * (len(parts[-1]) + 1) <= limit:
            parts[-1].append(r)
            width = w
        else:
            parts.append([r])
            width = len(ids)
    return parts


def accumulate(model, batch: Sequence[tuple[list[int], list[int]]], pad: int, device) -> tuple[float, int]:
    """Backward of one step's mean answer-token loss over ``batch`` (tokenized pairs), in
    `micro_batches`: each pass adds its answer tokens' summed loss over the step's answer-token
    count, so the gradient is the whole batch's. Returns (the step's loss, its real tokens)."""
    n_answer = sum(sum(t != -100 for t in labels[1:]) for _, labels in batch)
    total, tokens = 0.0, 0
    for part in micro_batches(batch):
        ids, mask, labels = collate([batch[r] for r in part], pad)
        loss = answer_loss(model, ids.to(device), mask.to(device), labels.to(device), reduction="sum") / n_answer
        loss.backward()
        total += loss.item()
        tokens += int(mask.sum())
        del loss, ids, mask, labels
        trim_heap()  # glibc keeps the pass's freed activations resident otherwise: 10 GB instead of 3 (BSM)
    return total, tokens


def answer_loss(model, ids, mask, labels, reduction: str = "mean"):
    """Mean next-token cross-entropy over the answer tokens (labels != -100), with the LM head
    applied at those positions only.

    The same loss as ``model(..., labels=labels).loss``, without materializing logits for every
    prompt position: a judge prompt of 450 tokens with a 4-token verdict would otherwise compute
    (and keep for backward) 450 x 152k logits per row, a quarter of the step's compute and most
    of its memory (measured: 14.8 GB peak for the BSM notebook before, see the README).
    """
    import torch
    import torch.nn.functional as F

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, H], LoRA layers included
    target = labels[:, 1:].to(hidden.device)  # a model split over devices ends on another device than it starts
    keep = target != -100
    logits = inner.lm_head(hidden[:, :-1][keep])  # [answer tokens, vocab]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 for bf16 weights, fp64 stays
    return F.cross_entropy(logits, target[keep].to(logits.device), reduction=reduction)


def _train(base: LoadedModel, model, pairs, settings: LoraSettings, out: Path, name: str, progress: bool) -> TrainResult:
    """The training loop of `finetune` on a peft-wrapped ``model``; saves the adapter atomically."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    data = [_tokenize(base, p) for p in pairs]
    total = training_steps(len(data), settings)
    optim, sched = optimizer(model, settings, total)
    pad = base.tokenizer.pad_token_id
    losses, tokens, step = [], 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=f"fine-tune {name}", disable=not progress, unit="step")
    for rows in step_batches(len(data), settings):
        loss, n = accumulate(model, [data[i] for i in rows], pad, device)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(round(loss, 5))
        tokens += n
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    log = {"steps": step, "examples": len(data), "tokens": tokens, "seconds": seconds, "losses": losses,
           "settings": asdict(settings), "base": base.name, "base_fingerprint": base.fingerprint}
    return publish(out, lambda tmp: model.save_pretrained(str(tmp)), pairs, log)


def publish(out: Path, save: Callable[[Path], None], pairs: Sequence[dict], log: dict) -> TrainResult:
    """Write the adapter (``save(folder)``), its training pairs and log into ``out`` atomically (a
    killed run leaves only ``out.partial``), after checking the adapter is not empty."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    check_adapter(tmp)
    (tmp / "train_data.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp / "train_log.json").write_text(json.dumps(log, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return TrainResult(out, log["steps"], log["examples"], log["tokens"], log["seconds"], tuple(log["losses"]), False)


def check_adapter(folder: Path) -> None:
    """Raise unless ``folder`` holds a LoRA adapter with weights: at least one A and one B matrix,
    none of them empty, and some B not all zero (B starts at zero, so a trained adapter has moved
    it). LoRA under DeepSpeed ZeRO-3 is known to save empty adapters (the shards were never gathered)."""
    from safetensors import safe_open

    path = Path(folder) / "adapter_model.safetensors"
    if not path.exists():
        raise RuntimeError(f"{folder}: no adapter_model.safetensors was saved")
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    a = [t for k, t in tensors.items() if "lora_A" in k]
    b = [t for k, t in tensors.items() if "lora_B" in k]
    if not a or not b or any(t.numel() == 0 for t in tensors.values()):
        raise RuntimeError(f"{path}: an empty LoRA adapter ({len(a)} A and {len(b)} B matrices, "
                           f"{sum(t.numel() == 0 for t in tensors.values())} of them empty). Under DeepSpeed ZeRO-3 "
                           "the adapter must be saved from the gathered state dict (accelerator.get_state_dict).")
    if not any(bool(t.abs().sum() > 0) for t in b):
        raise RuntimeError(f"{path}: every LoRA B matrix is zero: the adapter was saved untrained")


STUDENT_MODES = ("merged", "attached")


def student_mode(base: LoadedModel) -> str:
    """How a student is evaluated here: ``S2D_STUDENT_MODE`` if set, else "attached" on CUDA (the
    adapter on the loaded base: no second copy of a large model) and "merged" on CPU (a merged copy
    the fast engine runs; the committed cpu tables were made this way) and for a base accelerate
    offloads partly to the CPU or disk (`offloaded`: peft would re-place it to attach an adapter)."""
    on_gpus = str(base.device).startswith("cuda") and not offloaded(base)
    mode = os.environ.get("S2D_STUDENT_MODE") or ("attached" if on_gpus else "merged")
    if mode not in STUDENT_MODES:
        raise ValueError(f"S2D_STUDENT_MODE={mode!r}: expected one of {list(STUDENT_MODES)}")
    return mode


def offloaded(base: LoadedModel) -> list[str]:
    """The modules of ``base`` that its device map puts on the CPU or disk next to GPUs (accelerate
    offloading): peft takes such a model's hooks off and places it anew when an adapter attaches,
    and unloading the adapter does not put it back."""
    device_map = getattr(base.model, "hf_device_map", None) if base.loaded else None
    return sorted(k for k, v in (device_map or {}).items() if v in ("cpu", "disk"))


@contextmanager
def attached(base: LoadedModel, result: TrainResult | Path) -> Iterator[LoadedModel]:
    """The distilled System 1 as ``base.model`` with the LoRA adapter attached (peft, not merged),
    for the ``with`` block only; the adapter is removed on exit, leaving the base's modules and
    weights exactly as they were. No second copy of the base is loaded and nothing is merged into
    its weights. Generation goes through the model's own forward (the engine reads plain weights).
    Its fingerprint differs from the merged student's: the two round differently, so their cached
    samples are kept apart.
    """
    from peft import PeftModel

    adapter = Path(result.adapter_dir if isinstance(result, TrainResult) else result)
    if off := offloaded(base):
        raise ValueError(f"{base.name}: its device map puts {', '.join(off[:3])}{' ...' if len(off) > 3 else ''} on "
                         "the CPU or disk; peft would place the whole model anew to attach an adapter, and leave it "
                         "so. Evaluate its students with S2D_STUDENT_MODE=merged, or give the base GPUs only "
                         "(or serve it: README, 'At scale').")
    model = base.model
    peft_model = PeftModel.from_pretrained(model, str(adapter), adapter_name="student", is_trainable=False)
    peft_model.eval()
    fingerprint = hashlib.sha256(f"{base.fingerprint}+attached-lora@{adapter_hash(adapter)}".encode()).hexdigest()
    try:
        yield replace(base, model=peft_model, fingerprint=fingerprint, adapter=str(adapter))
    finally:
        restored = peft_model.unload()  # the LoRA layers out, the base layers back in their place
        assert restored is model


def load_distilled(base: LoadedModel, result: TrainResult | Path, weights: bool = True) -> LoadedModel:
    """The distilled System 1: ``base``'s checkpoint with the LoRA adapter merged in.
    ``weights=False``: the weights load on first use (a student a server generates for as an adapter)."""
    adapter = result.adapter_dir if isinstance(result, TrainResult) else Path(result)
    # a base whole on one GPU, or partly offloaded: the merged copy is placed anew, where it fits
    # beside the base (`models.placement`; accelerate's "auto" fills what the GPUs have left first);
    # a base split over GPUs only: the same split
    whole = isinstance(base.device_map, dict) and set(base.device_map) == {""}
    device_map = "auto" if whole or offloaded(base) else base.device_map
    return load_model(base.name, device=base.device, adapter=adapter, device_map=device_map,
                      dtype=_load_dtype(base), weights=weights)
