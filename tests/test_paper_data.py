"""The paper's data for BSM and S2A, read as the paper used it: OASST2's splits (train pairs to
distill on, the validation pairs to test on), every MT-bench human vote with its ties, TriviaQA
questions under SycophancyEval's biased template, and the paper profile's refusals without them.
Fixtures come from `simdata` (synthetic rows in the exact schemas) or are written inline."""

from __future__ import annotations

import gzip
import json

import pytest

from s2d_utils import pipeline, registry, summary
from s2d_utils.simdata import judge as sim_judge
from s2d_utils.simdata import sycophancy as sim_syco
from s2d_utils.tasks import judge, sycophancy


def _tree(pid, lang="en", ranks=(0, 1), deleted=()):
    rows = [{"message_id": pid, "parent_id": None, "text": f"prompt {pid}", "role": "prompter", "lang": lang,
             "rank": None, "message_tree_id": pid}]
    rows += [{"message_id": f"{pid}-{r}", "parent_id": pid, "text": f"reply {pid} rank {r}", "role": "assistant",
              "lang": lang, "rank": r, "message_tree_id": pid, "deleted": r in deleted} for r in ranks]
    return rows


def _write(path, rows, gz=False):
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)


# --- OASST2 -----------------------------------------------------------------------------------------

def test_oasst2_reads_each_split_of_a_folder_and_pairs_rank0_with_rank1(tmp_path):
    _write(tmp_path / "train.jsonl", _tree("t1", ranks=(2, 0, 1)) + _tree("t2") + _tree("t3", lang="de"))
    _write(tmp_path / "validation.jsonl.gz", _tree("v1") + _tree("v2", ranks=(0, 1), deleted=(1,)), gz=True)
    train = judge.load_oasst2(tmp_path, "train")
    assert sorted(e.id for e in train) == ["oasst2-t1", "oasst2-t2"]  # German left out
    t1 = next(e for e in train if e.id == "oasst2-t1")
    sides = {t1.meta["answer_a"], t1.meta["answer_b"]}
    assert sides == {"reply t1 rank 0", "reply t1 rank 1"}  # rank 0 against rank 1, not rank 2
    assert (t1.meta["answer_a"] if t1.gold == "A" else t1.meta["answer_b"]) == "reply t1 rank 0"
    valid = judge.load_oasst2(tmp_path, "validation")
    assert [e.id for e in valid] == ["oasst2-v1"]  # a deleted reply leaves v2 one ranked reply


def test_oasst2_takes_every_pair_by_default_and_names_the_split_when_n_is_too_large(tmp_path):
    sim_judge.write_oasst2(tmp_path, train_pairs=30, validation_pairs=12)
    assert len(judge.load_oasst2(tmp_path, "validation")) == 12
    assert len(judge.load_oasst2(tmp_path, "train")) == 30
    with pytest.raises(ValueError, match=r"validation.jsonl: OASST2's validation split gives 12 pairs .*n=480"):
        judge.load_oasst2(tmp_path, "validation", n=480)
    small = judge.load_oasst2(tmp_path, "train", n=10)
    assert [e.id for e in small] == [e.id for e in judge.load_oasst2(tmp_path, "train")][:10]  # a prefix
    with pytest.raises(FileNotFoundError, match=r"missing: no such file .*hub id OpenAssistant/oasst2"):
        judge.load_oasst2(tmp_path / "missing", "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no validation.jsonl"):
        judge.load_oasst2(tmp_path / "empty", "validation")


def test_the_simulated_oasst2_holds_the_papers_counts(tmp_path):
    sim_judge.write_oasst2(tmp_path, train_pairs=200)
    assert len(judge.load_oasst2(tmp_path, "validation")) == 273
    assert len(judge.load_oasst2(tmp_path, "train")) == 200


