"""Every method notebook, once: what it reproduces, which rows play which role, what it writes.

This is the one list of the notebooks. The pipeline reads a notebook's record to write its table,
figure and metrics; the summary, the routing analysis, the README generator, the profiles'
budgets and the tests read the same records. A row name is defined here and nowhere else (the
method modules re-export them: ``rar.SYSTEM1``), since the tables, metrics and verdicts all key
on it.

Nothing here imports the rest of the package: it is data.
"""

from __future__ import annotations

from dataclasses import dataclass

# the paper's claims, as the summary tests them (`summary.verdicts`)
BEATS = "distilled System 1 beats System 1"
NEAR = "distilled System 1 near System 2 at a fraction of its tokens"
FILTER = "the unsupervised filter matters"
NO_DISTILL = "CoT on GSM8k does not distill"
DISTILLS = (BEATS, NEAR, FILTER)  # what a method that distills claims (FILTER only where there is an ablation)


@dataclass(frozen=True)
class Notebook:
    """One method notebook and the block of the paper's tables it reproduces.

    ``rows``: the table's rows in the paper's order; ``students``: the rows that are fine-tuned
    students; ``system1`` / ``system2`` / ``distilled`` / ``ablation``: the roles the verdicts and
    the routing analysis read; ``groups``: input groups the paper reports separately;
    ``mcnemar``: the pairs of rows whose McNemar p (the score test) the metrics record.
    """

    notebook: str  # notebooks/<notebook>.ipynb; its metrics are results/metrics/<notebook>.<profile>.json
    method: str  # profiles.sizes(method, task, ...)
    task: str
    table: str  # figures/<table>.md and .csv
    figure: str  # figures/<figure>.png
    title: str  # the table file's heading
    label: str  # the method's name in the summary and routing tables
    readme: str  # the README's heading for the table
    paper: tuple[str, str]  # paper.paper_table(*paper)
    rows: tuple[str, ...]
    students: tuple[str, ...]
    system1: str
    system2: str
    distilled: str
    ablation: str | None = None
    groups: tuple[str, ...] = ()
    claims: tuple[str, ...] = ()
    mcnemar: tuple[tuple[str, str], ...] = ()
    figure_title: str | None = None  # default: "<title>: accuracy vs #Tokens"

    def variant(self, name: str, **changes) -> "Notebook":
        """The same method on another test set, written under its own names (e.g. BSM on OASST2)."""
        from dataclasses import replace

        return replace(self, notebook=f"{self.notebook}_{name}", **changes)


# --- the rows of the paper's tables -----------------------------------------------------------------

class RAR:
    """Table 1's rows (RaR, last letter and coin flip)."""

    SYSTEM1 = "System 1"
    ONE_STEP = "System 2: 1-step RaR"
    TWO_STEP = "System 2: 2-step RaR"
    DISTILL_SYSTEM1 = "Distill System 1"
    DISTILL_SYSTEM2 = "Distill System 2 (2-step RaR)"
    DISTILL_NO_FILTER = "Distill System 2 without filter"
    ROWS = (SYSTEM1, ONE_STEP, TWO_STEP, DISTILL_SYSTEM1, DISTILL_SYSTEM2, DISTILL_NO_FILTER)
    STUDENTS = (DISTILL_SYSTEM1, DISTILL_SYSTEM2, DISTILL_NO_FILTER)
    MCNEMAR = ((DISTILL_SYSTEM2, SYSTEM1), (DISTILL_SYSTEM2, TWO_STEP), (DISTILL_SYSTEM2, DISTILL_NO_FILTER),
               (TWO_STEP, SYSTEM1))


class S2A:
    """Table 2's rows (S2A on sycophancy)."""

    SYSTEM1 = "System 1"
    S2A = "System 2: S2A"
    DISTILL = "Distill S2A"
    DISTILL_NO_USC = "Distill S2A without USC"
    ROWS = (SYSTEM1, S2A, DISTILL, DISTILL_NO_USC)
    STUDENTS = (DISTILL, DISTILL_NO_USC)
    MCNEMAR = ((DISTILL, SYSTEM1), (DISTILL, S2A), (DISTILL, DISTILL_NO_USC), (S2A, SYSTEM1))


class BSM:
    """Table 3's rows (LLM judges)."""

    SYSTEM1 = "System 1 judge"
    COT = "CoT judge"
    BSM = "System 2: BSM"
    DISTILL = "Distill BSM"
    ROWS = (SYSTEM1, COT, BSM, DISTILL)
    STUDENTS = (DISTILL,)
    MCNEMAR = ((DISTILL, SYSTEM1), (DISTILL, BSM), (BSM, SYSTEM1), (COT, SYSTEM1))


