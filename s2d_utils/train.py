"""Fine-tune one distilled student outside the notebook, on one process or many.

    python -m s2d_utils.train --model <id or folder> --pairs pairs.jsonl --name "Distill 2-step RaR" \
        --settings '{"r": 16, "steps": 100}'
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m s2d_utils.train --model ... (same flags)

What it shares with the in-notebook path (`distill.finetune`), so that a student trained either way
is the same student (both build on `lora`):

- the pairs file is what `distill.sft_pairs` returns (one JSON object a line: ``id``, ``prompt``,
  ``completion``), tokenized by `lora.tokenize` (the chat template, the answer-only label mask);
- the batches of each step come from `lora.step_batches` (same seeded shuffle, same order);
- LoRA through peft with the same `lora.LoraSettings`, AdamW and the linear decay;
- the adapter lands in the same content-addressed folder (`lora.adapter_key`: base fingerprint,
  pairs, settings) with the same ``train_log.json``, so the notebook finds it and does not retrain.

What differs: the loss is the model's own forward with ``labels`` (the same value as
`lora.answer_loss`, tests/test_distill.py shows it; data-parallel wrappers and FSDP need the
forward to go through them). With N processes each takes rows ``rank::N`` of a step's batch and
weighs its loss by its share of the step's answer tokens, so the averaged gradient is the one
process's gradient of the same batch (tests/test_train.py runs two processes on the CPU).

Checkpoints: every ``--save-every`` steps the LoRA weights, optimizer, scheduler and each
process's RNG go to ``<adapter folder>.partial/state`` (`save_checkpoint`: never the frozen base); a run started again with the same arguments resumes from the last one. The saved adapter is checked not to be empty
(`lora.check_adapter`; LoRA under DeepSpeed ZeRO-3 is known to save empty adapters).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from . import files, lora

STATE = "state"  # checkpoints inside the .partial folder
PROGRESS = "progress.json"  # step, losses and tokens at the last checkpoint
TRAINABLE = "trainable.pt"  # LoRA weights, optimizer and scheduler at the last checkpoint (no frozen base)


def read_pairs(path: Path) -> list[dict]:
    """The pairs file, checked line by line (the file, line and field at fault in the error)."""
    pairs = files.read_jsonl(path, ("id", "prompt", "completion"))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def parse_settings(text: str | None) -> lora.LoraSettings:
    """`lora.LoraSettings` from a JSON object (or a file holding one); unknown keys are an error."""
    if not text:
        return lora.LoraSettings()
    raw = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
    known = {f.name for f in fields(lora.LoraSettings)}
    if set(raw) - known:
        raise ValueError(f"--settings: unknown keys {sorted(set(raw) - known)}; known: {sorted(known)}")
    if "target_modules" in raw:
        raw["target_modules"] = tuple(raw["target_modules"])
    return lora.LoraSettings(**raw)


def load_weights(base, accelerator, torch_dtype):
    """The base's weights for this process, read so that N processes do not hold N full copies:

    - FSDP with ``fsdp_cpu_ram_efficient_loading``: only process 0 reads them; the others build
      the model on the meta device, and `prepare` broadcasts process 0's weights into the shards;
    - DeepSpeed ZeRO-3 with ``zero3_init_flag``: `from_pretrained` partitions them as it reads
      (nothing may move them afterwards, hence no ``.to``);
    - otherwise each process reads them on the CPU (memory-mapped: processes share the page cache
      when no dtype conversion is needed) and `prepare` moves them to its device.
    """
    import torch
    from accelerate.utils import DistributedType
    from transformers import AutoModelForCausalLM

    from .models import contiguous_head

    state = accelerator.state
    plugin = getattr(state, "fsdp_plugin", None)
    if (state.distributed_type == DistributedType.FSDP and plugin is not None
            and plugin.cpu_ram_efficient_loading and accelerator.process_index != 0):
        from accelerate import init_empty_weights

        # parameters on meta, buffers (rotary frequencies) real: accelerate copies those to the device
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(base.config, dtype=torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch_dtype)
    contiguous_head(model)
    return model


def trainable_state(accelerator, model) -> dict:
    """The trainable (LoRA) tensors under their module names, whole, on the CPU: gathered from the
    shards under FSDP and ZeRO-3 (every process must call), never the frozen base (a 70B model's
    full state dict on process 0's CPU at each save)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        from deepspeed.utils import safe_get_full_fp32_param

        unwrapped = accelerator.unwrap_model(model)
        return {n: safe_get_full_fp32_param(p).cpu() for n, p in unwrapped.named_parameters() if p.requires_grad}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    trainable = {n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                 ignore_frozen_params=True))
    return {k: v for k, v in whole.items() if k in trainable}  # a tied LM head slips through ignore_frozen_params


