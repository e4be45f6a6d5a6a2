"""fp32 against bf16 weights on this machine, in one process: why the cpu profile runs bf16.

For each dtype, on the same prompts (GSM8k zero-shot CoT, the cpu profile's model):
- generation: tokens/s of the engine (greedy, 128 rows in flight), and how many greedy outputs
  are identical to the fp32 ones (bf16 rounds differently, so near-ties may flip);
- fine-tuning: seconds per LoRA step on the same batch.

It prints the bf16/fp32 ratios; absolute numbers move with the machine and its load. On CPUs
without native bf16 products (no AVX512_BF16 or AMX) bf16 is emulated and the ratio is below 1:
run the profile with ``S2D_DTYPE=float32`` there.

    .venv/bin/python benchmarks/bench_dtype.py                     # Qwen2.5-Coder-0.5B, 48 prompts
    .venv/bin/python benchmarks/bench_dtype.py --model smollm2-135m-instruct --prompts 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 instruction flags (Linux /proc/cpuinfo; empty elsewhere or without them)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if "bf16" in f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=96)
    args = ap.parse_args()

    import torch

    from s2d_utils import distill
    from s2d_utils.generation import generate
    from s2d_utils.models import free_memory, load_model
    from s2d_utils.system2 import cot
    from s2d_utils.tasks import gsm8k

    questions = gsm8k.load("test", n=args.prompts, seed=0)
    prompts = [cot.zero_shot(e) for e in questions]
    pairs = [{"id": e.id, "prompt": e.input, "completion": f"The answer is {e.gold}."} for e in questions[:4]]
    print(f"{args.model}: {len(prompts)} prompts, {args.tokens} greedy tokens, {torch.get_num_threads()} threads; "
          f"CPU bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}")
    results = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(args.model, device="cpu", dtype=dtype)
        out = generate(lm, prompts, max_new_tokens=args.tokens, cache=None, progress=False, batch_size=128)
        tps = out.stats.generated_tokens / out.stats.seconds
        texts = [c.text for (c,) in out]
        # one LoRA step on 4 pairs (the first step includes peft's setup: time the second)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            distill.finetune(lm, pairs, distill.LoraSettings(max_steps=1, batch_size=4), out_dir=Path(tmp), progress=False)
            one = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            distill.finetune(lm, pairs, distill.LoraSettings(max_steps=3, batch_size=4), out_dir=Path(tmp), progress=False)
            step = (time.perf_counter() - t0 - one) / 2
        results[dtype] = (tps, texts, step)
        print(f"  {dtype:9s} generation {tps:6.1f} tokens/s   LoRA step {step:5.2f} s")
        del lm
        free_memory()
    (f32, t32, s32), (b16, t16, s16) = results["float32"], results["bfloat16"]
    same = sum(a == b for a, b in zip(t32, t16))
    print(f"bf16 / fp32: generation {b16 / f32:.2f}x, LoRA step {s32 / s16:.2f}x; "
          f"greedy outputs identical to fp32's: {same} of {len(t32)}")


if __name__ == "__main__":
    main()
