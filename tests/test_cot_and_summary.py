"""CoT on GSM8k (Table 4): the reader, answer extraction, few-shot prompts, maj@k scoring; and the
summary's staleness checks and claim verdicts."""

import json

import pytest

from conftest import repo_data
from handmade import samples
from s2d_utils import paper, paths, stats, summary, tables
from s2d_utils.evaluate import SystemResult
from s2d_utils.paper import CONSTANT
from s2d_utils.system2 import cot
from s2d_utils.tasks import Example
from s2d_utils.tasks import gsm8k as task


@pytest.fixture(scope="module")
def folder():
    return repo_data("gsm8k")


def test_reader_takes_gold_after_the_marker_and_keeps_exemplars_out_of_the_inputs(folder):
    test, train = task.load("test", source=folder), task.load("train", source=folder)
    assert len(test) == 1319 and len(train) == 7473 - task.EXEMPLAR_POOL
    shots = task.exemplars(0, folder)
    assert len(shots) == 8 and not {e.input for e in shots} & {e.input for e in train + test}
    natalia = next(e for e in train + shots if e.input.startswith("Natalia sold clips"))
    assert natalia.gold == "72" and "<<" not in natalia.meta["solution"]
    assert task.load("test", n=5, seed=1, source=folder) != test[:5]  # seeded order


def test_reader_names_file_row_and_field(tmp_path):
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q?", "answer": "so 4\n#### 4"}) + "\n"
                                         + json.dumps({"question": "q2?", "answer": "no marker"}) + "\n")
    with pytest.raises(ValueError, match=r"test.jsonl row 1: field 'answer' does not end in '#### <number>'"):
        task.load("test", source=tmp_path)
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "", "answer": "#### 4"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: field 'question'"):
        task.load("test", source=tmp_path / "test.jsonl")


def test_the_default_is_the_repositorys_checked_copy(monkeypatch, folder):
    monkeypatch.delenv(task.DATA_ENV, raising=False)
    assert task.data_source(None) == paths.DATA / "gsm8k" == folder
    assert task.load("test", n=3) == task.load("test", n=3, source=folder)


@pytest.mark.parametrize("text,strict,flexible", [
    ("So she has 18 eggs. The answer is 18.", "18", "18"),
    ("The answer is $1,234.50", "1234.5", "1234.5"),
    ("#### 72", "72", "72"),
    ("He pays 3 x 4 = 12 dollars, so 12 dollars in all.", None, "12"),
    ("The answer is 5 apples. Wait, the answer is 6.", "6", "6"),
    ("I don't know.", None, None),
    ("It costs -3 degrees.", None, "-3"),
])
def test_extract_strict_and_flexible(text, strict, flexible):
    assert task.extract(text, "strict") == strict and task.extract(text, "flexible") == flexible


def test_score_compares_numbers():
    assert task.score("18.0", "18") and task.score("1,000", "1000") and not task.score("17", "18")
    assert not task.score(None, "18")


def test_few_shot_prompts_are_chat_turns_with_or_without_the_solution():
    shots = [Example("s", "2+2?", "4", {"solution": "Two and two make 4."})]
    q = Example("q", "3+3?", "6")
    plain, worked = cot.few_shot(q, shots, cot=False), cot.few_shot(q, shots, cot=True)
    assert plain[1] == {"role": "assistant", "content": "The answer is 4."}
    assert worked[1]["content"] == "Two and two make 4.\nThe answer is 4."
    assert plain[-1] == {"role": "user", "content": "3+3?"} and len(plain) == 3
    assert 'final answer on its own line as "The answer is N."' in cot.zero_shot(q)