def save_checkpoint(accelerator, model, optim, sched, folder: Path, progress: dict) -> None:
    """The state to resume from, without the frozen base: LoRA weights, optimizer (gathered whole
    from the shards; under DeepSpeed, accelerate's per-process ZeRO files), scheduler, each
    process's RNG (LoRA dropout) and ``progress``. Written into ``state.tmp``, progress last; then
    ``state`` becomes ``state.old``, ``state.tmp`` becomes ``state``, and ``state.old`` goes: a run
    killed at any point leaves a complete checkpoint under one of the three names."""
    import shutil

    import torch
    from accelerate.utils import DistributedType

    tmp = folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.save_state(str(tmp), exclude_frozen_parameters=True)
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        whole = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        weights = trainable_state(accelerator, model)
        optimizer = get_optimizer_state_dict(model, optim, options=whole)
        if accelerator.is_main_process:
            torch.save({"weights": weights, "optimizer": optimizer, "scheduler": sched.state_dict()}, tmp / TRAINABLE)
    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    torch.save(rng, tmp / f"rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / PROGRESS).write_text(json.dumps(progress))  # last: a folder with it is complete
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)  # renames only: at every moment one complete checkpoint has a name
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def last_checkpoint(partial: Path) -> Path | None:
    """The newest complete checkpoint (its progress file written, which comes last; the most steps)
    among ``state``, ``state.tmp`` (killed before the renames) and ``state.old`` (killed between
    them), named ``state`` so that the next save does not delete it; None if there is none."""
    import shutil

    state = partial / STATE
    complete = [f for f in (state, state.with_name(STATE + ".tmp"), state.with_name(STATE + ".old"))
                if (f / PROGRESS).exists()]
    if not complete:
        return None
    newest = max(complete, key=lambda f: json.loads((f / PROGRESS).read_text())["step"])
    if newest != state:
        shutil.rmtree(state, ignore_errors=True)
        newest.rename(state)
    return state


def load_checkpoint(accelerator, model, optim, sched, folder: Path) -> dict:
    """Restore what `save_checkpoint` wrote; returns its progress."""
    import torch
    from accelerate.utils import DistributedType

    processes = len(list(folder.glob("rng_*.pt")))
    if processes != accelerator.num_processes:
        raise RuntimeError(f"{folder}: a checkpoint of {processes} processes; resume it with as many "
                           f"(this run has {accelerator.num_processes}), or delete {folder.parent} to start over")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # the checkpoint holds no frozen weights (exclude_frozen_parameters): load it non-strictly
        accelerator.load_state(str(folder), load_module_strict=False)
    else:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        saved = torch.load(folder / TRAINABLE, weights_only=False)  # our own file: LoRA tensors, plain state
        whole = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, saved["weights"], options=whole)
        set_optimizer_state_dict(model, optim, saved["optimizer"], options=whole)
        sched.load_state_dict(saved["scheduler"])
    rng = torch.load(folder / f"rng_{accelerator.process_index}.pt", weights_only=False)
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((folder / PROGRESS).read_text())


