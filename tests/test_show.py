"""The notebooks' displays of the method (`show`) print the real objects: prompts rendered as the
model saw them, the filter's choice, the loss tokens exactly as training collates them."""

import json
import re
from dataclasses import asdict
from types import SimpleNamespace

from handmade import call, trace
from s2d_utils import filters, lora, show
from s2d_utils.generation import render
from s2d_utils.tasks import Example, last_letter


def test_cut_keeps_short_text_and_says_how_much_it_cut():
    assert show.cut("short", 100) == "short"
    text = "\n".join(f"line {i:03d} " + "x" * 30 for i in range(40))
    out = show.cut(text, 200)
    assert len(out) < 300 and out.startswith("line 000") and out.endswith(text.splitlines()[-1])
    n = int(re.search(r"\.\.\. \((\d+) characters cut\) \.\.\.", out).group(1))
    head, tail = out.split(f"\n... ({n} characters cut) ...\n")
    assert text.startswith(head) and text.endswith(tail)
    assert n == len(text) - len(head) - len(tail) - 1  # the line break before the marker is not cut text


def test_prompts_are_rendered_as_the_model_saw_them(tiny_lm):
    chat = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "A or B?"}]
    assert show.messages(call("verdict", json.dumps(chat), "[[A]]")) == chat
    assert show.messages(call("answer", "[not json", "x")) == "[not json"
    assert show.prompt_of(call("verdict", json.dumps(chat), "[[A]]"), tiny_lm) == render(tiny_lm, chat)
    assert show.prompt_of(call("answer", "Q?", "x")) == "[user]\nQ?"
    shots = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2?"}]
    assert show.messages(call("cot", shots, "4")) == shots  # a few-shot chat handed over as messages (CoT)
    assert show.prompt_of(call("cot", shots, "4"), tiny_lm) == render(tiny_lm, shots)

    e = Example("t0", "Take the last letters of the words in 'Ada Lovelace' and concatenate them.", "ae")
    traces = {
        "System 1": [[trace("t0", "ae", call("answer", e.input, "The answer is ae."))]],
        "2-step RaR": [[trace("t0", "ee", call("rephrase", "Rephrase: " + e.input, "Which letters?"),
                              call("respond", "Answer it: Which letters?", "The answer is ee."))]],
    }
    out = show.prompts(traces, [e], 0, tiny_lm)
    for name, ts in traces.items():
        assert f"=== {name}: {len(ts[0][0].calls)} call(s)" in out
        for c in ts[0][0].calls:
            assert render(tiny_lm, c.prompt) in out and c.output in out
    assert "parsed answer: 'ee' | gold: 'ae'" in out
    long = trace("t0", None, call("branch", "b", "1. a\n2. b"), *[call("solve", "x" * 2000, "4 5") for _ in range(5)])
    text = show.trace_text(long, e, per_name=2)
    assert "characters cut" in text and "3 more calls not shown: solve x3" in text and len(text) < 2500
    assert "--- call 1: branch" in text and "--- call 3: solve" in text and "--- call 4" not in text


def test_samples_show_the_vote_usc_and_both_orders():
    exs = [Example("u0", "q0", None), Example("u1", "q1", None)]
    ts = [[trace("u0", a, call("respond", "p", f"The answer is {a}."), sample=k) for k, a in enumerate("xxy")],
          [trace("u1", a, call("respond", "p", "?"), sample=k) for k, a in enumerate(["x", "y", None])]]
    sc = filters.self_consistency(exs, ts)
    out = show.samples(sc, exs, ts, 0)
    assert "votes {'x': 2, 'y': 1}" in out and "kept, target answer 'x'" in out and "the kept trace: sample #0" in out
    assert out.count("  sample #") == 3 and show.samples(sc, exs, ts) == out  # by default: the first kept input
    assert "dropped" in show.samples(sc, exs, ts, 1) and "1 of 3 samples gave no answer" in show.samples(sc, exs, ts, 1)

    usc = filters.universal_self_consistency(exs, ts, lambda ps: ["The most consistent response is Response 2"] * len(ps),
                                             lambda p: True, require_answer=False)
    out = show.samples(usc, exs, ts, 0)
    assert filters.usc_prompt("q0", [t.final for t in ts[0]]) in out
    assert "USC shown 3 responses" in out and "rule 'usc' -> sample #2" in out and "target answer 'y'" in out

    swapped = [[trace("u0", "B", call("merge", "p", "B"))], [trace("u1", "B", call("merge", "p", "B"))]]
    first = [[trace("u0", "A", call("merge", "p", "A"))], [trace("u1", "B", call("merge", "p", "B"))]]
    pa = filters.perturbation_agreement(exs, first, swapped, {"A": "B", "B": "A", "C": "C"}.get)
    out = show.samples(pa, exs, first, 0, perturbed=swapped)
    assert "original order #0" in out and "swapped order #0" in out and "means 'A'" in out and "kept" in out
    assert "dropped" in show.samples(pa, exs, first, 1, perturbed=swapped)


