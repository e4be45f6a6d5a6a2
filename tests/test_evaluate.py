import pytest

from handmade import spent
from s2d_utils.evaluate import evaluate, majority_answer, swap_inconsistency
from s2d_utils.findings import mcnemar
from s2d_utils.stats import wilson
from s2d_utils.tasks import Example, coin_flip


def test_wilson_interval_known_values():
    lo, hi = wilson(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)


def test_evaluate_counts_tokens_over_all_calls_and_parse_failures():
    exs = [Example("a", "q", "yes"), Example("b", "q", "no"), Example("c", "q", "yes"), Example("d", "q", "no")]
    traces = [[spent("a", "yes", [10, 30])], [spent("b", "yes", [5, 5])], [spent("c", None, [40, 0])],
              [spent("d", "no", [1, 1])]]
    r = evaluate("RaR", exs, traces, coin_flip)
    assert (r.n, r.k, r.accuracy, r.tokens, r.parse_failures) == (4, 1, 0.5, 23.0, 0.25)
    assert r.correct == (True, False, False, True)
    with pytest.raises(ValueError, match="trace for b paired with example a"):
        evaluate("x", exs[:1], traces[1:2], coin_flip)
    with pytest.raises(ValueError, match="no gold answer"):
        evaluate("x", [Example("a", "q", None)], traces[:1], coin_flip)


def test_maj_at_k_votes_over_k_samples_and_sums_their_tokens():
    exs = [Example("a", "q", "yes"), Example("b", "q", "no")]
    traces = [[spent("a", "no", [10], 0), spent("a", "yes", [20], 1), spent("a", "yes", [30], 2), spent("a", "no", [1], 3)],
              [spent("b", None, [5], 0), spent("b", None, [5], 1), spent("b", "no", [5], 2), spent("b", "yes", [5], 3)]]
    k1 = evaluate("k1", exs, traces, coin_flip, k=1)
    k3 = evaluate("k3", exs, traces, coin_flip, k=3)
    assert (k1.accuracy, k1.tokens, k1.parse_failures) == (0.0, 7.5, 0.5)
    assert (k3.accuracy, k3.tokens, k3.parse_failures, k3.k) == (1.0, 37.5, 0.0, 3)  # parse failures do not vote
    assert majority_answer(["x", "y", "y", "x"]) == "x"  # a tie goes to the answer seen first
    assert majority_answer([None, None]) is None
    with pytest.raises(ValueError, match="maj@5 needs 5"):
        evaluate("k5", exs, traces, coin_flip, k=5)


def test_group_accuracy_goes_into_the_same_record():
    exs = [Example("a", "q", "yes", {"group": "biased"}), Example("b", "q", "no", {"group": "biased"}),
           Example("c", "q", "yes", {"group": "unbiased"})]
    r = evaluate("S1", exs, [[spent("a", "yes", [1])], [spent("b", "yes", [1])], [spent("c", "yes", [1])]], coin_flip)
    assert r.extra == {"accuracy[biased]": 0.5, "n[biased]": 2, "accuracy[unbiased]": 1.0, "n[unbiased]": 1}
    assert r.as_dict()["accuracy[biased]"] == 0.5


def test_swap_inconsistency_maps_the_swapped_verdict_back():
    back = {"A": "B", "B": "A", "C": "C"}.get
    # consistent, consistent tie, changed, unparsed on one side
    assert swap_inconsistency(["A", "C", "A", "A"], ["B", "C", "A", None], back) == 0.5
    with pytest.raises(ValueError, match="equal"):
        swap_inconsistency(["A"], [], back)


def test_mcnemar_is_the_claims_paired_test():
    exs = [Example(str(i), "q", "yes") for i in range(12)]
    a = evaluate("a", exs, [[spent(str(i), "yes", [1])] for i in range(12)], coin_flip)
    b = evaluate("b", exs, [[spent(str(i), "yes" if i < 2 else "no", [1])] for i in range(12)], coin_flip)
    # 10 discordant pairs, all one way: below 25 the exact McNemar test, 2 / 2**10 (the score test's
    # z = 10 / sqrt(10) would give 0.0015654, which the exact p exceeds): the test the verdicts share
    assert mcnemar(a, b) == pytest.approx(2 / 2 ** 10, rel=1e-9)
    assert mcnemar(a, a) == 1.0


def test_task_metrics_join_the_record_for_example_agreement_without_ties():
    from s2d_utils.evaluate import accuracy_without

    exs = [Example("a", "q", "A"), Example("b", "q", "C"), Example("c", "q", "B"), Example("d", "q", "A")]
    answers = ["A", "C", "A", None]

    class Judge:  # a verdict task: exact match
        score = staticmethod(lambda pred, gold: pred == gold)

    r = evaluate("judge", exs, [[spent(e.id, a, [4])] for e, a in zip(exs, answers)], Judge,
                 metrics={"agreement_without_ties": accuracy_without("C")})
    assert r.accuracy == 0.5 and r.extra["agreement_without_ties"] == 1 / 3
