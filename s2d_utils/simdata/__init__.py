"""Synthetic files in the formats of the datasets the repository cannot ship (OASST2, the MT-bench
human judgments, SycophancyEval's answer.jsonl, TriviaQA), at the paper's sizes.

They exist so that tests and `make simulate` can run every reader, filter and notebook at full
size without the real data. Their text is made up and says so ("synthetic"); their labels are
random. Nothing here is a result, and no table built on them can be mistaken for one: simulated
runs write under ``results/simulated/`` only.
"""

from __future__ import annotations

import random

WORDS = ("answer", "model", "question", "careful", "detail", "example", "reason", "step", "result", "clear",
         "useful", "point", "data", "method", "simple", "context", "user", "response", "quality", "source",
         "history", "science", "number", "value", "system", "language", "summary", "review", "table", "idea")


def words(rng: random.Random, n: int, tag: str = "synthetic") -> str:
    """``n`` made-up words, the first one ``tag`` (so a reader sees what the text is)."""
    return " ".join([tag, *(rng.choice(WORDS) for _ in range(max(0, n - 1)))])


def length(rng: random.Random, median: int, spread: float = 0.8, low: int = 3, high: int = 2000) -> int:
    """A word count drawn around ``median`` (log-normal, clipped): message lengths vary widely."""
    return int(min(high, max(low, rng.lognormvariate(0, spread) * median)))
