"""Coin flip (paper Sec. 4.1, Table 1).

Question (two people): ``A coin is heads up. X flips the coin. Y does not flip the coin. Is the
coin still heads up?`` Gold: "yes" when the number of flips is even, else "no".

Synthetic data: people are US-census first names from the PyPI package ``names``, flips are
fair coin tosses, both drawn from a seeded RNG. Questions are unique across all splits (no test
question appears in train). Paper sizes: 20,000 unlabeled train, 3,333 valid, 1,333 test.

``source``: the RaR paper's ``raw_coin_val.json`` (BIG-bench style ``inputs``/``targets``) or
``coin_val_gpt-4.json`` (``question``/``answer``), or a folder holding the former; such a file is
an evaluation set, so only ``split="test"``.
"""

from __future__ import annotations

from dataclasses import replace

import random
import re
from functools import lru_cache
from pathlib import Path

from . import Example, check_split, field_str, source_rows

NAME = "coin_flip"
ANSWERS = ("yes", "no")  # a closed answer space: tables get a best-constant-answer row
# the table's reading first; every verdict is also computed under the others (summary.py)
PARSE_RULES = {"flexible": {}, "lenient": {"conflicts": "answer"}}
SPLIT_SIZES = {"train": 20000, "valid": 3333, "test": 1333}
RAW_FILE = "raw_coin_val.json"
# Paper Table 1 footnote: coin flip is prompt-sensitive; these are its three variants
VARIANTS = {"base": "", "flip_means_reverse": " Flip means reverse.",
            "answer_yes_no": " Answer the Yes or No question."}


@lru_cache(maxsize=1)
def name_list() -> tuple[str, ...]:
    """Capitalized first names (male and female lists of the `names` package), sorted."""
    import importlib.util

    spec = importlib.util.find_spec("names")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("coin_flip needs the PyPI package 'names' (pip install names==0.3.0)")
    folder = Path(list(spec.submodule_search_locations)[0])
    found = set()
    for fname in ("dist.male.first", "dist.female.first"):
        for line in (folder / fname).read_text().splitlines():
            if line.strip():
                found.add(line.split()[0].capitalize())
    return tuple(sorted(found))


def question(people: list[str], flips: list[bool], variant: str = "base") -> str:
    acts = " ".join(f"{p} {'flips' if f else 'does not flip'} the coin." for p, f in zip(people, flips))
    return f"A coin is heads up. {acts} Is the coin still heads up?{VARIANTS[variant]}"


def gold_answer(flips: list[bool]) -> str:
    return "yes" if sum(flips) % 2 == 0 else "no"


@lru_cache(maxsize=8)
def _pool(seed: int, people: int) -> tuple[tuple[tuple[str, ...], tuple[bool, ...]], ...]:
    rng = random.Random(f"coin_flip|seed={seed}|people={people}")
    names = name_list()
    total = sum(SPLIT_SIZES.values())
    seen, pool = set(), []
    while len(pool) < total:
        who = tuple(rng.sample(names, people))
        flips = tuple(rng.random() < 0.5 for _ in range(people))
        if (who, flips) not in seen:  # unique questions: no test item leaks into train
            seen.add((who, flips))
            pool.append((who, flips))
    return tuple(pool)


