"""How long each notebook of a profile takes on a machine, estimated from rates measured there.

    # 1. on the machine that will run the profile: the rates
    .venv/bin/python benchmarks/bench_generation.py --models Qwen/Qwen2.5-7B-Instruct --device cuda \
        --engine-only --json gpu_rates.json
    # 2. the estimate, per notebook
    .venv/bin/python benchmarks/estimate_time.py --profile gpu --rates gpu_rates.json

The estimate of one notebook is the sum of three parts, each tokens over a measured rate:

- generation: `profiles.generation_budget` (every call of every program at its token cap, the
  notebook's own sizes) over the engine's sampled tokens/s. Real calls stop at their end of turn,
  so this part is an upper bound;
- prefill: the calls times the mean System 1 prompt (the task's inputs in the model's chat
  template; judge prompts with their system prompt and both answers) over the prefill tokens/s.
  An approximation either way: System 2 calls carry longer prompts (instructions, a rephrasing,
  a rewrite), the engine computes shared prefixes once, and its measured rate already includes
  some prefill;
- fine-tuning: on each of the profile's seeds, the steps the sizes give when the filter keeps every unlabeled input, times the
  rows of a step, times a prompt and its target (the final answer, 16 tokens; S2A's whole
  response, at its cap) over the LoRA tokens/s. Kept inputs are fewer, targets often shorter.

So only the generation part is a bound; the sum is a ceiling in practice because generation at
its cap dominates it (checked below). Not counted: loading the model, scoring and plotting.

``--record figures/reproduce_cpu.json --profile cpu`` sets the estimate beside a measured cold run
(model loading taken out) and writes both to ``--json``: how far the method is from the truth on
the one machine where both are known (figures/estimate_cpu.json, the README's "At scale").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from s2d_utils import profiles, registry

ANSWER_TOKENS = 16  # a student's target: the final answer alone (S2A: its whole response, `target_tokens`)
PROMPT_SAMPLE = 64  # inputs tokenized for the mean prompt


def mean_prompt_tokens(tokenizer, method: str, task: str, n: int = PROMPT_SAMPLE) -> float:
    """Mean tokens of the task's System 1 prompts (chat template included) over ``n`` training inputs."""
    import importlib

    module = importlib.import_module(f"s2d_utils.tasks.{task}")
    examples = module.load("train", n=n, seed=0)
    if method == "bsm":
        from s2d_utils.system2.bsm import Judges

        judges = Judges(module.data_folder())
        chats = [judges.system1(e) for e in examples]
    else:
        chats = [[{"role": "user", "content": e.input}] for e in examples]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return statistics.fmean(lengths)


def target_tokens(method: str, task: str, profile: str) -> int:
    """Tokens of a student's training target: S2A distills the whole final response (at most its
    answer cap), the others the final answer alone."""
    return profiles.sizes(method, task, profile).answer_tokens if method == "s2a" else ANSWER_TOKENS


def estimate(method: str, task: str, profile: str, rates: dict, prompt_tokens: float) -> dict:
    """Seconds per part and in all for one notebook (see the module docstring)."""
    budget = profiles.generation_budget(method, task, profile)
    steps, rows, tokens = profiles.training_bound(method, task, profile)
    step_tokens = tokens if tokens else rows * (prompt_tokens + target_tokens(method, task, profile))
    parts = {
        "generation_s": budget["total"] / rates["engine_tokens_per_s"],
        "prefill_s": budget["calls"] * prompt_tokens / rates["prefill_tokens_per_s"],
        "fine_tune_s": profiles.sizes(method, task, profile).seeds * steps * step_tokens / rates["lora_train_tokens_per_s"],
    }
    return {"generated_tokens_cap": budget["total"], "calls": budget["calls"], "mean_prompt_tokens": prompt_tokens,
            "train_steps": steps, **{k: round(v, 1) for k, v in parts.items()}, "total_s": round(sum(parts.values()), 1)}


