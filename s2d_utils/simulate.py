"""The full-size simulated run: every notebook at a profile's full sizes on a CPU, with the simulated
backend (random answers in each task's format: `backends.simulated`) and the simulated trainer
(every step planned and checked against the budget, nothing trained: `distill.plan_only`).

    python -m s2d_utils.simulate --profile paper        # = make simulate PROFILE=paper

Loaders, filters, the generation cache, traces, tables, the summary and routing all run for real at
those sizes. Everything goes under ``results/simulated/<profile>/`` (never ``figures/`` or the
README); datasets the repository cannot ship (OASST2, the MT-bench human judgments, TriviaQA,
SycophancyEval) are synthetic files in their real formats (`simdata`), written there first.

Each method notebook leaves a **work plan** (`record_workplan`): calls, prompt and generated tokens
(the caps' bound beside the simulated count), training pairs, steps and tokens, the kernel's peak
memory, and the GPU time those would take at a stated throughput (`THROUGHPUT`: a published vLLM
figure, labelled an assumption, unless ``--rates`` gives measured ones). `main` gathers them into
``workplan.json`` / ``workplan.md``, and ``--publish`` copies the JSON to ``docs/workplans/`` for the
README's "How to go big" (`readme`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import paths, profiles, registry

# The profile's model's context window (tokens), which the simulated run holds every prompt to: the
# stand-in tokenizer's own window is not the one the real run will have
CONTEXT = {"gpu": 32_768, "paper": 4_096}  # Qwen2.5-7B-Instruct; Llama-2-70b-chat
PARAMS = {"gpu": 7.6e9, "paper": 69e9}  # the profile's model's parameters (training FLOPs: 6 x params x tokens)
STAND_IN = "smollm2-135m-instruct"  # whose tokenizer counts tokens (the profile's model is not here)

# Throughput assumptions where no measured rate is given (`--rates`): generation from a published
# vLLM figure for the nearest model and GPU (not the profile's model: none was published), prompts at
# ten times that rate (an assumption of ours), training from FLOPs at a stated utilization.
_LAMBDA = ("LambdaLabsML/vllm-benchmark, benchmark_v0.md at commit 0e8fc5d0f9865a326666cb82aeb2d8dc74c82c5e: vLLM "
           "0.6.0, ShareGPT, 5,000 prompts at once, one scheduler step, output tokens/s of {}; an ASSUMPTION for {}")
THROUGHPUT = {
    "gpu": {"decode_tokens_per_s": 3_958.0, "prefill_tokens_per_s": 39_580.0, "gpus": 1, "gpu": "H100 80GB",
            "source": _LAMBDA.format("Llama-3.1-8B on one GPU (tp=1)", "Qwen2.5-7B-Instruct")},
    "paper": {"decode_tokens_per_s": 2_291.0, "prefill_tokens_per_s": 22_910.0, "gpus": 4, "gpu": "H100 80GB",
              "source": _LAMBDA.format("Llama-3.1-70B on four GPUs (tp=4)", "Llama-2-70b-chat")},
}
TRAIN_MFU, GPU_BF16_FLOPS = 0.4, 989e12  # training at 40% of an H100's dense bf16 peak: an assumption, stated

_DONE = {"ledger": {}, "plans": set()}  # what earlier finishes in this kernel already recorded


def begin(task: str, profile: str, lm) -> None:
    """Set the simulated backend up for one notebook: its task, an empty ledger, and the profile's
    model's context window on the stand-in's config."""
    from . import distill
    from .backends import LEDGER, SIMULATED

    SIMULATED.task = task
    LEDGER.reset()
    distill.PLANS.clear()
    _DONE["ledger"], _DONE["plans"] = {}, set()
    if profile in CONTEXT:
        lm.config.max_position_embeddings = CONTEXT[profile]


def _delta(now: dict, before: dict) -> dict:
    return {k: now[k] - before.get(k, 0) for k in ("calls", "prompt_tokens", "generated_tokens", "cap_tokens")}


def gpu_hours(generation: dict, training_tokens: int, profile: str, rates: dict | None = None) -> dict:
    """GPU hours of a work plan: generation at the caps' bound over the decode rate plus prompts over
    the prefill rate, on the rate's GPUs; training at 6 x params x tokens FLOPs."""
    r = rates or THROUGHPUT[profile]
    gen_s = generation["cap_tokens"] / r["decode_tokens_per_s"] + generation["prompt_tokens"] / r["prefill_tokens_per_s"]
    train_s = 6 * PARAMS[profile] * training_tokens / (TRAIN_MFU * GPU_BF16_FLOPS)
    return {"generation_gpu_h": round(gen_s * r["gpus"] / 3600, 2), "training_gpu_h": round(train_s / 3600, 2),
            "rates": r}