def test_marked_loss_tokens_are_exactly_those_the_collator_labels(tiny_lm):
    pairs = [{"id": "a", "prompt": "Is the coin still heads up?", "completion": "The answer is yes."},
             {"id": "b", "prompt": "Take the last letters of 'Ada Lovelace'.", "completion": "The answer is ae, I think."}]
    data = [lora.tokenize(tiny_lm, p) for p in pairs]
    ids, mask, labels = lora.collate(data, tiny_lm.tokenizer.pad_token_id)  # a padded batch, as training builds it
    tok = tiny_lm.tokenizer
    out = show.training_pairs(tiny_lm, pairs, k=2, limit=10_000)
    header, body = out.split("\n", 1)
    assert f"between {show.OPEN} and {show.CLOSE}" in header
    shown = re.findall(f"{show.OPEN}(.*?){show.CLOSE}", body, re.S)
    expected = []
    for r in range(len(pairs)):
        loss = [int(t) for t, y, m in zip(ids[r], labels[r], mask[r]) if int(m) and int(y) != -100]
        assert loss == data[r][1][-len(loss):] and len(loss) == sum(y != -100 for y in data[r][1])
        expected.append(tok.decode(loss))
        assert f"{len(loss)} of them carry the loss" in out
    assert shown == expected
    assert expected[0].startswith("The answer is yes.") and tok.eos_token in expected[0]
    prompt = render(tiny_lm, pairs[0]["prompt"])
    assert prompt + show.OPEN + expected[0] + show.CLOSE in out  # the unmarked tokens: the rendered prompt
    assert len(show.training_pairs(tiny_lm, pairs * 3, k=2).split("--- pair")) == 3


def _result(folder, losses, pairs=(), **kw):
    """A student's `TrainResult` as its training log gives it, and its pairs on disk."""
    folder.mkdir()
    (folder / "train_data.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    settings = lora.LoraSettings(r=8, alpha=16, epochs=3, batch_size=2, min_steps=3, **kw)
    return lora.TrainResult(folder, len(losses), 4, 400, 2.0, tuple(losses), False, 2, 0, asdict(settings))


def test_lora_settings_budget_and_loss_curves(tmp_path, tiny_lm):
    pairs = [{"id": "a", "prompt": "Q?", "completion": "The answer is a."}]
    r0 = _result(tmp_path / "s0", [2.0, 1.5, 1.0], pairs)
    r1 = _result(tmp_path / "s1", [2.1, 1.2, 0.9])
    text = show.lora_text(r0)
    assert "rank r = 8, alpha = 16 (scale alpha/r = 2)" in text and "dropout 0.1" in text and "q_proj" in text
    assert "3 epochs, at least 3 steps" in text and "at least 1 step;" in show.lora_text(None, lora.LoraSettings()) and "2 rows a step" in text
    assert "ran: 3 steps of 2 rows" in text and "1.50 epochs" in text and "loss 2.000 -> 1.000" in text
    assert "nothing" in show.lora_text(None)
    assert "exactly 350 steps" in show.lora_text(None, lora.LoraSettings(steps=350))
    assert show.trained_pairs(r0) == pairs

    exp = SimpleNamespace(trained={"S": r0}, trained_seeds={"S": [r0, r1]}, student_seeds=[0, 1], lm=tiny_lm)
    out = show.training(exp, "S", k=2)
    assert "seed 1: ran: 3 steps" in out and "1 training pair; shown as training tokenizes" in out and show.OPEN in out

    fig = show.loss_curves({"S": [r0, r1], "untrained": [None]}, [0, 1])
    (ax,) = fig.axes
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[2.0, 1.5, 1.0], [2.1, 1.2, 0.9]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["S, seed 0", "S, seed 1"]
    assert show.png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_teacher_trace_beside_each_seeds_student():
    e = Example("t0", "Take the last letters of 'Ada Lovelace'.", "ae")
    teacher = [[trace("t0", "ae", call("rephrase", "p", "Which letters?", 4), call("respond", "p", "It is ae.", 5))]]
    seeds = [[[trace("t0", "ae", call("answer", e.input, "The answer is ae."))]],
             [[trace("t0", "ee", call("answer", e.input, "The answer is ee."))]]]
    exp = SimpleNamespace(test=[e], traces={"RaR": teacher, "Student": seeds[0], "System 1": teacher},
                          seed_traces={"Student": seeds}, student_seeds=[0, 1], task=last_letter, trained_seeds={})
    out = show.teacher_beside_students(exp, "RaR", ["Student"], others=["System 1"])
    assert "=== teacher: RaR, 2 call(s), 9 tokens generated" in out
    assert "respond (5 tokens): 'It is ae.'" in out and "answer: 'ae' (right)" in out
    assert "seed 0 (3 tokens): 'The answer is ae.' -> 'ae' (right)" in out
    assert "seed 1 (3 tokens): 'The answer is ee.' -> 'ee' (wrong)" in out
    exp.trained_seeds = {"Student": ["adapter", None]}  # seed 1's filter kept nothing: the base model
    assert "seed 1, not trained: the base model (3 tokens)" in show.teacher_beside_students(exp, "RaR", ["Student"])
    assert "=== for reference: System 1" in out
