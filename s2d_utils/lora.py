"""LoRA fine-tuning itself: the settings, the step batches, the loss and the loop, and the
content-addressed adapter folder it publishes.

The in-notebook loop (`distill.finetune`) and the `s2d_utils.train` entry point both build on it,
so a student trained either way sees the same tokens (`tokenize`: the prompt rendered by the same
`generation.render` the evaluation uses, the loss on the answer tokens only), the same batches in
the same order (`step_batches`), the same LoRA layers and optimizer (`with_lora`, `optimizer`),
and lands in the same folder (`adapter_dir`) with the same files (`publish`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import paths
from .files import staged_folder
from .generation import render
from .memory import trim_heap
from .models import LoadedModel
from .schedule import (MICRO_TOKENS, TrainPlan, lr_factor, micro_batches, plan, plan_problems,  # noqa: F401
                       rows_per_step, step_batches, training_steps, warmup_steps)


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
    # the paper's unit: real (unpadded) prompt + answer tokens per optimizer step. Set, it replaces
    # ``batch_size``: a step takes as many rows as that many tokens hold at the pairs' mean length
    # (`rows_per_step`), drawn from a stream of seeded shuffles (a step may span epochs)
    tokens_per_step: int | None = None
    warmup_share: float = 0.0  # share of the steps over which the LR rises linearly before it decays

    def key(self) -> dict:
        """The settings as the adapter's content key holds them: the fields added after the committed
        students were trained are left out at their defaults, so those students keep their folders."""
        out = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if out.get(name) == default:
                out.pop(name)
        return out


_LATER_FIELDS = {"tokens_per_step": None, "warmup_share": 0.0}


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    examples: int
    tokens: int
    seconds: float
    losses: tuple[float, ...]
    reused: bool
    rows: int = 0  # rows a step
    warmup: int = 0  # warmup steps
    settings: dict = field(default_factory=dict, compare=False)
    planned: dict | None = field(default=None, compare=False)  # a simulated student's `TrainPlan` (nothing trained)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0

    @property
    def epochs(self) -> float:
        return self.steps * self.rows / self.examples if self.examples else 0.0


def tokenize(lm: LoadedModel, pair: dict[str, str]) -> tuple[list[int], list[int]]:
    """(ids, labels) of a prompt/completion pair: the prompt as `generation.render` writes it for
    ``lm``, then the completion and the end token; labels -100 on the prompt."""
    tok = lm.tokenizer
    prompt_ids = tok(render(lm, pair["prompt"]), add_special_tokens=False)["input_ids"]
    answer_ids = tok(pair["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids  # loss on answer tokens only


def adapter_key(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings) -> str:
    key = {"base": base.fingerprint, "pairs": list(pairs), "settings": settings.key()}
    if base.dtype not in ("float32", "unknown"):  # a bf16 base trains another student (fp32 keys as they were)
        key["dtype"] = base.dtype
    payload = json.dumps(key, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def read_trained(out: Path, reused: bool = True) -> TrainResult | None:
    """The `TrainResult` of an adapter folder already trained (its ``train_log.json``), else None."""
    log_file = out / "train_log.json"
    if not log_file.exists():
        return None
    return _result(out, json.loads(log_file.read_text()), reused)


def _result(out: Path, log: dict, reused: bool) -> TrainResult:
    settings = log.get("settings", {})
    # logs written before rows_per_step was recorded: a step took batch_size rows (fewer pairs: all)
    rows = log.get("rows_per_step") or min(settings.get("batch_size", 0), log["examples"])
    return TrainResult(out, log["steps"], log["examples"], log["tokens"], log["seconds"], tuple(log["losses"]), reused,
                       rows, log.get("warmup_steps", 0), settings, log.get("planned"))


def with_lora(model, settings: LoraSettings):
    """``model`` wrapped with fresh LoRA layers (peft) as ``settings`` say (the in-notebook loop and
    `s2d_utils.train` alike; seed the torch RNG first: it draws the A matrices)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        task_type="CAUSAL_LM", r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules)))


def optimizer(model, settings: LoraSettings, total: int):
    """AdamW over the trainable (LoRA) parameters, with `lr_factor`'s warmup and linear decay."""
    import torch

    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                              weight_decay=0.0)
    warmup = warmup_steps(settings, total)
    return optim, torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, total, warmup))


def adapter_dir(base: LoadedModel, pairs: Sequence[dict[str, str]], settings: LoraSettings, name: str,
                out_dir: Path | None = None) -> Path:
    """Where the adapter for these pairs and settings lives: ``<checkpoints>/<name slug>-<adapter_key>``
    (the in-notebook loop, `launch` and the `s2d_utils.train` entry point all use it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (out_dir or paths.CHECKPOINTS) / f"{slug}-{adapter_key(base, pairs, settings)}"


CHECKPOINT_TOKENS = 2048  # padded tokens per step above which activations are recomputed, not kept


def needs_checkpointing(data: Sequence[tuple[list[int], list[int]]], settings: LoraSettings) -> bool:
    """Whether a step's padded tokens (longest tokenized pair x rows) exceed `CHECKPOINT_TOKENS`:
    then activations are recomputed in the backward pass instead of kept."""
    return max(len(ids) for ids, _ in data) * min(settings.batch_size, len(data)) > CHECKPOINT_TOKENS


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


def train_loop(base: LoadedModel, model, pairs, settings: LoraSettings, out: Path, name: str, progress: bool) -> TrainResult:
    """The training loop of `distill.finetune` on a peft-wrapped ``model``; saves the adapter atomically."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    data = [tokenize(base, p) for p in pairs]
    rows = rows_per_step([len(ids) for ids, _ in data], settings)
    total = training_steps(len(data), settings, rows)
    optim, sched = optimizer(model, settings, total)
    pad = base.tokenizer.pad_token_id
    losses, tokens, step = [], 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=f"fine-tune {name}", disable=not progress, unit="step")
    for batch in step_batches(len(data), settings, rows):
        loss, n = accumulate(model, [data[i] for i in batch], pad, device)
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
           "rows_per_step": rows, "warmup_steps": warmup_steps(settings, total),
           "settings": asdict(settings), "base": base.name, "base_fingerprint": base.fingerprint}
    return publish(out, lambda tmp: model.save_pretrained(str(tmp)), pairs, log)


def publish(out: Path, save: Callable[[Path], None], pairs: Sequence[dict], log: dict) -> TrainResult:
    """Write the adapter (``save(folder)``), its training pairs and log into ``out`` atomically (a
    killed run leaves only ``out.partial``), after checking the adapter is not empty."""
    with staged_folder(out) as tmp:
        save(tmp)
        check_adapter(tmp)
        (tmp / "train_data.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
        (tmp / "train_log.json").write_text(json.dumps(log, indent=1))
    return _result(out, log, False)


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
