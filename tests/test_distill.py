"""The distill step's memory measures change nothing the method sees."""

import gc
import weakref

import pytest

from transformers import PreTrainedModel

from s2d_utils import distill, lora
from s2d_utils.memory import free_memory
from s2d_utils.tasks import last_letter


def test_activation_checkpointing_leaves_the_training_losses_unchanged(tiny_lm, tmp_path, monkeypatch):
    pairs = distill.sft_pairs([_kept(e) for e in last_letter.load("train", n=8, seed=3)])
    settings = distill.LoraSettings(max_steps=3, batch_size=4)  # dropout 0.1: checkpointing must replay its masks
    calls = []
    original = PreTrainedModel.activation_checkpointing_enable

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", spy)
    short = distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "s", progress=False, name="ckpt")
    assert calls == []  # a short batch (< CHECKPOINT_TOKENS padded tokens a step) keeps its activations
    monkeypatch.setattr(lora, "CHECKPOINT_TOKENS", 0)
    with_ckpt = distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "a", progress=False, name="ckpt")
    assert calls == ["LlamaForCausalLM"]
    assert with_ckpt.losses == short.losses
    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", lambda self, *a, **k: None)
    without = distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "b", progress=False, name="ckpt")
    assert not without.reused and with_ckpt.steps == without.steps == 3
    assert with_ckpt.losses == without.losses


def test_free_memory_collects_dropped_reference_cycles():
    class Node:
        pass

    gc.disable()  # so only free_memory can collect the cycle
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        assert alive() is not None
        free_memory()
        assert alive() is None
    finally:
        gc.enable()


def test_loss_mask_covers_exactly_the_answer_tokens_and_the_end_of_turn(tiny_lm):
    from s2d_utils.generation import render

    pair = {"id": "x", "prompt": "Is the coin still heads up?", "completion": "The answer is yes."}
    ids, labels = lora.tokenize(tiny_lm, pair)
    tok = tiny_lm.tokenizer
    prompt_ids = tok(render(tiny_lm, pair["prompt"]), add_special_tokens=False)["input_ids"]
    answer_ids = tok(pair["completion"], add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + answer_ids + [tok.eos_token_id]
    assert labels == [-100] * len(prompt_ids) + answer_ids + [tok.eos_token_id]
    assert tok.decode([t for t in labels if t != -100], skip_special_tokens=True) == "The answer is yes."


def test_targets_are_the_tasks_choice():
    from handmade import call, trace
    from s2d_utils.filters import Kept
    from s2d_utils.tasks import Example

    k = Kept(Example("e", "Who wrote Hamlet? I think Marlowe.", None), "shakespeare",
             trace("e", "shakespeare", call("rewrite", "p", "ctx", 5), call("answer", "p", " Shakespeare wrote it. ", 4)))
    assert distill.sft_pairs([k]) == [{"id": "e", "prompt": k.example.input, "completion": "The answer is shakespeare."}]
    assert distill.sft_pairs([k], distill.final_response_target)[0]["completion"] == "Shakespeare wrote it."
    assert distill.verdict_target(Kept(k.example, "A", k.trace)) == "[[A]]"


def test_finetune_trains_in_place_and_leaves_the_base_model_as_it_was(tiny_lm, tmp_path):
    import torch

    from s2d_utils.generation import generate

    prompts = [e.input for e in last_letter.load("test", n=3, seed=2)]
    before_state = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    before = generate(tiny_lm, prompts, max_new_tokens=8, cache=None, progress=False)
    pairs = distill.sft_pairs([_kept(e) for e in last_letter.load("train", n=4, seed=3)])
    distill.finetune(tiny_lm, pairs, distill.LoraSettings(max_steps=2, batch_size=2), out_dir=tmp_path, progress=False)
    model = tiny_lm.model
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training and model.config.use_cache
    assert not any(p.requires_grad for p in model.parameters())
    assert not any("lora" in k for k in model.state_dict())
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
    assert generate(tiny_lm, prompts, max_new_tokens=8, cache=None, progress=False) == before


def _kept(example):
    from handmade import call, trace
    from s2d_utils.filters import Kept

    return Kept(example, example.gold, trace(example.id, example.gold, call("answer", "p", example.gold, 1)))


def test_answer_loss_equals_the_models_own_loss(tiny_lm):
    import torch

    from s2d_utils.lora import answer_loss

    model = tiny_lm.model
    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 5:] = ids[0, 5:]
    labels[1, 4:7] = ids[1, 4:7]
    with torch.no_grad():
        ours = answer_loss(model, ids, mask, labels)
        theirs = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_step_cut_into_micro_batches_has_the_whole_batchs_gradient(tiny_lm, monkeypatch):
    """Gradient accumulation over passes of at most MICRO_TOKENS padded tokens: the same loss and
    the same LoRA gradients as one pass over the whole batch (float64: only the sums' order differs)."""
    import copy

    import torch

    model = lora.with_lora(copy.deepcopy(tiny_lm.model).double(), distill.LoraSettings(dropout=0.0))
    for name, p in model.named_parameters():  # B starts at zero: make the A gradients non-trivial too
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    g = torch.Generator().manual_seed(3)
    batch = []
    for n_prompt, n_answer in ((9, 3), (4, 1), (12, 5), (6, 2)):  # uneven rows and answers
        ids = torch.randint(5, 200, (n_prompt + n_answer,), generator=g).tolist()
        batch.append((ids, [-100] * n_prompt + ids[n_prompt:]))

    def grads(limit):
        monkeypatch.setattr(lora, "MICRO_TOKENS", limit)
        model.zero_grad()
        loss, tokens = lora.accumulate(model, batch, pad=0, device="cpu")
        return loss, tokens, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    assert lora.micro_batches(batch, 10**9) == [[0, 1, 2, 3]]
    assert lora.micro_batches(batch, 34) == [[0, 1], [2, 3]]  # 2 x 12 and 2 x 17 fit; 3 x 17 would not
    whole, parts = grads(10**9), grads(16)
    assert len(lora.micro_batches(batch, 16)) == 4  # one row a pass
    assert abs(whole[0] - parts[0]) < 1e-12 and whole[1] == parts[1] == sum(len(i) for i, _ in batch)
    for name, grad in whole[2].items():
        torch.testing.assert_close(parts[2][name], grad, rtol=1e-10, atol=1e-12)
    assert any(grad.abs().sum() > 0 for grad in whole[2].values())


