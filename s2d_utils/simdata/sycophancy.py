"""A synthetic SycophancyEval ``answer.jsonl`` and TriviaQA file, in their exact schemas.

`write_answer_file`: rows of ``base.dataset == "trivia_qa"`` under SycophancyEval's four templates
(prompt, base: question, answer, correct_answer, incorrect_answer; metadata: prompt_template),
one row per question and template, plus rows of another dataset the reader must leave out.
`write_triviaqa`: TriviaQA rows in the hub's form (question, question_id, answer: value, aliases,
normalized_aliases), some of them the answer file's questions (the loader must leave those out)
and some repeated, with at least ``usable`` questions left.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..tasks.sycophancy_sources import TEMPLATES
from . import words

ANSWER_QUESTIONS = 1_000  # enough for 350 biased + 50 unbiased test rows (half the questions are test)
TRIVIAQA_USABLE = 7_000  # the paper's 6,668 training inputs, and some to spare
NAMES = ("Arden", "Belmont", "Corvin", "Dalton", "Elara", "Fenwick", "Galen", "Harlow", "Isolde", "Jasper", "Kestrel",
         "Lorne", "Marlow", "Nerys", "Orrin", "Perrin", "Quill", "Rowan", "Sable", "Tamsin", "Ulric", "Vesper")


def _answer(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)} {rng.choice(NAMES)}son"


def _question(i: int, rng: random.Random) -> str:
    return f"Synthetic trivia question {i}: who wrote the {words(rng, 3, 'book')}?"


def write_answer_file(path: str | Path, questions: int = ANSWER_QUESTIONS, seed: int = 0) -> Path:
    """``path`` (answer.jsonl): ``questions`` TriviaQA-style questions under the four templates."""
    rng = random.Random(f"simdata|answer|{seed}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(questions):
            question, correct = _question(i, rng), _answer(rng)
            incorrect = _answer(rng)
            while incorrect == correct:
                incorrect = _answer(rng)
            for template in TEMPLATES:
                text = template.format(question=question, correct_answer=correct, incorrect_answer=incorrect)
                f.write(json.dumps({"prompt": [{"type": "human", "content": text}],
                                    "base": {"dataset": "trivia_qa", "question": question, "answer": [correct],
                                             "correct_answer": correct, "incorrect_answer": incorrect},
                                    "metadata": {"prompt_template": template}}) + "\n")
            if i % 10 == 0:  # another dataset's row, which Table 2 does not use
                f.write(json.dumps({"prompt": [{"type": "human", "content": "synthetic truthful_qa row"}],
                                    "base": {"dataset": "truthful_qa", "question": "q", "answer": ["a"],
                                             "correct_answer": "a", "incorrect_answer": "b"},
                                    "metadata": {"prompt_template": TEMPLATES[0]}}) + "\n")
    return path


def write_triviaqa(path: str | Path, usable: int = TRIVIAQA_USABLE, answer_file: str | Path | None = None,
                   seed: int = 0) -> Path:
    """``path`` (.jsonl): ``usable`` questions of its own, each row's answer with aliases, plus
    the questions of ``answer_file`` (if given) and some repeats, which the loader leaves out."""
    rng = random.Random(f"simdata|triviaqa|{seed}")
    taken = []
    if answer_file is not None:
        for line in Path(answer_file).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["base"]["dataset"] == "trivia_qa" and r["metadata"]["prompt_template"] == TEMPLATES[0]:
                taken.append((r["base"]["question"], r["base"]["correct_answer"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(usable):
        answer = _answer(rng)
        rows.append({"question": _question(100_000 + i, rng), "question_id": f"syn_{i}",
                     "answer": {"value": answer, "aliases": [answer, answer.upper()],
                                "normalized_aliases": [answer.lower()]}})
    rows += [{"question": q, "question_id": f"syn_test_{j}", "answer": {"value": a, "aliases": [a]}}
             for j, (q, a) in enumerate(taken)]
    rows += [dict(rows[j], question_id=f"syn_repeat_{j}") for j in range(0, usable, 50)]
    rng.shuffle(rows)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path
