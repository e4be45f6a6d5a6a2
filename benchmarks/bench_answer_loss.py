"""LoRA training steps with the LM head on the answer tokens only (`distill.answer_loss`) against
the model's own loss (``model(..., labels=...)``: logits for every position), on judge-like pairs:
a long prompt and a verdict of a few tokens, the shape of the BSM student's training data.

    .venv/bin/python benchmarks/bench_answer_loss.py                                   # Qwen 0.5B
    .venv/bin/python benchmarks/bench_answer_loss.py --model smollm2-135m-instruct

Each variant runs in its own process (so its peak resident memory is its own), with the same
batch, LoRA settings and gradient checkpointing as `distill.finetune`; prints train tokens/s and
peak RSS of both, the ratios, and the two first-step losses (they must agree).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run(model_name: str, variant: str, steps: int, prompt_tokens: int, batch: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from s2d_utils import distill
    from s2d_utils.models import load_model

    torch.manual_seed(0)
    lm = load_model(model_name)
    s = distill.LoraSettings()
    model = get_peft_model(lm.model, LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=0.0,
                                                target_modules=list(s.target_modules), task_type="CAUSAL_LM"))
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    model.train()
    ids = torch.randint(100, 5000, (batch, prompt_tokens + 4))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[:, -4:] = ids[:, -4:]  # a 4-token verdict, as "[[A]]" and the end token
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses, t0 = [], None
    for step in range(steps + 1):  # step 0 warms up and is not timed
        if step == 1:
            t0 = time.perf_counter()
        if variant == "answer":
            loss = distill.answer_loss(model, ids, mask, labels)
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    return {"variant": variant, "tokens_per_s": steps * ids.numel() / seconds, "first_loss": losses[0],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=450)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        print(json.dumps(run(a.model, a.variant, a.steps, a.prompt_tokens, a.batch)))
        return
    out = {}
    for variant in ("full", "answer"):
        proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--model", a.model, "--steps",
                               str(a.steps), "--prompt-tokens", str(a.prompt_tokens), "--batch", str(a.batch)],
                              capture_output=True, text=True, check=True)
        out[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(out[variant], flush=True)
    f, ans = out["full"], out["answer"]
    print(f"{a.model}, batch {a.batch} x {a.prompt_tokens + 4} tokens, {a.steps} timed steps: answer-only head "
          f"{ans['tokens_per_s']:.1f} vs full logits {f['tokens_per_s']:.1f} tokens/s "
          f"({ans['tokens_per_s'] / f['tokens_per_s']:.2f}x); peak RSS {ans['peak_rss_gb']:.2f} vs "
          f"{f['peak_rss_gb']:.2f} GB; first-step loss {ans['first_loss']:.4f} vs {f['first_loss']:.4f}")


if __name__ == "__main__":
    main()
