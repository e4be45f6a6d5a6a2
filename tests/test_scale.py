"""The paper's scale, right by construction: training budgets in the paper's unit (steps x tokens a
step), the data the gpu and paper profiles read, the students' targets, the concessions to the 0.5B
model kept to the small profiles, and labels kept out of the unlabeled pool."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from handmade import call, trace
from s2d_utils import distill, lora, paper, profiles, registry
from s2d_utils.filters import self_consistency
from s2d_utils.system2 import bsm, rar
from s2d_utils.tasks import coin_flip, gsm8k, judge, last_letter, sycophancy

BIG = ("gpu", "paper")


# --- 1. budgets: steps x tokens a step ---------------------------------------------------------------

@pytest.mark.parametrize("nb", registry.NOTEBOOKS, ids=lambda nb: nb.notebook)
def test_the_paper_profile_trains_for_the_papers_steps_and_tokens(nb):
    z = profiles.sizes(nb.method, nb.task, "paper")
    assert (z.steps, z.tokens_per_step) == paper.TRAINING[nb.task]
    assert z.warmup_share > 0


@pytest.mark.parametrize("nb", registry.NOTEBOOKS, ids=lambda nb: nb.notebook)
def test_the_gpu_profile_states_its_budget_in_the_same_units(nb):
    z = profiles.sizes(nb.method, nb.task, "gpu")
    assert z.steps and z.tokens_per_step and z.warmup_share > 0


def _data(lengths, answer=5):
    return [(list(range(n)), [-100] * (n - answer) + list(range(answer))) for n in lengths]


def test_a_step_takes_as_many_rows_as_its_tokens_hold():
    settings = lora.LoraSettings(steps=100, tokens_per_step=66_000)
    data = _data([100 + i % 41 for i in range(20_000)])  # ~120 tokens a pair: ~550 rows a step
    plan = lora.plan(data, settings)
    mean = plan.tokens / plan.steps
    assert plan.steps == 100 and abs(mean - 66_000) < 0.02 * 66_000
    assert plan.rows == round(66_000 / (sum(len(i) for i, _ in data) / len(data)))
    assert lora.plan_problems(plan, settings) == []
    # a step of 66k tokens is never one pass: it accumulates micro-batches of MICRO_TOKENS
    assert min(plan.step_passes) >= 66_000 // lora.MICRO_TOKENS
    # the old budget of the same steps (8 rows a step) is ~1.5% of the paper's tokens, and the check says so
    old = lora.plan(data, lora.LoraSettings(steps=100, batch_size=8))
    assert old.tokens < 0.02 * plan.tokens
    assert lora.plan_problems(lora.TrainPlan(**{**plan.__dict__, "step_tokens": old.step_tokens}), settings)


def test_a_step_larger_than_the_pool_spans_epochs_and_repeats_no_pair_within_an_epoch():
    settings = lora.LoraSettings(steps=3, tokens_per_step=66_000, seed=1)
    data = _data([70] * 150)  # last letter: ~150 kept pairs of ~70 tokens, 943 rows a step
    rows = lora.rows_per_step([70] * 150, settings)
    batches = list(lora.step_batches(150, settings, rows))
    assert len(batches) == 3 and all(len(b) == rows for b in batches)
    stream = [i for b in batches for i in b]
    for start in range(0, len(stream) - 150, 150):  # each epoch is a permutation
        assert sorted(stream[start:start + 150]) == list(range(150))
    assert lora.plan(data, settings).epochs == pytest.approx(3 * rows / 150)


def test_the_warmup_rises_then_decays_and_without_it_the_schedule_is_the_old_one():
    total = 100
    warm = lora.warmup_steps(lora.LoraSettings(warmup_share=0.1), total)
    f = [lora.lr_factor(s, total, warm) for s in range(total)]
    assert warm == 10 and f[:warm] == sorted(f[:warm]) and f[warm] == 1.0
    assert f[warm:] == sorted(f[warm:], reverse=True) and f[-1] > 0
    assert [lora.lr_factor(s, total, 0) for s in range(total)] == [max(0.0, 1 - s / total) for s in range(total)]
    assert lora.warmup_steps(lora.LoraSettings(warmup_share=0.1), 3) == 1  # last letter's 3 steps: one warms up


def test_students_trained_before_the_budget_fields_keep_their_folders():
    """The cpu profile's committed students were keyed on the settings without the new fields: the
    key holds exactly these, written out (not derived from the dataclass)."""
    settings = lora.LoraSettings(epochs=3, batch_size=4, min_steps=12)
    assert settings.key() == {
        "r": 16, "alpha": 32, "dropout": 0.1, "learning_rate": 2e-4, "epochs": 3, "batch_size": 4,
        "max_steps": None, "min_steps": 12, "steps": None, "seed": 0,
        "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
    assert lora.LoraSettings(tokens_per_step=1000).key()["tokens_per_step"] == 1000
    assert lora.LoraSettings(warmup_share=0.1).key()["warmup_share"] == 0.1


@pytest.mark.parametrize("nb", registry.NOTEBOOKS, ids=lambda nb: nb.notebook)
def test_the_small_profiles_keep_their_budget(nb):
    for profile in ("smoke", "cpu"):
        z = profiles.sizes(nb.method, nb.task, profile)
        assert z.tokens_per_step is None and z.warmup_share == 0


def test_the_table_notes_give_the_budget_the_schedule_and_what_differs():
    from s2d_utils.findings import training_notes

    z = profiles.sizes("rar", "coin_flip", "paper")
    t = lora.TrainResult("x", 100, 18_000, 6_600_000, 1.0, (2.0, 0.5), False, 367, 10,
                         {"r": 16, "learning_rate": 2e-4, "dropout": 0.1})
    notes = " ".join(training_notes({"Distill": t}, z, paper.training_budget("coin_flip")))
    assert "100 steps x 66k tokens, 10% warmup, linear decay" in notes
    assert "the paper's: 100 steps x 66k tokens" in notes
    assert "100 optimizer steps of 367 rows (66,000 tokens a step, 2.0 epochs), final training loss 0.500" in notes
    assert "LR 5.5e-6" in notes and "rank 16" in notes


def test_a_log_without_rows_reads_as_its_batch():
    """Students trained before the rows were logged: a step took batch_size rows."""
    log = {"steps": 12, "examples": 6, "tokens": 4000, "seconds": 1.0, "losses": [1.0],
           "settings": {"batch_size": 4}}
    t = lora._result("x", log, True)
    assert (t.rows, t.epochs, t.tokens_per_step) == (4, 8.0, pytest.approx(333.3, abs=0.1))


# --- 4. coin flip on the paper's test file, both stages sampled --------------------------------------

@pytest.mark.parametrize("profile", BIG)
def test_coin_flip_at_scale_tests_on_the_rar_papers_1333_questions(profile):
    source = profiles.test_source("rar", "coin_flip", profile)
    assert source is not None
    z = profiles.sizes("rar", "coin_flip", profile)
    test = coin_flip.load("test", n=z.n_test, source=source)
    assert len(test) == 1333 and test[0].meta["source"].endswith("raw_coin_val.json")
    assert z.n_answer == z.samples == 8  # both RaR stages sampled 8 times (paper Sec. 4.1)


def test_the_small_profiles_keep_the_synthetic_coin_flips():
    assert profiles.test_source("rar", "coin_flip", "cpu") is None
    assert profiles.test_source("rar", "last_letter", "paper") is None


# --- 5. targets the paper's #Tokens imply ------------------------------------------------------------

def test_a_rar_student_learns_the_respond_calls_response_of_a_sample_that_gave_the_vote():
    ex = last_letter.unlabel(last_letter.load("train", n=1)[0])
    # 2-step RaR's samples: (the rephrased question, the respond call's response, its answer)
    rows = [("r0", "So the letters give 'ab'. The answer is ab.", "ab"), ("r1", "Joining them: 'cd'.", "cd"),
            ("r2", "The last letters are a and c: 'ac'.", "ac"), ("r3", "That makes 'cd', so the answer is cd.", "cd"),
            ("r4", "cd.", "cd")]
    ts = [trace(ex.id, a, call("rephrase", "q", r, 5), call("respond", r, out, 9), sample=i)
          for i, (r, out, a) in enumerate(rows)]
    kept = self_consistency([ex], [ts]).kept
    assert kept[0].answer == "cd"
    assert distill.final_call_target(kept[0]) == "Joining them: 'cd'."
    for profile in BIG:
        assert rar.target(profiles.sizes("rar", "last_letter", profile)) is distill.final_call_target
    for profile in ("smoke", "cpu"):  # the 0.5B model's concession, said in the notes
        assert rar.target(profiles.sizes("rar", "coin_flip", profile)) is distill.answer_target
    assert "respond" in distill.target_note(distill.final_call_target)
    assert "'The answer is X.'" in distill.target_note(distill.answer_target)


def test_the_solve_format_hint_is_for_the_small_profiles_only():
    for profile in BIG:
        z = profiles.sizes("bsm", "judge", profile)
        assert z.format_hint is False and bsm.solve_note(z) == bsm.PAPER_SOLVE_NOTE
    for profile in ("smoke", "cpu"):
        z = profiles.sizes("bsm", "judge", profile)
        assert z.format_hint is True and "smoke and cpu profiles only" in bsm.solve_note(z)


def test_without_the_hint_the_solve_prompt_is_the_bsm_papers(monkeypatch):
    seen = []

    def fake_generate(lm, prompts, max_new_tokens, desc="", **gen):
        from s2d_utils.backends import Generated
        seen.extend(prompts)
        text = "1. Helpfulness: how well it helps" if "Evaluation Plan" in prompts[0] else "4\n3"
        return [[type("C", (), {"text": text, "n_tokens": 3, "finish_reason": "stop", "logprob": None})()]
                for _ in prompts]

    monkeypatch.setattr(bsm, "generate", fake_generate)
    pair = judge.load("test", n=1)[0]
    for hint in (False, True):
        seen.clear()
        bsm.bsm(None, [pair], judge, format_hint=hint)
        solves = [p for p in seen if "[Evaluation Criterion]" in p]
        assert solves and all((bsm.SOLVE_FORMAT_HINT in p) is hint for p in solves)


# --- 6. labels never reach the unlabeled pool --------------------------------------------------------

def _loads():
    yield "last_letter", last_letter, last_letter.load("train", n=20)
    yield "coin_flip", coin_flip, coin_flip.load("train", n=20)
    yield "gsm8k", gsm8k, gsm8k.load("train", n=20)
    yield "sycophancy", sycophancy, sycophancy.load("train", n=20)
    yield "judge", judge, judge.load("train", n=20)


# fields the gold is computed from, per task (the rest are checked for the gold's text)
DERIVED = {"coin_flip": ("flips",), "gsm8k": ("solution",), "judge": ("model_a", "model_b", "label", "judge"),
           "sycophancy": ("aliases", "incorrect", "question")}


def _leaks(name, example, unlabeled) -> list[str]:
    import re

    gold = str(example.gold).strip().lower()
    bad = [k for k in DERIVED.get(name, ()) if k in unlabeled.meta]
    if example.gold is None or len(gold) < 2:  # a judge's "A"/"B": a letter in any answer, checked through DERIVED
        return bad
    word = re.compile(rf"\b{re.escape(gold)}\b")
    for key, value in unlabeled.meta.items():
        text = json.dumps(value, default=str).lower()
        if word.search(text) and not word.search(unlabeled.input.lower()):
            bad.append(key)
    return bad


@pytest.mark.parametrize("name", ["last_letter", "coin_flip", "gsm8k", "sycophancy", "judge"])
def test_every_task_strips_every_gold_field_from_its_training_inputs(name):
    from s2d_utils import pipeline

    task, examples = next((t, e) for n, t, e in _loads() if n == name)
    for e in examples:
        u = task.unlabel(e)
        assert u.gold is None and u.input == e.input and u.id == e.id
        assert not _leaks(name, e, u), f"{name}: {e.id} keeps {_leaks(name, e, u)}"
        assert pipeline.unlabeled(task, e) == u
    if name == "gsm8k":  # the gold worked solution is a label
        assert "solution" in examples[0].meta and "solution" not in task.unlabel(examples[0]).meta
    if name == "coin_flip":  # the flips decide the answer
        assert "flips" not in task.unlabel(examples[0]).meta


def test_an_unlabel_that_leaves_the_gold_is_refused():
    from types import SimpleNamespace

    from s2d_utils import pipeline

    careless = SimpleNamespace(NAME="careless", unlabel=lambda e: e)
    with pytest.raises(ValueError, match="careless.unlabel left the gold"):
        pipeline.unlabeled(careless, gsm8k.load("train", n=1)[0])


class _Base:
    fingerprint, dtype = "f" * 16, "float32"


_PAIRS = [{"id": "a", "prompt": "p", "completion": "c"}]


def test_the_adapter_key_of_a_default_student_is_the_one_it_always_had():
    """Digests pinned from the key the committed cpu students' folders were named with: a field
    added to the key (or one left out of it, or another payload) renames every committed student."""
    class Bf16(_Base):
        dtype = "bfloat16"

    settings = lora.LoraSettings(steps=3)
    assert lora.adapter_key(_Base, _PAIRS, settings) == "60c017c65ffe4781f62a"
    assert lora.adapter_key(Bf16, _PAIRS, settings) == "297ebaa71a8f8c917d38"  # a bf16 base: another student
    later = lora.LoraSettings(steps=3, tokens_per_step=1000, warmup_share=0.1)
    assert lora.adapter_key(_Base, _PAIRS, later) == "0af7767ab9bcae08724f"


def _changed(value):
    """A value of the same kind as a field's default, and different from it."""
    if isinstance(value, bool) or value is None:
        return 7
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, tuple):
        return value[:1]
    raise TypeError(f"no changed value for {value!r}: teach _changed this field's type")


@pytest.mark.parametrize("field", [f.name for f in fields(lora.LoraSettings)])
def test_every_setting_moves_the_adapter_key(field):
    """A field the key leaves out would let two different students share one folder."""
    base = lora.LoraSettings(steps=3)
    other = replace(base, **{field: _changed(getattr(base, field))})
    assert lora.adapter_key(_Base, _PAIRS, other) != lora.adapter_key(_Base, _PAIRS, base)
