"""Branch-Solve-Merge judge (Table 3): MT-bench pairs and the proxy label, the human-judgment and
OASST2 readers (fixtures in their exact schemas), the BSM parsers and merge, both-order scoring."""

import functools
import json

import pytest

from conftest import repo_data
from handmade import samples
from s2d_utils import filters, paper, paths, tables
from s2d_utils.system2 import bsm
from s2d_utils.tasks import Example
from s2d_utils.tasks import judge as task


@pytest.fixture(scope="module")
def folder():
    return repo_data("mt_bench")


def test_splits_are_by_question_and_test_pairs_carry_the_proxy_label(folder):
    test = task.load("test", source=folder, max_answer_chars=300)
    train = task.load("train", source=folder, max_answer_chars=300)
    assert len(test) == 40 * 12  # 5 questions of each of 8 categories x (3 strong x 4 weak)
    assert not {e.meta["question_id"] for e in test} & {e.meta["question_id"] for e in train}
    for e in test:
        strong = e.meta["model_a"] if e.gold == "A" else e.meta["model_b"]
        weak = e.meta["model_b"] if e.gold == "A" else e.meta["model_a"]
        assert strong in task.STRONG and weak in task.WEAK
    assert 0.4 < sum(e.gold == "A" for e in test) / len(test) < 0.6  # positions randomized
    labeled = [e for e in train if e.gold is not None]
    assert 0.3 < len(labeled) / len(train) < 0.7  # half strong vs weak
    assert task.load("test", n=5, source=folder, max_answer_chars=300) == test[:5]


def test_the_data_folder_is_the_repositorys_copy_unless_overridden(monkeypatch, folder, tmp_path):
    monkeypatch.delenv(task.DATA_ENV, raising=False)
    assert task.data_folder() == paths.DATA / "mt_bench" == folder  # the default: data/, checksummed
    monkeypatch.setenv(task.DATA_ENV, str(tmp_path))  # S2D_DATA: a folder of one's own, used as it is
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'mt_bench'}: expected MT-bench's question.jsonl"):
        task.data_folder()
    monkeypatch.setenv(task.DATA_ENV, str(folder.parent))
    assert task.data_folder() == folder
    with pytest.raises(FileNotFoundError, match="question.jsonl"):
        task.data_folder(folder / "model_answer")


def test_unlabeled_pairs_hide_label_and_model_names(folder):
    e = task.load("train", n=2, source=folder)[0]
    u = task.unlabel(e)
    assert u.gold is None and not {"model_a", "model_b", "label", "question_id"} & set(u.meta)
    assert u.meta["answer_a"] == e.meta["answer_a"]


def test_truncation_is_visible_and_at_a_word_boundary():
    text, cut = task.truncate("one two three four five", 12)
    assert cut and text == "one two [... answer truncated: 16 more characters]"
    assert task.truncate("short", 12) == ("short", False)


def test_swap_maps_the_verdict_and_the_gold():
    e = Example("p", "q?", "A", {"answer_a": "x", "answer_b": "y", "model_a": "m1", "model_b": "m2"})
    s = task.swapped(e)
    assert (s.meta["answer_a"], s.meta["answer_b"], s.gold, s.meta["model_a"]) == ("y", "x", "B", "m2")
    assert [task.map_back(v) for v in "ABC"] == ["B", "A", "C"]


@pytest.mark.parametrize("text,strict,flexible", [
    ("Both are fine. [[C]]", "C", "C"),
    ("[[A]] at first, but on reflection [[B]]", "B", "B"),
    ("A", None, "A"),
    ("[B]", None, "B"),
    ("Assistant A is better", None, None),
])
def test_verdict_parse(text, strict, flexible):
    assert task.extract(text, "strict") == strict and task.extract(text, "flexible") == flexible


