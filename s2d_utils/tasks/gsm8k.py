"""GSM8k grade-school math (paper Sec. 4.4, Table 4: Chain-of-Thought, the negative result).

Rows have ``question`` and ``answer`` (a worked solution with ``<<calc>>`` annotations, ending in
"#### N"); gold = the number after "#### ". ``source`` is a folder holding ``train.jsonl`` and
``test.jsonl`` (openai/grade-school-math's files), or the hub id ``openai/gsm8k``; by default
``$S2D_DATA/gsm8k`` if ``S2D_DATA`` is set, else the repository's copy ``data/gsm8k`` (MIT),
checked against ``data/SHA256SUMS``.

Splits: ``test`` = test.jsonl (seeded order). The train file is cut in two, seeded: the few-shot
exemplars (`exemplars`: the first `EXEMPLAR_POOL` rows) and the unlabeled pool (``train``),
so an exemplar is never a distillation input nor a test question.
"""

from __future__ import annotations

from dataclasses import replace

import random
import re
from functools import lru_cache
from pathlib import Path

from . import DATA_ENV, Example, check_split, default_source, field_str, source_rows

NAME = "gsm8k"
FOLDER = "gsm8k"
EXEMPLAR_POOL = 8  # the 8-shot prompts' exemplars

_GOLD = re.compile(r"####\s*(.+?)\s*$")
_CALC = re.compile(r"<<[^>]*>>")


def data_source(source: str | Path | None) -> str | Path:
    """``source`` if given (a folder, a file's folder, or the hub id), else `tasks.default_source`:
    ``$S2D_DATA/gsm8k`` or the repository's checked ``data/gsm8k``."""
    return source if source is not None else default_source(FOLDER)


def normalize_number(text: str) -> str | None:
    """"$1,234.50" -> "1234.5", "18." -> "18", "-3" -> "-3"; None if there is no number."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+", text.replace("$", ""))
    if m is None:
        return None
    s = m.group(0).replace(",", "")
    try:
        value = float(s)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def _stamp(source: str, split: str) -> tuple[int, int] | None:
    """(size, mtime) of a local split file, so an edited file is read again; None for a hub id."""
    path = Path(source)
    path = path / f"{split}.jsonl" if path.is_dir() else path
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=4)
def _rows(source: str, split: str, stamp: tuple[int, int] | None = None) -> tuple[Example, ...]:
    label, rows = source_rows(source, f"{split}.jsonl", split, config="main")
    out = []
    for i, r in enumerate(rows):
        q, a = field_str(label, i, r, "question"), field_str(label, i, r, "answer")
        m = _GOLD.search(a.strip())
        gold = normalize_number(m.group(1)) if m else None
        if gold is None:
            raise ValueError(f"{label} row {i}: field 'answer' does not end in '#### <number>': {a[-60:]!r}")
        solution = _CALC.sub("", a[:m.start()]).strip()
        out.append(Example(f"{NAME}-{split}-{i}", q.strip(), gold, {"solution": solution}))
    return tuple(out)


def _shuffled(source, split: str, seed: int) -> list[Example]:
    rows = list(_rows(str(source), split, _stamp(str(source), split)))
    random.Random(f"{NAME}|{seed}|{split}").shuffle(rows)
    return rows


def exemplars(seed: int = 0, source: str | Path | None = None, k: int = EXEMPLAR_POOL) -> list[Example]:
    """The few-shot exemplars: from the train file, never in the unlabeled pool or the test set."""
    return _shuffled(data_source(source), "train", seed)[:min(k, EXEMPLAR_POOL)]


def load(split: str = "test", n: int | None = None, seed: int = 0, source: str | Path | None = None) -> list[Example]:
    """``test``: the test file; ``train``: the train file without the exemplar pool; ``valid``: none."""
    src = data_source(source)
    if split == "test":
        rows = _shuffled(src, "test", seed)
    elif split == "train":
        rows = _shuffled(src, "train", seed)[EXEMPLAR_POOL:]
    else:
        rows = []
    return rows[:check_split(split, n, len(rows))]


TRAIN_FROM_SOURCE = True

_STRICT = re.compile(r"(?:the (?:final )?answer is|####)\s*:?\s*\**\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


UNLABELED_META = ()  # the gold worked solution ("solution") is a label: nothing of meta survives


def unlabel(example: Example) -> Example:
    """The unlabeled copy System 2 sees: no gold and no worked solution."""
    return replace(example, gold=None, meta={k: v for k, v in example.meta.items() if k in UNLABELED_META})


def extract(text: str, mode: str = "flexible", example: Example | None = None) -> str | None:
    """strict: the number of the last "The answer is N" (or "#### N"); flexible: that, else the
    last number in the text. Commas, "$", units after the number and a trailing period are
    handled by `normalize_number`. None when nothing parses."""
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode={mode!r}: expected 'strict' or 'flexible'")
    said = _STRICT.findall(text)
    if said:
        return normalize_number(said[-1])
    if mode == "strict":
        return None
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def score(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    a, b = normalize_number(pred), normalize_number(gold)
    return a is not None and a == b
