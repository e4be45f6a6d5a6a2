"""CoT on GSM8k (Table 4): the reader, answer extraction, few-shot prompts, maj@k scoring; and the
summary's staleness checks and claim verdicts."""

import json

import pytest

from conftest import repo_data
from s2d_utils import paths, report, summary
from s2d_utils.system2 import Call, Trace, cot
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

    def tr(eid, texts):
        return [Trace(eid, i, (Call("cot", "p", t, 10, "stop"),), task.extract(t, "flexible")) for i, t in enumerate(texts)]

    traces = [tr("q0", ["so 5", "The answer is 6."] + ["The answer is 6."] * 8),
              tr("q1", ["The answer is 6."] + ["it is 7"] * 9)]
    r = cot.evaluate_k(cot.COT0, test, traces, task)
    assert r.accuracy == 0.5 and r.extra["accuracy@5"] == 0.5 and r.extra["accuracy@10"] == 0.5
    assert r.tokens == 10 and r.extra["tokens@5"] == 50 and r.extra["tokens@10"] == 100
    assert r.extra["strict_parse_failures"] == 0.5 and r.extra["flexible_parse_failures"] == 0.0
    df = report.results_table([r], report.paper_table("table4", "gsm8k"))
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


def test_verdicts_follow_the_numbers():
    from s2d_utils.system2 import rar

    b = summary.BLOCKS[1]  # coin flip
    rows = {rar.SYSTEM1: _r(0.2, 10), rar.TWO_STEP: _r(0.6, 100), rar.DISTILL_SYSTEM2: _r(0.55, 5),
            rar.DISTILL_NO_FILTER: _r(0.3, 5)}
    mc = {f"{rar.TWO_STEP} vs {rar.SYSTEM1}": 0.001, f"{rar.DISTILL_SYSTEM2} vs {rar.SYSTEM1}": 0.001,
          f"{rar.DISTILL_SYSTEM2} vs {rar.TWO_STEP}": 0.4, f"{rar.DISTILL_SYSTEM2} vs {rar.DISTILL_NO_FILTER}": 0.01}
    trained = {rar.DISTILL_SYSTEM2: {"steps": 3}, rar.DISTILL_NO_FILTER: {"steps": 3}}
    got = {v["claim"]: v["verdict"] for v in summary.verdicts({b.notebook: _metrics(rows, mc, trained)}, blocks=(b,))}
    assert got == {"distilled System 1 beats System 1": "held",
                   "distilled System 1 near System 2 at a fraction of its tokens": "held",
                   "the unsupervised filter matters": "held"}
    mc[f"{rar.TWO_STEP} vs {rar.SYSTEM1}"] = 0.5  # the teacher is no better than System 1
    mc[f"{rar.DISTILL_SYSTEM2} vs {rar.DISTILL_NO_FILTER}"] = 0.2
    got = {v["claim"]: v["verdict"] for v in summary.verdicts({b.notebook: _metrics(rows, mc, trained)}, blocks=(b,))}
    assert got["distilled System 1 near System 2 at a fraction of its tokens"] == "not testable"
    assert got["the unsupervised filter matters"] == "not held"
    trained[rar.DISTILL_SYSTEM2] = None
    got = {v["claim"]: v["verdict"] for v in summary.verdicts({b.notebook: _metrics(rows, mc, trained)}, blocks=(b,))}
    assert got["distilled System 1 beats System 1"] == "not testable"


def test_cot_verdict_is_about_not_distilling():
    b = summary.BLOCKS[4]
    rows = {cot.SYSTEM1: _r(0.1, 8), cot.COT0: _r(0.5, 150), cot.COT8: _r(0.4, 150), cot.DISTILL: _r(0.1, 8)}
    mc = {f"{cot.COT0} vs {cot.SYSTEM1}": 0.001, f"{cot.DISTILL} vs {cot.COT0}": 0.001}
    (v,) = summary.verdicts({b.notebook: _metrics(rows, mc, {cot.DISTILL: {}})}, blocks=(b,))
    assert (v["claim"], v["verdict"]) == ("CoT on GSM8k does not distill", "held")
    mc[f"{cot.COT0} vs {cot.SYSTEM1}"] = 0.3
    (v,) = summary.verdicts({b.notebook: _metrics(rows, mc, {cot.DISTILL: {}})}, blocks=(b,))
    assert v["verdict"] == "not testable"