def test_maj_at_k_sums_tokens_and_reports_both_parse_rates():
    test = [Example(f"q{i}", "q", "6") for i in range(2)]

    texts = [["so 5", "The answer is 6."] + ["The answer is 6."] * 8, ["The answer is 6."] + ["it is 7"] * 9]
    traces = [samples(e.id, [task.extract(t, "flexible") for t in ts], ts, name="cot", tokens=10)
              for e, ts in zip(test, texts)]
    r = cot.evaluate_k(cot.COT0, test, traces, task)
    assert r.accuracy == 0.5 and r.extra["accuracy@5"] == 0.5 and r.extra["accuracy@10"] == 0.5
    assert r.tokens == 10 and r.extra["tokens@5"] == 50 and r.extra["tokens@10"] == 100
    assert r.extra["strict_parse_failures"] == 0.5 and r.extra["flexible_parse_failures"] == 0.0
    df = tables.results_table([r], paper.paper_table("table4", "gsm8k"))
    assert {"maj@1 Acc % (ours)", "maj@1 Acc 95% CI", "maj@10 #Tokens (ours)", "maj@10 Acc % (paper)"} <= set(df.columns)


# --- summary --------------------------------------------------------------------------------------

def _metrics(rows, mcnemar, training, profile="smoke", model="smollm2-135m-instruct", fingerprint="f1"):
    return {"profile": profile, "model": model, "rows": rows, "mcnemar": mcnemar, "training": training,
            "manifest": {"model_fingerprint": fingerprint}}


def _r(acc, tok, **extra):
    return {"accuracy": acc, "tokens": tok, **extra}


def test_summary_names_the_missing_or_stale_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "METRICS", tmp_path)
    blocks = summary.BLOCKS[:2]
    with pytest.raises(FileNotFoundError, match="01_rar_last_letter: no metrics for profile 'smoke'"):
        summary.load_metrics("smoke", blocks=blocks)
    for b in blocks:
        (tmp_path / f"{b.notebook}.smoke.json").write_text(json.dumps(_metrics({}, {}, {})))
    assert set(summary.load_metrics("smoke", blocks=blocks)) == {b.notebook for b in blocks}
    (tmp_path / "02_rar_coin_flip.smoke.json").write_text(json.dumps(_metrics({}, {}, {}, fingerprint="f2")))
    with pytest.raises(ValueError, match="02_rar_coin_flip: stale metrics: the model fingerprint differs"):
        summary.load_metrics("smoke", blocks=blocks)
    (tmp_path / "02_rar_coin_flip.smoke.json").write_text(json.dumps(_metrics({}, {}, {}, model="other/model")))
    with pytest.raises(ValueError, match="02_rar_coin_flip: its metrics are stale"):
        summary.load_metrics("smoke", blocks=blocks)


def _vec(n_right: int, n: int = 100, offset: int = 0) -> list[bool]:
    """n outcomes, ``n_right`` of them right, starting at ``offset`` (wrapping)."""
    return [((i - offset) % n) < n_right for i in range(n)]


def _outcome_metrics(correct: dict, answers: dict | None = None, training=None, filters=None, tokens=None,
                     rules=("flexible",), groups=None):
    """Metrics as pipeline.finish records them: per-input outcomes under each parse rule."""
    first = next(iter(correct.values()))
    by_rule = {name: (v if isinstance(v, dict) else {rules[0]: v}) for name, v in correct.items()}
    n = len(next(iter(by_rule[next(iter(by_rule))].values())))
    answers = answers or {}
    rows_out = {name: {"correct": vs, "answers": {r: answers.get(name, [f"a{i}" for i in range(n)]) for r in rules}}
                for name, vs in by_rule.items()}
    tokens = tokens or {}
    rows = {name: _r(sum(next(iter(vs.values()))) / n, tokens.get(name, 10.0)) for name, vs in by_rule.items()}
    m = _metrics(rows, {}, training or {})
    m["filters"] = filters or {}
    m["outcomes"] = {"rules": list(rules), "rows": rows_out, "groups": groups or [None] * n}
    return m


def _verdicts(b, m):
    return {v["claim"]: v for v in summary.verdicts({b.notebook: m}, blocks=(b,))}


