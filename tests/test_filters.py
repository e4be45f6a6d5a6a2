import pytest

from handmade import samples as traces
from s2d_utils import filters
from s2d_utils.tasks import Example, last_letter

EX = [Example(f"e{i}", f"q{i}", None) for i in range(5)]


def test_vote_majority_and_plurality():
    assert filters.vote(["ab"] * 5 + ["cd"] * 3, "majority") == ("ab", {"ab": 5, "cd": 3}, 2)
    # parse failures abstain: 4 of the 6 parsed votes is a majority; 4 of 8 parsed is not
    assert filters.vote(["ab"] * 4 + ["cd"] * 2 + [None] * 2, "majority")[0] == "ab"
    assert filters.vote(["ab"] * 4 + ["cd"] * 4, "majority")[0] is None
    assert filters.vote(["ab"] * 4 + ["cd"] * 2 + [None] * 2, "plurality")[0] == "ab"
    # a tie at the top drops the input under either rule
    assert filters.vote(["ab"] * 4 + ["cd"] * 4, "plurality") == (None, {"ab": 4, "cd": 4}, 0)
    assert filters.vote(["ab"] * 4 + ["cd"] * 4, "majority")[0] is None
    # parse failures never win and cast no vote
    assert filters.vote([None] * 8, "plurality") == (None, {}, 0)
    assert filters.vote(["ab"] * 3 + [None] * 5, "majority")[0] == "ab"
    assert filters.vote(["ab"] * 2 + ["cd"] * 2 + [None] * 4, "majority")[0] is None
    with pytest.raises(ValueError, match="rule='mode'"):
        filters.vote(["a"], "mode")


def test_self_consistency_keeps_winners_with_the_trace_they_came_from():
    answers = [["ab"] * 8, ["ab"] * 4 + ["cd"] * 4, [None] + ["x"] * 5 + [None] * 2, [None] * 8, ["q", "q", "r", "q"]]
    ts = [traces(e.id, a) for e, a in zip(EX, answers)]
    res = filters.self_consistency(EX, ts)
    assert [(k.example.id, k.answer) for k in res.kept] == [("e0", "ab"), ("e2", "x"), ("e4", "q")]
    assert [k.trace.sample for k in res.kept] == [0, 1, 0]  # the first sample with the winning answer
    assert [d.margin for d in res.decisions] == [8, 0, 5, 0, 2]
    assert [d.kept for d in res.decisions] == [True, False, True, False, True]
    assert res.yield_ == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="5 examples but 4"):
        filters.self_consistency(EX, ts[:4])
    with pytest.raises(ValueError, match="example e0: paired with traces of another input"):
        filters.self_consistency(EX[:1], [ts[1]])


def test_no_filter_takes_the_first_sample_and_random_sample_is_seeded():
    ts = [traces("e0", ["a", "b"]), traces("e1", [None, "b"]), traces("e2", ["c"])]
    res = filters.no_filter(EX[:3], ts)
    assert [(k.example.id, k.answer) for k in res.kept] == [("e0", "a"), ("e2", "c")]
    many = [traces(e.id, [f"{e.id}-{i}" for i in range(20)]) for e in EX]
    a, b = filters.random_sample(EX, many, seed=1), filters.random_sample(EX, many, seed=1)
    assert [k.answer for k in a.kept] == [k.answer for k in b.kept]
    assert len({d.detail["pick"] for d in a.decisions}) > 1  # not always the same index
    assert [k.answer for k in filters.random_sample(EX, many, seed=2).kept] != [k.answer for k in a.kept]


def test_perturbation_agreement_maps_the_swapped_verdict_back():
    swap = {"A": "B", "B": "A", "C": "C"}.get
    orig = [traces("e0", ["A"]), traces("e1", ["A"]), traces("e2", ["C"]), traces("e3", [None])]
    pert = [traces("e0", ["B"]), traces("e1", ["A"]), traces("e2", ["C"]), traces("e3", ["A"])]
    res = filters.perturbation_agreement(EX[:4], orig, pert, swap)
    assert [(k.example.id, k.answer) for k in res.kept] == [("e0", "A"), ("e2", "C")]
    assert res.decisions[1].detail == {"original": "A", "perturbed": "A", "perturbed_mapped_back": "B"}