def test_a_student_attached_to_the_loaded_base_answers_as_the_merged_one_and_leaves_the_base_as_it_was(
        tiny_lm, tmp_path, monkeypatch):
    """Issue 21: the adapter goes onto the base already in memory (no second copy, no merge into its
    weights) and comes off again; the base's weights and answers are unchanged afterwards."""
    import torch

    from s2d_utils import models
    from s2d_utils.generation import generate

    prompts = [e.input for e in last_letter.load("test", n=3, seed=2)]
    pairs = distill.sft_pairs([_kept(e) for e in last_letter.load("train", n=4, seed=3)])
    result = distill.finetune(tiny_lm, pairs, distill.LoraSettings(steps=3, batch_size=2, learning_rate=5e-3),
                              out_dir=tmp_path, progress=False)
    merged = distill.load_distilled(tiny_lm, result)
    before_state = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    before = generate(tiny_lm, prompts, max_new_tokens=8, cache=None, progress=False)
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.no_grad():
        base_logits = tiny_lm.model(input_ids=ids).logits

    def no_second_copy(*a, **k):
        raise AssertionError("an attached student must not load a second copy of the base")

    monkeypatch.setattr(models, "load_model", no_second_copy)
    monkeypatch.setattr(distill, "load_model", no_second_copy)
    with distill.attached(tiny_lm, result) as student:
        assert student.fingerprint not in (tiny_lm.fingerprint, merged.fingerprint)
        with torch.no_grad():
            got = student.model(input_ids=ids).logits
            want = merged.model(input_ids=ids).logits
        assert not torch.allclose(got, base_logits, atol=1e-4), "the adapter must change the function"
        assert torch.allclose(got, want, atol=1e-4), "attached and merged students must compute the same function"
        assert generate(student, prompts, max_new_tokens=8, cache=None, progress=False) == \
            generate(merged, prompts, max_new_tokens=8, cache=None, progress=False)
    with pytest.raises(RuntimeError, match="mid-evaluation"):  # an evaluation that fails removes it too
        with distill.attached(tiny_lm, result):
            raise RuntimeError("mid-evaluation")
    assert type(tiny_lm.model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in k for k in tiny_lm.model.state_dict())
    assert all(torch.equal(v, before_state[k]) for k, v in tiny_lm.model.state_dict().items())
    assert generate(tiny_lm, prompts, max_new_tokens=8, cache=None, progress=False) == before


def test_an_offloaded_base_is_not_given_an_attached_student(tiny_lm, tmp_path, monkeypatch):
    """A device map with layers on the CPU or disk beside GPUs: peft would re-place the whole model to
    attach the adapter and leave it so. `attached` refuses with the modules named, and the default
    mode for such a base is the merged copy."""
    from dataclasses import replace

    monkeypatch.delenv("S2D_STUDENT_MODE", raising=False)
    gpu_base = replace(tiny_lm, device="cuda:0")
    monkeypatch.setattr(tiny_lm.model, "hf_device_map", {"model.embed_tokens": 0, "model.layers.0": 0,
                                                         "model.layers.1": "cpu", "lm_head": "disk"}, raising=False)
    assert distill.offloaded(gpu_base) == ["lm_head", "model.layers.1"]
    assert distill.student_mode(gpu_base) == "merged"
    with pytest.raises(ValueError, match=r"lm_head, model.layers.1 on the CPU or disk.*S2D_STUDENT_MODE=merged"):
        with distill.attached(gpu_base, tmp_path):
            pass
    monkeypatch.setattr(tiny_lm.model, "hf_device_map", {"model": 0, "lm_head": 1}, raising=False)
    assert distill.offloaded(gpu_base) == [] and distill.student_mode(gpu_base) == "attached"


def test_a_merged_student_of_a_base_whole_on_one_gpu_is_placed_where_it_fits(tiny_lm, tmp_path, monkeypatch):
    """The base's {"": "cuda:0"} (it fit there) is not forced on its merged copy: that loads with
    "auto" and goes where it fits beside the base, as does the copy of a partly offloaded base; a
    map that splits the base over GPUs is kept."""
    from dataclasses import replace

    seen = []
    monkeypatch.setattr(distill, "load_model", lambda *a, **k: seen.append(k["device_map"]))
    distill.load_distilled(replace(tiny_lm, device="cuda:0", device_map={"": "cuda:0"}), tmp_path)
    distill.load_distilled(replace(tiny_lm, device="cuda:0", device_map={"model": 0, "lm_head": 1}), tmp_path)
    offloading = {"model": 0, "lm_head": "cpu"}  # partly offloaded: placed anew, GPUs' room first
    monkeypatch.setattr(tiny_lm.model, "hf_device_map", offloading, raising=False)
    distill.load_distilled(replace(tiny_lm, device="cuda:0", device_map=offloading), tmp_path)
    assert seen == ["auto", {"model": 0, "lm_head": 1}, "auto"]
