"""Routing applies the summary's guard against constants (issue 41): a student that answers one thing
to every input is not "within System 2's CI" as a finding, however its accuracy falls."""

from s2d_utils import routing, summary
from s2d_utils.paper import CONSTANT
from test_cot_and_summary import _outcome_metrics


def _coin_flip(student_answers, student_correct, s2_correct, constant=None):
    from s2d_utils.system2 import rar

    b = summary.BLOCKS[1]
    n = len(student_correct)
    correct = {rar.SYSTEM1: [i % 3 == 0 for i in range(n)], rar.TWO_STEP: s2_correct,
               rar.DISTILL_SYSTEM2: student_correct, rar.DISTILL_NO_FILTER: [False] * n}
    answers = {rar.DISTILL_SYSTEM2: student_answers}
    if constant is not None:
        correct[CONSTANT] = constant
    m = _outcome_metrics(correct, answers, training={rar.DISTILL_SYSTEM2: {"pairs": 40}},
                         tokens={rar.SYSTEM1: 6, rar.TWO_STEP: 60, rar.DISTILL_SYSTEM2: 5})
    m["info"] = {"confidence": {rar.DISTILL_SYSTEM2: [0.5 + 0.4 * (i % 2) for i in range(n)]}}
    return b, m


def test_a_student_that_answers_yes_to_every_input_carries_no_routing_finding():
    # coin flip, 80 inputs: gold "yes" on 42; the student says "yes" to all 80 (52.5%), System 2 gets 46 right
    n = 80
    gold_yes = [i < 42 for i in range(n)]
    s2 = [i < 40 or 60 <= i < 66 for i in range(n)]
    b, m = _coin_flip(["yes"] * n, gold_yes, s2)
    (r,) = routing.analyse({b.notebook: m}, blocks=(b,))
    assert "within System 2's CI" not in r.choice.sentence, r.choice.sentence
    assert r.guard and "gives one answer ('yes') to 80 of 80" in r.guard
    assert r.choice.point is None and not r.choice.beats_fixed_points and "constant answer" in r.choice.sentence
    md = routing.routing_markdown([r], "smoke", "m")
    assert "within System 2's CI: routing adds nothing" not in md and "none: a constant answer" in md


def test_a_system2_at_the_constants_level_leaves_no_finding_and_a_genuine_one_keeps_it():
    n = 80
    gold_yes = [i < 42 for i in range(n)]
    varied = [("yes" if i % 2 else "no") for i in range(n)]
    s2 = [i < 40 or 60 <= i < 66 for i in range(n)]
    b, m = _coin_flip(varied, [i % 2 == 1 for i in range(n)], s2, constant=gold_yes)
    (r,) = routing.analyse({b.notebook: m}, blocks=(b,))
    assert r.guard and "does not beat the best constant answer" in r.guard and r.choice.point is None
    b, m = _coin_flip(varied, [i % 2 == 1 for i in range(n)], s2)
    (r,) = routing.analyse({b.notebook: m}, blocks=(b,))
    assert r.guard is None and r.choice.point is not None