def train(model_name: str, pairs: list[dict], settings: lora.LoraSettings, name: str = "distill",
          out_dir: Path | None = None, save_every: int = 0, stop_after: int | None = None,
          progress: bool = True, dtype: str = "auto") -> lora.TrainResult | None:
    """Train one student (see the module docstring); returns None when stopped by ``stop_after``
    (a test of resuming) before the last step. ``dtype``: the base's, as the notebook loaded it."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from tqdm import tqdm

    from .models import load_model

    accelerator = Accelerator()
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # no DataLoader goes through `prepare` (the steps' rows come from `lora.step_batches`), so
        # DeepSpeed's "auto" micro-batch cannot be inferred: one row a pass is what it accounts;
        # and no gradient clipping, as in the notebook's loop (accelerate's default would be 1.0)
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = 1
        if ds.get("gradient_clipping", "auto") == "auto":
            ds["gradient_clipping"] = 0.0
    device = "cpu" if accelerator.device.type == "cpu" else "cuda"
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"  # as `load_model` picks for the notebooks
    # tokenizer, config and fingerprint first: an adapter already trained loads no weights at all
    base = load_model(model_name, device="cpu", dtype=dtype, weights=False)
    out = lora.adapter_dir(base, pairs, settings, name, out_dir)
    if (done := lora.read_trained(out)) is not None:
        return done
    partial = files.partial(out)
    data = [lora.tokenize(base, p) for p in pairs]
    per_step = lora.rows_per_step([len(ids) for ids, _ in data], settings)
    total = lora.training_steps(len(data), settings, per_step)
    torch.manual_seed(settings.seed)  # the LoRA A matrices' initialization, as in `distill.finetune`
    inner = load_weights(base, accelerator, getattr(torch, dtype))
    inner.config.use_cache = False
    if lora.needs_checkpointing(data, settings):
        # transformers' own checkpointing, as the notebook loop turns it on: it restores the RNG for
        # the recomputation, so LoRA dropout draws the same masks twice (accelerate's FSDP option
        # wraps layers with preserve_rng_state=False: other masks in backward than in forward)
        inner.activation_checkpointing_enable({"use_reentrant": False})
    model = lora.with_lora(inner, settings)
    model.train()
    optim, sched = lora.optimizer(model, settings, total)
    # the scheduler stays out of `prepare`: accelerate would step it once per process at every step
    # (it assumes the batch grows with the processes; here a step's batch is split among them), so
    # with 8 processes the learning rate would reach 0 after an eighth of the steps, then turn negative
    model, optim = accelerator.prepare(model, optim)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.register_for_checkpointing(sched)  # saved by accelerate's save_state there

    done = {"step": 0, "losses": [], "tokens": 0, "seconds": 0.0}
    if accelerator.is_main_process:
        last_checkpoint(partial)  # the newest complete checkpoint, renamed into place as `state`
    accelerator.wait_for_everyone()
    if (partial / STATE / PROGRESS).exists():  # resume
        done = load_checkpoint(accelerator, model, optim, sched, partial / STATE)
    step, losses, tokens = done["step"], list(done["losses"]), done["tokens"]
    rank, world = accelerator.process_index, accelerator.num_processes
    pad = base.tokenizer.pad_token_id
    t0 = time.perf_counter() - done["seconds"]
    bar = tqdm(total=total, initial=step, desc=f"fine-tune {name}", unit="step",
               disable=not progress or not accelerator.is_main_process)
    for k, rows in enumerate(lora.step_batches(len(data), settings, per_step)):
        if k < step:
            continue  # done before the checkpoint we resumed from
        mine, weight = rows[rank::world], 1.0
        if not mine:  # fewer rows than processes: run one with weight 0, so the collectives still meet
            mine, weight = rows[:1], 0.0
        dev = accelerator.device
        batch = [data[i] for i in mine]
        # passes of at most lora.MICRO_TOKENS padded tokens, as in the notebook loop; under DeepSpeed
        # one pass a step (its engine counts backward calls as accumulation steps of its own)
        parts = ([list(range(len(batch)))] if accelerator.distributed_type == DistributedType.DEEPSPEED
                 else lora.micro_batches(batch))
        # the step's loss is the mean over all its answer tokens, as in the notebook's loop: each
        # pass adds its token-summed loss over the step's answer-token count; the data-parallel
        # wrappers average gradients over processes, hence the factor ``world``. Every process runs
        # as many passes as the busiest one (FSDP gathers its shards in every forward), the extra
        # ones with weight 0, and only the last pass synchronizes gradients.
        n_mine = weight * float(sum(sum(t != -100 for t in labels[1:]) for _, labels in batch))
        n_step = max(1.0, float(accelerator.reduce(torch.tensor(n_mine, device=dev), reduction="sum")))
        n_passes = int(accelerator.gather(torch.tensor([len(parts)], device=dev)).max())
        loss_total = torch.zeros((), device=dev, dtype=torch.float64)
        real = torch.zeros((), device=dev, dtype=torch.float64)
        for j in range(n_passes):
            part, w = (parts[j], weight) if j < len(parts) else (parts[0], 0.0)
            ids, mask, labels = lora.collate([batch[r] for r in part], pad)
            sync = contextlib.nullcontext() if j == n_passes - 1 else accelerator.no_sync(model)
            with sync:
                mean = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
                n_pass = float((labels[:, 1:] != -100).sum())
                share = mean * (w * n_pass / n_step)
                accelerator.backward(share * world)
            loss_total += share.detach().double()
            real += (w * mask.sum()).double().to(dev)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        # the step's loss and real tokens over all processes, in one collective
        loss_sum, token_sum = accelerator.reduce(torch.stack([loss_total, real]), reduction="sum")
        losses.append(round(float(loss_sum), 5))
        tokens += int(token_sum)
        step += 1
        bar.update(1)
        if save_every and step % save_every == 0 and step < total:
            save_checkpoint(accelerator, model, optim, sched, partial / STATE,
                            {"step": step, "losses": losses, "tokens": tokens, "seconds": time.perf_counter() - t0})
        if stop_after is not None and step >= stop_after and step < total:
            bar.close()
            return None
    bar.close()
    accelerator.wait_for_everyone()
    state = trainable_state(accelerator, model)  # the LoRA weights, gathered from every shard
    result = None
    if accelerator.is_main_process:
        log = {"steps": step, "examples": len(data), "tokens": tokens, "seconds": time.perf_counter() - t0,
               "losses": losses, "rows_per_step": per_step, "warmup_steps": lora.warmup_steps(settings, total),
               "settings": asdict(settings), "base": base.name,
               "base_fingerprint": base.fingerprint, "processes": world,
               "distributed": accelerator.distributed_type.value}
        unwrapped = accelerator.unwrap_model(model)
        result = lora.publish(out, lambda tmp: unwrapped.save_pretrained(str(tmp), state_dict=state), pairs, log)
    accelerator.wait_for_everyone()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2d_utils.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the base model: an embedded name, a folder or a hub id")
    parser.add_argument("--pairs", required=True, type=Path, help="JSON lines: id, prompt, completion")
    parser.add_argument("--name", default="distill", help="the student's name (the adapter folder's prefix)")
    parser.add_argument("--settings", default=None, help="lora.LoraSettings as a JSON object or a file")
    parser.add_argument("--out-dir", type=Path, default=None, help="where adapter folders go (default: results/checkpoints)")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: never)")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop as if killed
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--dtype", default="auto", help="the base's dtype (auto: float32 on CPU, bfloat16 on GPUs)")
    args = parser.parse_args(argv)
    result = train(args.model, read_pairs(args.pairs), parse_settings(args.settings), args.name, args.out_dir,
                   args.save_every, args.stop_after, not args.no_progress, args.dtype)
    if result is not None:
        print(json.dumps({"adapter_dir": str(result.adapter_dir), "steps": result.steps, "losses": list(result.losses)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
