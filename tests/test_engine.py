"""The shared-prefix decode engine: its attention algebra and its bookkeeping."""

import copy
import dataclasses

import pytest
import torch

from reference import PROMPTS, reference_greedy
from s2d_utils import decoder, engine
from s2d_utils.backends import local
from s2d_utils.generation import generate

SAMPLING = dict(temperature=0.9, top_p=0.95, max_new_tokens=10, seed=5, cache=None, progress=False)


def test_two_part_attention_equals_one_softmax_over_the_whole_context():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 2, 3, 8, generator=g)
    k = torch.randn(5, 2, 11, 8, generator=g)
    v = torch.randn(5, 2, 11, 8, generator=g)
    visible = torch.rand(5, 11, generator=g) > 0.3
    visible[:, 0] = visible[:, 7] = True  # each part keeps at least one visible column
    bias = torch.zeros(5, 11).masked_fill_(~visible, float("-inf"))[:, None, None, :]
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3)
    parts = [decoder._partial_attention(q, k[:, :, s], v[:, :, s], bias[..., s], 0.3)
             for s in (slice(0, 7), slice(7, 11))]
    torch.testing.assert_close(decoder._merge(*parts), whole, rtol=1e-5, atol=1e-6)


def test_layout_groups_rows_by_prefix_and_falls_back_when_too_uneven(monkeypatch, tiny_lm):
    dec = engine.Decoder(tiny_lm.model)
    dec.allocate(slots=6, prefixes=3, prefix_capacity=4, own_capacity=4)
    lay = dec.layout([2, 0, -1, 2, 2, 0])
    assert (lay.prefixes, lay.per_prefix, lay.gather) == (3, 3, None)
    grid = lay.members.reshape(-1)
    for row, p in enumerate([2, 0, -1, 2, 2, 0]):
        if p >= 0:  # each live row sits in its prefix's part of the grid, exactly once
            assert grid[lay.entry[row]] == row and lay.entry[row] // lay.per_prefix == p
    monkeypatch.setattr(decoder, "MAX_PADDING", 1)
    lay = dec.layout([2, 0, -1, 2, 2, 0])  # a 3 x 3 grid for 6 rows: too much padding now
    assert lay.gather.tolist() == [2, 0, 0, 2, 2, 0]


def test_each_prompt_is_prefilled_once_while_its_samples_run(tiny_lm, monkeypatch):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    # float64: a GEMM may round a row differently with 1 row than with 4 (MKL does), and the tiny
    # random model's near-flat distributions turn such a last-bit change in fp32 into another
    # sample now and then; in float64 the runs below can only differ through the bookkeeping
    tiny_lm = dataclasses.replace(tiny_lm, model=copy.deepcopy(tiny_lm.model).double())
    # 4 rows for 3 prompts x 6 samples: a prompt's samples straddle admissions and reuse its prefix
    out = generate(tiny_lm, PROMPTS, n=6, batch_size=4, **SAMPLING)
    (stats,) = out.stats.engine_runs  # the engine's counts come back with the result: no module state
    assert stats.decode_steps > 0 and stats.gathered_steps == 0
    assert len(PROMPTS) <= stats.prefilled_prompts < 3 * len(PROMPTS)
    # the same samples when every row copies its prefix (the fallback) and with one row per prompt
    monkeypatch.setattr(decoder, "MAX_PADDING", 0)
    gathered = generate(tiny_lm, PROMPTS, n=6, batch_size=4, **SAMPLING)
    assert gathered == out
    (run,) = gathered.stats.engine_runs
    assert run.gathered_steps == run.decode_steps > 0
    monkeypatch.setattr(decoder, "MAX_PADDING", 4)
    assert generate(tiny_lm, PROMPTS, n=6, batch_size=1, **SAMPLING) == out