def test_verdicts_follow_the_numbers():
    from s2d_utils.system2 import rar

    b = summary.BLOCKS[1]  # coin flip
    correct = {rar.SYSTEM1: _vec(20), rar.TWO_STEP: _vec(60), rar.DISTILL_SYSTEM2: _vec(58), rar.DISTILL_NO_FILTER: _vec(30)}
    tokens = {rar.SYSTEM1: 10, rar.TWO_STEP: 100, rar.DISTILL_SYSTEM2: 5, rar.DISTILL_NO_FILTER: 5}
    trained = {rar.DISTILL_SYSTEM2: {"pairs": 40, "steps": 15}, rar.DISTILL_NO_FILTER: {"pairs": 60, "steps": 24}}
    filters = {rar.DISTILL_SYSTEM2: {"targets": {"yes": 20, "no": 20}}, rar.DISTILL_NO_FILTER: {"targets": {"yes": 30, "no": 30}}}
    got = _verdicts(b, _outcome_metrics(correct, training=trained, filters=filters, tokens=tokens))
    # near System 2 needs the gap to System 2 shown within 5 points (claims.NEAR_MARGIN): 58% vs 60% on
    # 100 inputs cannot show that (the paired CI of -2 points reaches below -5), so it is not shown
    assert {k: v["verdict"] for k, v in got.items()} == {summary.BEATS: "held", summary.NEAR: "not shown",
                                                         summary.FILTER: "held"}
    assert "+38.0 points" in got[summary.BEATS]["numbers"] and "McNemar p < 1e-4" in got[summary.BEATS]["numbers"]
    # the same rates on 2,000 inputs with the student right wherever System 2 is but on 2%: the gap is
    # shown within the margin, and near System 2 is held
    big = {rar.SYSTEM1: _vec(400, 2000), rar.TWO_STEP: _vec(1200, 2000), rar.DISTILL_SYSTEM2: _vec(1160, 2000),
           rar.DISTILL_NO_FILTER: _vec(600, 2000)}
    got = _verdicts(b, _outcome_metrics(big, training=trained, filters=filters, tokens=tokens))
    assert {k: v["verdict"] for k, v in got.items()} == {summary.BEATS: "held", summary.NEAR: "held", summary.FILTER: "held"}

    # the teacher is no better than System 1: no gain to keep, so "near System 2" is not testable; the
    # student is still tested against System 1 and the ablation directly
    weak = {**correct, rar.TWO_STEP: _vec(22)}
    got = _verdicts(b, _outcome_metrics(weak, training=trained, filters=filters, tokens=tokens))
    assert {k: v["verdict"] for k, v in got.items()} == {summary.BEATS: "held", summary.NEAR: "not testable",
                                                         summary.FILTER: "held"}
    assert "does not beat System 1 significantly" in got[summary.NEAR]["numbers"]

    # a student whose kept targets are all one answer, or that was never trained
    one = {**filters, rar.DISTILL_SYSTEM2: {"targets": {"yes": 40}}}
    got = _verdicts(b, _outcome_metrics(correct, training=trained, filters=one, tokens=tokens))
    assert got[summary.BEATS]["verdict"] == "not testable" and "same answer ('yes')" in got[summary.BEATS]["numbers"]
    # the reason keeps a system's name whole ("(2-step RaR)" is part of it), and only drops the numbers
    assert "Distill System 2 (2-step RaR)" in got[summary.BEATS]["reason"], got[summary.BEATS]["reason"]
    got = _verdicts(b, _outcome_metrics(correct, training={**trained, rar.DISTILL_SYSTEM2: None}, filters=filters,
                                        tokens=tokens))
    assert got[summary.BEATS]["verdict"] == "not testable"

    # a system that answers one thing to >= 90% of inputs (System 1 never parses) cannot carry a verdict
    answers = {rar.SYSTEM1: [None] * 100}
    got = _verdicts(b, _outcome_metrics(correct, answers, training=trained, filters=filters, tokens=tokens))
    assert got[summary.BEATS]["verdict"] == "not testable"
    assert "System 1 gives one answer (no parsed answer) to 100 of 100" in got[summary.BEATS]["numbers"]

    # a student at the best constant answer's level: beating System 1 is not enough
    with_const = {**correct, CONSTANT: _vec(57, offset=1)}
    got = _verdicts(b, _outcome_metrics(with_const, training=trained, filters=filters, tokens=tokens))
    assert got[summary.BEATS]["verdict"] == "not shown"  # above System 1, not above the constant
    assert "does not beat the best constant answer" in got[summary.BEATS]["numbers"]
    assert got[summary.NEAR]["verdict"] == "not testable"  # System 2 (60%) does not beat the constant (57%) either


