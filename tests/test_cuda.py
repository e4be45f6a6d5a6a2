"""The GPU path, on a tiny random model: skipped where torch sees no CUDA device.

Run on a GPU machine with ``.venv/bin/python -m pytest tests/test_cuda.py`` (see the README for
what these have run on).
"""

import pytest
import torch

from reference import PROMPTS, reference_greedy
from s2d_utils import distill, engine, paths
from s2d_utils.backends import local as local_backend
from s2d_utils.generation import generate
from s2d_utils.models import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# fine-tuning pairs written out (the task loaders need packages a bare GPU machine may not have)
PAIRS = [{"id": f"coin-{i}", "prompt": f"A coin is heads up. {who} flips the coin. Is the coin still heads up?",
          "completion": distill.answer_completion(gold)}
         for i, (who, gold) in enumerate([("Ann", "no"), ("Bo", "no"), ("Cy", "no"), ("Di", "no")])]


@pytest.fixture(scope="module", params=["tiny_model_dir", "tiny_qwen_dir"])
def cuda_lm(request):
    # fp32 on the GPU, so greedy decoding can be compared with model.generate token for token
    return load_model(str(request.getfixturevalue(request.param)), device="cuda", dtype="float32")


def test_sampler_draws_on_the_gpu_with_cpu_generators_and_matches_the_cpu():
    logits = torch.randn(5, 3000, generator=torch.Generator().manual_seed(0)) * 4
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(5)]  # noqa: E731
    on_cpu = local_backend._sample_rows(logits, 0.7, 0.95, gens())
    on_gpu = local_backend._sample_rows(logits.cuda(), 0.7, 0.95, gens())
    assert on_gpu.device.type == "cuda" and on_gpu.cpu().tolist() == on_cpu.tolist()


def test_engine_greedy_identical_to_model_generate_on_cuda(cuda_lm, monkeypatch):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    assert cuda_lm.device.startswith("cuda") and engine.supports(cuda_lm.model)
    outs = generate(cuda_lm, PROMPTS, max_new_tokens=16, cache=None, progress=False, batch_size=2)
    for prompt, (c,) in zip(PROMPTS, outs):
        assert c.text == reference_greedy(cuda_lm, prompt, 16)[1]


def test_sampling_on_cuda_runs_through_both_paths(cuda_lm, monkeypatch):
    kw = dict(n=4, temperature=0.9, top_p=0.95, max_new_tokens=8, seed=3, cache=None, progress=False, batch_size=4)
    for path in ("fast", "hf"):
        monkeypatch.setenv("S2D_ENGINE", path)
        outs = generate(cuda_lm, PROMPTS, **kw)
        assert [len(cs) for cs in outs] == [4, 4, 4] and all(c.n_tokens <= 8 for cs in outs for c in cs)


def test_one_lora_step_on_cuda_and_the_student_loads_there(cuda_lm, tmp_path):
    pairs = PAIRS
    result = distill.finetune(cuda_lm, pairs, distill.LoraSettings(max_steps=1, batch_size=4), out_dir=tmp_path,
                              progress=False)
    assert result.steps == 1 and result.losses[0] > 0
    student = distill.load_distilled(cuda_lm, result)
    assert student.device.startswith("cuda") and student.fingerprint != cuda_lm.fingerprint
    assert next(cuda_lm.model.parameters()).device.type == "cuda" and not cuda_lm.model.training


# ----- issue 21: a model split over devices, bf16 statistics, students attached to the loaded base -----

# the LM head shares the embeddings' weight (tied): both on cuda:0, or accelerate re-ties both to the CPU
SPLIT = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
         "model.norm": "cpu", "lm_head": 0}


@pytest.fixture(scope="module")
def split_lm(tiny_model_dir):
    """The tiny Llama with its embeddings and first layer on cuda:0 and the rest running on the CPU:
    a genuine split (K/V, hidden states and logits on two devices), as a 70B model spreads over
    GPUs. (``load_model(device_map=SPLIT)`` would offload the "cpu" part instead: accelerate would
    run it on cuda:0, and nothing would cross devices.)"""
    from dataclasses import replace

    from accelerate import dispatch_model

    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float32", device_map=None)
    model = dispatch_model(lm.model, device_map=SPLIT, main_device="cpu")  # "cpu" runs on the CPU
    assert {p.device.type for p in model.model.layers[0].parameters()} == {"cuda"}
    assert model.get_input_embeddings().weight.device.type == "cuda"
    assert {p.device.type for p in model.model.layers[1].parameters()} == {"cpu"}
    return replace(lm, model=model, device="cuda:0", device_map=SPLIT)


