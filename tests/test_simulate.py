"""The full-size simulated run: the simulated backend's answers (in each task's format, never from
the gold), the simulated trainer's plans (checked against the budget), and `PROFILE=gpu` end to end
on this CPU: every notebook at its full sizes, every output under the run's folder, none in figures/."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest

from s2d_utils import distill, lora, paths, profiles, registry
from s2d_utils.backends import simulated
from s2d_utils.filters import parse_usc
from s2d_utils.system2 import bsm, s2a
from s2d_utils.tasks import coin_flip, gsm8k, judge, last_letter


class _Tok:
    """A whitespace tokenizer: one token a word."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


class _LM:
    tokenizer = _Tok()


def _compose(task, prompt, cap=64, seed=0):
    backend = simulated.SimulatedBackend()
    backend.task = task
    return backend.compose(_LM(), prompt, cap, random.Random(seed))


@pytest.mark.parametrize("task", [last_letter, coin_flip, gsm8k])
def test_answers_are_in_the_tasks_form_and_parse(task):
    ex = task.load("test", n=5)
    parsed = 0
    for i, e in enumerate(ex * 4):
        text, n, reason = _compose(task.NAME, e.input, seed=i)
        assert n <= 64 and reason in ("stop", "length")
        parsed += reason == "stop" and task.extract(text, "strict", e) is not None
    assert parsed >= 14  # all but the calls cut at their cap


def test_answers_never_read_the_gold(monkeypatch):
    """The backend sees the prompt alone: with every gold of the task's data flipped (the same
    prompts), every answer stays as it was; and answers agree with the gold at chance."""
    examples = coin_flip.load("test", n=200)
    answers = [_compose("coin_flip", e.input, seed=i) for i, e in enumerate(examples)]
    real = coin_flip.gold_answer
    monkeypatch.setattr(coin_flip, "gold_answer", lambda flips: {"yes": "no", "no": "yes"}[real(flips)])
    flipped = coin_flip.load("test", n=200)
    assert [e.input for e in flipped] == [e.input for e in examples]
    assert all(f.gold != e.gold for f, e in zip(flipped, examples))  # every gold moved
    assert [_compose("coin_flip", e.input, seed=i) for i, e in enumerate(flipped)] == answers  # no answer did
    agree = sum(coin_flip.extract(a[0]) == e.gold for a, e in zip(answers, examples)) / 200
    assert 0.3 < agree < 0.7  # chance, not the gold


def test_the_programs_calls_get_what_they_parse():
    pair = judge.load("test", n=1)[0]
    branch, _, _ = _compose("judge", bsm.BRANCH.format(question=pair.input), cap=128, seed=1)
    assert bsm.parse_criteria(branch)
    solve = bsm.SOLVE.format(question="q", answer_a="a", answer_b="b", criterion="c", name="c", format_hint="")
    assert bsm.parse_scores(_compose("judge", solve, cap=64, seed=2)[0]) is not None
    verdict, n, _ = _compose("judge", "Output your final verdict: [[A]], [[B]] or [[C]]", cap=8, seed=5)
    assert judge.extract(verdict, "strict") in ("A", "B", "C")
    usc = "...\nResponse 0: x\nResponse 1: y\nResponse 2: z\nSelect the most consistent response based on majority"
    assert parse_usc(_compose("sycophancy", usc, cap=24, seed=4)[0], 3) in (0, 1, 2)
    rewrite = s2a.REWRITE.format(input="What is the capital of France? I think it is Lyon.")
    assert s2a.parse_rewrite(_compose("sycophancy", rewrite, cap=96, seed=6)[0]) is not None


def test_the_ledger_counts_every_call_and_the_caps_bound():
    from s2d_utils.backends.base import Job, Sampling

    simulated.LEDGER.reset()
    backend = simulated.SimulatedBackend()
    backend.task = "coin_flip"
    jobs = [Job(f"p{i} q", (1, 2, 3), i) for i in range(10)]
    out = list(backend.run(_LM(), jobs, Sampling(0.7, 0.95, 32), 4, None))
    t = simulated.LEDGER.totals()
    assert (t["calls"], t["prompt_tokens"], t["cap_tokens"]) == (10, 30, 320)
    assert t["generated_tokens"] == sum(g.n_tokens for _, g in out) <= 320


