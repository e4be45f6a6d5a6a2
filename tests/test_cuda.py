"""The GPU path, on a tiny random model: skipped where torch sees no CUDA device.

Run on a GPU machine with ``.venv/bin/python -m pytest tests/test_cuda.py`` (see the README for
what these have run on).
"""

import pytest
import torch

from s2d_utils import distill, engine, generation
from s2d_utils.generation import generate, render
from s2d_utils.models import load_model
from s2d_utils.tasks import coin_flip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

PROMPTS = ["Take the last letters of the words in \"apple banana\" and concatenate them.",
           "A coin is heads up. Ann flips the coin. Is the coin still heads up?", "hi"]


@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_qwen_dir"])
def cuda_lm(request):
    # fp32 on the GPU, so greedy decoding can be compared with model.generate token for token
    return load_model(str(request.getfixturevalue(request.param)), device="cuda", dtype="float32")


def test_sampler_draws_on_the_gpu_with_cpu_generators_and_matches_the_cpu():
    logits = torch.randn(5, 3000, generator=torch.Generator().manual_seed(0)) * 4
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(5)]  # noqa: E731
    on_cpu = generation._sample_rows(logits, 0.7, 0.95, gens())
    on_gpu = generation._sample_rows(logits.cuda(), 0.7, 0.95, gens())
    assert on_gpu.device.type == "cuda" and on_gpu.cpu().tolist() == on_cpu.tolist()


def test_engine_greedy_identical_to_model_generate_on_cuda(cuda_lm, monkeypatch):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    assert cuda_lm.device.startswith("cuda") and engine.supports(cuda_lm.model)
    outs = generate(cuda_lm, PROMPTS, max_new_tokens=16, cache=None, progress=False, batch_size=2)
    for prompt, (c,) in zip(PROMPTS, outs):
        ids = cuda_lm.tokenizer(render(cuda_lm, prompt), return_tensors="pt", add_special_tokens=False).to(cuda_lm.device)
        with torch.no_grad():
            ref = cuda_lm.model.generate(**ids, max_new_tokens=16, do_sample=False,
                                         pad_token_id=cuda_lm.tokenizer.pad_token_id)[0, ids["input_ids"].shape[1]:]
        ref = [t for t in ref.tolist() if t != cuda_lm.tokenizer.eos_token_id]
        assert c.text == cuda_lm.tokenizer.decode(ref, skip_special_tokens=True)


def test_sampling_on_cuda_runs_through_both_paths(cuda_lm, monkeypatch):
    kw = dict(n=4, temperature=0.9, top_p=0.95, max_new_tokens=8, seed=3, cache=None, progress=False, batch_size=4)
    for path in ("fast", "hf"):
        monkeypatch.setenv("S2D_ENGINE", path)
        outs = generate(cuda_lm, PROMPTS, **kw)
        assert [len(cs) for cs in outs] == [4, 4, 4] and all(c.n_tokens <= 8 for cs in outs for c in cs)


def test_one_lora_step_on_cuda_and_the_student_loads_there(cuda_lm, tmp_path):
    examples = coin_flip.load("train", n=4, seed=1)
    pairs = [{"id": e.id, "prompt": e.input, "completion": distill.answer_completion(e.gold)} for e in examples]
    result = distill.finetune(cuda_lm, pairs, distill.LoraSettings(max_steps=1, batch_size=4), out_dir=tmp_path,
                              progress=False)
    assert result.steps == 1 and result.losses[0] > 0
    student = distill.load_distilled(cuda_lm, result)
    assert student.device.startswith("cuda") and student.fingerprint != cuda_lm.fingerprint
    assert next(cuda_lm.model.parameters()).device.type == "cuda" and not cuda_lm.model.training
