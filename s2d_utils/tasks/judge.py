"""Pairwise judging: which of two answers is better (paper Sec. 4.3, Table 3: Branch-Solve-Merge).

An input is a pair: (question, answer A, answer B); a judge outputs "[[A]]", "[[B]]" or "[[C]]"
(a tie). The main job's pairs are LMSYS's pregenerated MT-bench answers of 32 models (first
turn); ids and file names say "mt_bench".

**Proxy label.** The MT-bench human judgments (the paper's label) are not in the repository: given
as a hub id or file (`load_human_judgments`), they replace it. By default, test pairs put a strong
model (`STRONG`: gpt-4, claude-v1, gpt-3.5-turbo) against a weak one (`WEAK`: llama-13b,
alpaca-13b, dolly-v2-12b, stablelm-tuned-alpha-7b), in a random order; the label is "the strong
model's answer is better". It is a proxy for human preference, named so in every table.
Position consistency (does a verdict survive swapping the answers) needs no label.

**Splits by question** (stratified by category): test pairs come from half of the 80
questions, unlabeled training pairs from the others. Half of the training pairs are strong vs
weak (so the filter's precision can be measured against the proxy), half any two models.

**Readers for the paper's data** (each a local file or a hub id): the MT-bench human judgments
(`load_human_judgments`; fields question_id, model_a, model_b, winner, judge, turn,
conversation_a/b; ties kept as ties) and OASST2 message trees (`load_oasst2`; English first
turns, the reply of rank 0 against another reply).

Answers longer than ``max_answer_chars`` are cut at a word boundary and marked visibly
("[... answer truncated: N more characters]"), so the judge sees that they were cut.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..paths import is_hub_id
from . import DATA_ENV, Example, check_split, default_source, hub_rows, read_json_rows, source_rows

NAME = "judge"
ANSWERS = ("A", "B", "C")  # a closed answer space: tables get a best-constant-answer row
# one reading: a BSM verdict is merged from parsed scores, not re-readable from a final call
PARSE_RULES = {"flexible": {}}
DATASET = "mt_bench"  # names the pairs' ids and seeds the split
FOLDER = "mt_bench"
STRONG = ("gpt-4", "claude-v1", "gpt-3.5-turbo")
WEAK = ("llama-13b", "alpaca-13b", "dolly-v2-12b", "stablelm-tuned-alpha-7b")
TEST_PER_CATEGORY, VALID_PER_CATEGORY = 5, 1  # of each category's 10 questions; train gets the rest
TRAIN_FROM_SOURCE = True  # a given folder supplies the training pairs too


def data_folder(source: str | Path | None = None) -> Path:
    """The MT-bench folder: ``source`` if given, else `tasks.default_source`: ``$S2D_DATA/mt_bench``
    if ``S2D_DATA`` is set, else the repository's copy ``data/mt_bench`` checked against
    ``data/SHA256SUMS``. A clear error if the folder lacks MT-bench's files."""
    path = Path(source if source is not None else default_source(FOLDER)).expanduser()
    if not (path / "question.jsonl").exists() or not (path / "model_answer").is_dir():
        raise FileNotFoundError(f"{path}: expected MT-bench's question.jsonl and model_answer/*.jsonl there")
    return path


def _rows(path: Path) -> list[dict]:
    rows = read_json_rows(path)
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{path} row {i}: expected an object, got {type(r).__name__}")
    return rows


def _turns(path: Path, row: int, item: dict, field: str) -> list[str]:
    turns = item.get(field)
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise ValueError(f"{path} row {row}: field {field!r} must be a non-empty list of strings, got {turns!r}")
    return turns


@lru_cache(maxsize=4)
def read_questions(folder: Path) -> dict[int, dict]:
    path = folder / "question.jsonl"
    out = {}
    for i, r in enumerate(_rows(path)):
        qid = r.get("question_id")
        if not isinstance(qid, int):
            raise ValueError(f"{path} row {i}: field 'question_id' must be an integer, got {qid!r}")
        if not isinstance(r.get("category"), str):
            raise ValueError(f"{path} row {i}: field 'category' must be a string, got {r.get('category')!r}")
        out[qid] = {"category": r["category"], "question": _turns(path, i, r, "turns")[0]}
    return out


@lru_cache(maxsize=4)
def read_answers(folder: Path) -> dict[str, dict[int, str]]:
    """model -> question_id -> first-turn answer (read once per folder; treat as read-only)."""
    out: dict[str, dict[int, str]] = {}
    for path in sorted((folder / "model_answer").glob("*.jsonl")):
        answers = {}
        for i, r in enumerate(_rows(path)):
            choices = r.get("choices")
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                raise ValueError(f"{path} row {i}: field 'choices' must be a non-empty list of objects")
            qid = r.get("question_id")
            if not isinstance(qid, int):
                raise ValueError(f"{path} row {i}: field 'question_id' must be an integer, got {qid!r}")
            answers[qid] = _turns(path, i, choices[0], "turns")[0]
        out[path.stem] = answers
    return out


