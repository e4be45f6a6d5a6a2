"""Last-letter concatenation (paper Sec. 4.1, Table 1).

Question (the RaR paper's wording): ``Take the last letters of the words in "W1 W2" and
concatenate them.`` Gold: the last letters joined, e.g. "apple banana" -> "ea".

Synthetic data (the paper's setup): 1,200 unique English words, drawn by seed from the `web2`
list of the PyPI package ``english-words``; each word is used once, so with k = 2 the 600
examples split 200 / 200 / 200 into train / valid / test with no word shared between splits.
``k=4`` builds 4-word questions from 2,400 words the same way.

``source``: a RaR paper file (``last_letter_concatenation_gpt-4.json``, or the ``...4_...`` file
for k = 4) or a folder holding it; such a file is an evaluation set, so only ``split="test"``.
"""

from __future__ import annotations

from dataclasses import replace

import random
import re
from functools import lru_cache
from pathlib import Path

from . import Example, check_split, field_str, source_rows

NAME = "last_letter"
SPLIT_SIZES = {"train": 200, "valid": 200, "test": 200}
RAR_FILES = {2: "last_letter_concatenation_gpt-4.json", 4: "last_letter_concatenation4_gpt-4.json"}
_QUOTED = re.compile(r'"([^"]+)"')


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """Plain lowercase English words (4-9 letters) from the `web2` list, sorted for determinism."""
    from english_words import get_english_words_set

    words = get_english_words_set(["web2"], lower=True, alpha=True)
    return tuple(sorted(w for w in words if w.isascii() and w.isalpha() and 4 <= len(w) <= 9))


def question(words: list[str]) -> str:
    return f'Take the last letters of the words in "{" ".join(words)}" and concatenate them.'


def gold_answer(words: list[str]) -> str:
    return "".join(w[-1] for w in words).lower()


def load(split: str = "test", n: int | None = None, seed: int = 0, source: str | Path | None = None,
         k: int = 2) -> list[Example]:
    """Examples of one split; the same seed always gives the same data."""
    if k < 1:
        raise ValueError(f"k={k}: need at least one word per question")
    if source is not None:
        return _load_file(source, split, n, k)
    take = check_split(split, n, SPLIT_SIZES.get(split, 0))
    pool = list(word_list())
    rng = random.Random(f"last_letter|seed={seed}|k={k}")
    # Sec. 4.1: 1,200 unique words for k=2; split blocks are disjoint by construction
    chosen = rng.sample(pool, k * sum(SPLIT_SIZES.values()))
    offset = 0
    for name in ("train", "valid", "test"):
        if name == split:
            break
        offset += k * SPLIT_SIZES[name]
    out = []
    for i in range(take):
        words = chosen[offset + i * k : offset + (i + 1) * k]
        out.append(Example(f"{NAME}-{split}-{seed}-{i}", question(words), gold_answer(words), {"words": tuple(words)}))
    return out


def _load_file(source: Path | str, split: str, n: int | None, k: int) -> list[Example]:
    if split != "test":
        raise ValueError(f"{source}: the RaR files are evaluation sets; load split 'test' from them, not {split!r}")
    path, rows = source_rows(source, RAR_FILES.get(k, f"last_letter_concatenation{k}_gpt-4.json"), split)
    take = check_split(split, n, len(rows))
    out = []
    for i, item in enumerate(rows[:take]):
        q = field_str(path, i, item, "question")
        gold = field_str(path, i, item, "answer").strip().lower()
        m = _QUOTED.search(q)
        if m is None:
            raise ValueError(f"{path} row {i}: field 'question' has no quoted words: {q!r}")
        words = m.group(1).split()
        # the RaR files treat some compound names ("Juan Carlos") as one word; check only rows
        # where the gold has one letter per word
        if len(words) == len(gold) and gold_answer(words) != gold:
            raise ValueError(f"{path} row {i}: field 'answer' is {gold!r}, but the last letters of {words} give {gold_answer(words)!r}")
        out.append(Example(f"{NAME}-file-{i}", q, gold, {"words": tuple(words), "source": str(path)}))
    return out


_ANSWER_IS = re.compile(r"answer is\s*:?\s*[\"'“‘*]*([a-z]+)", re.IGNORECASE)
_MARKED = re.compile(r"(?:[\"'“‘]|\*\*)([a-z]+)(?:[\"'”’]|\*\*)", re.IGNORECASE)
_LAST_TOKEN = re.compile(r"([a-z]+)[\s.!\"'”’*]*$", re.IGNORECASE)
MAX_LETTERS = 8  # without the question at hand, a longer string cannot be a few words' last letters


UNLABELED_META = ("words", "source")  # the input's own words (the parser reads them) and where it came from


def unlabel(example: Example) -> Example:
    """The unlabeled copy System 2 sees: no gold; meta keeps only `UNLABELED_META`."""
    return replace(example, gold=None, meta={k: v for k, v in example.meta.items() if k in UNLABELED_META})


def extract(text: str, mode: str = "flexible", example: Example | None = None) -> str | None:
    """Parse the concatenated letters from a completion; None (a parse failure) if nothing can be the answer.

    strict: the whole completion is one string of letters, or it says "answer is X" (the last
    such phrase). Either is a committed answer, right or wrong, whatever its length.
    flexible: strict, else a letter string the text marks as its result: the last quoted or bold
    one, else the text's last word. A marked string or last word counts only if it *can* be the
    answer: exactly one letter per word of the question when ``example`` is given (its words are
    part of the input, not the label), else at most `MAX_LETTERS` letters. Without this rule any
    story's last word ("... and they lived happily ever after") would parse as an answer, and
    the parse-failure rate would hide that the model never answered.
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode={mode!r}: expected 'strict' or 'flexible'")
    stripped = text.strip().strip(".!\"'“”‘’* \n").lower()
    if stripped and stripped.isalpha() and stripped.isascii():
        return stripped
    said = _ANSWER_IS.findall(text)
    if said:
        return said[-1].lower()
    if mode == "strict":
        return None
    words = (example.meta.get("words") if example is not None else None) or ()

    def can_be_answer(s: str) -> bool:
        return len(s) == len(words) if words else len(s) <= MAX_LETTERS

    marked = [s for s in _MARKED.findall(text) if can_be_answer(s)]
    if marked:
        return marked[-1].lower()
    last = _LAST_TOKEN.search(text)
    if last and can_be_answer(last.group(1)):
        return last.group(1).lower()
    return None


def score(pred: str | None, gold: str) -> bool:
    return pred is not None and pred.strip().lower() == gold.strip().lower()
