"""The pieces verdicts rest on: reading cut completions, re-reading cached traces, training
budgets, paired intervals and power, the best constant answer."""

import pytest

from handmade import call, trace
from s2d_utils import distill, records
from s2d_utils.paper import CONSTANT
from s2d_utils.stats import detectable, discordant, mcnemar_p, score_interval
from s2d_utils.system2 import cut_share, parse, rescore
from s2d_utils.tasks import Example, coin_flip, gsm8k


def test_a_cut_completion_counts_only_in_the_strict_form():
    half = "Harry has 3 apples and buys 4. Harry's"
    assert parse(gsm8k, half, "stop", None) == "4"  # a finished text: the flexible rule's last number
    assert parse(gsm8k, half, "length", None) is None  # cut: the last number is not an answer
    assert parse(gsm8k, half + " ... The answer is 7.", "length", None) == "7"  # stated before the cap
    assert parse(gsm8k, half, "length", None, mode="strict") is None


def test_rescore_rereads_cached_traces_without_regenerating():
    ex = [Example("e0", "q", "yes"), Example("e1", "q", "no")]
    # answers parsed by an older rule ("stale"): rescore reads the outputs again
    traces = [[trace("e0", "stale", call("cot", "p", "No, the coin is still heads up.", 5))],
              [trace("e1", "stale", call("cot", "p", "Yes. The coin is tails up", 5, "length"))]]
    table = rescore(traces, ex, coin_flip)
    assert [ts[0].answer for ts in table] == [None, None]  # a contradiction; a cut text that contradicts too
    lenient = rescore(traces, ex, coin_flip, reader=lambda c, e: coin_flip.lenient_extract(c.output, e))
    assert [ts[0].answer for ts in lenient] == ["no", "yes"]
    assert [ts[0].calls for ts in lenient] == [ts[0].calls for ts in traces]  # the same cached calls
    assert cut_share(traces) == 0.5


def test_training_budget_in_optimizer_steps():
    s = distill.LoraSettings(epochs=3, batch_size=8, min_steps=12)
    assert distill.training_steps(6, s) == 12  # 6 pairs x 3 epochs would be 3 steps: the floor
    assert distill.training_steps(64, s) == 24  # 3 epochs of 8 batches
    assert distill.training_steps(64, distill.LoraSettings(steps=100, min_steps=12)) == 100  # the paper's count
    assert distill.training_steps(64, distill.LoraSettings(min_steps=12, max_steps=2)) == 2  # smoke cap


def test_paired_interval_and_power():
    a, b = [True] * 43 + [False] * 57, [False] * 100
    low, high = score_interval(*discordant(a, b), 100)
    assert 0.3 < low < 0.43 < high < 0.55
    assert mcnemar_p(a, b) < 1e-4 and mcnemar_p(a, a) == 1.0
    low, high = score_interval(*discordant([True, False] * 6, [False, True] * 6), 12)
    assert low < -0.3 and high > 0.3  # 12 inputs that disagree everywhere: wide
    # the detectable difference shrinks with n and grows with disagreement
    assert detectable(400, 0.3) < detectable(100, 0.3) < detectable(30, 0.3)
    assert detectable(100, 0.1) < detectable(100, 0.5)
    assert detectable(100, 0.3) == pytest.approx(_detectable_by_enumeration(100, 0.3), abs=0.002)
    assert _detectable_by_enumeration(100, 0.3) == pytest.approx(0.1475, abs=1e-4)


def _detectable_by_enumeration(n: int, discordance: float) -> float:
    """The difference the score test finds with 80% power, written out independently of the package:
    m disagreements ~ Binomial(n, max(discordance, d)), of which b ~ Binomial(m, (1 + d / share) / 2) go
    to the better system; at d0 = 0 the score statistic is (b - c) / sqrt(b + c), rejected beyond 1.96.
    Every (m, b) is summed (exact power), and d found by root-finding (scipy's brentq)."""
    import math

    from scipy.optimize import brentq
    from scipy.stats import binom, norm

    z = norm.isf(0.025)

    def power(d):
        share = max(discordance, d)
        q = (1 + d / share) / 2
        return sum(binom.pmf(m, n, share) * binom.pmf(b, m, q)
                   for m in range(1, n + 1) for b in range(m + 1) if abs(2 * b - m) / math.sqrt(m) > z)

    return brentq(lambda d: power(d) - 0.8, 1e-6, 1.0)


def test_best_constant_answer_row():
    test = [Example(f"e{i}", "q", "yes" if i < 57 else "no", {"group": "g"}) for i in range(100)]
    row = records.constant_row(coin_flip, test)
    assert (row.name, row.extra["answer"], row.accuracy, row.tokens) == (CONSTANT, "yes", 0.57, 0.0)
    assert sum(row.correct) == 57 and row.extra["accuracy[g]"] == 0.57


def test_test_traces_are_saved_for_reading(tmp_path, monkeypatch):
    import json

    from s2d_utils import paths

    monkeypatch.setattr(paths, "TRACES", tmp_path)

    test = [Example("e0", "q0", "yes", {"group": "biased"}), Example("e1", "q1", "no")]
    traces = {"System 1": [[trace("e0", "yes", call("cot", "p", "Yes.", 5))],
                           [trace("e1", None, call("cot", "p", "Maybe", 5, "length"))]]}
    path = records.save_test_traces("nb", "smoke", traces, test)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["row"], r["id"], r["group"], r["gold"], r["answer"]) for r in rows] == [
        ("System 1", "e0", "biased", "yes", "yes"), ("System 1", "e1", None, "no", None)]
    assert rows[1]["calls"] == [{"name": "cot", "output": "Maybe", "tokens": 5, "finish": "length"}]