def test_verdicts_say_not_shown_depends_and_not_held():
    from s2d_utils.system2 import rar

    b = summary.BLOCKS[1]
    trained = {rar.DISTILL_SYSTEM2: {"pairs": 40}, rar.DISTILL_NO_FILTER: {"pairs": 60}}
    tokens = {rar.SYSTEM1: 10, rar.TWO_STEP: 100, rar.DISTILL_SYSTEM2: 5, rar.DISTILL_NO_FILTER: 5}
    # underpowered: 12 inputs, the filter ablation differs by one answer
    small = {rar.SYSTEM1: _vec(0, 12), rar.TWO_STEP: _vec(10, 12), rar.DISTILL_SYSTEM2: _vec(6, 12),
             rar.DISTILL_NO_FILTER: _vec(5, 12)}
    got = _verdicts(b, _outcome_metrics(small, training=trained, tokens=tokens))
    assert got[summary.FILTER]["verdict"] == "not shown"
    assert "n = 12 detects a difference of" in got[summary.FILTER]["numbers"]
    # equivalence within the margin contradicts "the filter matters"
    same = {rar.SYSTEM1: _vec(20, 400), rar.TWO_STEP: _vec(60, 400), rar.DISTILL_SYSTEM2: _vec(200, 400),
            rar.DISTILL_NO_FILTER: _vec(200, 400)}
    got = _verdicts(b, _outcome_metrics(same, training=trained, tokens=tokens))
    assert got[summary.FILTER]["verdict"] == "not held"
    # "near System 2" needs the CI above -10 points and at most half the tokens
    assert got[summary.NEAR]["verdict"] == "held"
    got = _verdicts(b, _outcome_metrics(same, training=trained, tokens={**tokens, rar.DISTILL_SYSTEM2: 80}))
    assert got[summary.NEAR]["verdict"] == "not held" and "more than 50%" in got[summary.NEAR]["numbers"]
    # two parse rules that disagree
    two = {rar.SYSTEM1: {"flexible": _vec(0), "lenient": _vec(57)}, rar.TWO_STEP: {"flexible": _vec(20), "lenient": _vec(64, offset=30)},
           rar.DISTILL_SYSTEM2: {"flexible": _vec(43), "lenient": _vec(43)},
           rar.DISTILL_NO_FILTER: {"flexible": _vec(43), "lenient": _vec(43)}}
    got = _verdicts(b, _outcome_metrics(two, training=trained, tokens=tokens, rules=("flexible", "lenient")))
    assert got[summary.BEATS]["verdict"].startswith("depends on the parse rule")
    assert "held (flexible)" in got[summary.BEATS]["verdict"] and "not held (lenient)" in got[summary.BEATS]["verdict"]


def test_verdicts_per_group():
    from s2d_utils.system2 import s2a

    b = summary.BLOCKS[2]
    groups = ["biased"] * 150 + ["unbiased"] * 50
    vec = lambda biased, unbiased: _vec(biased, 150) + _vec(unbiased, 50)  # noqa: E731
    correct = {s2a.SYSTEM1: vec(20, 35), s2a.S2A: vec(60, 35), s2a.DISTILL: vec(62, 20), s2a.DISTILL_NO_USC: vec(55, 30)}
    trained = {s2a.DISTILL: {"pairs": 24}, s2a.DISTILL_NO_USC: {"pairs": 24}}
    rows = summary.verdicts({b.notebook: _outcome_metrics(correct, training=trained, groups=groups,
                                                          tokens={s2a.S2A: 30, s2a.SYSTEM1: 10, s2a.DISTILL: 10})},
                            blocks=(b,))
    got = {(v["method"], v["claim"]): v["verdict"] for v in rows}
    assert got[("S2A, sycophancy (biased inputs)", summary.BEATS)] == "held"
    # S2A does not beat System 1 there, so "near" is not testable; the student, significantly below
    # System 1, contradicts "beats System 1" (no longer hidden behind the teacher's gate)
    assert got[("S2A, sycophancy (unbiased inputs)", summary.NEAR)] == "not testable"
    assert got[("S2A, sycophancy (unbiased inputs)", summary.BEATS)] == "not held"