def record_workplan(exp) -> dict:
    """One notebook's work plan (see the module docstring), written beside its metrics."""
    from . import distill
    from .backends import LEDGER

    now = LEDGER.totals()
    generation = _delta(now, _DONE["ledger"])
    _DONE["ledger"] = now
    plans = {k: v for k, v in distill.PLANS.items() if k not in _DONE["plans"]}
    _DONE["plans"] |= set(plans)
    training_tokens = sum(p["tokens"] for p in plans.values())
    plan = {"notebook": exp.notebook, "profile": exp.profile, "model": profiles.model_for(exp.profile),
            "tokenizer": exp.lm.name, "context": CONTEXT.get(exp.profile), "test_inputs": len(exp.test),
            "generation": generation, "by_call": LEDGER.as_dict()["by_call"], "training": plans,
            "training_tokens": training_tokens,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
            **gpu_hours(generation, training_tokens, exp.profile)}
    out = paths.ensure(paths.RESULTS / "workplan") / f"{exp.notebook}.json"
    out.write_text(json.dumps(plan, indent=1))
    return plan


def sources(profile: str, folder: Path, tasks) -> dict[str, dict[str, str]]:
    """Synthetic files in the formats of the data the repository cannot ship, for the ``tasks`` that
    read them, and the notebook parameters that name them (per task). Both profiles get them: the
    paper profile refuses to run without them, and a gpu user with the data runs the same path."""
    params: dict[str, dict[str, str]] = {}
    folder.mkdir(parents=True, exist_ok=True)
    if "judge" in tasks:
        from .simdata import judge as sim_judge

        oasst, human = folder / "oasst2", folder / "mt_bench_human_judgments.jsonl"
        sim_judge.write_oasst2(oasst)
        sim_judge.write_human_judgments(human)
        params["judge"] = {"OASST2_SOURCE": str(oasst), "HUMAN_JUDGMENTS_SOURCE": str(human)}
    if "sycophancy" in tasks:
        from .simdata import sycophancy as sim_syco

        answers, trivia = folder / "answer.jsonl", folder / "triviaqa.jsonl"
        sim_syco.write_answer_file(answers)
        sim_syco.write_triviaqa(trivia, answer_file=answers)
        params["sycophancy"] = {"DATA_SOURCE": str(answers), "TRIVIAQA_SOURCE": str(trivia)}
    return params