def measured_without_loading(record: dict) -> dict[str, float]:
    """A `make record` run's cold seconds per notebook, model loading taken out."""
    cold = record["cold"]
    return {nb: s - cold.get("stage_s", {}).get(nb, {}).get("load model", 0) for nb, s in cold["notebook_s"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=profiles.PROFILES)
    ap.add_argument("--rates", required=True, type=Path, help="bench_generation.py's JSON, measured on this machine")
    ap.add_argument("--model", default=None, help="the model's entry in --rates (default: its only or first one)")
    ap.add_argument("--tokenizer", default=None, help="model whose tokenizer counts the prompts (default: the profile's)")
    ap.add_argument("--record", type=Path, default=None, help="a make-record JSON of the same profile to compare with")
    ap.add_argument("--json", type=Path, default=None, help="write the estimate (and the comparison) here")
    args = ap.parse_args(argv)

    from s2d_utils.models import load_model

    bench = json.loads(args.rates.read_text())
    model = args.model or next(iter(bench["models"]))
    if model not in bench["models"]:
        raise SystemExit(f"{args.rates}: no rates for {model!r} (it has {sorted(bench['models'])})")
    rates = bench["models"][model]
    tokenizer = load_model(args.tokenizer or profiles.model_for(args.profile), weights=False).tokenizer
    record = json.loads(args.record.read_text()) if args.record else None
    if record and record.get("profile") != args.profile:
        raise SystemExit(f"{args.record}: a run of profile {record.get('profile')!r}, not {args.profile!r}")
    measured = measured_without_loading(record) if record else {}

    rows = {}
    for entry in registry.NOTEBOOKS:  # not `record`: that is the measured run's JSON, written below
        nb, method, task = entry.notebook, entry.method, entry.task
        rows[nb] = estimate(method, task, args.profile, rates, mean_prompt_tokens(tokenizer, method, task))
        if nb in measured:
            rows[nb]["measured_s"] = measured[nb]
            rows[nb]["estimate_over_measured"] = round(rows[nb]["total_s"] / measured[nb], 2)
    w = bench.get("workload", {})
    print(f"profile {args.profile}; rates of {model} ({rates.get('dtype', w.get('dtype', '?'))}) measured "
          f"{w.get('date', '?')} on {w.get('machine', '?')}, device {w.get('device', '?')}: engine "
          f"{rates['engine_tokens_per_s']:.0f}, prefill {rates['prefill_tokens_per_s']:.0f}, "
          f"LoRA {rates['lora_train_tokens_per_s']:.0f} tokens/s")
    print(f"{'notebook':22s} {'gen cap':>10s} {'gen s':>9s} {'prefill s':>9s} {'tune s':>8s} {'estimate':>10s}"
          + (f" {'measured':>9s} {'ratio':>6s}" if measured else ""))
    for nb, r in rows.items():
        line = (f"{nb:22s} {r['generated_tokens_cap']:>10,d} {r['generation_s']:>9.0f} {r['prefill_s']:>9.0f} "
                f"{r['fine_tune_s']:>8.0f} {r['total_s'] / 60:>8.1f} m")
        if "measured_s" in r:
            line += f" {r['measured_s'] / 60:>7.1f} m {r['estimate_over_measured']:>6.2f}"
        print(line)
    total = sum(r["total_s"] for r in rows.values())
    print(f"{'all five':22s} {'':>10s} {'':>9s} {'':>9s} {'':>8s} {total / 3600:>8.1f} h (an estimate: see the docstring)")
    if args.json:
        out = {"profile": args.profile, "model": model, "rates": {k: rates[k] for k in
                                                                   ("engine_tokens_per_s", "prefill_tokens_per_s",
                                                                    "lora_train_tokens_per_s")},
               "rates_measured": {k: w.get(k) for k in ("date", "machine", "device", "dtype")},
               "notebooks": rows, "total_s": round(total, 1)}
        if record:
            out["record"] = {"file": str(args.record), "commit": record.get("commit"), "date": record.get("date")}
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
