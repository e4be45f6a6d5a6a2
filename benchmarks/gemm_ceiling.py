"""The matrix-product ceiling of decoding: how many tokens/s the weight GEMMs alone allow.

One decode step of a Llama model multiplies a [rows x hidden] activation by every weight matrix
(q, k, v, o, gate, up, down per layer, and the LM head). This script times exactly those
products, at the engine's row count, with the model's own weight shapes, and prints:

- GFLOP/s of the products (fp32, and bf16 for information: the engine runs in the model's dtype);
- the tokens/s a decoder would reach if it did nothing but these products (the ceiling);

so the engine's measured tokens/s (`make bench`) can be read as a share of what the machine can do.

    .venv/bin/python benchmarks/gemm_ceiling.py            # SmolLM2-135M shapes, 128 rows
    .venv/bin/python benchmarks/gemm_ceiling.py --rows 64
"""

from __future__ import annotations

import argparse
import time

import torch


def weight_shapes(cfg) -> list[tuple[int, int, int]]:
    """(count, in_features, out_features) of every weight a decode step multiplies by."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    n = cfg.num_hidden_layers
    return [(n, h, q), (2 * n, h, kv), (n, q, h), (2 * n, h, inter), (n, inter, h), (1, h, cfg.vocab_size)]


def time_step(shapes, rows: int, dtype: torch.dtype, repeats: int) -> float:
    """Seconds for one step's products (median of ``repeats``), weights laid out as nn.Linear's."""
    mats = [(torch.randn(rows, i, dtype=dtype), torch.randn(o, i, dtype=dtype)) for c, i, o in shapes for _ in range(c)]
    for x, w in mats:  # warm up
        x @ w.T
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, w in mats:
            x @ w.T
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=128, help="rows in flight (the cpu profile uses 128)")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()

    from s2d_utils.models import load_model

    cfg = load_model(device="cpu").model.config
    shapes = weight_shapes(cfg)
    flops_per_token = 2 * sum(c * i * o for c, i, o in shapes)
    print(f"{cfg.num_hidden_layers} layers, {flops_per_token / 1e6:.0f} MFLOP of weight products per token, "
          f"{args.rows} rows, {torch.get_num_threads()} threads")
    for dtype in (torch.float32, torch.bfloat16):
        sec = time_step(shapes, args.rows, dtype, args.repeats)
        print(f"  {str(dtype).removeprefix('torch.'):9s} {flops_per_token * args.rows / sec / 1e9:6.1f} GFLOP/s   "
              f"ceiling {args.rows / sec:6.0f} tokens/s")


if __name__ == "__main__":
    main()