def test_system1_prompt_is_pair_v2_without_the_explanation(folder):
    judges = bsm.Judges(folder)
    assert "provide a short explanation" in judges.cot_system
    assert "explanation" not in judges.system1_system.replace("with no explanation", "")
    assert judges.system1_system.endswith('"[[C]]" for a tie.')
    msgs = judges.system1(Example("p", "Q?", None, {"answer_a": "AAA", "answer_b": "BBB"}))
    assert msgs[0]["role"] == "system" and "[User Question]\nQ?" in msgs[1]["content"]
    assert msgs[1]["content"].index("AAA") < msgs[1]["content"].index("BBB")


def test_branch_and_solve_prompts_are_the_bsm_papers():
    assert bsm.BRANCH.startswith("We want to evaluate the quality of the responses provided by two AI assistants")
    assert bsm.BRANCH.endswith("User Question: {question}\n\nEvaluation Plan:")
    assert "In the first line, provide a score between 1 to 5 for Assistant A's response." in bsm.SOLVE
    assert bsm.SOLVE.endswith("[Evaluation Criterion]\n{criterion}\n[End of Evaluation Criterion]\n\n"
                              "{format_hint}Evaluation of {name}:")


def test_parse_criteria_scores_and_merge():
    plan = ("Evaluation Plan:\n1. Helpfulness: does it answer the question?\n- **Accuracy** - are facts right\n"
            "\n3) Depth: detail\n4. Clarity: readable\n5. Creativity: novel\n6. Length: too long")
    crit = bsm.parse_criteria(plan)
    assert len(crit) == 5 and crit[0] == "Helpfulness: does it answer the question?"
    assert [bsm.criterion_name(c) for c in crit[:2]] == ["Helpfulness", "Accuracy"]
    assert bsm.parse_scores("Assistant A: 4/5\nAssistant B: 2 out of 5") == (4, 2)
    assert bsm.parse_scores("5\n3") == (5, 3)
    assert bsm.parse_scores("A gets 4") is None
    assert bsm.merge([(4, 2), (3, 4), None]) == "A"
    assert bsm.merge([(4, 4)]) == "C" and bsm.merge([None]) is None


# one judgment of a pair: the merge call's verdict, 4 tokens
_verdict = functools.partial(samples, template="[[{}]]", name="verdict", tokens=4)


def test_both_order_scoring_ties_disagreements_and_counts_inconsistency():
    test = [Example(f"p{i}", "q", "A", {"answer_a": "x", "answer_b": "y"}) for i in range(4)]
    # pair 0: A then (swapped) B -> consistent A; pair 1: A and A -> inconsistent, tie;
    # pair 2: C and C -> consistent tie; pair 3: unparsed in the second order
    first = [_verdict("p0", ["A"]), _verdict("p1", ["A"]), _verdict("p2", ["C"]), _verdict("p3", ["A"])]
    second = [_verdict("p0~swap", ["B"]), _verdict("p1~swap", ["A"]), _verdict("p2~swap", ["C"]),
              _verdict("p3~swap", [None])]
    r, joined = bsm.combine("J", test, first, second, task)
    assert [ts[0].answer for ts in joined] == ["A", "C", "C", None]
    assert r.accuracy == 0.25 and r.extra["inconsistent"] == 0.5 and r.tokens == 4
    assert r.extra["judgment_parse_failures"] == 1 / 8


def test_swap_filter_keeps_agreeing_pairs_and_trains_on_both_orders():
    ex = [Example(f"p{i}", "q", None, {"answer_a": f"a{i}", "answer_b": f"b{i}"}) for i in range(3)]
    first = [_verdict("p0", ["A"]), _verdict("p1", ["A"]), _verdict("p2", ["C"])]
    second = [_verdict("p0~swap", ["B"]), _verdict("p1~swap", ["A"]), _verdict("p2~swap", ["C"])]
    res = filters.perturbation_agreement(ex, first, second, task.map_back)
    assert [k.example.id for k in res.kept] == ["p0", "p2"]
    both = bsm.both_order_targets(res, task)
    assert [(k.example.id, k.answer) for k in both.kept] == [("p0", "A"), ("p2", "C"), ("p0~swap", "B"), ("p2~swap", "C")]
    assert both.kept[2].example.meta["answer_a"] == "b0"


