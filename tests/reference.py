"""The references our decoding and scoring are checked against: greedy decoding with transformers' own
``model.generate`` on the rendered prompt, and teacher-forced log-probabilities from the model's own
forward pass, one prompt at a time (no batch, no padding, no cache)."""

from __future__ import annotations

from s2d_utils.generation import render

# prompts of the generation tests: a task's question, a yes/no question, and a two-token one
PROMPTS = ["Take the last letters of the words in \"apple banana\" and concatenate them.",
           "A coin is heads up. Ann flips the coin. Is the coin still heads up?", "hi"]


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


def teacher_forced(lm, prompt: list[int], tokens: list[int]) -> float:
    """The model's log-probability of ``tokens`` after the token ids ``prompt``: one sequence through
    ``lm.model``'s own forward pass (no batch, no padding, no cache)."""
    import torch

    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([prompt + tokens])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1]
    return float(logprobs.gather(-1, torch.tensor(tokens)[:, None]).sum())


def output_logprob(lm, prompt, output: str, stopped: bool = True) -> float:
    """The log-probability of the text ``output`` after ``prompt`` (a user message or a chat, rendered
    with ``lm``'s chat template), with the end-of-sequence token after it when the sample ``stopped``."""
    tok = lm.tokenizer
    ids = tok(render(lm, prompt), add_special_tokens=False)["input_ids"]
    answer = tok(output, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stopped else [])
    return teacher_forced(lm, ids, answer)
