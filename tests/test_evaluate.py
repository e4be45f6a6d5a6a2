import pytest

from s2d_utils.evaluate import evaluate, mcnemar, wilson
from s2d_utils.system2 import Call, Trace
from s2d_utils.tasks import Example, coin_flip


def trace(ex_id, answer, tokens):
    calls = tuple(Call(f"c{i}", "p", "o", t, "stop") for i, t in enumerate(tokens))
    return [Trace(ex_id, 0, calls, answer)]


def test_wilson_interval_known_values():
    lo, hi = wilson(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)


def test_evaluate_counts_tokens_over_all_calls_and_parse_failures():
    exs = [Example("a", "q", "yes"), Example("b", "q", "no"), Example("c", "q", "yes"), Example("d", "q", "no")]
    traces = [trace("a", "yes", [10, 30]), trace("b", "yes", [5, 5]), trace("c", None, [40, 0]), trace("d", "no", [1, 1])]
    r = evaluate("RaR", exs, traces, coin_flip)
    assert (r.n, r.accuracy, r.tokens, r.parse_failures) == (4, 0.5, 23.0, 0.25)
    assert r.correct == (True, False, False, True)
    with pytest.raises(ValueError, match="trace for b paired with example a"):
        evaluate("x", exs[:1], traces[1:2], coin_flip)
    with pytest.raises(ValueError, match="no gold answer"):
        evaluate("x", [Example("a", "q", None)], traces[:1], coin_flip)


def test_mcnemar_exact():
    exs = [Example(str(i), "q", "yes") for i in range(12)]
    a = evaluate("a", exs, [trace(str(i), "yes", [1]) for i in range(12)], coin_flip)
    b = evaluate("b", exs, [trace(str(i), "yes" if i < 2 else "no", [1]) for i in range(12)], coin_flip)
    assert mcnemar(a, b) == pytest.approx(2 * 0.5 ** 10)  # 10 discordant pairs, all one way
    assert mcnemar(a, a) == 1.0