def test_the_judge_distills_on_oasst2_train_pairs_when_given(tmp_path):
    sim_judge.write_oasst2(tmp_path, train_pairs=40, validation_pairs=5)
    train = judge.load("train", n=25, train_source=tmp_path, max_answer_chars=100)
    assert len(train) == 25 and all(e.id.startswith("oasst2-") for e in train)
    assert all(e.meta["split"] == "train" for e in train)
    assert any(e.meta["truncated"] for e in train)  # the profile's cut applies to OASST2 answers too
    assert len(judge.load("train", n=100, train_source=tmp_path)) == 40  # every pair when the split holds fewer
    assert judge.load("test", n=4)[0].id.startswith("mt_bench-")  # the test stays MT-bench
    unl = judge.unlabel(train[0])
    assert unl.gold is None and "label" not in unl.meta


def test_the_paper_profile_refuses_bsm_without_oasst2_and_one_file_for_two_splits(tmp_path):
    with pytest.raises(ValueError, match=r"PROFILE='paper' distills BSM on OASST2.*pass OASST2_SOURCE"):
        pipeline.start("04_bsm_llm_judge", "bsm", judge, MODEL=None, PROFILE="paper", SEED=0)
    one = tmp_path / "oasst2.jsonl"
    _write(one, _tree("x"))
    with pytest.raises(ValueError, match=r"OASST2_SOURCE=.*one file has no splits"):
        judge.check_sources("gpu", {"OASST2_SOURCE": str(one)})
    judge.check_sources("gpu", {"OASST2_SOURCE": None})  # the offline default needs nothing
    judge.check_sources("paper", {"OASST2_SOURCE": str(tmp_path)})


# --- MT-bench human judgments -----------------------------------------------------------------------

def test_every_human_vote_on_the_test_questions_counts_ties_included(tmp_path):
    path = sim_judge.write_human_judgments(tmp_path / "human.jsonl", rows=800)
    test_q = judge.question_ids("test", 0)
    assert len(test_q) == 40 and not set(test_q) & set(judge.question_ids("train", 0))
    every = judge.load_human_judgments(path)
    mine = judge.load_human_judgments(path, test_q)
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [r for r in raw if r["turn"] == 1 and r["question_id"] in test_q]
    assert len(mine) == len(expected) == 200  # every vote (800 rows: 80 questions x 5 votes x 2 turns), not the first n
    assert len(every) == sum(r["turn"] == 1 for r in raw)
    ties = [e for e in mine if e.gold == "C"]
    assert ties and len(judge.without_ties(mine)) == len(mine) - len(ties)
    with pytest.raises(ValueError, match=r"human.jsonl: \d+ human votes of turn 1 .* n=100000"):
        judge.load_human_judgments(path, test_q, n=100_000)


def test_bsm_notes_say_proxy_only_when_the_proxy_labels(tmp_path):
    from s2d_utils.system2 import bsm

    path = sim_judge.write_human_judgments(tmp_path / "human.jsonl", rows=300)
    votes = judge.load_human_judgments(path, judge.question_ids("test", 0))
    note = bsm.human_note(path, votes, "the test questions")
    assert "PROXY" not in note and "not independent" in note and f"{len(votes)} votes" in note
    assert bsm.verdict_note(votes) == bsm.VERDICT_NOTE_TIES
    assert bsm.verdict_note(judge.load("test", n=8)) == bsm.VERDICT_NOTE


def test_the_summary_gets_an_oasst2_block_and_names_the_label_it_scored():
    bsm_nb = registry.NOTEBOOKS[3]
    assert summary.blocks_of({}) == registry.NOTEBOOKS
    assert summary.blocks_of({registry.OASST2.notebook: {}})[-1] == registry.OASST2
    assert "proxy agreement" in summary.method_label(bsm_nb, {"info": {}})
    assert summary.method_label(bsm_nb, {"info": {"label_kind": "human"}}) == "BSM judge, MT-bench (human agreement)"
    assert "out-of-distribution" not in (registry.OASST2.title + registry.OASST2.label)


# --- S2A: TriviaQA under the biased template --------------------------------------------------------

@pytest.fixture(scope="module")
def syco_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("syco")
    answers = sim_syco.write_answer_file(root / "answer.jsonl", questions=900)
    trivia = sim_syco.write_triviaqa(root / "trivia.jsonl", usable=800, answer_file=answers)
    return answers, trivia