def test_human_judgment_reader_keeps_ties_and_names_bad_fields(tmp_path):
    def row(winner, turn=1, **over):
        r = {"question_id": 81, "model_a": "gpt-4", "model_b": "alpaca-13b", "winner": winner, "judge": "author_0",
             "turn": turn, "conversation_a": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "a"}],
             "conversation_b": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "b"}]}
        r.update(over)
        return r

    path = tmp_path / "human.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [row("model_a"), row("tie (bothbad)"), row("model_b", turn=2),
                                                       row("tie")]))
    got = task.load_human_judgments(path)
    assert [e.gold for e in got] == ["A", "C", "C"] and got[0].meta["answer_b"] == "b" and got[0].input == "Q?"
    path.write_text(json.dumps(row("model_a")) + "\n" + json.dumps(row("model_c")))
    with pytest.raises(ValueError, match=r"human.jsonl row 1: field 'winner'"):
        task.load_human_judgments(path)
    path.write_text(json.dumps(row("model_a", conversation_b=[])))
    with pytest.raises(ValueError, match=r"human.jsonl row 0: field 'conversation_b'"):
        task.load_human_judgments(path)


def test_oasst2_reader_pairs_the_rank0_reply_with_another(tmp_path):
    rows = [
        {"message_id": "p1", "parent_id": None, "text": "Hi?", "role": "prompter", "lang": "en", "rank": None,
         "message_tree_id": "p1"},
        {"message_id": "a1", "parent_id": "p1", "text": "best", "role": "assistant", "lang": "en", "rank": 0,
         "message_tree_id": "p1"},
        {"message_id": "a2", "parent_id": "p1", "text": "worse", "role": "assistant", "lang": "en", "rank": 1,
         "message_tree_id": "p1"},
        {"message_id": "p2", "parent_id": None, "text": "Hola?", "role": "prompter", "lang": "es", "rank": None,
         "message_tree_id": "p2"},
        {"message_id": "p3", "parent_id": None, "text": "One reply", "role": "prompter", "lang": "en", "rank": None,
         "message_tree_id": "p3"},
        {"message_id": "a3", "parent_id": "p3", "text": "only", "role": "assistant", "lang": "en", "rank": 0,
         "message_tree_id": "p3"},
    ]
    path = tmp_path / "oasst2.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (e,) = task.load_oasst2(path)
    best = e.meta["answer_a"] if e.gold == "A" else e.meta["answer_b"]
    assert e.input == "Hi?" and best == "best"
    rows[2]["role"] = "bot"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"oasst2.jsonl row 2: field 'role'"):
        task.load_oasst2(path)


def test_table3_layout():
    test = [Example(f"p{i}", "q", "A", {"answer_a": "x", "answer_b": "y"}) for i in range(2)]
    r, _ = bsm.combine(bsm.SYSTEM1, test, [_verdict("p0", ["A"]), _verdict("p1", ["B"])],
                       [_verdict("p0~swap", ["B"]), _verdict("p1~swap", ["B"])], task)
    df = tables.results_table([r], paper.paper_table("table3", "mt_bench"))
    assert list(df.columns) == ["Method", "n", "Agree % (ours)", "95% CI", "Inconsistent % (ours)", "#Tokens (ours)",
                                "Parse fail %", "Cut %", "Agree % (paper)", "Inconsistent % (paper)", "#Tokens (paper)"]
    assert df.iloc[0]["Agree % (ours)"] == 50.0 and df.iloc[0]["Inconsistent % (ours)"] == 50.0
    assert set(paper.paper_table("table3", "oasst2").rows) == set(bsm.ROWS)
