"""Our LoRA loop (`distill.finetune`) against TRL's SFTTrainer on the same data, model and settings.

Issue 11 asks whether the distill step should run through TRL's SFTTrainer (completion-only loss,
peft, gradient checkpointing, and accelerate / FSDP / DeepSpeed for several GPUs): yes if on CPU
it gives the same losses within noise and is no more than 10% slower. This prints both runs'
losses and train tokens/s, measured in one process, back to back.

    .venv/bin/python benchmarks/bench_sft.py                 # SmolLM2-135M, 32 pairs, 12 steps
    .venv/bin/python benchmarks/bench_sft.py --model qwen2.5-coder-0.5b-instruct --steps 6

The two runs see the same pairs, LoRA settings, learning rate, schedule and batch size, with the
loss on the completion only; batch order and dropout masks differ (each uses its own sampler), so
losses are compared as means over the run, not step by step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from s2d_utils import distill
from s2d_utils.models import load_model
from s2d_utils.tasks import coin_flip


def trl_run(lm, pairs, settings: distill.LoraSettings, steps: int, out: Path) -> tuple[list[float], float, int]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                               "completion": [{"role": "assistant", "content": p["completion"]}]} for p in pairs])
    config = SFTConfig(output_dir=str(out), per_device_train_batch_size=settings.batch_size, max_steps=steps,
                       learning_rate=settings.learning_rate, lr_scheduler_type="linear", warmup_steps=0,
                       weight_decay=0.0, logging_steps=1, report_to=[], save_strategy="no", seed=settings.seed,
                       use_cpu=lm.device == "cpu", completion_only_loss=True, gradient_checkpointing=True,
                       gradient_checkpointing_kwargs={"use_reentrant": False}, dataloader_num_workers=0,
                       disable_tqdm=True, bf16=False, fp16=False)
    lora = LoraConfig(task_type="CAUSAL_LM", r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules))
    trainer = SFTTrainer(model=lm.model, args=config, train_dataset=data, processing_class=lm.tokenizer,
                         peft_config=lora)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainer.model.unload()
    lm.model.eval()
    return losses, seconds, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    lm = load_model(args.model, device="cpu")
    pairs = [{"id": e.id, "prompt": e.input, "completion": distill.answer_completion(e.gold)}
             for e in coin_flip.load("train", n=args.pairs, seed=7)]
    settings = distill.LoraSettings(max_steps=args.steps, batch_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        ours = distill.finetune(lm, pairs, settings, out_dir=Path(tmp), progress=False, name="bench-sft")
        trl_losses, trl_seconds, trl_tokens_epoch = trl_run(lm, pairs, settings, args.steps, Path(tmp) / "trl")
    # TRL's dataset holds each pair once; it cycles through it like our loop, so tokens scale with steps
    trl_tokens = trl_tokens_epoch * args.steps * settings.batch_size / len(pairs)
    print(f"model {args.model}, {len(pairs)} pairs, {args.steps} steps of batch {settings.batch_size}")
    print(f"ours: mean loss {statistics.mean(ours.losses):.4f}, last {ours.losses[-1]:.4f}, "
          f"{ours.tokens_per_second:.0f} tokens/s ({ours.seconds:.1f} s)")
    print(f"TRL:  mean loss {statistics.mean(trl_losses):.4f}, last {trl_losses[-1]:.4f}, "
          f"{trl_tokens / trl_seconds:.0f} tokens/s ({trl_seconds:.1f} s)")
    print(f"TRL speed / ours: {(trl_tokens / trl_seconds) / ours.tokens_per_second:.2f}")


if __name__ == "__main__":
    main()
