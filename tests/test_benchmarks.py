"""The benchmark helpers measure what they say (no timings asserted here)."""

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peak_rss.py"


def test_peak_rss_sees_a_child_process_allocation():
    # the child touches 400 MB and keeps it a moment: the report must see at least that much
    child = "import time; b = bytearray(400_000_000); time.sleep(1.0)"
    out = subprocess.run([sys.executable, str(SCRIPT), "--", sys.executable, "-c", child],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if " GB " in ln]
    assert lines, out.stdout
    largest = float(lines[0].split()[0])
    assert 0.4 <= largest < 2.0, out.stdout


def test_peak_rss_passes_the_exit_code_on():
    out = subprocess.run([sys.executable, str(SCRIPT), "--", sys.executable, "-c", "raise SystemExit(3)"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3


def test_gemm_ceiling_counts_every_weight_product_of_a_decode_step(tiny_lm):
    # the ceiling's FLOP count must be the model's own: one multiply-add per weight of every
    # linear layer and the LM head (tied to the embedding or not), nothing else
    sys.path.insert(0, str(SCRIPT.parent))
    import gemm_ceiling

    model = tiny_lm.model
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert sum(c * i * o for c, i, o in gemm_ceiling.weight_shapes(model.config)) == linear