def test_cot_verdict_is_about_not_distilling():
    b = summary.BLOCKS[4]
    trained = {cot.DISTILL: {"pairs": 10}}
    n = 400
    correct = {cot.SYSTEM1: _vec(40, n), cot.COT0: _vec(200, n), cot.COT8: _vec(160, n), cot.DISTILL: _vec(40, n, offset=5)}
    (v,) = summary.verdicts({b.notebook: _outcome_metrics(correct, training=trained)}, blocks=(b,))
    assert (v["claim"], v["verdict"]) == ("CoT on GSM8k does not distill", "held")
    small = {k: _vec(sum(x) // 4, 100, offset=(5 if k == cot.DISTILL else 0)) for k, x in correct.items()}
    (v,) = summary.verdicts({b.notebook: _outcome_metrics(small, training=trained)}, blocks=(b,))
    assert v["verdict"] == "not shown"  # at n = 100 the student's interval against System 1 is wider than 5 points
    correct[cot.DISTILL] = _vec(120, n)  # 10% -> 30%, still below CoT: something distilled, contradicted
    (v,) = summary.verdicts({b.notebook: _outcome_metrics(correct, training=trained)}, blocks=(b,))
    assert v["verdict"] == "not held" and "something distilled" in v["numbers"]
    correct[cot.DISTILL] = _vec(196, n, offset=1)  # the student keeps CoT's accuracy: contradicted
    (v,) = summary.verdicts({b.notebook: _outcome_metrics(correct, training=trained)}, blocks=(b,))
    assert v["verdict"] == "not held"
    correct[cot.COT0] = _vec(42, n)
    (v,) = summary.verdicts({b.notebook: _outcome_metrics(correct, training=trained)}, blocks=(b,))
    assert v["verdict"] == "not testable"


# --- every student over seeds ---------------------------------------------------------------------

def _with_seeds(m: dict, name: str, per_seed: list[list[bool]], seeds=(0, 1, 2)) -> dict:
    """``m`` with ``name`` a multi-seed student: outcomes per seed (the first its own), the row the mean."""
    rule = m["outcomes"]["rules"][0]
    entry = m["outcomes"]["rows"][name]
    entry["correct"] = {rule: per_seed[0]}
    entry["seeds"] = [{"correct": {rule: v}, "answers": entry["answers"]} for v in per_seed]
    accs = [sum(v) / len(v) for v in per_seed]
    m["rows"][name].update(accuracy=sum(accs) / len(accs), seed_accuracy=accs, seeds=list(seeds))
    return m


def test_verdicts_are_per_seed_and_say_when_they_flip():
    from s2d_utils.system2 import rar

    b = summary.BLOCKS[1]  # coin flip
    correct = {rar.SYSTEM1: _vec(20), rar.TWO_STEP: _vec(60), rar.DISTILL_SYSTEM2: _vec(58), rar.DISTILL_NO_FILTER: _vec(30)}
    tokens = {rar.SYSTEM1: 10, rar.TWO_STEP: 100, rar.DISTILL_SYSTEM2: 5, rar.DISTILL_NO_FILTER: 5}
    trained = {rar.DISTILL_SYSTEM2: {"pairs": 40, "steps": 15}, rar.DISTILL_NO_FILTER: {"pairs": 60, "steps": 24}}
    filters = {rar.DISTILL_SYSTEM2: {"targets": {"yes": 20, "no": 20}}, rar.DISTILL_NO_FILTER: {"targets": {"yes": 30, "no": 30}}}

    def run(student_seeds):
        m = _outcome_metrics(correct, training=trained, filters=filters, tokens=tokens)
        _with_seeds(m, rar.DISTILL_SYSTEM2, student_seeds)
        _with_seeds(m, rar.DISTILL_NO_FILTER, [_vec(30)] * len(student_seeds))
        return _verdicts(b, m)

    # every seed a genuine distillation: the pooled test over seeds decides, and each seed agrees
    got = run([_vec(58), _vec(56), _vec(60)])
    assert got[summary.BEATS]["verdict"] == "held"
    assert got[summary.BEATS]["verdict_per_seed"] == "held on 3 of 3 seeds"
    assert "+38.0 points" in got[summary.BEATS]["numbers"]  # the means over seeds: 58% vs 20%
    assert "[seed 0] " in got[summary.BEATS]["evidence_per_seed"] and "[seed 2] " in got[summary.BEATS]["evidence_per_seed"]

    # one seed learned nothing (System 1's outcomes): pooled, the student's mean is still clearly above
    # System 1 (held); the per-seed count says where it was not
    got = run([_vec(58), _vec(20), _vec(60)])
    assert got[summary.BEATS]["verdict"] == "held"
    assert got[summary.BEATS]["verdict_per_seed"].startswith("held on 2 of 3 seeds")
    # every seed at System 1's level: nothing to pool, not shown on each
    got = run([_vec(20), _vec(20), _vec(20)])
    assert got[summary.BEATS]["verdict"] == "not shown"
    assert got[summary.BEATS]["verdict_per_seed"].startswith("not shown on 3 of 3") or \
        "held on 0 of 3" in got[summary.BEATS]["verdict_per_seed"]


def test_a_multi_seed_students_row_is_the_mean_and_its_tests_are_per_seed():
    from types import SimpleNamespace

    from s2d_utils import findings
    from s2d_utils.evaluate import over_seeds

    def row(name, vec, tokens=6.0, **extra):
        lo, hi = stats.wilson(sum(vec), len(vec))
        return SystemResult(name, len(vec), sum(vec) / len(vec), lo, hi, tokens, 0.0, tuple(vec), 1, dict(extra))

    seeds = [row("Distill System 1", _vec(58), 6.0, **{"accuracy[x]": 0.5, "n[x]": 10}),
             row("Distill System 1", _vec(20), 8.0, **{"accuracy[x]": 0.7, "n[x]": 10}),
             row("Distill System 1", _vec(60), 7.0, **{"accuracy[x]": 0.6, "n[x]": 10})]
    mean = over_seeds(seeds, [0, 1, 2])
    assert mean.accuracy == pytest.approx((0.58 + 0.20 + 0.60) / 3) and mean.tokens == pytest.approx(7.0)
    assert mean.extra["seed_accuracy"] == [0.58, 0.20, 0.60] and mean.extra["seeds"] == [0, 1, 2]
    assert mean.extra["accuracy[x]"] == pytest.approx(0.6) and mean.extra["n[x]"] == 10
    # the mean's interval is Wilson's for 46 of 100: 36.56% to 55.74% (scipy's binomtest(46, 100)
    # .proportion_ci(method="wilson") gives 0.365608, 0.557351; by hand: centre (0.46 + 1.96^2/200) /
    # (1 + 1.96^2/100) = 0.46148, half-width 1.96 * sqrt(0.46 * 0.54 / 100 + 1.96^2 / 40000) / 1.0384 = 0.09587)
    assert (mean.ci_low, mean.ci_high) == pytest.approx((0.365608, 0.557351), abs=1e-6)
    assert mean.correct == seeds[0].correct  # the first seed's, for the per-seed tests
    assert over_seeds(seeds[:1], [0]) is seeds[0]
    with pytest.raises(ValueError, match="different numbers of inputs"):
        over_seeds([seeds[0], row("Distill System 1", _vec(5, 10))], [0, 1])

    s1 = row("System 1", _vec(20))
    exp = SimpleNamespace(rows=[mean, s1], seed_rows={"Distill System 1": seeds}, student_seeds=[0, 1, 2],
                          row=lambda name: {"Distill System 1": mean, "System 1": s1}[name])
    text = findings.compare(exp, "Distill System 1", "System 1")
    assert "Distill System 1 is higher in 2 and lower in 0 of 3 seeds" in text and "seed 1: 20.0% vs 20.0%" in text
    assert findings.mcnemar_tests(exp, [("Distill System 1", "System 1")])["Distill System 1 vs System 1"][1] == 1.0
    df = tables.results_table([mean, s1], paper.paper_table("table1", "coin_flip"))
    spread = dict(zip(df["Method"], df["Acc over seeds"]))
    assert spread["Distill System 1"] == "sd 22.5: 58.0 / 20.0 / 60.0" and spread["System 1"] != spread["System 1"]  # NaN