def truncate(text: str, limit: int | None) -> tuple[str, bool]:
    """``text`` cut at a word boundary before ``limit`` characters, with a visible marker."""
    text = text.strip()
    if limit is None or len(text) <= limit:
        return text, False
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return f"{cut} [... answer truncated: {len(text) - len(cut)} more characters]", True


def pair_example(eid: str, question: str, answer_a: str, answer_b: str, gold: str | None, limit: int | None,
                 **meta: Any) -> Example:
    a, cut_a = truncate(answer_a, limit)
    b, cut_b = truncate(answer_b, limit)
    return Example(eid, question, gold, {"answer_a": a, "answer_b": b, "truncated": cut_a or cut_b, **meta})


def _split_questions(questions: dict[int, dict], seed: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"test": [], "valid": [], "train": []}
    for cat in sorted({q["category"] for q in questions.values()}):
        ids = sorted(q for q, v in questions.items() if v["category"] == cat)
        random.Random(f"{DATASET}|{seed}|{cat}").shuffle(ids)
        out["test"] += ids[:TEST_PER_CATEGORY]
        out["valid"] += ids[TEST_PER_CATEGORY:TEST_PER_CATEGORY + VALID_PER_CATEGORY]
        out["train"] += ids[TEST_PER_CATEGORY + VALID_PER_CATEGORY:]
    return out


def load(split: str = "test", n: int | None = None, seed: int = 0, source: str | Path | None = None,
         max_answer_chars: int | None = None, train_source: str | Path | None = None) -> list[Example]:
    """Pairs of one split (see the module docstring). Gold: the proxy label "A" or "B" (None for
    training pairs that are not strong vs weak; the pipeline drops all training labels anyway).

    ``train_source`` (OASST2, `load_oasst2`): the training pairs as the paper took them, OASST2's
    train split, at most ``n`` of them (every pair when the split holds fewer: the count is in the
    notebook's output and the table's training note)."""
    if train_source is not None and split == "train":
        pairs = load_oasst2(train_source, "train", seed=seed, max_answer_chars=max_answer_chars)
        return pairs if n is None else pairs[:n]
    folder = data_folder(source)
    questions, answers = read_questions(folder), read_answers(folder)
    missing = [m for m in STRONG + WEAK if m not in answers]
    if missing:
        raise FileNotFoundError(f"{folder / 'model_answer'}: no answers of {missing} (needed for the proxy label)")
    qids = _split_questions(questions, seed)[split] if split in ("train", "valid", "test") else None
    if qids is None:
        check_split(split, n, 0)
    rng = random.Random(f"{DATASET}|{seed}|{split}|pairs")
    combos = []
    for q in qids:
        for s in STRONG:
            for w in WEAK:
                if q in answers[s] and q in answers[w]:
                    combos.append((q, s, w, True))
    if split == "train":  # half strong vs weak, half any two models
        models = sorted(m for m in answers if all(q in answers[m] for q in qids))
        any_two = []
        for q in qids:
            for _ in range(len(STRONG) * len(WEAK)):
                m1, m2 = rng.sample(models, 2)
                any_two.append((q, m1, m2, m1 in STRONG and m2 in WEAK))
        combos = [c for pair in zip(combos, any_two) for c in pair]
    else:
        rng.shuffle(combos)
    n = check_split(split, n, len(combos))
    out = []
    for i, (q, first, second, proxy) in enumerate(combos[:n]):
        flip = rng.random() < 0.5
        ma, mb = (second, first) if flip else (first, second)
        gold = ("B" if flip else "A") if proxy else None
        out.append(pair_example(f"{DATASET}-{split}-{i}", questions[q]["question"], answers[ma][q], answers[mb][q], gold,
                                max_answer_chars, question_id=q, category=questions[q]["category"], model_a=ma,
                                model_b=mb, label="proxy: strong model better" if proxy else None))
    return out


def unlabel(example: Example) -> Example:
    """What a judge may see of a training pair: the question and the answers (no label, no model names)."""
    meta = {k: v for k, v in example.meta.items() if k in ("answer_a", "answer_b", "truncated", "category")}
    return replace(example, gold=None, meta=meta)


def map_back(verdict: str) -> str:
    """A verdict on the swapped pair, as a verdict on the original: A <-> B, a tie stays a tie."""
    return {"A": "B", "B": "A"}.get(verdict, verdict)


