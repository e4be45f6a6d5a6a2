"""llama.cpp's ``llama-server`` against the local engine, on the same greedy workload, in one run.

For each embedded model whose wheels are installed (SmolLM2-135M, the smoke profile's; Qwen2.5-
Coder-0.5B, the cpu profile's), it generates the same prompts greedily through the local engine
in fp32 and in bf16, then through ``llama-server`` (``make llama-server``) on the model's own GGUF
file at each slot count in ``--slots`` (``-np``, the client sending as many requests at once), and
prints tokens/s of each, the ratio of the best slot count to each local dtype, and on how many
prompts the greedy completions are identical to the local fp32 ones. The local engine runs the
GGUF's weights dequantized; llama-server multiplies the quantized weights themselves, so its
completions need not be identical.

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
from s2d_utils.embedded import EMBEDDED, _assemble  # noqa: E402
from s2d_utils.generation import generate  # noqa: E402
from s2d_utils.models import load_model  # noqa: E402

BINARY = paths.ROOT / ".llama" / "bin" / "llama-server"


def _rate(outs, seconds: float) -> float:
    return round(sum(c.n_tokens for (c, *_) in outs) / seconds, 1)


def bench_model(name: str, prompts: list[str], max_new_tokens: int, slots: list[int], workdir: Path) -> dict:
    kw = dict(max_new_tokens=max_new_tokens, cache=None, progress=False, temperature=0.0, seed=0)
    local, texts = {}, None
    for dtype in ("float32", "bfloat16"):
        lm = load_model(name, device="cpu", dtype=dtype)
        generate(lm, prompts[:1], **{**kw, "max_new_tokens": 2}, backend=LOCAL)  # warm-up
        t0 = time.perf_counter()
        outs = generate(lm, prompts, **kw, backend=LOCAL, batch_size=len(prompts))
        local[dtype] = _rate(outs, time.perf_counter() - t0)
        if dtype == "float32":
            texts = [c.text for (c, *_) in outs]
    workdir.mkdir(parents=True, exist_ok=True)
    gguf, _ = _assemble(EMBEDDED[name], workdir)
    served = {}
    same = {}
    for np_ in slots:
        with LlamaServer(gguf, workdir / f"np{np_}", name, context=max(2048, 512 * np_), slots=np_,
                         threads=os.cpu_count() or 2) as srv:
            backend = connect(Settings("openai", srv.url, served_model=name, timeout=600.0, max_retries=1,
                                       concurrency=np_), lm)
            generate(lm, prompts[:1], **{**kw, "max_new_tokens": 2}, backend=backend)  # warm-up
            t0 = time.perf_counter()
            outs = generate(lm, prompts, **kw, backend=backend)
            served[np_] = _rate(outs, time.perf_counter() - t0)
            same[np_] = sum(c.text == t for (c, *_), t in zip(outs, texts))
    best = max(served, key=served.get)
    return {"local_tokens_per_s": local, "llama_tokens_per_s": {str(k): v for k, v in served.items()},
            "best_slots": best, "llama_over_local": {d: round(served[best] / r, 2) for d, r in local.items()},
            "greedy_identical_to_fp32": {str(k): v for k, v in same.items()}, "prompts": len(prompts),
            "gguf": gguf.name}


def main(argv: list[str] | None = None) -> int:
    from bench_generation import workload

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--slots", type=int, nargs="*", default=[1, 4, 8])
    ap.add_argument("--json", type=Path, default=paths.ROOT / "figures" / "bench_llama.json")
    args = ap.parse_args(argv)
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: `make llama-server` builds it")
    prompts = workload(args.prompts)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores", "max_new_tokens":
           args.max_new_tokens, "slots": args.slots, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                result = bench_model(name, prompts, args.max_new_tokens, args.slots, Path(tmp) / name)
            except FileNotFoundError as err:  # a model whose wheels are not installed
                print(f"{name}: skipped ({err})")
                continue
            out["models"][name] = result
            print(f"{name}: local fp32 {result['local_tokens_per_s']['float32']}, bf16 "
                  f"{result['local_tokens_per_s']['bfloat16']} tokens/s; llama-server "
                  + ", ".join(f"-np {k}: {v}" for k, v in result["llama_tokens_per_s"].items())
                  + f" tokens/s; best -np {result['best_slots']}: x{result['llama_over_local']['float32']} fp32, "
                  f"x{result['llama_over_local']['bfloat16']} bf16; greedy identical to fp32 on "
                  f"{result['greedy_identical_to_fp32']} of {result['prompts']} prompts")
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