def test_a_split_model_decodes_through_the_fallback_fan_out_and_compaction_included(split_lm):
    assert not engine.supports(split_lm.model)
    greedy = generate(split_lm, PROMPTS, max_new_tokens=12, cache=None, progress=False, batch_size=3)
    for prompt, (c,) in zip(PROMPTS, greedy):
        assert c.text == reference_greedy(split_lm, prompt, 12)[1]
    # several samples of one prompt share its prefill (fan-out), rows that stop leave the batch (compaction)
    sampled = generate(split_lm, PROMPTS, n=4, temperature=1.0, top_p=1.0, max_new_tokens=10, seed=1, cache=None,
                       progress=False, batch_size=12)
    assert [len(cs) for cs in sampled] == [4, 4, 4]


def test_the_answer_loss_of_a_split_model_equals_its_own_loss_and_a_step_trains(split_lm, tmp_path):
    ids = torch.tensor([[1, 5, 9, 13, 2, 7, 4]], device="cuda:0")
    labels = torch.full_like(ids, -100)
    labels[:, 4:] = ids[:, 4:]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = distill.answer_loss(split_lm.model, ids, mask, labels)
        theirs = split_lm.model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(ours.cpu(), theirs.cpu(), atol=1e-5)
    pairs = PAIRS
    result = distill.finetune(split_lm, pairs, distill.LoraSettings(max_steps=1, batch_size=4), out_dir=tmp_path,
                              progress=False)
    assert result.steps == 1 and result.losses[0] > 0
    assert not any("lora" in k for k in split_lm.model.state_dict())
    # peft would re-place a model with layers on the CPU to attach an adapter: refused, merged instead
    assert distill.student_mode(split_lm) == "merged"
    with pytest.raises(ValueError, match="on the CPU or disk"):
        with distill.attached(split_lm, result):
            pass


def test_a_student_attached_on_the_gpu_leaves_the_base_as_it_was(cuda_lm, tmp_path):
    pairs = PAIRS
    result = distill.finetune(cuda_lm, pairs, distill.LoraSettings(steps=2, batch_size=4, learning_rate=5e-3),
                              out_dir=tmp_path, progress=False)
    before = {k: v.clone() for k, v in cuda_lm.model.state_dict().items()}
    assert distill.student_mode(cuda_lm) == "attached"
    with distill.attached(cuda_lm, result) as student:
        outs = generate(student, PROMPTS, max_new_tokens=6, cache=None, progress=False)
        assert len(outs) == 3
    after = cuda_lm.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_bf16_engine_greedy_agrees_with_model_generate_in_bf16(tiny_model_dir, monkeypatch):
    """The engine keeps its softmax statistics in fp32 whatever the weights' dtype; greedy in bf16
    must then give what transformers' own bf16 forward gives."""
    monkeypatch.setenv("S2D_ENGINE", "fast")
    lm = load_model(str(tiny_model_dir), device="cuda", dtype="bfloat16", device_map=None)
    assert engine.supports(lm.model)
    outs = generate(lm, PROMPTS, max_new_tokens=16, cache=None, progress=False, batch_size=3)
    for prompt, (c,) in zip(PROMPTS, outs):
        assert c.text == reference_greedy(lm, prompt, 16)[1]


def test_the_kv_budget_on_a_gpu_follows_its_free_memory(cuda_lm):
    free, _ = torch.cuda.mem_get_info(torch.device(cuda_lm.device))
    assert local_backend.kv_budget_bytes(cuda_lm.model) >= min(int(local_backend.GPU_KV_SHARE * free), 1 << 30) // 2


def test_the_entry_point_under_fsdp_writes_the_student_the_kernel_trains(cuda_lm, tmp_path):
    """`accelerate launch` with configs/accelerate/fsdp.yaml (FSDP2, one process on this GPU): the
    LoRA model is sharded, its adapter gathered from the shards, saved, checked not to be empty,
    and it is the student the in-kernel loop trains (same losses step by step)."""
    import json

    settings = distill.LoraSettings(r=4, alpha=8, steps=2, batch_size=4, dropout=0.0)
    pairs = PAIRS
    local = distill.finetune(cuda_lm, pairs, settings, out_dir=tmp_path / "local", progress=False)
    sharded = distill.launch(cuda_lm, pairs, settings, "distill", tmp_path / "fsdp", processes=1,
                             config=str(paths.ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    log = json.loads((sharded.adapter_dir / "train_log.json").read_text())
    assert log["distributed"] == "FSDP" and sharded.adapter_dir.name == local.adapter_dir.name
    distill.check_adapter(sharded.adapter_dir)
    assert sharded.losses == pytest.approx(local.losses, abs=1e-3)
    from safetensors.torch import load_file

    a, b = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (local, sharded))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