def test_the_simulated_trainer_refuses_a_plan_off_its_budget(monkeypatch):
    class Base:
        tokenizer, fingerprint, dtype, name = None, "f", "float32", "base"

    monkeypatch.setattr(distill, "tokenize", lambda base, p: (list(range(50)), [-100] * 45 + [1] * 5))
    pairs = [{"id": str(i), "prompt": "p", "completion": "c"} for i in range(100)]
    ok = distill.plan_only(Base, pairs, lora.LoraSettings(steps=10, tokens_per_step=1000), "student")
    assert (ok.steps, ok.rows, ok.planned["tokens_per_step"]) == (10, 20, 1000) and ok.losses == ()
    monkeypatch.setattr("s2d_utils.schedule.rows_per_step", lambda lengths, settings: 2)  # a step of 100 tokens
    with pytest.raises(RuntimeError, match="misses its budget: 100 tokens a step on average, the budget says 1,000"):
        distill.plan_only(Base, pairs, lora.LoraSettings(steps=10, tokens_per_step=1000), "student")


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*")) if p.is_file()}


@pytest.mark.slow  # about 5.5 minutes on 2 cores since each seed draws the teacher: `make test-slow`
def test_the_gpu_profile_runs_end_to_end_simulated_at_full_size(tmp_path):
    """Every notebook at PROFILE=gpu's sizes (the coin flip's 1,333 test questions and 144k samples
    included); each student's plan keeps to its budget; nothing lands in figures/."""
    before = _digest(paths.FIGURES)
    out = tmp_path / "sim"
    proc = subprocess.run([sys.executable, "-m", "s2d_utils.simulate", "--profile", "gpu", "--out", str(out)],
                          capture_output=True, text=True, cwd=paths.ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert _digest(paths.FIGURES) == before
    plan = json.loads((out / "workplan.json").read_text())
    assert set(plan["seconds"]) == set(registry.ALL)
    by_nb = {p["notebook"]: p for p in plan["notebooks"]}
    # notebook 04 tests its student twice: MT-bench's human votes (its own plan) and OASST2's 273 pairs
    assert set(by_nb) == {nb.notebook for nb in registry.NOTEBOOKS} | {registry.OASST2.notebook}
    oasst2 = by_nb[registry.OASST2.notebook]
    assert oasst2["test_inputs"] == 273 and not oasst2["training"]
    assert "SIMULATED RUN" in (out / "figures" / f"{registry.OASST2.table}.gpu.md").read_text()
    for nb in registry.NOTEBOOKS:
        z = profiles.sizes(nb.method, nb.task, "gpu")
        p = by_nb[nb.notebook]
        assert p["test_inputs"] >= min(z.n_test, 200) and p["generation"]["calls"] > z.n_test
        assert p["training"], f"{nb.notebook}: no student planned"
        for name, t in p["training"].items():
            assert t["steps"] == z.steps and abs(t["tokens_per_step"] - z.tokens_per_step) <= 0.25 * z.tokens_per_step
        # every student planned on each of its seeds: each seed on its own draw of the teacher, so behind
        # a vote (RaR) the kept pairs differ from the first seed's somewhere (S2A's USC and BSM's greedy
        # teacher keep the same inputs on every seed)
        firsts = [k for k in p["training"] if " (seed " not in k]
        assert len(p["training"]) == z.seeds * len(firsts), sorted(p["training"])
        pairs = {k: [p["training"][k]["pairs"]] + [p["training"][f"{k} (seed {s})"]["pairs"] for s in range(1, z.seeds)]
                 for k in firsts}
        assert all(all(n > 0 for n in ns) for ns in pairs.values()), pairs
        if nb.method == "rar":
            assert any(len(set(ns)) > 1 for ns in pairs.values()), pairs
        table = (out / "figures" / f"{nb.table}.gpu.md").read_text()
        assert "SIMULATED RUN" in table
    coin = by_nb["02_rar_coin_flip"]
    assert coin["test_inputs"] == 1333 and coin["generation"]["calls"] > 2000 * 8 * 9
    assert (out / "figures" / f"{registry.SUMMARY_FILE}.gpu.md").exists()
    assert "| 05_cot_gsm8k |" in (out / "workplan.md").read_text()
    assert "each on 3 seeds" in (out / "workplan.md").read_text()
