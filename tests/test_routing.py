"""The router on synthetic confidences (issue 22): a perfect confidence gives the oracle curve, a
constant one the straight line between the fixed points."""

import math
import random

import pytest

from reference import output_logprob, teacher_forced
from s2d_utils import routing


def _case(n=200, seed=0):
    rng = random.Random(seed)
    student = [rng.random() < 0.6 for _ in range(n)]
    system2 = [rng.random() < 0.8 for _ in range(n)]
    return student, system2, [4.0] * n, [rng.randint(80, 120) for _ in range(n)]


def test_a_perfect_confidence_gives_the_oracle():
    student, system2, st, s2t = _case()
    conf = [1.0 if c else 0.0 for c in student]
    points = routing.route_curve(conf, student, system2, st, s2t)
    oracle = sum(a or b for a, b in zip(student, system2)) / len(student)
    assert [p.threshold for p in points] == [float("inf"), 1.0, 0.0]
    assert points[1].accuracy == pytest.approx(oracle)
    assert points[1].accuracy >= max(points[0].accuracy, points[-1].accuracy)
    assert points[1].student_share == pytest.approx(sum(student) / len(student))


def test_a_constant_confidence_gives_only_the_two_fixed_points():
    student, system2, st, s2t = _case()
    points = routing.route_curve([0.5] * len(student), student, system2, st, s2t)
    assert len(points) == 2  # the straight line between them is random tie-breaking, in expectation
    assert points[0].accuracy == pytest.approx(sum(system2) / len(system2)) and points[0].student_share == 0
    assert points[0].tokens == pytest.approx(4 + sum(s2t) / len(s2t))
    assert points[1].accuracy == pytest.approx(sum(student) / len(student)) and points[1].tokens == 4


def test_choose_finds_the_cheapest_threshold_within_system2s_ci_and_says_when_routing_adds_nothing():
    student, system2, st, s2t = _case()
    conf = [0.9 if c else 0.1 for c in student]
    points = routing.route_curve(conf, student, system2, st, s2t)
    choice = routing.choose(points, system2, student, sum(s2t) / len(s2t))
    assert choice.point.threshold == 0.9 and choice.beats_fixed_points
    assert "routing answers" in choice.sentence and choice.p_vs_system2 is not None
    flat = routing.route_curve([0.5] * len(student), student, system2, st, s2t)
    choice = routing.choose(flat, system2, student, 4 + sum(s2t) / len(s2t))
    assert not choice.beats_fixed_points and "does not beat the better fixed point" in choice.sentence


def test_calibration_reports_the_error_and_the_bins_too_small_to_count():
    conf = [0.95] * 50 + [0.55] * 50 + [0.15] * 2
    correct = [True] * 45 + [False] * 5 + [True] * 20 + [False] * 30 + [False, False]
    cal = routing.calibration(conf, correct, n_bins=10, min_per_bin=5)
    assert cal.ece == pytest.approx((50 * abs(0.95 - 0.9) + 50 * abs(0.55 - 0.4)) / 100)
    assert cal.sparse == 1 and "left out" in cal.sentence
    assert routing.calibration([0.5, 0.6], [True, False], min_per_bin=5).ece is None


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match="system2_correct: 1 values for 2 inputs"):
        routing.route_curve([0.1, 0.2], [True, False], [True], [1, 1], [2, 2])


def _one_by_one(lm, trace):
    """The teacher-forced probability of a trace's last output, one prompt alone, no shared prefix."""
    from s2d_utils.backends import call_messages

    call = trace.calls[-1]
    return math.exp(output_logprob(lm, call_messages(call.prompt), call.output))


def test_answer_confidence_with_a_shared_prefix_equals_each_prompt_alone(tiny_qwen, tmp_path):
    """The batch runs the prompts' common prefix (the chat header) once and pads the rest; every
    input's confidence must still be what its prompt alone gives, whatever the batch it lands in."""
    from handmade import call, trace
    from s2d_utils.backends import answer_confidence

    prompts = ["Is the coin heads up?", "Name a capital city in Europe, please, in one word.", "2+2?",
               "Which element has the symbol Fe? Answer briefly."]
    outputs = ["Yes.", "Paris", "4", "Iron is the element."]
    traces = [[trace(str(i), o, call("answer", p, o))] for i, (p, o) in enumerate(zip(prompts, outputs))]
    got = answer_confidence(tiny_qwen, traces, batch_size=3, cache_dir=tmp_path)
    want = [_one_by_one(tiny_qwen, ts[0]) for ts in traces]
    # a random model's answers are improbable (~1e-15): compare log-probabilities
    assert [math.log(g) for g in got] == pytest.approx([math.log(w) for w in want], abs=1e-3)
    assert len({round(math.log(w), 1) for w in want}) == len(want)  # the check can tell inputs apart
    # cached: a second call computes nothing and returns the same numbers
    assert answer_confidence(tiny_qwen, traces, batch_size=2, cache_dir=tmp_path) == got