def test_buffers_are_released_after_a_run_even_if_it_is_abandoned(tiny_lm, monkeypatch):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    dec = local._decoder_for(tiny_lm.model)
    generate(tiny_lm, PROMPTS, n=2, **SAMPLING)
    assert dec.keys == [] and dec.prefix_keys == []
    jobs = [tiny_lm.tokenizer("hello there")["input_ids"]] * 3
    run = engine.run_continuous(tiny_lm.model, dec, jobs, lambda lg, js: lg.argmax(-1), 20, set(), 2,
                                tiny_lm.tokenizer.pad_token_id, "cpu")
    next(run)
    assert dec.keys  # allocated while running
    run.close()
    assert dec.keys == [] and dec.prefix_keys == []


def test_a_model_dropped_after_generating_is_freed(tiny_lm, monkeypatch):
    # the decoder built for a model must not keep it alive: a notebook that evaluates three
    # distilled students one after another would otherwise hold all three in memory
    import gc
    import weakref

    monkeypatch.setenv("S2D_ENGINE", "fast")
    student = dataclasses.replace(tiny_lm, model=copy.deepcopy(tiny_lm.model))
    generate(student, PROMPTS[:1], max_new_tokens=3, cache=None, progress=False)
    assert student.model in local._DECODERS
    alive = weakref.ref(student.model)
    del student
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("max_new", [1, 2])
def test_shortest_limits(tiny_lm, monkeypatch, max_new):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    out = generate(tiny_lm, PROMPTS, n=3, **{**SAMPLING, "max_new_tokens": max_new})
    for cs in out:
        for c in cs:
            assert c.n_tokens <= max_new and (c.finish_reason == "stop" or c.n_tokens == max_new)


def test_qwen2_engine_greedy_identical_to_model_generate(tiny_qwen, monkeypatch):
    # q/k/v biases, an untied LM head and rope theta 1e6: the engine must compute what transformers does
    monkeypatch.setenv("S2D_ENGINE", "fast")
    model = tiny_qwen.model
    assert engine.supports(model) and not model.config.tie_word_embeddings
    assert model.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0
    assert local._decoder_for(model) is not None
    outs = generate(tiny_qwen, PROMPTS, max_new_tokens=16, cache=None, progress=False, batch_size=2)
    for prompt, (c,) in zip(PROMPTS, outs):
        assert c.text == reference_greedy(tiny_qwen, prompt, 16)[1]


def test_qwen2_samples_do_not_depend_on_the_decode_path(tiny_qwen, monkeypatch):
    # per-sample seeds: the engine and the fallback (the model's own forward) draw the same samples
    qwen64 = dataclasses.replace(tiny_qwen, model=copy.deepcopy(tiny_qwen.model).double())
    monkeypatch.setenv("S2D_ENGINE", "fast")
    fast = generate(qwen64, PROMPTS, n=3, batch_size=4, **SAMPLING)
    monkeypatch.setenv("S2D_ENGINE", "hf")
    assert generate(qwen64, PROMPTS, n=3, batch_size=4, **SAMPLING) == fast


def test_engine_declines_what_it_does_not_implement(tiny_qwen):
    model = copy.deepcopy(tiny_qwen.model)
    model.config.use_sliding_window = True
    assert not engine.supports(model)
    model.config.use_sliding_window = False
    model.train()
    assert not engine.supports(model)


