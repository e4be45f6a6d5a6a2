"""Synthetic OASST2 message trees and MT-bench human judgments, in the hub's exact schemas.

`write_oasst2`: a folder with ``train.jsonl`` and ``validation.jsonl`` (OASST2's flat message rows:
message_id, parent_id, text, role, lang, rank, message_tree_id, deleted), at least
``train_pairs`` / ``validation_pairs`` usable pairs (English first turns with two ranked replies)
and a share of rows the reader must leave out (other languages, one reply, deleted replies).

`write_human_judgments`: ``human.jsonl`` rows (question_id, model_a, model_b, winner, judge, turn,
conversation_a/b) on the repository's MT-bench questions and pregenerated answers, for the six
models the real file covers, both turns, random winners with ties: about 3,355 rows, as the
real file holds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import length, words

TRAIN_PAIRS, VALIDATION_PAIRS = 19_672, 273  # the paper's counts (Sec. 4.3)
HUMAN_ROWS = 3_355  # lmsys/mt_bench_human_judgments, split "human"
HUMAN_MODELS = ("gpt-4", "gpt-3.5-turbo", "claude-v1", "vicuna-13b-v1.3", "alpaca-13b", "llama-13b")
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
WINNER_WEIGHTS = (0.4, 0.4, 0.12, 0.08)


def _tree(rng: random.Random, split: str, i: int, usable: bool) -> list[dict]:
    root = f"{split}-p{i}"
    kind = "usable" if usable else rng.choice(("other_lang", "one_reply", "deleted"))
    lang = "es" if kind == "other_lang" else "en"
    rows = [{"message_id": root, "parent_id": None, "text": words(rng, length(rng, 40), "synthetic prompt"),
             "role": "prompter", "lang": lang, "rank": None, "message_tree_id": root, "deleted": False}]
    replies = 1 if kind == "one_reply" else 2 if kind == "deleted" else rng.choice((2, 2, 3))
    for r in range(replies):
        rows.append({"message_id": f"{root}-a{r}", "parent_id": root,
                     "text": words(rng, length(rng, 180), "synthetic reply"), "role": "assistant", "lang": lang,
                     "rank": r if replies > 1 else None, "message_tree_id": root,
                     "deleted": kind == "deleted" and r == 1})
    if rng.random() < 0.3:  # a follow-up turn: not a first turn, never paired
        rows.append({"message_id": f"{root}-f", "parent_id": f"{root}-a0", "text": words(rng, 20, "synthetic follow-up"),
                     "role": "prompter", "lang": lang, "rank": None, "message_tree_id": root, "deleted": False})
    return rows


def write_oasst2(folder: str | Path, train_pairs: int = TRAIN_PAIRS, validation_pairs: int = VALIDATION_PAIRS,
                 unusable_share: float = 0.1, seed: int = 0) -> Path:
    """``folder/train.jsonl`` and ``folder/validation.jsonl``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", train_pairs), ("validation", validation_pairs)):
        rng = random.Random(f"simdata|oasst2|{seed}|{split}")
        extra = round(pairs * unusable_share)
        kinds = [True] * pairs + [False] * extra
        rng.shuffle(kinds)
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i, usable in enumerate(kinds):
                for row in _tree(rng, split, i, usable):
                    f.write(json.dumps(row) + "\n")
    return folder


def _mt_bench(folder: Path) -> tuple[dict[int, list[str]], dict[str, dict[int, list[str]]]]:
    questions = {}
    for line in (folder / "question.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            questions[r["question_id"]] = r["turns"]
    answers: dict[str, dict[int, list[str]]] = {}
    for model in HUMAN_MODELS:
        path = folder / "model_answer" / f"{model}.jsonl"
        answers[model] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                answers[model][r["question_id"]] = r["choices"][0]["turns"]
    return questions, answers


def _conversation(question: list[str], answer: list[str], turn: int) -> list[dict]:
    conv = []
    for t in range(turn):
        conv += [{"role": "user", "content": question[min(t, len(question) - 1)]},
                 {"role": "assistant", "content": answer[min(t, len(answer) - 1)]}]
    return conv


def write_human_judgments(path: str | Path, mt_bench: str | Path | None = None, rows: int = HUMAN_ROWS,
                          seed: int = 0) -> Path:
    """``path`` (human.jsonl) on MT-bench's questions and answers (default: the repository's copy);
    winners random, ties included. Returns the path."""
    from ..tasks import default_source

    questions, answers = _mt_bench(Path(mt_bench) if mt_bench is not None else default_source("mt_bench"))
    rng = random.Random(f"simdata|human|{seed}")
    qids = sorted(questions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            q = qids[i % len(qids)]
            turn = 1 + (i // len(qids)) % 2
            a, b = rng.sample(HUMAN_MODELS, 2)
            winner = rng.choices(WINNERS, WINNER_WEIGHTS)[0]
            f.write(json.dumps({"question_id": q, "model_a": a, "model_b": b, "winner": winner,
                                "judge": f"synthetic_judge_{rng.randrange(40)}", "turn": turn,
                                "conversation_a": _conversation(questions[q], answers[a][q], turn),
                                "conversation_b": _conversation(questions[q], answers[b][q], turn)}) + "\n")
    return path
