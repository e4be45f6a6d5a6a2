"""Generation on a tiny random Llama (with the real SmolLM2 tokenizer): exact, fast checks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reference
from reference import reference_greedy
from s2d_utils.backends import local
from s2d_utils.cache import GenerationCache
from s2d_utils.generation import generate

PROMPTS = [*reference.PROMPTS, "What is the capital of France? Answer in one word, please, and nothing else."]
SAMPLING = dict(temperature=0.9, top_p=0.95, max_new_tokens=12, seed=7)


@pytest.fixture(params=["fast", "hf"])
def engine(request, monkeypatch):
    """Run a test through both decode paths: the Llama engine and the model's own forward."""
    monkeypatch.setenv("S2D_ENGINE", request.param)
    return request.param


def test_greedy_matches_model_generate(tiny_lm, engine):
    outs = generate(tiny_lm, PROMPTS, max_new_tokens=16, cache=None, progress=False, batch_size=3)
    for prompt, (c,) in zip(PROMPTS, outs):
        tokens, text = reference_greedy(tiny_lm, prompt, 16)
        assert (c.text, c.n_tokens) == (text, len(tokens))


def test_samples_do_not_depend_on_batch_composition(tiny_lm, engine):
    alone = generate(tiny_lm, PROMPTS[:1], n=3, cache=None, progress=False, batch_size=1, **SAMPLING)
    mixed = generate(tiny_lm, list(reversed(PROMPTS)), n=3, cache=None, progress=False, batch_size=5, **SAMPLING)
    assert alone[0] == mixed[-1]
    texts = [c.text for c in alone[0]]
    assert len(set(texts)) > 1  # the three samples really are different draws
    # and both decode paths draw the same samples
    import os

    os.environ["S2D_ENGINE"] = "hf" if engine == "fast" else "fast"
    assert generate(tiny_lm, PROMPTS[:1], n=3, cache=None, progress=False, batch_size=2, **SAMPLING) == alone
    os.environ["S2D_ENGINE"] = engine
    other_seed = generate(tiny_lm, PROMPTS[:1], n=3, cache=None, progress=False, **{**SAMPLING, "seed": 8})
    assert other_seed[0] != alone[0]


def test_one_count_per_prompt_draws_what_separate_calls_draw(tiny_lm):
    # maj@k on the first prompts, one sample on the rest, in one call (05's test sampling)
    one_call = generate(tiny_lm, PROMPTS, n=[3, 1, 2, 1], cache=None, progress=False, batch_size=4, **SAMPLING)
    assert [len(cs) for cs in one_call] == [3, 1, 2, 1]
    assert one_call.stats.requested == 7
    for prompt, count, cs in zip(PROMPTS, [3, 1, 2, 1], one_call):
        assert generate(tiny_lm, [prompt], n=count, cache=None, progress=False, **SAMPLING)[0] == cs
    greedy = generate(tiny_lm, PROMPTS[:2], n=[2, 1], cache=None, progress=False, max_new_tokens=5)
    assert [len(cs) for cs in greedy] == [2, 1] and greedy[0][0] == greedy[0][1]
    with pytest.raises(ValueError, match="n has 1 counts for 2 prompts"):
        generate(tiny_lm, PROMPTS[:2], n=[2], cache=None)
    with pytest.raises(ValueError, match="must be >= 1"):
        generate(tiny_lm, PROMPTS[:2], n=[2, 0], cache=None)


def test_token_counts_limits_and_greedy_copies(tiny_lm, engine):
    outs = generate(tiny_lm, PROMPTS, n=2, cache=None, progress=False, max_new_tokens=5)
    for a, b in outs:
        assert a == b  # greedy: n samples are the same answer
        assert a.n_tokens <= 5
        assert a.finish_reason in ("stop", "length")
        assert a.finish_reason == "stop" or a.n_tokens == 5


