"""The registry is the one list of the notebooks: every notebook file is in it, every record's rows
exist in the paper's table, and what `pipeline.finish` writes under a record's names is what the
summary and the routing analysis read back (no hand-built metrics in between)."""

import ast
import json
import math
import re
from types import SimpleNamespace

import pytest

from handmade import greedy, samples
from s2d_utils import filters, lora, paths, pipeline, profiles, records, registry, routing, summary
from s2d_utils.evaluate import evaluate
from s2d_utils.paper import CONSTANT, paper_table
from s2d_utils.system2 import rar
from s2d_utils.tasks import Example, coin_flip


def test_every_notebook_file_is_in_the_registry_and_nothing_else():
    files = sorted(p.stem for p in paths.NOTEBOOKS.glob("*.ipynb"))
    assert files == sorted(registry.ALL)


@pytest.mark.parametrize("nb", registry.NOTEBOOKS, ids=lambda nb: nb.notebook)
def test_each_record_names_rows_the_paper_has_and_its_notebook_uses_it(nb):
    paper = paper_table(*nb.paper)
    assert set(nb.rows) == set(paper.rows)  # every row of ours sits beside the paper's
    roles = [nb.system1, nb.system2, nb.distilled] + ([nb.ablation] if nb.ablation else [])
    assert set(roles) <= set(nb.rows) and nb.distilled in nb.students and set(nb.students) <= set(nb.rows)
    assert {x for pair in nb.mcnemar for x in pair} <= set(nb.rows)
    assert nb.claims and (registry.FILTER in nb.claims) == (nb.ablation is not None)  # an ablation to test it on
    profiles.sizes(nb.method, nb.task, "smoke")  # the method and task name sizes that exist
    source = (paths.NOTEBOOKS / f"{nb.notebook}.ipynb").read_text()
    assert f'pipeline.start(\\"{nb.notebook}\\", \\"{nb.method}\\"' in source
    assert "pipeline.finish(exp, " in source and "table=" not in source  # names come from the record alone


