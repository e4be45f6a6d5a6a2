"""Sampling throughput: plain `model.generate` vs the s2d engine, per model, in one process.

Workload: chat prompts of the paper's tasks (System 1, 1-step RaR and 2-step RaR prompts on
last-letter and coin-flip questions) x 8 samples, temperature 0.7, top-p 0.95; the same workload
for every model named. Also: greedy agreement (share of prompts whose greedy output is
token-identical to `model.generate`'s), prefill tokens/s, LoRA fine-tuning tokens/s, and the
weight-GEMM ceiling (`gemm_ceiling.py`): the tokens/s the step's matrix products alone allow.

    .venv/bin/python benchmarks/bench_generation.py            # both embedded models, fp32 and bf16 (`make bench`)
    .venv/bin/python benchmarks/bench_generation.py --models smollm2-135m-instruct --prompts 64 --max-new-tokens 128

Tokens/s counts useful generated tokens (up to and excluding the end-of-turn token) for both
sides. Numbers are ratios measured in the same process, back to back; the machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from s2d_utils import distill
from s2d_utils.backends import stop_token_ids
from s2d_utils.generation import generate, render
from s2d_utils.models import load_model
from s2d_utils.system2 import rar
from s2d_utils.tasks import coin_flip, last_letter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gemm_ceiling import time_step, weight_shapes  # noqa: E402
from record_run import machine  # noqa: E402


def workload(n_prompts: int) -> list[str]:
    makers = [lambda e: e.input, rar.one_step_prompt,
              lambda e: rar.rephrase_prompt(e, last_letter if e.id.startswith("last") else coin_flip)]
    exs = [e for pair in zip(last_letter.load("test", n=n_prompts, seed=11), coin_flip.load("test", n=n_prompts, seed=11))
           for e in pair]
    return [makers[i % len(makers)](e) for i, e in enumerate(exs[:n_prompts])]


def hf_generate(lm, prompts, n, max_new_tokens, batch_size, do_sample=True):
    """Plain transformers generate: left-padded batches, n samples via num_return_sequences."""
    tok = lm.tokenizer
    tok.padding_side = "left"
    useful, outs = 0, []
    stops = stop_token_ids(lm)  # Qwen stops on <|im_end|> or <|endoftext|>: cut at the first of either
    per_batch = max(1, batch_size // n)
    for start in range(0, len(prompts), per_batch):
        chunk = [render(lm, p) for p in prompts[start : start + per_batch]]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                    temperature=0.7 if do_sample else None, top_p=0.95 if do_sample else None,
                                    top_k=0 if do_sample else None, num_return_sequences=n, pad_token_id=tok.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            toks = row[:cut]
            useful += len(toks)
            outs.append(toks)
    return useful, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct",
                    help="comma-separated; each runs the same workload")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (a GPU's tokens/s for a gpu-profile estimate)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--hf-batch-sizes", default="64,128", help="plain generate tries these; the best counts")
    ap.add_argument("--batch-size", type=int, default=128, help="our engine's rows in flight")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parents[1] / "figures" / "bench_generation.json"),
                    help="where to write the figures (default: figures/bench_generation.json, read by make readme)")
    ap.add_argument("--lora-steps", type=int, default=8)
    ap.add_argument("--dtype", default="auto", help="the weights' dtypes, comma-separated, each model run in each "
                    "(auto: float32 and bfloat16 on CPU, the cpu profile's dtype beside fp32; bfloat16 on CUDA)")
    ap.add_argument("--engine-only", action="store_true",
                    help="only the rates a time estimate needs (prefill, engine, LoRA): no plain generate, "
                         "no greedy agreement (benchmarks/estimate_time.py)")
    args = ap.parse_args()
    prompts = workload(args.prompts)
    print(f"workload: {len(prompts)} prompts x {args.samples} samples, T=0.7, top-p 0.95, "
          f"<= {args.max_new_tokens} new tokens, {torch.get_num_threads()} threads")
    dtypes = (["float32", "bfloat16"] if args.device == "cpu" else ["bfloat16"]) if args.dtype == "auto" \
        else args.dtype.split(",")
    results = {}
    for name in args.models.split(","):
        for k, dtype in enumerate(dtypes):  # the first dtype under the model's name, the others as name@dtype
            key = name if k == 0 else f"{name}@{dtype}"
            print(f"\n== {key} ({dtype})")
            results[key] = bench_model(load_model(name, device=args.device, dtype=dtype), prompts, args)
    if not args.engine_only:
        print("\nsummary (engine / plain model.generate, same workload, same process):")
        for name, f in results.items():
            print(f"  {name:32s} {f['speedup']:.2f}x   greedy identical {f['greedy_identical']:.0%}   "
                  f"LoRA {f['lora_train_tokens_per_s']:.0f} tokens/s")
    record = {"models": results, "batch_size": args.batch_size,
              "workload": {"prompts": len(prompts), "samples": args.samples, "max_new_tokens": args.max_new_tokens,
                           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
                           "device": args.device, "dtypes": dtypes,
                           "machine": machine()}}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} (the README's throughput table: make readme)")


def lora_rate(lm, args) -> float:
    """LoRA fine-tuning tokens/s of the distill step (last-letter pairs, batch 8)."""
    pairs = [{"id": e.id, "prompt": e.input, "completion": distill.answer_completion(e.gold)}
             for e in last_letter.load("train", n=32, seed=11)]
    with tempfile.TemporaryDirectory() as tmp:
        res = distill.finetune(lm, pairs, distill.LoraSettings(max_steps=args.lora_steps, batch_size=8),
                               out_dir=Path(tmp), progress=False, name="bench")
    return res.tokens_per_second


def engine_rates(lm, prompts, args, figures: dict) -> dict:
    """The engine's sampled tokens/s and the LoRA rate only (``--engine-only``)."""
    t0 = time.perf_counter()
    outs = generate(lm, prompts, n=args.samples, temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens,
                    seed=0, batch_size=args.batch_size, cache=None, progress=False)
    figures["engine_tokens_per_s"] = sum(c.n_tokens for cs in outs for c in cs) / (time.perf_counter() - t0)
    figures["lora_train_tokens_per_s"] = lora_rate(lm, args)
    print(f"prefill:                {figures['prefill_tokens_per_s']:.0f} tokens/s")
    print(f"s2d engine:             {figures['engine_tokens_per_s']:.1f} tokens/s (batch {args.batch_size})")
    print(f"LoRA fine-tuning:       {figures['lora_train_tokens_per_s']:.0f} tokens/s")
    return figures


