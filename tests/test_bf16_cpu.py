"""bf16 weights on the CPU: the cpu profile's dtype (its products run ~3x fp32's on CPUs with native
bf16 instructions; `benchmarks/gemm_ceiling.py`). The engine, the fallback, a LoRA step and a
merged student must work in it as they do in fp32."""

import pytest
import torch

from reference import PROMPTS, reference_greedy
from s2d_utils import distill, engine, profiles
from s2d_utils.generation import generate
from s2d_utils.models import load_model
from s2d_utils.tasks import coin_flip


@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_qwen_dir"])
def bf16_lm(request):
    return load_model(str(request.getfixturevalue(request.param)), device="cpu", dtype="bfloat16")


def test_the_cpu_profile_runs_bf16_and_s2d_dtype_overrides_it(monkeypatch):
    monkeypatch.delenv("S2D_DTYPE", raising=False)
    assert profiles.dtype_for("cpu") == "bfloat16"
    assert profiles.dtype_for("smoke") == "auto"  # the tests' fp32
    monkeypatch.setenv("S2D_DTYPE", "float32")
    assert profiles.dtype_for("cpu") == "float32"
    monkeypatch.setenv("S2D_DTYPE", "fp8")
    with pytest.raises(ValueError, match="S2D_DTYPE='fp8'"):
        profiles.dtype_for("cpu")


@pytest.mark.parametrize("path", ["fast", "hf"])
def test_bf16_greedy_on_the_cpu_equals_model_generate_in_bf16(bf16_lm, monkeypatch, path):
    """The engine keeps its softmax statistics in fp32 and the fallback runs the model's own
    forward: in bf16, greedy must still give what transformers' bf16 `generate` gives."""
    monkeypatch.setenv("S2D_ENGINE", path)
    lm = bf16_lm
    assert lm.dtype == "bfloat16" and engine.supports(lm.model)
    outs = generate(lm, PROMPTS, max_new_tokens=16, cache=None, progress=False, batch_size=3)
    for prompt, (c,) in zip(PROMPTS, outs):
        assert c.text == reference_greedy(lm, prompt, 16)[1]
        assert c.logprob is not None and c.logprob < 0


def test_a_lora_step_on_a_bf16_base_trains_and_the_student_loads_in_bf16(bf16_lm, tmp_path):
    """LoRA's own weights train in fp32 on the bf16 base (peft's adapter dtype), the base is left
    as it was, and the merged student loads in the base's dtype, under its own adapter key."""
    lm = bf16_lm
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    examples = coin_flip.load("train", n=4, seed=1)
    pairs = [{"id": e.id, "prompt": e.input, "completion": distill.answer_completion(e.gold)} for e in examples]
    settings = distill.LoraSettings(max_steps=2, batch_size=4)
    result = distill.finetune(lm, pairs, settings, out_dir=tmp_path, progress=False)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    distill.check_adapter(result.adapter_dir)  # not empty: B matrices moved off zero
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    student = distill.load_distilled(lm, result)
    assert student.dtype == "bfloat16" and student.fingerprint != lm.fingerprint
    fp32 = load_model(lm.path, device="cpu", dtype="float32")
    assert distill.adapter_key(fp32, pairs, settings) != distill.adapter_key(lm, pairs, settings)


def test_the_lm_head_gets_a_contiguous_input_for_a_frozen_bf16_model(bf16_lm):
    """transformers hands the LM head a [rows, 1, hidden] view; for frozen bf16 weights torch's matmul
    would then broadcast the weight to every row (27 GB for 100 rows of the 0.5B model: measured,
    it failed to allocate and fell back to a product many times slower). `load_model` makes the
    head's input contiguous: the products fold into one matrix product, with the same logits."""
    lm = bf16_lm
    seen = []
    head = lm.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    ids = torch.randint(0, lm.model.config.vocab_size, (6, 9))
    try:
        for p in lm.model.parameters():
            p.requires_grad_(False)
        with torch.inference_mode():
            kept = lm.model(input_ids=ids, logits_to_keep=1).logits[:, -1]
            full = lm.model(input_ids=ids).logits[:, -1]
    finally:
        handle.remove()
        for p in lm.model.parameters():
            p.requires_grad_(True)
    assert seen == [True, True]
    assert torch.allclose(kept.float(), full.float(), atol=1e-2)
