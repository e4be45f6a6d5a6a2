import pytest

from s2d_utils import filters
from s2d_utils.tasks import Example, last_letter

EX = [Example(f"e{i}", f"q{i}", None) for i in range(5)]


def test_vote_majority_and_plurality():
    assert filters.vote(["ab"] * 5 + ["cd"] * 3, "majority") == ("ab", {"ab": 5, "cd": 3}, 2)
    # 4 of 8 is not more than half: no majority
    assert filters.vote(["ab"] * 4 + ["cd"] * 2 + [None] * 2, "majority")[0] is None
    assert filters.vote(["ab"] * 4 + ["cd"] * 2 + [None] * 2, "plurality")[0] == "ab"
    # a tie at the top drops the input under either rule
    assert filters.vote(["ab"] * 4 + ["cd"] * 4, "plurality") == (None, {"ab": 4, "cd": 4}, 0)
    assert filters.vote(["ab"] * 4 + ["cd"] * 4, "majority")[0] is None
    # parse failures never win, but count in N
    assert filters.vote([None] * 8, "plurality") == (None, {}, 0)
    assert filters.vote(["ab"] * 3 + [None] * 5, "majority")[0] is None
    with pytest.raises(ValueError, match="rule='mode'"):
        filters.vote(["a"], "mode")


def test_self_consistency_keeps_winners_with_diagnostics():
    answers = [["ab"] * 8, ["ab"] * 4 + ["cd"] * 4, ["x"] * 5 + [None] * 3, [None] * 8, ["q", "q", "r", "q"]]
    res = filters.self_consistency(EX, answers)
    assert [(e.id, a) for e, a in res.kept] == [("e0", "ab"), ("e2", "x"), ("e4", "q")]
    assert [d.margin for d in res.diagnostics] == [8, 0, 5, 0, 2]
    assert [d.kept for d in res.diagnostics] == [True, False, True, False, True]
    assert res.yield_ == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="5 examples but 4"):
        filters.self_consistency(EX, answers[:4])


def test_no_filter_takes_first_sample():
    res = filters.no_filter(EX[:3], [["a", "b"], [None, "b"], ["c"]])
    assert [(e.id, a) for e, a in res.kept] == [("e0", "a"), ("e2", "c")]


def test_diagnostics_precision_uses_gold_only_for_reporting():
    labeled = [Example("e0", "q", "ab"), Example("e1", "q", "cd"), Example("e2", "q", "ef")]
    answers = [["ab", "ab", "zz"], ["zz", "zz", "cd"], ["ef", None, "x"]]
    res = filters.self_consistency(labeled, answers)
    d = filters.diagnostics(res, labeled, answers, last_letter.score)
    assert d == {"inputs": 3, "kept": 2, "yield": 2 / 3, "precision": 0.5,
                 "unfiltered_accuracy": 4 / 9, "parse_failures": 1 / 9}
    with pytest.raises(ValueError, match="gold"):
        filters.diagnostics(res, EX[:3], answers, last_letter.score)