def test_universal_self_consistency_picks_falls_back_and_counts():
    ts = [traces(e.id, [f"a{i}" for i in range(4)], [f"resp {e.id} {i}" for i in range(4)]) for e in EX[:4]]
    shown = []

    def select(prompts):
        shown.extend(prompts)
        return ["The most consistent response is Response 2", "no idea", "The most consistent response is Response 9",
                "The most consistent response is **Response 1**."][: len(prompts)]

    # the third input is too long at every size: picked at random without asking the model
    res = filters.universal_self_consistency(EX[:4], ts, select, fits=lambda p: "e2" not in p, sizes=(20, 10), seed=3)
    rules = [d.detail["rule"] for d in res.decisions]
    assert rules == ["usc", "random: unparsed", "random: too long", "random: unparsed"]
    assert res.decisions[0].answer == "a2"
    assert len(shown) == 3 and shown[0].startswith("I have generated the following responses to the question: q0")
    assert "Response 0: resp e0 0" in shown[0] and "Response 3: resp e0 3" in shown[0]
    assert 'Start your answer with "The most consistent response is Response X" (without quotes).' in shown[0]
    assert filters.parse_usc("The most consistent response is Response 3", 4) == 3
    assert filters.parse_usc("The most consistent response is Response 4", 4) is None


def test_usc_shows_ten_when_twenty_do_not_fit():
    ts = [traces("e0", [f"a{i}" for i in range(20)])]
    seen = []
    reply = "The most consistent response is Response 7"
    res = filters.universal_self_consistency(EX[:1], ts, lambda ps: seen.extend(ps) or [reply] * len(ps),
                                             fits=lambda p: p.count("Response ") <= 11)
    assert res.decisions[0].detail["shown"] == 10 and "Response 9:" in seen[0] and "Response 10:" not in seen[0]
    assert (res.decisions[0].detail["pick"], res.kept[0].answer) == (7, "a7")


def test_diagnostics_precision_uses_gold_only_for_reporting():
    labeled = [Example("e0", "q", "ab"), Example("e1", "q", "cd"), Example("e2", "q", "ef")]
    answers = [["ab", "ab", "zz"], ["zz", "zz", "cd"], ["ef", None, "x"]]
    ts = [traces(e.id, a) for e, a in zip(labeled, answers)]
    res = filters.self_consistency(labeled, ts)
    d = filters.diagnostics(res, labeled, ts, last_letter.score)
    assert d == {"inputs": 3, "kept": 2, "kept_with_gold": 2, "yield": 2 / 3, "precision": 0.5,
                 "unfiltered_accuracy": 4 / 9, "parse_failures": 1 / 9, "majority_agreement": 1.0,
                 "kept if majority": 2, "kept if plurality": 2, "abstained": 1 / 9, "targets": {"ab": 1, "zz": 1},
                 "top_target_share": 0.5}
    # e2's "ef" vs "x" is a tie at the top (the None abstains): dropped under both rules
    assert [dd.abstained for dd in res.decisions] == [0, 0, 1]
    with pytest.raises(ValueError, match="gold"):
        filters.diagnostics(res, [Example(e.id, "q", None) for e in labeled], ts, last_letter.score)
    # inputs without gold (judge pairs with no proxy label) count in yield, not in precision
    partial = [labeled[0], Example("e1", "q", None), labeled[2]]
    d = filters.diagnostics(res, partial, ts, last_letter.score)
    assert (d["kept"], d["kept_with_gold"], d["precision"], d["unfiltered_accuracy"]) == (2, 1, 1.0, 3 / 6)