def swapped(example: Example) -> Example:
    """The same pair with the two answers in the other order (gold mapped too)."""
    m = dict(example.meta)
    m["answer_a"], m["answer_b"] = example.meta["answer_b"], example.meta["answer_a"]
    if "model_a" in m:
        m["model_a"], m["model_b"] = example.meta.get("model_b"), example.meta.get("model_a")
    return replace(example, id=f"{example.id}~swap", gold=map_back(example.gold) if example.gold else None, meta=m)


_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_LOOSE = re.compile(r"^\W*\[?\s*([ABC])\s*\]?\W*$")


def extract(text: str, mode: str = "flexible", example: Example | None = None) -> str | None:
    """The verdict: the last "[[A]]", "[[B]]" or "[[C]]" (strict); flexible also takes a reply that
    is only the letter, e.g. "A" or "[B]". None when there is none."""
    found = _VERDICT.findall(text)
    if found:
        return found[-1]
    if mode == "flexible":
        m = _LOOSE.match(text.strip())
        if m:
            return m.group(1)
    return None


def score(pred: str | None, gold: str) -> bool:
    return pred is not None and pred == gold


# --- readers for the paper's data ------------------------------------------------------------------

WINNERS = {"model_a": "A", "model_b": "B", "tie": "C", "tie (bothbad)": "C"}


def _conversation(path, row: int, item: dict, field: str) -> tuple[str, str]:
    conv = item.get(field)
    if (not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(m, dict) for m in conv[:2])
            or not isinstance(conv[0].get("content"), str) or not isinstance(conv[1].get("content"), str)):
        raise ValueError(f"{path} row {row}: field {field!r} must be a list of messages (user turn, then assistant turn)")
    return conv[0]["content"], conv[1]["content"]


def question_ids(split: str, seed: int = 0, source: str | Path | None = None) -> list[int]:
    """The MT-bench question ids of one split (`load`'s split by question, stratified by category)."""
    check_split(split, None, 0)
    return list(_split_questions(read_questions(data_folder(source)), seed).get(split, []))


def load_human_judgments(source: str | Path, question_ids: Iterable[int] | None = None, n: int | None = None,
                         max_answer_chars: int | None = None, turn: int = 1) -> list[Example]:
    """MT-bench human judgments (lmsys/mt_bench_human_judgments, split "human"): one Example per
    vote of the given turn on the given questions (None: every question), in file order; gold "A",
    "B" or "C". Ties are kept as ties: a table gives agreement with ties (every vote) and without
    (`without_ties`; `bsm.combine`'s ``agreement_without_ties``), as the paper does. Several votes on
    one pair are several examples: each vote is matched on its own, as FastChat counts agreement.
    ``n`` (None: all) takes the first n."""
    label, rows = source_rows(source, "human.jsonl", split="human")
    wanted = None if question_ids is None else set(question_ids)
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{label} row {i}: expected an object")
        for key, kind in (("question_id", int), ("model_a", str), ("model_b", str), ("winner", str), ("judge", str),
                          ("turn", int)):
            if not isinstance(r.get(key), kind):
                raise ValueError(f"{label} row {i}: field {key!r} must be {kind.__name__}, got {r.get(key)!r}")
        if r["winner"] not in WINNERS:
            raise ValueError(f"{label} row {i}: field 'winner' is {r['winner']!r}; expected one of {list(WINNERS)}")
        if r["turn"] != turn or (wanted is not None and r["question_id"] not in wanted):
            continue
        q, a = _conversation(label, i, r, "conversation_a")
        _, b = _conversation(label, i, r, "conversation_b")
        gold = WINNERS[r["winner"]]
        out.append(pair_example(f"{DATASET}-human-{i}", q, a, b, gold, max_answer_chars,
                                question_id=r["question_id"], model_a=r["model_a"], model_b=r["model_b"],
                                judge=r["judge"], label="human"))
    if n is not None and n > len(out):
        raise ValueError(f"{label}: {len(out)} human votes of turn {turn} on the requested questions, n={n} requested")
    return out[:check_split("test", n, len(out))]


def without_ties(examples: Sequence[Example]) -> list[Example]:
    """The votes that pick a side (the paper's "without ties")."""
    return [e for e in examples if e.gold != "C"]


OASST2_HUB = "OpenAssistant/oasst2"
OASST2_SPLITS = ("train", "validation")