def test_bad_requests_fail_clearly(tiny_lm):
    with pytest.raises(ValueError, match="empty prompt"):
        generate(tiny_lm, ["ok", "  "], cache=None, progress=False)
    with pytest.raises(ValueError, match="prompt 1: .* exceeds the model's context of 512 tokens"):
        generate(tiny_lm, ["ok", "word " * 600], cache=None, progress=False)
    with pytest.raises(ValueError, match="n=0"):
        generate(tiny_lm, ["ok"], n=0, cache=None)
    assert generate(tiny_lm, [], cache=None, progress=False) == []


def test_cache_serves_reruns(tiny_lm, tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    first = generate(tiny_lm, PROMPTS, n=2, cache=cache, progress=False, **SAMPLING)
    assert (first.stats.computed, first.stats.cached) == (8, 0)
    again = generate(tiny_lm, PROMPTS, n=3, cache=cache, progress=False, **SAMPLING)
    assert (again.stats.computed, again.stats.cached) == (4, 8)  # only the new third samples
    assert [s[:2] for s in again] == first


WORKER = """
import sys
from s2d_utils.cache import GenerationCache
from s2d_utils.generation import generate
from s2d_utils.models import load_model
lm = load_model(sys.argv[1], device="cpu")
prompts = [f"Question number {i}: what comes after {i}?" for i in range(24)]
generate(lm, prompts, n=2, temperature=0.8, top_p=0.9, max_new_tokens=40, seed=3, batch_size=4,
         cache=GenerationCache(sys.argv[2]), progress=False)
"""


def test_sigkill_mid_run_loses_at_most_the_batch_in_flight(tiny_model_dir, tiny_lm, tmp_path):
    db = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(tiny_model_dir), str(db)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    stored_before = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with GenerationCache(db) as c:
                    stored_before = len(c)
            except Exception:
                stored_before = 0
            if stored_before >= 8:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with GenerationCache(db) as c:
        stored_before = len(c)
    assert 8 <= stored_before < 48, "the worker should have been killed part-way"

    prompts = [f"Question number {i}: what comes after {i}?" for i in range(24)]
    kw = dict(n=2, temperature=0.8, top_p=0.9, max_new_tokens=40, seed=3, batch_size=4, progress=False)
    resumed = generate(tiny_lm, prompts, cache=GenerationCache(db), **kw)
    assert resumed.stats.cached == stored_before
    assert resumed.stats.computed == 48 - stored_before
    fresh = generate(tiny_lm, prompts, cache=GenerationCache(tmp_path / "fresh.sqlite"), **kw)
    assert resumed == fresh


def test_token_budget_groups_bound_each_runs_kv_buffers():
    from s2d_utils.backends.local import token_budget_groups

    jobs = [[1] * 10] * 3 + [[2] * 100] * 2 + [[3] * 2000]
    groups = token_budget_groups(jobs, slots=4, max_new_tokens=50, budget=300)
    assert groups == [[0, 1, 2], [3, 4], [5]]  # the long prompt alone, over budget, is still served
    for g in groups[:2]:
        distinct = {tuple(jobs[j]) for j in g}
        need = min(4, len(distinct)) * max(len(jobs[j]) for j in g) + min(4, len(g)) * 50
        assert need <= 300
    assert token_budget_groups(jobs, 4, 50, budget=10**9) == [list(range(6))]


def test_a_small_kv_budget_gives_the_same_samples(tiny_lm, monkeypatch):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    whole = generate(tiny_lm, PROMPTS, n=3, cache=None, progress=False, batch_size=4, **SAMPLING)
    monkeypatch.setattr(local, "KV_BUDGET_MB", "0")  # 0 bytes: every prompt in a run of its own
    assert generate(tiny_lm, PROMPTS, n=3, cache=None, progress=False, batch_size=4, **SAMPLING) == whole


def test_two_step_rar_with_several_answers_per_rephrasing(tiny_lm):
    from s2d_utils.system2 import rar
    from s2d_utils.tasks import coin_flip

    exs = coin_flip.load("train", n=2, seed=1)
    out = rar.two_step(tiny_lm, exs, coin_flip, n=2, n_answer=3, temperature=0.9, top_p=0.95, rephrase_tokens=6,
                       answer_tokens=5, seed=4, cache=None, progress=False)
    assert [len(ts) for ts in out] == [6, 6]  # paper, coin flip: both stages sampled
    for e, ts in zip(exs, out):
        assert [t.sample for t in ts] == list(range(6)) and {t.input_id for t in ts} == {e.id}
        rephrasings = [t.calls[0].output for t in ts]
        assert rephrasings[:3] == [rephrasings[0]] * 3 and rephrasings[3:] == [rephrasings[3]] * 3
        assert all(ts[i].calls[1].prompt == rar.respond_prompt(e, ts[i].calls[0].output) for i in range(6))
        assert all(t.n_tokens == t.calls[0].n_tokens + t.calls[1].n_tokens for t in ts)


def test_rows_are_selected_layer_by_layer_as_the_cache_itself_would(tiny_lm):
    """`select_rows` (each layer indexed on its own device, for split models) keeps the same rows as
    `DynamicCache.batch_select_indices` on one device."""
    import torch
    from transformers import DynamicCache

    from s2d_utils.backends.local import select_rows

    ids = torch.tensor([[1, 5, 9], [2, 6, 10], [3, 7, 11]])
    caches = []
    for _ in range(2):
        cache = DynamicCache(config=tiny_lm.model.config)
        with torch.no_grad():
            tiny_lm.model(input_ids=ids, past_key_values=cache, use_cache=True)
        caches.append(cache)
    idx = torch.tensor([2, 0, 0])
    caches[0].batch_select_indices(idx)
    select_rows(caches[1], idx)
    for a, b in zip(caches[0].layers, caches[1].layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_rows_are_selected_by_each_layer_itself_state_beyond_keys_and_values_included():
    """A layer type with more state than keys and values (transformers' indexed layers; recurrent
    ones) selects it in its own `batch_select_indices`: `select_rows` must call it, not index
    keys and values itself. A layer that holds nothing yet is left alone."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from s2d_utils.backends.local import select_rows

    class Extra(DynamicLayer):
        def batch_select_indices(self, indices):
            super().batch_select_indices(indices)
            self.extra = self.extra[indices]

    full, empty = Extra(), DynamicLayer()
    full.keys, full.values = torch.arange(3.0)[:, None, None, None], -torch.arange(3.0)[:, None, None, None]
    full.extra, full.is_initialized = torch.tensor([10, 11, 12]), True

    class Cache:
        layers = [full, empty]

    select_rows(Cache(), torch.tensor([2, 0]))
    assert full.extra.tolist() == [12, 10] and full.keys.flatten().tolist() == [2.0, 0.0]
    assert full.values.flatten().tolist() == [-2.0, -0.0]


def test_the_kv_budget_on_a_gpu_counts_this_process_s_cached_free_blocks(tiny_lm, monkeypatch):
    """On CUDA the budget is a share of the free memory, where blocks this process's allocator keeps
    reserved but unused (the last run's K/V) count as free: otherwise every run after the first
    would get about half the budget of the one before. (CUDA faked: the arithmetic only.)"""
    import types

    import torch

    gib = 1 << 30
    monkeypatch.setattr(local, "KV_BUDGET_MB", None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 18 * gib)

    class OnGpu:  # only its first parameter's device is read
        def parameters(self):
            yield types.SimpleNamespace(device=torch.device("cuda", 0))

    assert local.kv_budget_bytes(OnGpu()) == int(local.GPU_KV_SHARE * (10 + 12) * gib)


def test_the_kv_budget_is_a_setting_or_follows_the_device(tiny_lm, monkeypatch):
    monkeypatch.setattr(local, "KV_BUDGET_MB", None)
    assert local.kv_budget_bytes(tiny_lm.model) == local.CPU_KV_BUDGET_BYTES
    monkeypatch.setattr(local, "KV_BUDGET_MB", "3")
    assert local.kv_budget_bytes(tiny_lm.model) == 3 << 20
