"""The distill step's memory measures change nothing the method sees."""

import gc
import weakref

from transformers import PreTrainedModel

from s2d_utils import distill
from s2d_utils.models import free_memory
from s2d_utils.tasks import last_letter


def test_activation_checkpointing_leaves_the_training_losses_unchanged(tiny_lm, tmp_path, monkeypatch):
    pairs = distill.sft_pairs([(e, e.gold) for e in last_letter.load("train", n=8, seed=3)])
    settings = distill.LoraSettings(max_steps=3, batch_size=4)  # dropout 0.1: checkpointing must replay its masks
    calls = []
    original = PreTrainedModel.activation_checkpointing_enable

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", spy)
    with_ckpt = distill.finetune(tiny_lm, pairs, settings, out_dir=tmp_path / "a", progress=False, name="ckpt")
    assert calls == ["LlamaForCausalLM"]
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
