"""The embedded model, for real: offline loading, generation, LoRA fine-tuning."""

import json

import pytest

from reference import reference_greedy
from s2d_utils import distill
from s2d_utils.generation import generate
from s2d_utils.models import DEFAULT_MODEL, load_model
from s2d_utils.tasks import last_letter

pytestmark = pytest.mark.integration


def test_embedded_model_loads_offline_and_generates(smollm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert smollm.name == DEFAULT_MODEL
    assert sum(p.numel() for p in smollm.model.parameters()) == 134_515_008
    (c,) = generate(smollm, ["What is 2+3?"], cache=None, progress=False, max_new_tokens=32)[0:1][0]
    assert "5" in c.text and c.finish_reason == "stop" and 0 < c.n_tokens < 32
    again = load_model(device="cpu")  # converted once, then a plain checkpoint load
    assert again.fingerprint == smollm.fingerprint


def test_greedy_identical_to_model_generate_on_the_embedded_model(smollm):
    prompts = [e.input for e in last_letter.load("test", n=3, seed=0)] + ["Is the sky blue? Answer yes or no."]
    outs = generate(smollm, prompts, max_new_tokens=48, cache=None, progress=False, batch_size=4)
    for prompt, (c,) in zip(prompts, outs):
        assert c.text == reference_greedy(smollm, prompt, 48)[1]


def test_lora_finetune_changes_answers_on_its_examples(smollm, tmp_path):
    examples = last_letter.load("train", n=4, seed=5)
    pairs = [{"id": e.id, "prompt": e.input, "completion": distill.answer_completion(e.gold)} for e in examples]
    before = [c[0].text for c in generate(smollm, [e.input for e in examples], max_new_tokens=16, cache=None,
                                          progress=False)]
    settings = distill.LoraSettings(learning_rate=1e-3, steps=12, batch_size=4, seed=0)
    result = distill.finetune(smollm, pairs, settings, out_dir=tmp_path, progress=False, name="tiny test")
    assert not result.reused and result.steps == 12 and result.losses[-1] < result.losses[0]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in result.adapter_dir.iterdir()}
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["peft_type"] == "LORA"
    student = distill.load_distilled(smollm, result)
    assert student.fingerprint != smollm.fingerprint
    after = [c[0].text for c in generate(student, [e.input for e in examples], max_new_tokens=16, cache=None,
                                         progress=False)]
    assert all(a != b for a, b in zip(after, before))
    # it learned the target format: every answer now parses strictly
    assert all(last_letter.extract(a, "strict") is not None for a in after), after
    # a second call with the same data and settings reuses the adapter instead of training
    assert distill.finetune(smollm, pairs, settings, out_dir=tmp_path, progress=False, name="tiny test").reused
    with pytest.raises(ValueError, match="no training pairs"):
        distill.finetune(smollm, [], settings, out_dir=tmp_path, progress=False)


def test_unknown_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an embedded model"):
        load_model("no-such-model")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(tmp_path))