def markdown(plans: list[dict], profile: str) -> str:
    """The work plans as one markdown table, with the assumptions under it."""
    lines = [f"Work plan of `PROFILE={profile}` ({profiles.model_for(profile)}), from a simulated run at full size "
             "(`make simulate`): calls and tokens as the notebooks will ask for them, generated tokens at their caps "
             "(a bound), every training step planned.", "",
             "| notebook | calls | prompt tokens | generated tokens (cap) | training pairs | steps x tokens | "
             "generation GPU-h | training GPU-h | peak RAM |", "|---|---|---|---|---|---|---|---|---|"]
    for p in plans:
        # a student's other seeds (`students.train_students` names them "<student> (seed k)") train
        # on the same pairs with the same plan: listed once, with the seeds' count; GPU-h count them all
        tr = {k: v for k, v in p["training"].items() if " (seed " not in k}
        seeds = len(p["training"]) // max(1, len(tr))
        pairs = ", ".join(f"{v['pairs']:,}" for v in tr.values()) or "-"
        steps = ", ".join(f"{v['steps']:,} x {v['tokens_per_step'] / 1000:.1f}k" for v in tr.values()) or "-"
        if seeds > 1 and tr:
            steps += f", each on {seeds} seeds"
        g = p["generation"]
        lines.append(f"| {p['notebook']} | {g['calls']:,} | {g['prompt_tokens']:,} | {g['cap_tokens']:,} | {pairs} | "
                     f"{steps} | {p['generation_gpu_h']:.1f} | {p['training_gpu_h']:.1f} | {p['peak_rss_gb']:.1f} GB |")
    r = plans[0]["rates"] if plans else THROUGHPUT[profile]
    lines += ["", f"GPU hours at {r['decode_tokens_per_s']:,.0f} generated tokens/s ({r['source']}) and "
              f"{r['prefill_tokens_per_s']:,.0f} prompt tokens/s (ten times that: an assumption) on {r['gpus']} x "
              f"{r['gpu']}, every call at its cap (a bound); training at 6 x {PARAMS[profile] / 1e9:.1f}B "
              f"parameters x tokens FLOPs, {TRAIN_MFU:.0%} of {GPU_BF16_FLOPS / 1e12:.0f} TFLOP/s a GPU (an assumption). "
              f"Tokens counted with the {STAND_IN} tokenizer (a stand-in); prompts held to the model's "
              f"{CONTEXT[profile]:,}-token context. Peak RAM: the notebook kernel's (Python side)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=sorted(CONTEXT))
    ap.add_argument("--notebooks", nargs="*", default=None, help="notebook names (default: all, in order)")
    ap.add_argument("--model", default=STAND_IN, help="the stand-in whose tokenizer counts tokens")
    ap.add_argument("--rates", type=Path, default=None, help="a JSON of measured rates (the keys of THROUGHPUT's)")
    ap.add_argument("--publish", action="store_true", help="copy workplan.json to docs/workplans/<profile>.json")
    ap.add_argument("--out", type=Path, default=None, help="default: results/simulated/<profile>")
    args = ap.parse_args(argv)

    root = (args.out or paths.ROOT / "results" / "simulated" / args.profile).resolve()
    if paths.FIGURES in (root, *root.parents):
        raise SystemExit(f"--out {root}: inside {paths.FIGURES}; simulated outputs never go there")
    if not args.notebooks:  # a whole run starts fresh: the ledger counts every call (some notebooks: added to it)
        shutil.rmtree(root, ignore_errors=True)
    (root / "executed").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    names = args.notebooks or list(registry.ALL)
    tasks = {nb.task for nb in registry.NOTEBOOKS if nb.notebook in names}
    params = sources(args.profile, root / "sources", tasks)
    env = {**os.environ, "S2D_RESULTS": str(root), "S2D_FIGURES": str(root / "figures"), "S2D_BACKEND": "simulated",
           "S2D_MODELS": str(paths.MODELS)}
    seconds = {}
    for name in names:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "papermill", str(paths.NOTEBOOKS / f"{name}.ipynb"),
               str(root / "executed" / f"{name}.ipynb"), "-p", "PROFILE", args.profile, "--cwd", str(paths.NOTEBOOKS),
               "--log-level", "WARNING"]
        cmd += ["-p", "MODEL", args.model]  # 06 and 07 check the metrics were made with it
        if name not in (registry.SUMMARY, registry.ROUTING):
            for key, value in params.get(registry.notebook(name).task, {}).items():
                cmd += ["-p", key, value]
        print(f"== {name} (simulated, profile {args.profile})", flush=True)
        subprocess.run(cmd, env=env, check=True)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"   {name}: {seconds[name]} s", flush=True)
    rates = json.loads(args.rates.read_text()) if args.rates else None
    plans = []
    for path in sorted((root / "workplan").glob("*.json")):
        p = json.loads(path.read_text())
        if rates:
            p.update(gpu_hours(p["generation"], p["training_tokens"], args.profile, rates))
        plans.append(p)
    total = {"profile": args.profile, "seconds": seconds, "wall_s": round(time.perf_counter() - t0, 1),
             "peak_rss_gb": max((p["peak_rss_gb"] for p in plans), default=0.0), "notebooks": plans}
    (root / "workplan.json").write_text(json.dumps(total, indent=1))
    (root / "workplan.md").write_text(markdown(plans, args.profile) + "\n")
    print(markdown(plans, args.profile))
    print(f"simulated run: {total['wall_s']:.0f} s, peak kernel memory {total['peak_rss_gb']:.1f} GB; {root}")
    if args.publish:
        out = paths.ensure(paths.ROOT / "docs" / "workplans") / f"{args.profile}.json"
        keep = {k: v for k, v in total.items() if k != "seconds"}
        out.write_text(json.dumps(keep, indent=1) + "\n")
        print("published:", out.relative_to(paths.ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