def oasst2_rows(source: str | Path, split: str) -> tuple[Path | str, list[Any]]:
    """(label, message rows) of one OASST2 split: the hub id (`OASST2_HUB`: its split), a folder
    holding ``<split>.jsonl`` or ``<split>.jsonl.gz`` (the hub's splits exported as JSON lines), or
    one such file (read whole: it is the split)."""
    if split not in OASST2_SPLITS:
        raise ValueError(f"OASST2 split {split!r}: expected one of {OASST2_SPLITS}")
    if is_hub_id(str(source)):
        return str(source), hub_rows(str(source), split)
    path = Path(source).expanduser()
    if path.is_dir():
        found = [path / f"{split}{ext}" for ext in (".jsonl", ".jsonl.gz") if (path / f"{split}{ext}").is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no {split}.jsonl or {split}.jsonl.gz (OASST2's {split} split as JSON "
                                    f"lines of messages; or pass the hub id {OASST2_HUB})")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected OASST2 messages as JSON lines, a folder holding "
                                f"train.jsonl and validation.jsonl, or the hub id {OASST2_HUB})")
    return path, read_json_rows(path)


def load_oasst2(source: str | Path, split: str = "validation", n: int | None = None, seed: int = 0,
                max_answer_chars: int | None = None, lang: str = "en") -> list[Example]:
    """OASST2 pairs of one split (flat message rows: message_id, parent_id, text, role, lang, rank):
    each English first turn (a prompter message with no parent) with its rank-0 assistant reply
    against its rank-1 reply, in a random order; gold = the rank-0 side. Deleted messages and
    prompts with fewer than two ranked replies are left out. The order is a seeded shuffle (a
    smaller ``n`` is a prefix of a larger one); ``n=None`` takes every pair, a larger ``n`` than
    the split holds raises naming both."""
    label, rows = oasst2_rows(source, split)
    by_id, children = {}, {}
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{label} row {i}: expected an object")
        for key in ("message_id", "text", "role", "lang"):
            if not isinstance(r.get(key), str):
                raise ValueError(f"{label} row {i}: field {key!r} must be a string, got {r.get(key)!r}")
        if r["role"] not in ("prompter", "assistant"):
            raise ValueError(f"{label} row {i}: field 'role' is {r['role']!r}; expected 'prompter' or 'assistant'")
        if r.get("rank") is not None and (isinstance(r["rank"], bool) or not isinstance(r["rank"], int)):
            raise ValueError(f"{label} row {i}: field 'rank' must be an integer or null, got {r['rank']!r}")
        if r.get("deleted"):
            continue
        by_id[r["message_id"]] = r
        if r.get("parent_id"):
            children.setdefault(r["parent_id"], []).append(r)
    out = []
    for mid, r in by_id.items():
        if r.get("parent_id") or r["role"] != "prompter" or r["lang"] != lang:
            continue
        ranked = sorted((c for c in children.get(mid, []) if c["role"] == "assistant" and c.get("rank") is not None),
                        key=lambda c: c["rank"])
        if len(ranked) < 2 or ranked[0]["rank"] != 0:
            continue
        best, other = ranked[0], ranked[1]
        flip = random.Random(f"oasst2|{seed}|{mid}").random() < 0.5
        a, b = (other, best) if flip else (best, other)
        out.append(pair_example(f"oasst2-{mid}", r["text"], a["text"], b["text"], "B" if flip else "A",
                                max_answer_chars, label="oasst2 rank", split=split))
    random.Random(f"oasst2|{seed}|{split}|order").shuffle(out)
    if n is not None and n > len(out):
        raise ValueError(f"{label}: OASST2's {split} split gives {len(out)} pairs ({lang} first turns with two ranked "
                         f"replies), n={n} requested")
    return out[:check_split("test", n, len(out))]


def check_sources(profile: str, sources: dict[str, Any]) -> None:
    """The paper profile distills on OASST2 (Sec. 4.3): refuse it without ``OASST2_SOURCE``, and
    refuse a single OASST2 file where both splits are read (train and test would share pairs)."""
    oasst2 = sources.get("OASST2_SOURCE")
    if profile == "paper" and oasst2 is None:
        raise ValueError(f"PROFILE='paper' distills BSM on OASST2's 19,672 unlabeled training pairs and tests on its "
                         f"validation pairs: pass OASST2_SOURCE (the hub id {OASST2_HUB}, or a folder holding "
                         "train.jsonl and validation.jsonl); HUMAN_JUDGMENTS_SOURCE (lmsys/mt_bench_human_judgments) "
                         "gives the MT-bench column its human labels")
    if oasst2 is not None and not is_hub_id(str(oasst2)) and Path(oasst2).expanduser().is_file():
        raise ValueError(f"OASST2_SOURCE={str(oasst2)!r}: one file has no splits, and the notebook reads two (train "
                         "pairs to distill on, validation pairs to test on); pass a folder holding train.jsonl and "
                         f"validation.jsonl, or the hub id {OASST2_HUB}")
