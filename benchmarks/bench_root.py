"""The engine's run root (`engine.ROOT_MIN`): 8-shot CoT prompts on GSM8k, whose ~1,300 tokens of
exemplars every prompt begins with, decoded with the root held once (read by every row) and with
each prompt's whole K/V in its own prefix slot. Same process, same prompts, greedy.

    .venv/bin/python benchmarks/bench_root.py                      # Qwen 0.5B, 48 prompts, 96 tokens
    .venv/bin/python benchmarks/bench_root.py --n 16 --tokens 32 --model smollm2-135m-instruct

Prints each variant's seconds and tokens/s, the ratio, and how many greedy outputs are identical
(all of them, unless a near-tie rounds differently: the two attention splits sum in another order).
Measured 2026-11-30 on 2 cores (Qwen 0.5B, defaults): 214 s without, 133 s with (1.61x), 48/48 identical.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=48, help="test questions")
    ap.add_argument("--tokens", type=int, default=96, help="greedy tokens per question")
    args = ap.parse_args()

    from s2d_utils import engine
    from s2d_utils.generation import generate
    from s2d_utils.models import load_model
    from s2d_utils.system2 import cot
    from s2d_utils.tasks import gsm8k

    lm = load_model(args.model, device="cpu")
    shots = gsm8k.exemplars(0)[:8]
    prompts = [cot.few_shot(e, shots, cot=True) for e in gsm8k.load("test", n=args.n, seed=0)]
    seconds, texts = {}, {}
    for name, root_min in (("root", engine.ROOT_MIN), ("no root", 10**9)):
        saved, engine.ROOT_MIN = engine.ROOT_MIN, root_min
        try:
            t = time.perf_counter()
            out = generate(lm, prompts, n=1, temperature=0.0, max_new_tokens=args.tokens, cache=None, progress=False)
            seconds[name] = time.perf_counter() - t
        finally:
            engine.ROOT_MIN = saved
        texts[name] = [c[0].text for c in out]
        made = sum(c[0].n_tokens for c in out)
        roots = sorted({r.root_tokens for r in out.stats.engine_runs})
        print(f"{name:8s}: {seconds[name]:6.1f} s, {made} tokens, {made / seconds[name]:5.1f} tokens/s, "
              f"{len(out.stats.engine_runs)} engine run(s), root tokens {roots}")
    same = sum(a == b for a, b in zip(texts["root"], texts["no root"]))
    print(f"root / no root: {seconds['no root'] / seconds['root']:.2f}x faster; identical greedy outputs {same}/{args.n}")


if __name__ == "__main__":
    main()