class COT:
    """Table 4's rows (CoT on GSM8k)."""

    SYSTEM1 = "System 1 (8-shot, no CoT)"
    COT0 = "CoT zero-shot"
    COT8 = "CoT 8-shot"
    DISTILL = "Distill CoT"
    ROWS = (SYSTEM1, COT0, COT8, DISTILL)
    STUDENTS = (DISTILL,)
    MCNEMAR = ((DISTILL, COT0), (DISTILL, SYSTEM1), (COT0, SYSTEM1), (COT8, SYSTEM1))


def _rar(notebook: str, task: str, table: str, figure: str, title: str, label: str, readme: str) -> Notebook:
    return Notebook(notebook, "rar", task, table, figure, title, label, readme, ("table1", task), RAR.ROWS,
                    RAR.STUDENTS, RAR.SYSTEM1, RAR.TWO_STEP, RAR.DISTILL_SYSTEM2, RAR.DISTILL_NO_FILTER,
                    claims=DISTILLS, mcnemar=RAR.MCNEMAR)


NOTEBOOKS = (
    _rar("01_rar_last_letter", "last_letter", "table1_last_letter", "fig_last_letter_acc_vs_tokens",
         "Table 1: RaR distillation, last letter", "RaR, last letter", "Table 1, last-letter concatenation"),
    _rar("02_rar_coin_flip", "coin_flip", "table1_coin_flip", "fig_coin_flip_acc_vs_tokens",
         "Table 1: RaR distillation, coin flip", "RaR, coin flip", "Table 1, coin flip"),
    Notebook("03_s2a_sycophancy", "s2a", "sycophancy", "table2_sycophancy", "fig_s2a_acc_vs_tokens",
             "Table 2: S2A distillation, sycophancy", "S2A, sycophancy",
             "Table 2, System 2 Attention on sycophancy (offline analog)", ("table2", "sycophancy"), S2A.ROWS,
             S2A.STUDENTS, S2A.SYSTEM1, S2A.S2A, S2A.DISTILL, S2A.DISTILL_NO_USC, groups=("biased", "unbiased"),
             claims=DISTILLS, mcnemar=S2A.MCNEMAR),
    Notebook("04_bsm_llm_judge", "bsm", "judge", "table3_mt_bench", "fig_bsm_agreement_vs_tokens",
             "Table 3: BSM distillation, LLM judge on MT-bench", "BSM judge, MT-bench (proxy agreement)",
             "Table 3, Branch-Solve-Merge as an LLM judge on MT-bench (proxy label)", ("table3", "mt_bench"), BSM.ROWS,
             BSM.STUDENTS, BSM.SYSTEM1, BSM.BSM, BSM.DISTILL, claims=(BEATS, NEAR), mcnemar=BSM.MCNEMAR,
             figure_title="Table 3 (MT-bench): agreement and % inconsistent vs #Tokens per judgment"),
    Notebook("05_cot_gsm8k", "cot", "gsm8k", "table4_gsm8k", "fig_gsm8k_acc_vs_tokens",
             "Table 4: CoT distillation, GSM8k (maj@k)", "CoT, GSM8k (maj@1)", "Table 4, Chain-of-Thought on GSM8k (maj@k)",
             ("table4", "gsm8k"), COT.ROWS, COT.STUDENTS, COT.SYSTEM1, COT.COT0, COT.DISTILL, claims=(NO_DISTILL,),
             mcnemar=COT.MCNEMAR),
)

# BSM's in-distribution column (notebook 04, with OASST2_SOURCE: the paper trains on OASST2 and tests on
# its 273 human-labelled validation pairs): its own table, figure and metrics
OASST2 = NOTEBOOKS[3].variant("oasst2", table="table3_oasst2", figure="fig_bsm_oasst2_agreement_vs_tokens",
                              title="Table 3: BSM distillation, OASST2", paper=("table3", "oasst2"),
                              label="BSM judge, OASST2", readme="Table 3, Branch-Solve-Merge on OASST2",
                              figure_title=None)

# the notebooks that read the others' metrics
SUMMARY = "06_summary"  # writes figures/summary_verdicts.md and fig_summary.png
ROUTING = "07_routing"  # writes figures/routing.md and fig_routing.png
SUMMARY_FILE, SUMMARY_FIGURE = "summary_verdicts", "fig_summary"
ROUTING_FILE, ROUTING_FIGURE = "routing", "fig_routing"
ALL = tuple(nb.notebook for nb in NOTEBOOKS) + (SUMMARY, ROUTING)


def notebook(name: str) -> Notebook:
    """The record of a method notebook (``"01_rar_last_letter"``; ``"04_bsm_llm_judge_oasst2"`` too)."""
    for nb in (*NOTEBOOKS, OASST2):
        if nb.notebook == name:
            return nb
    raise KeyError(f"no method notebook {name!r}; the registry has {[nb.notebook for nb in NOTEBOOKS]}")
