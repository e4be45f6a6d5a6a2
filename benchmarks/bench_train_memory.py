"""Peak resident memory of one LoRA fine-tuning step on judge-like pairs (long prompt, short
verdict), as `distill.finetune` trains them, against the same step with glibc's heap defaults and
the whole batch in one pass (no micro-batches, no heap trimming, no own mappings).

    .venv/bin/python benchmarks/bench_train_memory.py                     # Qwen 0.5B, 4 x ~760 tokens
    .venv/bin/python benchmarks/bench_train_memory.py --model smollm2-135m-instruct --words 200

Each variant runs in its own process (its peak is its own; the model's weights are in both).
Prints seconds and peak RSS of each, and the ratio. Measured 2026-11-30 on 2 cores (Qwen 0.5B,
defaults): 10.0 GB before, 3.0 GB with micro-batches and own mappings (seconds within noise:
207 vs 237 s, the machine shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(model_name: str, variant: str, words: int) -> dict:
    from s2d_utils import distill, lora
    from s2d_utils.models import load_model

    if variant == "glibc defaults":  # undo each of the three memory measures where the training loop reads it
        distill.own_mappings = contextlib.nullcontext
        lora.trim_heap = lambda: None
        lora.MICRO_TOKENS = 10**9
    lm = load_model(model_name, device="cpu")
    text = " ".join(f"word{i}" for i in range(words))
    pairs = [{"prompt": f"Judge {i}: {text}", "completion": "[[A]]"} for i in range(4)]
    t = time.perf_counter()
    distill.finetune(lm, pairs, distill.LoraSettings(batch_size=4, max_steps=1, epochs=1),
                     out_dir=Path(tempfile.mkdtemp()), progress=False)
    return {"seconds": time.perf_counter() - t, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--words", type=int, default=400, help="prompt words (~1.9 tokens each with Qwen)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run(args.model, args.variant, args.words)))
        return
    res = {}
    for variant in ("glibc defaults", "s2d"):
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--words", str(args.words),
                              "--variant", variant], capture_output=True, text=True, check=True)
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{variant:15s}: {res[variant]['seconds']:6.1f} s, peak {res[variant]['peak_gb']:.2f} GB", flush=True)
    print(f"peak memory ratio (defaults / s2d): {res['glibc defaults']['peak_gb'] / res['s2d']['peak_gb']:.2f}x; "
          f"time ratio: {res['glibc defaults']['seconds'] / res['s2d']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
