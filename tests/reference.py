"""The one reference our decoding is checked against: greedy decoding with transformers' own
``model.generate`` on the rendered prompt, one prompt at a time (no batch, no padding)."""

from __future__ import annotations

from s2d_utils.generation import render


def reference_greedy(lm, prompt, max_new_tokens: int) -> tuple[list[int], str]:
    """``prompt`` (a user message or a chat) rendered with ``lm``'s chat template and decoded
    greedily by ``lm.model.generate`` on ``lm.device``: the generated token ids without the
    tokenizer's end-of-sequence token (our ``n_tokens`` does not count it), and their text as
    `generate` decodes it (special tokens skipped)."""
    import torch

    tok = lm.tokenizer
    ids = tok(render(lm, prompt), return_tensors="pt", add_special_tokens=False).to(lm.device)
    with torch.no_grad():
        out = lm.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    tokens = [t for t in out[0, ids["input_ids"].shape[1]:].tolist() if t != tok.eos_token_id]
    return tokens, tok.decode(tokens, skip_special_tokens=True)