def bench_model(lm, prompts, args) -> dict[str, float]:
    figures: dict[str, float] = {}

    # prefill throughput (one forward over a batch of prompts)
    enc = lm.tokenizer([render(lm, p) for p in prompts[:32]], return_tensors="pt", padding=True, add_special_tokens=False)
    t0 = time.perf_counter()
    with torch.inference_mode():
        lm.model(**enc, logits_to_keep=1)
    figures["prefill_tokens_per_s"] = int(enc["attention_mask"].sum()) / (time.perf_counter() - t0)

    figures["dtype"] = str(lm.model.dtype).removeprefix("torch.")
    if args.engine_only:
        return engine_rates(lm, prompts, args, figures)

    # (a) plain generate: probe each batch size on the first 8 prompts, run the best on everything
    best, best_rate = None, 0.0
    for bs in [int(b) for b in args.hf_batch_sizes.split(",")]:
        t0 = time.perf_counter()
        useful, _ = hf_generate(lm, prompts[: max(1, bs // args.samples)], args.samples, args.max_new_tokens, bs)
        rate = useful / (time.perf_counter() - t0)
        print(f"  plain generate probe, batch {bs}: {rate:.1f} tokens/s")
        if rate > best_rate:
            best, best_rate = bs, rate
    if max(1, best // args.samples) >= len(prompts):  # the best probe already ran the whole workload
        figures["hf_tokens_per_s"] = best_rate
    else:
        t0 = time.perf_counter()
        useful, _ = hf_generate(lm, prompts, args.samples, args.max_new_tokens, best)
        figures["hf_tokens_per_s"] = useful / (time.perf_counter() - t0)
    figures["hf_batch"] = best

    # (b) our engine, same workload, no cache
    t0 = time.perf_counter()
    outs = generate(lm, prompts, n=args.samples, temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens,
                    seed=0, batch_size=args.batch_size, cache=None, progress=False)
    ours = sum(c.n_tokens for cs in outs for c in cs)
    figures["engine_tokens_per_s"] = ours / (time.perf_counter() - t0)
    figures["speedup"] = figures["engine_tokens_per_s"] / figures["hf_tokens_per_s"]
    # what the weight products alone would allow at this row count (benchmarks/gemm_ceiling.py)
    figures["gemm_ceiling_tokens_per_s"] = args.batch_size / time_step(weight_shapes(lm.model.config), args.batch_size,
                                                                       lm.model.dtype, repeats=9)

    # greedy agreement, prompt by prompt
    greedy = generate(lm, prompts, max_new_tokens=args.max_new_tokens, cache=None, progress=False,
                      batch_size=args.batch_size)
    _, ref = hf_generate(lm, prompts, 1, args.max_new_tokens, 1, do_sample=False)
    same = [g[0].text == lm.tokenizer.decode(r, skip_special_tokens=True) for g, r in zip(greedy, ref)]
    figures["greedy_identical"] = sum(same) / len(same)
    differing = [i for i, ok in enumerate(same) if not ok]

    figures["lora_train_tokens_per_s"] = lora_rate(lm, args)
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    print(f"prefill:                {figures['prefill_tokens_per_s']:.0f} tokens/s")
    print(f"plain model.generate:   {figures['hf_tokens_per_s']:.1f} tokens/s (batch {best})")
    print(f"s2d engine:             {figures['engine_tokens_per_s']:.1f} tokens/s (batch {args.batch_size})")
    print(f"speedup:                {figures['speedup']:.2f}x")
    print(f"weight-GEMM ceiling:    {figures['gemm_ceiling_tokens_per_s']:.0f} tokens/s at {args.batch_size} rows "
          f"(engine at {figures['engine_tokens_per_s'] / figures['gemm_ceiling_tokens_per_s']:.0%} of it)")
    print(f"greedy identical:       {sum(same)}/{len(same)} prompts" + (f" (differ: {differing})" if differing else ""))
    print(f"LoRA fine-tuning:       {figures['lora_train_tokens_per_s']:.0f} tokens/s")
    print(f"peak RSS (this script): {figures['peak_rss_gb']:.2f} GB")
    return figures


if __name__ == "__main__":
    main()
