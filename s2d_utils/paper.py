"""The paper's published numbers (Llama-2-70B-chat), used only as reference columns beside ours.

Our numbers always sit beside the paper's, never in place of them. A `PaperTable` is one block
of one of the paper's tables; `Measure` says which of our numbers goes beside each column.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_MODEL = "meta-llama/Llama-2-70b-chat-hf"
CONSTANT = "Best constant answer"  # a row of ours only: one answer for every input (closed answer spaces)


@dataclass(frozen=True)
class Measure:
    """One measured column of a table: the paper's column name, our label, and the key of
    `SystemResult.as_dict()` that holds our value (a share in [0, 1] when ``percent``)."""

    column: str
    label: str
    key: str
    percent: bool = True
    tokens_key: str = "tokens"  # our #Tokens that goes with this measure (maj@k: the k samples' tokens)
    tokens_column: str = "tokens"  # the paper's


T1_MEASURES = (Measure("accuracy", "Acc %", "accuracy"), Measure("tokens", "#Tokens", "tokens", percent=False))


@dataclass(frozen=True)
class PaperTable:
    """A block of one of the paper's tables (Llama-2-70B-chat): rows x columns, None = not reported.

    ``measures`` say which of our numbers sits beside each paper column. Looking up a row the
    paper does not have raises: a typo in a row name must not print n.a.
    """

    name: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, float | None]]
    measures: tuple[Measure, ...] = T1_MEASURES

    def row(self, name: str) -> dict[str, float | None]:
        if name == CONSTANT:
            return {c: None for c in self.columns}
        if name not in self.rows:
            raise KeyError(f"{self.name}: the paper has no row {name!r}; rows: {list(self.rows)}")
        return self.rows[name]

    def value(self, row: str, column: str) -> float | None:
        values = self.row(row)
        if column not in self.columns:
            raise KeyError(f"{self.name}: no column {column!r}; columns: {list(self.columns)}")
        return values.get(column)

    @property
    def headline(self) -> Measure:
        """The first percentage measure (accuracy; S2A: biased; BSM: agreement; GSM8k: maj@1)."""
        return next(m for m in self.measures if m.percent)

    def as_dict(self) -> dict:
        return {"name": self.name, "columns": list(self.columns), "rows": self.rows}


def _rows(columns: tuple[str, ...], values: dict[str, tuple]) -> dict[str, dict[str, float | None]]:
    return {row: dict(zip(columns, v)) for row, v in values.items()}


_T1 = ("accuracy", "tokens")
_T2 = ("biased", "unbiased", "tokens")
T2_MEASURES = (Measure("biased", "Biased %", "accuracy[biased]"), Measure("unbiased", "Unbiased %", "accuracy[unbiased]"),
               Measure("tokens", "#Tokens", "tokens", percent=False))
_T3 = ("agreement", "inconsistent", "tokens")
T3_MEASURES = (Measure("agreement", "Agree %", "accuracy"), Measure("inconsistent", "Inconsistent %", "inconsistent"),
               Measure("tokens", "#Tokens", "tokens", percent=False))
_T4 = ("acc@1", "tok@1", "acc@5", "tok@5", "acc@10", "tok@10")
T4_MEASURES = tuple(m for k in (1, 5, 10) for m in (
    Measure(f"acc@{k}", f"maj@{k} Acc %", "accuracy" if k == 1 else f"accuracy@{k}", tokens_key=f"tokens@{k}",
            tokens_column=f"tok@{k}"),
    Measure(f"tok@{k}", f"maj@{k} #Tokens", f"tokens@{k}", percent=False)))
GPT4_NOTE = ("Paper's reference judges (not rerun here): GPT-4 judge 44.7 / 35.5 / 4 on OASST2 and 68.1 / 25.6 / 4 "
             "on MT-bench; GPT-4 CoT judge 73.8 / 16.2 / 548.8 on MT-bench (agreement % / inconsistent % / #Tokens).")
PAPER = {
    ("table1", "last_letter"): PaperTable("Table 1, last letter", _T1, _rows(_T1, {
        "System 1": (30.0, 27.1),
        "System 2: 1-step RaR": (39.5, 106.6),
        "System 2: 2-step RaR": (44.5, 41.5),
        "Distill System 1": (69.5, None),
        "Distill System 2 (2-step RaR)": (98.0, 25.5),
        "Distill System 2 without filter": (87.5, None),
    })),
    ("table1", "coin_flip"): PaperTable("Table 1, coin flip", _T1, _rows(_T1, {
        "System 1": (56.1, 61.9),
        "System 2: 1-step RaR": (58.5, 158.9),
        "System 2: 2-step RaR": (77.2, 112.4),
        "Distill System 1": (54.5, None),
        "Distill System 2 (2-step RaR)": (75.7, 50.3),
        "Distill System 2 without filter": (None, None),
    })),
    ("table2", "sycophancy"): PaperTable("Table 2, SycophancyEval (TriviaQA)", _T2, _rows(_T2, {
        "System 1": (51.6, 73.8, 165),
        "System 2: S2A": (76.0, 69.3, 147),
        "Distill S2A": (81.3, 78.6, 56),
        "Distill S2A without USC": (78.6, 75.3, 58),
    }), T2_MEASURES),
    ("table3", "mt_bench"): PaperTable("Table 3, MT-bench (human agreement)", _T3, _rows(_T3, {
        "System 1 judge": (28.1, 80.9, 4),
        "CoT judge": (58.9, 30.8, 411.8),
        "System 2: BSM": (64.5, 21.1, 2063.1),
        "Distill BSM": (72.4, 9.1, 4),
    }), T3_MEASURES),
    ("table3", "oasst2"): PaperTable("Table 3, OASST2 (human agreement)", _T3, _rows(_T3, {
        "System 1 judge": (32.0, 56.7, 4),
        "CoT judge": (45.2, 37.7, 432.6),
        "System 2: BSM": (49.1, 30.4, 2117.8),
        "Distill BSM": (58.4, 12.2, 4),
    }), T3_MEASURES),
    ("table4", "gsm8k"): PaperTable("Table 4, GSM8k", _T4, _rows(_T4, {
        "System 1 (8-shot, no CoT)": (7.58, 57, 9.40, 295, 10.31, 620),
        "CoT zero-shot": (52.77, 270, 57.54, 1385, 59.44, 2760),
        "CoT 8-shot": (36.39, 297, 54.97, 1560, 63.84, 3120),
        "Distill CoT": (7.13, 18, 7.13, 90, 7.35, 180),
    }), T4_MEASURES),
}


def paper_table(table: str, block: str) -> PaperTable:
    """The paper's figures for ``table`` (e.g. "table1") and ``block`` (a task or dataset column)."""
    if (table, block) not in PAPER:
        raise KeyError(f"no paper figures for {(table, block)}; known: {sorted(PAPER)}")
    return PAPER[(table, block)]


# Fine-tuning budgets (PAPER.md, "Setup"): task -> (optimizer steps, tokens a step)
TRAINING = {"last_letter": (3, 66_000), "coin_flip": (100, 66_000), "sycophancy": (350, 23_000),
            "judge": (600, 131_000), "gsm8k": (5000, 33_000)}


def training_budget(task: str) -> str | None:
    """The paper's fine-tuning budget for a task, in words ("100 steps x 66k tokens"), or None."""
    if task not in TRAINING:
        return None
    steps, tokens = TRAINING[task]
    return f"{steps:,} steps x {tokens / 1000:g}k tokens"
