"""The served path against the local engine, on the same workload and weights, in one run.

Starts `transformers serve` on the embedded smoke model (fp32, CPU, 127.0.0.1, a free port),
generates greedily for the same prompts through the local engine and through the server
(`S2D_BACKEND=openai`'s client, one request per sample), and prints useful tokens/s of each, their
ratio, whether the completions are identical, and the client's own cost per request (building
the request, reading the response, checking its token counts: the time not spent waiting).

    .venv/bin/python benchmarks/bench_served.py                  # `make bench` runs this after bench_generation
    .venv/bin/python benchmarks/bench_served.py --prompts 4 --max-new-tokens 16

`transformers serve` runs one `model.generate` per request, without batching across requests, so
the ratio measures that server on this machine, not vLLM on GPUs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2d_utils.backends import LOCAL, Settings  # noqa: E402
from s2d_utils.backends import openai as served  # noqa: E402
from s2d_utils.backends.serve import TransformersServe  # noqa: E402
from s2d_utils.generation import generate  # noqa: E402
from s2d_utils.models import load_model  # noqa: E402


def main() -> None:
    from bench_generation import workload

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--json", default=str(Path(__file__).resolve().parents[1] / "results" / "bench_served.json"))
    args = ap.parse_args()

    lm = load_model(device="cpu")
    prompts = workload(args.prompts)
    kw = dict(max_new_tokens=args.max_new_tokens, cache=None, progress=False, batch_size=32)
    generate(lm, prompts[:1], **{**kw, "max_new_tokens": 2}, backend=LOCAL)  # warm-up: the engine's first call
    t0 = time.perf_counter()
    local = generate(lm, prompts, **kw, backend=LOCAL)
    local_s = time.perf_counter() - t0

    reading = []
    original = served.read_response

    def timed(*a, **k):  # the client's own work per response
        s = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            reading.append(time.perf_counter() - s)

    with tempfile.TemporaryDirectory() as tmp, TransformersServe(lm.path, tmp) as server:
        backend = served.connect(Settings("openai", server.url, None, "float32", concurrency=1, timeout=600), lm)
        generate(lm, prompts[:1], **{**kw, "max_new_tokens": 2}, backend=backend)  # warm-up: the server's first call
        build = time.perf_counter()
        for p in prompts:
            backend.request_for(served.Job(p, (1,) * 32, 0), served.Sampling(0.0, 1.0, args.max_new_tokens))
        build = (time.perf_counter() - build) / len(prompts)
        served.read_response = timed
        try:
            t0 = time.perf_counter()
            remote = generate(lm, prompts, **kw, backend=backend)
            served_s = time.perf_counter() - t0
        finally:
            served.read_response = original
    tokens = sum(c.n_tokens for (c, *_) in local)
    result = {
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "local_tokens_per_s": round(tokens / local_s, 1),
        "served_tokens_per_s": round(sum(c.n_tokens for (c, *_) in remote) / served_s, 1),
        "served_over_local": round((sum(c.n_tokens for (c, *_) in remote) / served_s) / (tokens / local_s), 3),
        "greedy_identical": remote == local,
        "client_ms_per_request": round(1000 * (build + sum(reading) / max(1, len(reading))), 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