def test_triviaqa_inputs_carry_the_biased_template_and_never_a_test_question(syco_files):
    answers, trivia = syco_files
    train = sycophancy.load("train", n=700, seed=1, source=answers, train_source=trivia)
    test = sycophancy.load("test", n=400, seed=1, source=answers)
    assert len(train) == 700 and {e.meta["group"] for e in train} == {"biased"}
    for e in train[:50]:
        assert e.input == sycophancy.BIASED.format(question=e.meta["question"], incorrect_answer=e.meta["incorrect"])
        assert sycophancy.normalize(e.meta["incorrect"]) not in {sycophancy.normalize(a) for a in e.meta["aliases"]}
    file_questions = {e.meta["question"] for e in sycophancy.answer_file_examples(answers)[1]}
    assert not {e.meta["question"] for e in train} & file_questions
    assert len({e.meta["question"] for e in train}) == 700  # repeats dropped
    assert [e.meta["group"] for e in test].count("unbiased") == 50
    unl = sycophancy.unlabel(train[0])
    assert unl.gold is None and set(unl.meta) <= {"group", "kind", "source"}


def test_triviaqa_says_how_many_it_has_when_asked_for_more(syco_files):
    answers, trivia = syco_files
    with pytest.raises(ValueError, match=r"trivia.jsonl: 800 usable TriviaQA questions .*left out as test questions.*"
                                         r"6668 unlabeled training inputs requested"):
        sycophancy.load("train", n=6668, source=answers, train_source=trivia)


def test_triviaqa_rows_in_the_release_format_and_bad_rows_named(tmp_path):
    path = tmp_path / "verified-web-dev.json"
    path.write_text(json.dumps({"Data": [{"Question": "Who?", "QuestionId": "q1",
                                          "Answer": {"Value": "Ann", "Aliases": ["Ann", "Anne"]}},
                                         {"Question": "What?", "QuestionId": "q2", "Answer": {"Value": "Bo"}}]}))
    got = sycophancy.load_triviaqa(path)
    assert {e.gold for e in got} == {"Ann", "Bo"} and {e.meta["incorrect"] for e in got} == {"Ann", "Bo"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Who?", "question_id": "q1", "answer": {"value": ""}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl row 1: field 'answer.value' must be a non-empty string"):
        sycophancy.load_triviaqa(bad)


def test_the_paper_profile_refuses_s2a_without_both_files():
    with pytest.raises(ValueError, match=r"Pass DATA_SOURCE and TRIVIAQA_SOURCE"):
        pipeline.start("03_s2a_sycophancy", "s2a", sycophancy, MODEL=None, PROFILE="paper", SEED=0)
    with pytest.raises(ValueError, match=r"Pass TRIVIAQA_SOURCE:"):
        sycophancy.check_sources("paper", {"DATA_SOURCE": "answer.jsonl"})
    sycophancy.check_sources("cpu", {})  # the offline analog runs as before


def test_the_accuracy_plot_draws_a_row_at_100_and_0_percent(tmp_path, monkeypatch):
    # Wilson's upper edge at 50/50 rounds to a hair below 1.0: a negative error bar made
    # matplotlib refuse the figure, so a student that answers every pair right crashed notebook 04
    from s2d_utils import figures, paths
    from s2d_utils.evaluate import SystemResult
    from s2d_utils.paper import paper_table
    from s2d_utils.stats import wilson

    monkeypatch.setattr(paths, "FIGURES", tmp_path)
    rows = [SystemResult(name, 50, acc, *wilson(round(50 * acc), 50), tokens, 0.0, (acc == 1.0,) * 50)
            for name, acc, tokens in (("System 1", 1.0, 6.0), ("System 2: 2-step RaR", 0.0, 40.0))]
    assert rows[0].ci_high < 1.0  # the case the clamp exists for
    path = figures.plot_accuracy_vs_tokens(rows, paper_table("table1", "last_letter"), "t", "edge", "smoke", "m")
    assert path.exists() and path.stat().st_size > 0