def _code_strings(path) -> set[str]:
    """The string constants of a module's code (docstrings left out: examples there are prose)."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs}


def test_no_module_but_the_registry_lists_the_notebooks():
    names = [nb.notebook for nb in registry.NOTEBOOKS] + [nb.table for nb in registry.NOTEBOOKS]
    for path in sorted((paths.ROOT / "s2d_utils").rglob("*.py")):
        if path.name == "registry.py":
            continue
        strings = _code_strings(path)
        assert not [n for n in names if any(n in s for s in strings)], f"{path.name} names a notebook: read the registry"
    assert not re.search(r'notebook\.startswith\("0\d', (paths.ROOT / "s2d_utils" / "summary.py").read_text())


# --- finish writes what summary and routing read -----------------------------------------------------

N = 40
TEST = [Example(f"t{i}", f"q{i}", "yes" if i % 2 else "no") for i in range(N)]


def _experiment(tmp_path, monkeypatch):
    for attr, sub in (("FIGURES", "figures"), ("METRICS", "metrics"), ("TRACES", "traces")):
        monkeypatch.setattr(paths, attr, tmp_path / sub)
    nb = registry.notebook("02_rar_coin_flip")
    lm = SimpleNamespace(name="smollm2-135m-instruct", device="cpu", dtype="float32", fingerprint="fp")
    manifest = records.Manifest(nb.notebook, {"PROFILE": "smoke"}, "fp")
    exp = pipeline.Experiment(nb.notebook, "rar", coin_flip, "smoke", 0, profiles.rar_sizes("coin_flip", "smoke"), lm,
                              manifest)
    exp.test = list(TEST)
    gold = [e.gold for e in TEST]
    flip = {"yes": "no", "no": "yes"}
    systems = {rar.SYSTEM1: [g if i < 16 else flip[g] for i, g in enumerate(gold)],  # 16 of 40 right
               rar.ONE_STEP: ["yes"] * N, rar.TWO_STEP: [g if i < 36 else flip[g] for i, g in enumerate(gold)]}
    students = {rar.DISTILL_SYSTEM1: systems[rar.SYSTEM1], rar.DISTILL_SYSTEM2: [g if i < 34 else flip[g] for i, g in
                                                                                  enumerate(gold)],
                rar.DISTILL_NO_FILTER: [g if i < 20 else flip[g] for i, g in enumerate(gold)]}
    for name, answers in {**systems, **students}.items():
        exp.traces[name] = greedy(TEST, answers, tokens=5, logprob=-0.1 if name in students else None)
        exp.rows.append(evaluate(name, TEST, exp.traces[name], coin_flip))
    exp.filters = {name: {"inputs": 20, "kept": 12, "targets": {"yes": 6, "no": 6}} for name in students}
    exp.trained = {name: lora.TrainResult("adapter", 12, 12, 100, 1.0, (0.5,), False, 4, 0,
                                          {"r": 16, "learning_rate": 2e-4, "dropout": 0.1})
                   for name in students}
    exp.info["confidence"] = {name: [0.9 if a == g else 0.3 for a, g in zip(answers, gold)]
                              for name, answers in students.items()}
    return exp


def test_finish_writes_the_records_names_and_the_summary_and_routing_read_them(tmp_path, monkeypatch):
    exp = _experiment(tmp_path, monkeypatch)
    out = pipeline.finish(exp, findings=["a finding"])
    nb = exp.record
    assert out["table_path"] == tmp_path / "figures" / f"{nb.table}.smoke.md"
    assert out["figure_path"] == tmp_path / "figures" / f"{nb.figure}.smoke.png"
    md = out["table_path"].read_text()
    assert md.startswith(f"# {nb.title}\n") and "- a finding" in md and CONSTANT in md
    m = json.loads(out["metrics_path"].read_text())
    assert out["metrics_path"] == records.metrics_path(nb.notebook, "smoke")
    assert list(m["rows"]) == [*nb.rows, CONSTANT]
    assert set(m["mcnemar"]) == {f"{a} vs {b}" for a, b in nb.mcnemar}
    out_rows = m["outcomes"]["rows"]
    assert sum(out_rows[rar.TWO_STEP]["correct"]["flexible"]) == 36 and out_rows[CONSTANT]["answers"]["flexible"] == ["yes"] * N  # a tie: the first answer
    assert (tmp_path / "traces" / f"{nb.notebook}.smoke.jsonl").read_text().count("\n") == len(exp.traces) * N
    # the summary reads exactly this file: 2-step RaR 90% vs System 1 40%, the student 85%
    loaded = records.load_metrics([nb.notebook], "smoke", "smollm2-135m-instruct")
    got = {v["claim"]: v for v in summary.verdicts(loaded, blocks=(nb,))}
    assert got[registry.BEATS]["verdict"] == "held" and "+45.0 points" in got[registry.BEATS]["numbers"]
    assert got[registry.FILTER]["verdict"] == "held"  # 85% vs 50% unfiltered
    (r,) = routing.analyse(loaded, blocks=(nb,))
    assert r.problem is None and r.n == N and r.points[0].student_share == 0 and r.points[-1].student_share == 1
    # confidence 0.9 exactly where the student is right: the first threshold keeps its 34 right answers and
    # sends the 6 others to System 2, which gets 2 of them (inputs 34 and 35): 36 of 40
    assert r.points[1].student_share == pytest.approx(34 / 40) and r.points[1].accuracy == pytest.approx(36 / 40)


def test_routing_says_why_a_method_has_no_curve(tmp_path, monkeypatch):
    exp = _experiment(tmp_path, monkeypatch)
    nb = exp.record
    m = json.loads(pipeline.finish(exp)["metrics_path"].read_text())
    assert routing.analyse({}, blocks=(nb,))[0].problem == f"{nb.notebook}: no metrics"
    no_conf = {**m, "info": {}}
    assert "no student confidences" in routing.analyse({nb.notebook: no_conf}, blocks=(nb,))[0].problem
    untrained = {**m, "training": {**m["training"], nb.distilled: None}}
    assert "was not trained" in routing.analyse({nb.notebook: untrained}, blocks=(nb,))[0].problem
    assert "no per-input outcomes" in routing.analyse({nb.notebook: {**m, "outcomes": None}}, blocks=(nb,))[0].problem


# --- each method's findings, on outcomes we know ------------------------------------------------------

def test_rar_findings_state_the_comparisons_the_numbers_support(tmp_path, monkeypatch):
    exp = _experiment(tmp_path, monkeypatch)
    exp.filters[rar.DISTILL_SYSTEM2].update(precision=0.75, unfiltered_accuracy=0.6)
    out = rar.findings(exp, TEST)
    assert out[0] == ("System 2: 2-step RaR 90.0% vs System 1 40.0% (McNemar p < 1e-4): System 2: 2-step RaR "
                      "is higher.")
    assert ("The majority vote kept 12 of 20 unlabeled inputs; 75% of the kept targets are right, against 60% of all "
            "2-step RaR samples.") in out
    assert any(s.startswith("Distill System 2 (2-step RaR) answers in 5.0 tokens per input, against 5.0 for its "
                            "teacher: Distill System 2 (2-step RaR) 85.0% vs System 2: 2-step RaR 90.0%") for s in out)
    # p by hand: Distill System 2 is right on the first 34 of 40 inputs, without the filter on the first
    # 20: 14 inputs only the first gets right, none the other way; McNemar's chi-square 14^2 / 14 = 14 on
    # 1 degree of freedom gives p = erfc(sqrt(14 / 2)) = 0.000183 (scipy: chi2.sf(14, 1)), the larger of
    # it and the exact conditional p, 2 / 2^14 = 0.000122 (the paired test's p below 25 discordant pairs)
    assert round(max(math.erfc(math.sqrt(14 / 2)), 2 / 2 ** 14), 5) == 0.00018
    assert ("The filter (ablation): Distill System 2 (2-step RaR) 85.0% vs Distill System 2 without filter 50.0% "
            "(McNemar p = 0.00018): Distill System 2 (2-step RaR) is higher.") in out
    # 1-step RaR answers 'yes' to everything: the guard names it, with what 'yes' alone scores
    assert any(s.startswith("System 2: 1-step RaR gives one answer ('yes') to 40 of 40 test inputs (that answer alone "
                            "scores 50.0%)") for s in pipeline.finish(exp)["metrics"]["findings"])


def test_a_filter_that_kept_nothing_says_the_student_is_the_base_model(tmp_path, monkeypatch):
    exp = _experiment(tmp_path, monkeypatch)
    exp.filters[rar.DISTILL_SYSTEM2] = {"inputs": 20, "kept": 0}
    assert ("The majority vote kept none of the 20 unlabeled inputs: the samples never agreed, so Distill System 2 "
            "(2-step RaR) ran no fine-tuning step and is the base model.") in rar.findings(exp, TEST)


def test_cot_findings_give_maj_at_k_and_the_negative_result():
    from s2d_utils.system2 import cot
    from s2d_utils.tasks import gsm8k

    test = [Example(f"q{i}", "q", "6") for i in range(10)]
    exp = pipeline.Experiment("05_cot_gsm8k", "cot", gsm8k, "smoke", 0, profiles.sizes("cot", "gsm8k", "smoke"), None,
                              None)
    for name, right in ((cot.SYSTEM1, 1), (cot.COT0, 9), (cot.COT8, 8), (cot.DISTILL, 1)):
        traces = [samples(e.id, ["6" if i < right else "5"] * 5, template="The answer is {}.", name="cot", tokens=7)
                  for i, e in enumerate(test)]
        exp.traces[name] = traces
        exp.rows.append(cot.evaluate_k(name, test, traces, gsm8k))
    exp.filters[cot.DISTILL] = {"inputs": 10, "kept": 4, "precision": 0.5, "unfiltered_accuracy": 0.25}
    out = cot.findings(exp, test)
    assert out[1] == ("CoT zero-shot: maj@1 90.0% (7 tokens, n = 10), maj@5 90.0% (35 tokens, n = 10); parse failures "
                      "of the first sample: strict 0%, flexible 0%.")
    assert ("Self-consistency kept 4 of 10 unlabeled questions; 50% of the kept targets are right (the paper: 56.8%), "
            "against 25% of all CoT samples.") in out
    # 8 inputs only CoT zero-shot gets right, none the other way: the exact conditional p 2 / 2^8 = 0.0078,
    # above the score test's chi2.sf(8, 1) = 0.0047 (below 25 discordant pairs the larger is the p)
    assert ("The negative result (paper: 52.8% CoT vs 7.1% distilled): Distill CoT 10.0% vs CoT zero-shot 90.0% "
            "(McNemar p = 0.0078): Distill CoT is lower.") in out


def test_a_judges_confidence_is_the_mean_over_both_orders(tmp_path, monkeypatch):
    """BSM's student judges each pair twice (answers swapped): its confidence on the pair is the mean
    of its probability of each order's verdict, not the second order's alone."""
    import math

    from s2d_utils.system2 import bsm
    from s2d_utils.tasks import judge

    monkeypatch.setattr(paths, "CACHE", tmp_path)
    pairs = [Example(f"p{i}", "q", "A", {"question_id": i}) for i in range(2)]
    first = greedy(pairs, ["A"] * len(pairs), template="[[{}]]", name="judge", logprob=math.log(0.8), prompt="p")
    second = greedy(pairs, ["B"] * len(pairs), template="[[{}]]", name="judge", logprob=math.log(0.4), prompt="p")
    exp = pipeline.Experiment("04_bsm_llm_judge", "bsm", judge, "smoke", 0, profiles.sizes("bsm", "judge", "smoke"),
                              SimpleNamespace(loaded=False, device="cpu", fingerprint="fp"), records.Manifest("04_bsm_llm_judge", {}))
    exp.trained = {bsm.DISTILL: None}
    monkeypatch.setattr(pipeline.backends.Settings, "from_env", classmethod(lambda cls: cls()))
    pipeline.evaluate_students(exp, pairs, lambda student: (first, second), bsm.STUDENTS,
                               score=bsm.score_both_orders(judge))
    assert exp.info["confidence"][bsm.DISTILL] == [pytest.approx(0.6)] * 2  # (0.8 + 0.4) / 2
    assert [ts[0].answer for ts in exp.traces[bsm.DISTILL]] == ["A", "A"]  # both orders agree: A, then B mapped back


@pytest.mark.parametrize("mode", ["merged", "attached"])
def test_evaluate_students_in_each_mode_gives_the_students_rows(mode, tiny_lm, tmp_path, monkeypatch):
    """A trained student evaluated merged (a copy with the adapter merged in) or attached (the adapter
    on the loaded base, removed afterwards) answers the same; an untrained one is the base itself."""
    from s2d_utils import distill
    from s2d_utils.system2 import system1

    monkeypatch.setenv("S2D_STUDENT_MODE", mode)
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(paths, "GENERATION_CACHE", tmp_path / "cache" / "generations.sqlite")
    monkeypatch.setattr(pipeline.backends.Settings, "from_env", classmethod(lambda cls: cls()))
    test = TEST[:4]
    pairs = [{"prompt": e.input, "completion": "The answer is yes."} for e in test]
    trained = distill.finetune(tiny_lm, pairs, distill.LoraSettings(batch_size=4, max_steps=2, epochs=1),
                               out_dir=tmp_path / "adapters", progress=False, name="s")
    exp = pipeline.Experiment("02_rar_coin_flip", "rar", coin_flip, "smoke", 0, profiles.rar_sizes("coin_flip", "smoke"),
                              tiny_lm, records.Manifest("02_rar_coin_flip", {}))
    exp.trained = {rar.DISTILL_SYSTEM2: trained, rar.DISTILL_SYSTEM1: None}
    program = lambda lm: system1(lm, test, coin_flip, max_new_tokens=6)  # noqa: E731
    rows = pipeline.evaluate_students(exp, test, program)
    assert [r.name for r in rows] == [rar.DISTILL_SYSTEM2, rar.DISTILL_SYSTEM1]
    assert exp.manifest.parameters["student_mode"] == mode
    base = [ts[0].final for ts in program(tiny_lm)]
    assert [ts[0].final for ts in exp.traces[rar.DISTILL_SYSTEM1]] == base  # untrained: the base model's answers
    assert not hasattr(tiny_lm.model, "peft_config") or not tiny_lm.model.peft_config  # nothing left attached
    assert set(exp.info["confidence"]) == {rar.DISTILL_SYSTEM2, rar.DISTILL_SYSTEM1}
    if mode == "attached":  # the merged run of the same adapter answers the same
        monkeypatch.setenv("S2D_STUDENT_MODE", "merged")
        merged = pipeline.Experiment(exp.notebook, "rar", coin_flip, "smoke", 0, exp.sizes, tiny_lm,
                                     records.Manifest(exp.notebook, {}))
        merged.trained = {rar.DISTILL_SYSTEM2: trained}
        pipeline.evaluate_students(merged, test, program)
        assert [ts[0].final for ts in merged.traces[rar.DISTILL_SYSTEM2]] == \
            [ts[0].final for ts in exp.traces[rar.DISTILL_SYSTEM2]]


def _schema(x, depth=3):
    """The nested key structure of a metrics dict (dicts only, to ``depth``), row names abstracted."""
    if not isinstance(x, dict) or depth == 0:
        return type(x).__name__
    return {k: _schema(v, depth - 1) for k, v in x.items()}


def test_the_summary_tests_hand_built_metrics_have_finishs_schema(tmp_path, monkeypatch):
    # the verdict tests (test_cot_and_summary) build metrics by hand; every key they give the summary
    # must exist, with the same shape, in what pipeline.finish writes, or those tests prove nothing
    from test_cot_and_summary import _outcome_metrics

    exp = _experiment(tmp_path, monkeypatch)
    real = json.loads(pipeline.finish(exp)["metrics_path"].read_text())
    names = list(exp.record.rows)
    built = _outcome_metrics({name: [True, False] * 20 for name in names},
                             training={name: real["training"][name] for name in exp.record.students},
                             filters={name: {"targets": {"yes": 6, "no": 6}} for name in exp.record.students})

    def contained(fake, true, where="metrics"):
        if isinstance(fake, dict):
            assert isinstance(true, dict), f"{where}: a dict by hand, {type(true).__name__} in finish's file"
            for k, v in fake.items():
                if k in ("manifest", "profile"):  # load_metrics' bookkeeping, not the summary's input
                    continue
                assert k in true, f"{where}: the hand-built key {k!r} is not in what finish writes"
                contained(v, true[k], f"{where}[{k!r}]")
        else:  # leaves are type names
            assert fake == true or {fake, true} <= {"int", "float"}, f"{where}: {fake} by hand, {true} in finish's file"

    contained(_schema(built, 4), _schema(real, 4))
    # and the summary reads finish's file with the same verdicts as the hand-built one of the same outcomes
    outcomes = {name: real["outcomes"]["rows"][name]["correct"]["flexible"] for name in names}
    tokens = {name: real["rows"][name]["tokens"] for name in names}
    same = _outcome_metrics(outcomes, training=real["training"], filters=real["filters"], tokens=tokens)
    same["outcomes"]["rows"] = real["outcomes"]["rows"]
    nb = exp.record
    by_hand = [v["verdict"] for v in summary.verdicts({nb.notebook: same}, blocks=(nb,))]
    from_file = [v["verdict"] for v in summary.verdicts({nb.notebook: real}, blocks=(nb,))]
    assert by_hand == from_file