def test_shared_prefix_groups_cluster_by_common_prefix(monkeypatch):
    monkeypatch.setattr(engine, "MIN_SHARED", 32)
    a = tuple(range(50))
    p1, p2, p3 = a + (100, 101), a + (102,), a[:40] + (7, 8)
    lone, short = (9,) * 60, (5,) * 10
    groups = engine.shared_prefix_groups([p1, p2, p3, lone, short, p1], min_shared=32)
    assert groups == [(40, [p3, p1, p2]), (0, [short, lone])]
    # two pairs' solve calls: a common instruction (40 tokens), then each pair's own long prefix
    pair1 = [a[:40] + (1,) * 200 + (c,) for c in (7, 8, 9)]
    pair2 = [a[:40] + (2,) * 200 + (c,) for c in (7, 8, 9)]
    assert engine.shared_prefix_groups(pair2 + pair1, min_shared=32) == [(240, pair1), (240, pair2)]
    # a prompt that is the prefix of another still keeps one token of its own
    assert engine.shared_prefix_groups([a, a + (1, 2)], min_shared=32) == [(49, [a, a + (1, 2)])]
    order = engine.sharing_order([p1, p2, p3, lone, short])
    assert order[p1] == order[p2] == order[p3] and order[short] < order[lone]


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen"])
def test_prefix_caching_computes_the_same_samples_and_skips_the_shared_prefill(fixture, request, monkeypatch):
    # BSM-like prompts: a long common head (question and answers), a short distinct tail (criterion)
    lm = request.getfixturevalue(fixture)
    lm = dataclasses.replace(lm, model=copy.deepcopy(lm.model).double())
    monkeypatch.setenv("S2D_ENGINE", "fast")
    head = "Judge the two answers below. " + " ".join(f"word{i}" for i in range(60))
    prompts = [f"{head}\nCriterion: {c}" for c in ("helpfulness", "accuracy of facts", "depth", "clarity")]
    shared = generate(lm, prompts, n=2, batch_size=8, **SAMPLING)
    saved = shared.stats.prefix_reused_tokens
    assert saved > 3 * 60  # three of the four prompts reused the head's K/V
    monkeypatch.setattr(engine, "MIN_SHARED", 10**9)  # no sharing: every prompt prefilled whole
    monkeypatch.setattr(engine, "ROOT_MIN", 10**9)
    whole = generate(lm, prompts, n=2, batch_size=8, **SAMPLING)
    assert whole.stats.prefix_reused_tokens == 0
    assert whole == shared


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen"])
def test_a_root_shared_by_every_prompt_is_held_once_and_changes_no_sample(fixture, request, monkeypatch):
    # 8-shot-like prompts: a long common head (the exemplars), then groups that share a question
    # (nested sharing after the root), prompts that share nothing more, and uneven lengths
    lm = request.getfixturevalue(fixture)
    lm = dataclasses.replace(lm, model=copy.deepcopy(lm.model).double())
    monkeypatch.setenv("S2D_ENGINE", "fast")
    monkeypatch.setattr(engine, "ROOT_MIN", 32)
    monkeypatch.setattr(engine, "MIN_SHARED", 8)
    head = "Examples follow. " + " ".join(f"example{i}" for i in range(40))
    question = "Question: " + " ".join(f"q{i}" for i in range(12))
    prompts = [f"{head}\n{question} part {c}" for c in ("one", "two")] + [f"{head}\nQ: {t}" for t in ("a b c", "x")]
    rooted = generate(lm, prompts, n=3, batch_size=5, **SAMPLING)
    runs = rooted.stats.engine_runs
    assert runs and all(r.root_tokens >= 32 for r in runs)  # every run held the head once
    # the model's own forward, prompt by prompt, samples the same tokens: the root changed nothing
    monkeypatch.setenv("S2D_ENGINE", "hf")
    assert generate(lm, prompts, n=3, batch_size=5, **SAMPLING) == rooted
    # and the engine without the root (every prompt's K/V whole in its slot) agrees too
    monkeypatch.setenv("S2D_ENGINE", "fast")
    monkeypatch.setattr(engine, "ROOT_MIN", 10**9)
    flat = generate(lm, prompts, n=3, batch_size=5, **SAMPLING)
    assert all(r.root_tokens == 0 for r in flat.stats.engine_runs)
    assert flat == rooted


def test_budget_groups_count_the_root_once():
    jobs = [[7] * 100 + [i] * 10 for i in range(8)]  # 8 prompts of 110 tokens sharing 100
    # without the root: 8 x 110 + 8 x 20 = 1040 tokens; with it: 100 + 8 x 10 + 8 x 20 = 340
    assert len(local.token_budget_groups(jobs, 8, 20, 400)) > 1
    assert local.token_budget_groups(jobs, 8, 20, 400, root=100) == [list(range(8))]