def load(split: str = "test", n: int | None = None, seed: int = 0, source: str | Path | None = None,
         people: int = 2, variant: str = "base") -> list[Example]:
    """Examples of one split; the same seed always gives the same data."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {list(VARIANTS)}")
    if people < 1:
        raise ValueError(f"people={people}: need at least one person")
    if source is not None:
        return _load_file(source, split, n, variant)
    take = check_split(split, n, SPLIT_SIZES.get(split, 0))
    offset = {"train": 0, "valid": SPLIT_SIZES["train"], "test": SPLIT_SIZES["train"] + SPLIT_SIZES["valid"]}[split]
    out = []
    for i, (who, flips) in enumerate(_pool(seed, people)[offset : offset + take]):
        out.append(Example(f"{NAME}-{split}-{seed}-{i}", question(list(who), list(flips), variant),
                           gold_answer(list(flips)), {"people": who, "flips": flips}))
    return out


_SPACES = re.compile(r"\s+")


def _load_file(source: Path | str, split: str, n: int | None, variant: str) -> list[Example]:
    if split != "test":
        raise ValueError(f"{source}: the RaR coin files are evaluation sets; load split 'test' from them, not {split!r}")
    path, rows = source_rows(source, RAW_FILE, split)
    take = check_split(split, n, len(rows))
    out = []
    for i, item in enumerate(rows[:take]):
        big_bench = isinstance(item, dict) and "inputs" in item
        q = field_str(path, i, item, "inputs" if big_bench else "question")
        gold = field_str(path, i, item, "targets" if big_bench else "answer").strip().lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"{path} row {i}: field {'targets' if big_bench else 'answer'!r} must be yes/no, got {gold!r}")
        q = _SPACES.sub(" ", q.strip())
        if q.startswith("Q:"):
            q = q[2:].strip()
        if variant != "base" and not q.endswith(VARIANTS[variant].strip()):
            q += VARIANTS[variant]
        out.append(Example(f"{NAME}-file-{i}", q, gold, {"source": str(path)}))
    return out


_ANSWER_IS = re.compile(r"answer is\s*:?\s*[\"'“‘*]*(yes|no)\b", re.IGNORECASE)
_LEADING = re.compile(r"^[\s\"'“‘*]*(yes|no)\b", re.IGNORECASE)
# "Yes" / "No" opening a sentence ("... so yes." ends one and counts too)
_SENTENCE_ANSWER = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|,\s*so\s+|\bso\s+)[\"'“‘*]*(yes|no)\b[\"'”’*]*(?=[\s,.!;:]|$)",
                              re.IGNORECASE)
# statements of the coin's state (not the question's echo "Is the coin still heads up?")
_STATE = re.compile(r"\b(?:is|remains|will be|would be|lands|ends up|stays)\s+(?:now\s+)?"
                    r"(still heads|heads|tails|no longer heads|not heads|not still heads)\b[^.?!\n]*([.?!\n]|$)",
                    re.IGNORECASE)


UNLABELED_META = ("people", "source")  # who is in the question (the flips decide the gold: dropped)


def unlabel(example: Example) -> Example:
    """The unlabeled copy System 2 sees: no gold, no flips; meta keeps only `UNLABELED_META`."""
    return replace(example, gold=None, meta={k: v for k, v in example.meta.items() if k in UNLABELED_META})


def _stated_state(text: str) -> str | None:
    """yes/no from the last statement of the coin's final state, skipping questions and 'whether' clauses."""
    found = None
    for m in _STATE.finditer(text):
        before = text[max(0, m.start() - 25) : m.start()].lower()
        if m.group(2) == "?" or "whether" in before or " if " in f" {before}":
            continue
        state = " ".join(m.group(1).lower().split())
        found = "yes" if state in ("still heads", "heads") else "no"
    return found


def extract(text: str, mode: str = "flexible", example: Example | None = None,
            conflicts: str = "fail") -> str | None:
    """Parse yes/no from a completion; None (a parse failure) when it gives no answer or two.

    strict: the completion starts with yes/no, or says "answer is yes/no" (the last such phrase).
    flexible: strict, else the last sentence that opens with "yes" or "no" ("Yes, ...", "... so
    no."), else the last statement of the coin's final state ("the coin is still heads up" ->
    yes, "... is tails up" -> no). A "yes" or "no" inside other words or phrases ("no way",
    "yesterday") is not an answer.

    A completion that says one thing and states the other (e.g. "No, the coin is still heads
    up.") is a parse failure in both modes: we do not guess which half the model meant, and
    counting it as either would credit or blame a contradiction. ``conflicts="answer"`` instead
    lets the explicit yes/no win (`lenient_extract`, for the sensitivity line of the findings).
    ``example`` is unused (same surface as the other tasks).
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode={mode!r}: expected 'strict' or 'flexible'")
    if conflicts not in ("fail", "answer"):
        raise ValueError(f"conflicts={conflicts!r}: expected 'fail' or 'answer'")
    answer = None
    said = _ANSWER_IS.findall(text)
    if said:
        answer = said[-1].lower()
    elif m := _LEADING.match(text):
        answer = m.group(1).lower()
    elif mode == "flexible":
        opened = _SENTENCE_ANSWER.findall(text)
        answer = opened[-1].lower() if opened else None
    state = _stated_state(text)
    if answer is not None:
        return answer if state is None or state == answer or conflicts == "answer" else None
    return state if mode == "flexible" else None


def lenient_extract(text: str, example: Example | None = None) -> str | None:
    """The other reading of a contradiction: the explicit yes/no wins over the stated coin state.

    Used only to show how much a table depends on the parse rule (the findings report accuracy
    under both readings when they differ); the tables use `extract`.
    """
    return extract(text, "flexible", example, conflicts="answer")


def score(pred: str | None, gold: str) -> bool:
    return pred is not None and pred.strip().lower() == gold.strip().lower()
