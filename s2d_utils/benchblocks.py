"""docs/performance.md's benchmark blocks, rebuilt from the benchmarks' JSON in figures/ (`make bench`
writes it, `make readme` rebuilds the blocks through `readme`): the local engine against plain
``model.generate``, against llama.cpp's server, and against vLLM's CPU build."""

from __future__ import annotations

import json
from pathlib import Path

from . import paths

BENCH_FILE = "bench_generation.json"  # written by `make bench` into figures/


def readme_bench(root: Path | None = None) -> str:
    """The README's throughput table, from the last `make bench` run's JSON."""
    path = (root or paths.ROOT) / "figures" / BENCH_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `make bench` first")
    data = json.loads(path.read_text())
    runs = data["models"]
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    names = [f"{m.split('@')[0]}, {short.get(r.get('dtype'), r.get('dtype'))}" if r.get("dtype") else m
             for m, r in runs.items()]
    head = "| measure | " + " | ".join(names) + " |"
    rule = "|---|" + "---|" * len(runs)
    lines = [head, rule]

    def row(label, fmt, key):
        lines.append(f"| {label} | " + " | ".join(fmt(runs[m][key]) for m in runs) + " |")

    row("plain `model.generate`, best batch (tokens/s)", lambda v: f"{v:.1f}", "hf_tokens_per_s")
    row(f"s2d engine, {data['batch_size']} rows in flight (tokens/s)", lambda v: f"{v:.1f}", "engine_tokens_per_s")
    row("**engine / `model.generate`**", lambda v: f"**{v:.2f}x**", "speedup")
    row("weight-GEMM ceiling (tokens/s)", lambda v: f"{v:.0f}", "gemm_ceiling_tokens_per_s")
    row("greedy output token-identical to `model.generate`", lambda v: f"{v:.0%} of prompts", "greedy_identical")
    row("prefill (tokens/s)", lambda v: f"{v:.0f}", "prefill_tokens_per_s")
    row("LoRA fine-tuning, batch 8, checkpointing (tokens/s)", lambda v: f"{v:.0f}", "lora_train_tokens_per_s")
    row("peak resident memory of the benchmark process so far (GB)", lambda v: f"{v:.2f}", "peak_rss_gb")
    w = data["workload"]
    lines.append("")
    lines.append(f"Workload: {w['prompts']} prompts x {w['samples']} samples, temperature 0.7, top-p 0.95, up to "
                 f"{w['max_new_tokens']} new tokens, {w['threads']} threads; measured {w['date']} on {w['machine']}.")
    return "\n".join(lines)