@pytest.mark.parametrize("path", ["engine", "fallback"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_generation_records_the_log_probability_a_forward_pass_gives(tiny_qwen, monkeypatch, path, temperature):
    """The log-probability the generation records from the logits it drew each token from equals the
    teacher-forced one over the same tokens (the stop token included when it stopped there), on the
    engine and on the fallback decoder (which keeps sampling rows that already stopped), greedy and
    sampled (the record is at temperature 1 either way)."""
    from s2d_utils.backends import local as generation

    lm = tiny_qwen
    tok = lm.tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ("Is the coin heads up?", "Name a capital city in Europe, please.", "2+2?")]
    if path == "fallback":
        monkeypatch.setattr(generation, "_decoder_for", lambda model: None)
    # a stop token the model does emit: the first sampled token of the second prompt's rows
    probe = {j: t for j, t, _, _ in generation._run_jobs(lm, prompts, [1, 2, 3], temperature, 0.95, 4, 8)}
    stop = probe[1][1] if len(probe[1]) > 1 else probe[1][0]
    monkeypatch.setattr(generation, "stop_token_ids", lambda lm: {stop})
    jobs = prompts * 4  # 12 rows: the fallback keeps a stopped row until 3 have stopped
    got = list(generation._run_jobs(lm, jobs, list(range(1, 13)), temperature, 0.95, 6, 12))
    assert sorted(j for j, *_ in got) == list(range(len(jobs)))
    assert any(reason == "stop" for _, _, reason, _ in got)
    assert any(reason == "length" for _, _, reason, _ in got)
    for j, toks, reason, logprob in got:
        want = teacher_forced(lm, jobs[j], toks + ([stop] if reason == "stop" else []))
        assert logprob == pytest.approx(want, abs=1e-4), (j, toks, reason)


def test_answer_confidence_takes_a_calls_own_log_probability_without_a_forward_pass(tiny_qwen, tmp_path, monkeypatch):
    """Generated answers carry their log-probability through the cache into the traces, and the
    confidence of such a call is its exp, with no model call; one without falls back to the forward."""
    from s2d_utils import system2
    from s2d_utils.cache import GenerationCache
    from s2d_utils.backends import answer_confidence, call_messages
    from s2d_utils.tasks import Example, last_letter
    from handmade import call, trace

    examples = [Example(str(i), q, "ab", {}) for i, q in enumerate(["Take the last letters of: Ada Bob", "Hi there"])]
    calls = []

    def generate(*a, **k):
        out = real_generate(*a, **k)
        calls.append(out.stats)
        return out

    real_generate = system2.generate
    with GenerationCache(tmp_path / "g.sqlite") as store, monkeypatch.context() as m:
        m.setattr(system2, "generate", generate)
        traces = system2.system1(tiny_qwen, examples, last_letter, max_new_tokens=5, cache=store, progress=False)
        again = system2.system1(tiny_qwen, examples, last_letter, max_new_tokens=5, cache=store, progress=False)
    assert [(s.requested, s.cached, s.computed) for s in calls] == [(2, 0, 2), (2, 2, 0)]  # the second: from the cache
    assert all(ts[0].calls[-1].logprob is not None for ts in traces)
    assert [ts[0].calls[-1].logprob for ts in again] == [ts[0].calls[-1].logprob for ts in traces]

    def no_forward(*a, **k):
        raise AssertionError("a forward pass for a call that carries its log-probability")

    with monkeypatch.context() as m:
        m.setattr(type(tiny_qwen.model), "__call__", no_forward)
        got = answer_confidence(tiny_qwen, traces, cache_dir=tmp_path / "conf")
    assert got == [math.exp(ts[0].calls[-1].logprob) for ts in traces]
    assert not list((tmp_path / "conf").glob("*.json"))  # nothing to cache
    # without it (a sample from an older cache, a server), the forward pass answers
    bare = [[trace(ts[0].input_id, "ab", call("answer", ts[0].calls[-1].prompt, "ab", 2))] for ts in traces]
    got = answer_confidence(tiny_qwen, bare, cache_dir=tmp_path / "conf")
    want = [output_logprob(tiny_qwen, call_messages(ts[0].calls[-1].prompt), "ab") for ts in bare]
    assert [math.log(g) for g in got] == pytest.approx(want, abs=1e-3)  # "ab" and the stop token, teacher-forced
