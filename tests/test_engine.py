"""The shared-prefix decode engine: its attention algebra and its bookkeeping."""

import copy
import dataclasses

import pytest
import torch

from s2d_utils import engine
from s2d_utils.generation import generate

PROMPTS = ["Take the last letters of the words in \"apple banana\" and concatenate them.",
           "A coin is heads up. Ann flips the coin. Is the coin still heads up?", "hi"]
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
    parts = [engine._partial_attention(q, k[:, :, s], v[:, :, s], bias[..., s], 0.3)
             for s in (slice(0, 7), slice(7, 11))]
    torch.testing.assert_close(engine._merge(*parts), whole, rtol=1e-5, atol=1e-6)


def test_layout_groups_rows_by_prefix_and_falls_back_when_too_uneven(monkeypatch, tiny_lm):
    dec = engine.Decoder(tiny_lm.model)
    dec.allocate(slots=6, prefixes=3, prefix_capacity=4, own_capacity=4)
    lay = dec.layout([2, 0, -1, 2, 2, 0])
    assert (lay.prefixes, lay.per_prefix, lay.gather) == (3, 3, None)
    grid = lay.members.reshape(-1)
    for row, p in enumerate([2, 0, -1, 2, 2, 0]):
        if p >= 0:  # each live row sits in its prefix's part of the grid, exactly once
            assert grid[lay.entry[row]] == row and lay.entry[row] // lay.per_prefix == p
    monkeypatch.setattr(engine, "MAX_PADDING", 1)
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
    stats = engine.LAST_RUN
    assert stats.decode_steps > 0 and stats.gathered_steps == 0
    assert len(PROMPTS) <= stats.prefilled_prompts < 3 * len(PROMPTS)
    # the same samples when every row copies its prefix (the fallback) and with one row per prompt
    monkeypatch.setattr(engine, "MAX_PADDING", 0)
    assert generate(tiny_lm, PROMPTS, n=6, batch_size=4, **SAMPLING) == out
    assert engine.LAST_RUN.gathered_steps == engine.LAST_RUN.decode_steps > 0
    monkeypatch.setattr(engine, "MAX_PADDING", 4)
    assert generate(tiny_lm, PROMPTS, n=6, batch_size=1, **SAMPLING) == out


def test_buffers_are_released_after_a_run_even_if_it_is_abandoned(tiny_lm, monkeypatch):
    monkeypatch.setenv("S2D_ENGINE", "fast")
    from s2d_utils import generation

    dec = generation._decoder_for(tiny_lm.model)
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

    from s2d_utils import generation

    monkeypatch.setenv("S2D_ENGINE", "fast")
    student = dataclasses.replace(tiny_lm, model=copy.deepcopy(tiny_lm.model))
    generate(student, PROMPTS[:1], max_new_tokens=3, cache=None, progress=False)
    assert student.model in generation._DECODERS
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