def readme_bench_llama(root: Path | None = None) -> str:
    """The README's llama-server comparison, from `benchmarks/bench_llama.py`'s JSON (figures/bench_llama.json)."""
    path = (root or paths.ROOT) / "figures" / "bench_llama.json"
    if not path.exists():
        return "Not measured yet: `make llama-server && make bench` writes `figures/bench_llama.json`."
    data = json.loads(path.read_text())
    runs = data["models"]
    lines = ["| measure | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(runs[m]) for m in runs) + " |")

    for load in ("greedy", "sampled"):
        what = "greedy" if load == "greedy" else f"sampled, {next(iter(runs.values()))['samples']} a prompt"
        row(f"*{what}*: local engine, fp32 / bf16 (tokens/s)", lambda r, w=load: " / ".join(
            f"{r[w]['local_tokens_per_s'][d]:.1f}" for d in ("float32", "bfloat16")))
        row(f"*{what}*: llama-server, -np " + " / ".join(map(str, data["slots"])) + " (tokens/s)",
            lambda r, w=load: " / ".join(f"{r[w]['llama_tokens_per_s'][str(k)]:.1f}" for k in data["slots"]))
        row(f"**{what}: llama-server at its best -np / local fp32, bf16**", lambda r, w=load: (
            f"**{r[w]['llama_over_local']['float32']:.2f}x, {r[w]['llama_over_local']['bfloat16']:.2f}x** "
            f"(-np {r[w]['best_slots']})"))
    if all("sampled_prompt_cache" in r for r in runs.values()):
        row("*sampled*, llama-server's prompt cache on, at that -np (tokens/s; / local fp32, bf16)", lambda r: (
            f"{r['sampled_prompt_cache']['tokens_per_s']:.1f}; {r['sampled_prompt_cache']['over_local']['float32']:.2f}x, "
            f"{r['sampled_prompt_cache']['over_local']['bfloat16']:.2f}x"))
    row("greedy completions identical to local fp32", lambda r: ", ".join(
        f"{v} of {r['prompts']} (-np {k})" for k, v in r["greedy_identical_to_fp32"].items()))
    lines += ["", f"Up to {data['max_new_tokens']} new tokens, the benchmark workload's prompts, sampled at temperature "
              f"0.7 and top-p 0.95; llama-server on each model's own GGUF "
              f"({', '.join(r['gguf'] for r in runs.values())}), built {data.get('build', 'by make llama-server')}, "
              "the client keeping -np requests in flight; "
              f"measured {data['date']} on {data['machine']} (`figures/bench_llama.json`, `benchmarks/bench_llama.py`). "
              "The notebooks send llama-server's sampled requests one at a time (parallel slots change the samples "
              "run to run), so they get the sampled -np 1 rate from it."]
    return "\n".join(lines)


def readme_bench_vllm(root: Path | None = None) -> str:
    """vLLM's CPU build beside the local engine (and llama-server), from `benchmarks/bench_vllm.py`'s JSON."""
    path = (root or paths.ROOT) / "figures" / "bench_vllm.json"
    if not path.exists():
        return "Not measured yet: `make vllm && make bench` writes `figures/bench_vllm.json`."
    data = json.loads(path.read_text())
    runs = data["models"]
    if not runs:
        return f"Not measured: `figures/bench_vllm.json` ({data['date']}) holds no model (their wheels were missing)."
    lines = ["| measure | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(runs[m]) for m in runs) + " |")

    widths = data["concurrency"]
    for load in ("greedy", "sampled"):
        what = "greedy" if load == "greedy" else f"sampled, {next(iter(runs.values()))['samples']} a prompt"
        row(f"*{what}*: local engine, fp32 / bf16 (tokens/s)", lambda r, w=load: " / ".join(
            f"{r[w]['local_tokens_per_s'][d]:.1f}" for d in ("float32", "bfloat16")))
        row(f"*{what}*: vLLM, " + " / ".join(map(str, widths)) + " requests in flight (tokens/s)",
            lambda r, w=load: " / ".join(f"{r[w]['vllm_tokens_per_s'][str(k)]:.1f}" for k in widths))
        row(f"**{what}: local engine fp32, bf16 / vLLM at its best**", lambda r, w=load: (
            f"**{r[w]['local_over_vllm']['float32']:.2f}x, {r[w]['local_over_vllm']['bfloat16']:.2f}x** "
            f"({r[w]['best_concurrency']} in flight)"))
        row(f"*{what}*: llama-server (tokens/s; vLLM / llama-server)", lambda r, w=load: (
            f"{r[w]['llama_tokens_per_s']:.1f} (-np {r['llama_slots']}); {r[w]['vllm_over_llama']:.2f}x"
            if r[w]["llama_tokens_per_s"] else "not built"))
    row("vLLM's start (s)", lambda r: f"{r['vllm_start_s']:.0f}")
    row("greedy completions identical to local fp32", lambda r: f"{r['greedy_identical_to_fp32']} of {r['prompts']}")
    version = next(iter(runs.values()))["vllm_version"]
    lines += ["", f"vLLM {version}'s CPU build (`make vllm`) started by `python -m s2d_utils.backends.vllm_launch` "
              "(bf16 weights, LoRA enabled, every prefill whole), the client keeping that many requests in flight; "
              f"up to {data['max_new_tokens']} new tokens, the benchmark workload's prompts, sampled at temperature "
              f"0.7 and top-p 0.95; measured {data['date']} on {data['machine']}, one run "
              "(`figures/bench_vllm.json`, `benchmarks/bench_vllm.py`). vLLM's start is not counted in tokens/s. "
              "Its greedy completions need not equal the local fp32 ones: it runs bf16 weights."]
    behind = [(m, load, r[load]) for m, r in runs.items() for load in ("greedy", "sampled")
              if r[load]["local_over_vllm"]["bfloat16"] < 1]
    for m, load, r in behind:  # said, not hidden: where the local engine (bf16, the profiles' dtype) is not ahead
        why = (f" The greedy workload is one batch of {runs[m]['prompts']} prompts for both engines, so neither batching "
               "nor the local engine's shared prefixes set them apart; what is left is each engine's own CPU kernels."
               if load == "greedy" else "")
        lines += ["", f"vLLM is ahead of the local engine on {m}, {load} ({r['best_concurrency']} in flight: local bf16 "
                      f"is {r['local_over_vllm']['bfloat16']:.2f}x of it).{why}"]
    return "\n".join(lines)
