"""The summary notebook's logic: read every method notebook's metrics, check they belong together,
draw one figure across methods, and give a verdict per paper claim from the numbers.

Verdicts are "held", "not held" or "not testable" (with the reason), each with the numbers
behind it; a difference counts only if an exact McNemar test on the same test inputs gives
p < 0.05 (the p-values the method notebooks recorded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths, profiles, report
from .system2 import bsm, cot, rar, s2a

ALPHA = 0.05
FRACTION = 0.5  # "a fraction of System 2's tokens": at most half


@dataclass(frozen=True)
class Block:
    """One method notebook's table: which rows play System 1, System 2, the distilled System 1 and
    the unfiltered ablation, and which block of the paper's tables it reproduces."""

    notebook: str
    table: str  # figures/<table>.md
    label: str
    paper_key: tuple[str, str]  # report.paper_table(*paper_key)
    system1: str
    system2: str
    distilled: str
    ablation: str | None = None

    @property
    def paper(self) -> report.PaperTable:
        return report.paper_table(*self.paper_key)

    @property
    def headline(self) -> report.Measure:
        """The table's first percentage measure (accuracy; S2A: biased; BSM: agreement; GSM8k: maj@1)."""
        return next(m for m in self.paper.measures if m.percent)


BLOCKS = (
    Block("01_rar_last_letter", "table1_last_letter", "RaR, last letter", ("table1", "last_letter"), rar.SYSTEM1,
          rar.TWO_STEP, rar.DISTILL_SYSTEM2, rar.DISTILL_NO_FILTER),
    Block("02_rar_coin_flip", "table1_coin_flip", "RaR, coin flip", ("table1", "coin_flip"), rar.SYSTEM1, rar.TWO_STEP,
          rar.DISTILL_SYSTEM2, rar.DISTILL_NO_FILTER),
    Block("03_s2a_sycophancy", "table2_sycophancy", "S2A, sycophancy", ("table2", "sycophancy"), s2a.SYSTEM1, s2a.S2A,
          s2a.DISTILL, s2a.DISTILL_NO_USC),
    Block("04_bsm_llm_judge", "table3_mt_bench", "BSM judge, MT-bench (proxy agreement)", ("table3", "mt_bench"),
          bsm.SYSTEM1, bsm.BSM, bsm.DISTILL),
    Block("05_cot_gsm8k", "table4_gsm8k", "CoT, GSM8k (maj@1)", ("table4", "gsm8k"), cot.SYSTEM1, cot.COT0, cot.DISTILL),
)


def load_metrics(profile: str, model: str | None = None, blocks=BLOCKS) -> dict[str, dict[str, Any]]:
    """Every method notebook's metrics for ``profile``; a clear error naming the notebook whose
    metrics are missing or stale (another profile or model, or another model fingerprint than
    the other notebooks')."""
    expected = profiles.model_for(profile, model)
    out, prints = {}, {}
    for b in blocks:
        path = paths.METRICS / f"{b.notebook}.{profile}.json"
        if not path.exists():
            raise FileNotFoundError(f"{b.notebook}: no metrics for profile {profile!r} ({path}). Run that notebook "
                                    f"first (make reproduce PROFILE={profile} runs them all in order).")
        m = json.loads(path.read_text())
        if m.get("profile") != profile or m.get("model") != expected:
            raise ValueError(f"{b.notebook}: its metrics are stale: profile {m.get('profile')!r} and model "
                             f"{m.get('model')!r}, expected {profile!r} and {expected!r}. Rerun that notebook.")
        prints[b.notebook] = m["manifest"]["model_fingerprint"]
        out[b.notebook] = m
    if len(set(prints.values())) > 1:
        first = next(iter(prints.values()))
        odd = [nb for nb, f in prints.items() if f != first]
        raise ValueError(f"{', '.join(odd)}: stale metrics: the model fingerprint differs from "
                         f"{next(iter(prints))}'s ({first[:12]}...). Rerun the notebooks on the same model.")
    return out


def _row(m: dict, name: str) -> dict:
    return m["rows"][name]


def _p(m: dict, a: str, b: str) -> float | None:
    """The recorded McNemar p-value of a and b (the test is symmetric; either order was recorded)."""
    return m["mcnemar"].get(f"{a} vs {b}", m["mcnemar"].get(f"{b} vs {a}"))


def _fmt(m: dict, name: str) -> str:
    r = _row(m, name)
    return f"{name} {100 * r['accuracy']:.1f}% ({r['tokens']:.1f} tok)"


def _trained(m: dict, name: str) -> bool:
    return m.get("training", {}).get(name) is not None


def _p_text(p: float | None) -> str:
    return "p n.a." if p is None else (f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4")


def _better(m: dict, a: str, b: str) -> bool | None:
    """True: a significantly higher than b; False: not; None: no test recorded."""
    p = _p(m, a, b)
    if p is None:
        return None
    return p < ALPHA and _row(m, a)["accuracy"] > _row(m, b)["accuracy"]


def _caveat(m: dict, name: str) -> str:
    """The method notebook's own finding that ``name`` gives one answer to (nearly) every input, if any."""
    said = [f for f in m.get("findings", []) if f.startswith(f"{name} answers ") and "test inputs" in f]
    return f". Caveat: {said[0]}" if said else ""


def verdicts(metrics: dict[str, dict], blocks=BLOCKS) -> list[dict[str, str]]:
    """The paper's claims, one verdict per method and claim (accuracy over all test inputs, so
    S2A's biased and unbiased inputs together; the McNemar tests the notebooks recorded)."""
    out = []

    def add(claim, b, verdict, numbers):
        if verdict == "held":
            numbers += _caveat(metrics[b.notebook], b.distilled)
        out.append({"claim": claim, "method": b.label, "verdict": verdict, "numbers": numbers})

    for b in blocks:
        m = metrics[b.notebook]
        s1, s2, d = b.system1, b.system2, b.distilled
        teacher_gain = _better(m, s2, s1)
        basis = f"{_fmt(m, d)} vs {_fmt(m, s1)}, {_p_text(_p(m, d, s1))}"
        if b.notebook.startswith("05"):
            claim = "CoT on GSM8k does not distill"
            numbers = f"{_fmt(m, d)} vs {_fmt(m, s2)}, {_p_text(_p(m, d, s2))}"
            if not teacher_gain:
                add(claim, b, "not testable", f"CoT does not beat System 1 here ({_fmt(m, s2)} vs {_fmt(m, s1)}, "
                                              f"{_p_text(_p(m, s2, s1))}): no gain to lose. {numbers}")
            else:
                add(claim, b, "held" if _better(m, s2, d) else "not held", numbers)
            continue
        if not _trained(m, d):
            add("distilled System 1 beats System 1", b, "not testable",
                f"the filter kept no training input, so {d} is the base model. {basis}")
        else:
            add("distilled System 1 beats System 1", b, "held" if _better(m, d, s1) else "not held", basis)
        near = f"{_fmt(m, d)} vs {_fmt(m, s2)}, {_p_text(_p(m, d, s2))}"
        if not teacher_gain:
            add("distilled System 1 near System 2 at a fraction of its tokens", b, "not testable",
                f"System 2 does not beat System 1 here ({_fmt(m, s2)} vs {_fmt(m, s1)}, {_p_text(_p(m, s2, s1))}): "
                f"nothing to distill. {near}")
        else:
            cheap = _row(m, d)["tokens"] <= FRACTION * _row(m, s2)["tokens"]
            worse = _better(m, s2, d)
            add("distilled System 1 near System 2 at a fraction of its tokens", b,
                "held" if cheap and _trained(m, d) and not worse else "not held", near)
        if b.ablation:
            abl = f"{_fmt(m, d)} vs {_fmt(m, b.ablation)}, {_p_text(_p(m, d, b.ablation))}"
            if not _trained(m, d) or not _trained(m, b.ablation):
                add("the unsupervised filter matters", b, "not testable", f"a student had no training data. {abl}")
            else:
                add("the unsupervised filter matters", b, "held" if _better(m, d, b.ablation) else "not held", abl)
    return out


def verdicts_markdown(rows: list[dict[str, str]]) -> str:
    head = ("| claim | method | verdict | the numbers behind it (accuracy on all test inputs; exact McNemar, same inputs) |"
            "\n|---|---|---|---|")
    body = [f"| {r['claim']} | {r['method']} | **{r['verdict']}** | {r['numbers']} |" for r in rows]
    return "\n".join([head, *body])


def save_verdicts(rows: list[dict[str, str]], profile: str, model: str) -> Path:
    path = report.output_path("summary_verdicts", profile, "md")
    text = (f"# The paper's claims, tested on {model} (profile {profile})\n\n{verdicts_markdown(rows)}\n\n"
            f"- held: the numbers show it (p < {ALPHA}, and for 'near System 2', at most {FRACTION:.0%} of its tokens "
            "and not significantly lower); not held: they do not; not testable: the precondition is missing.\n")
    path.write_text(text)
    return path


def plot(metrics: dict[str, dict], profile: str, model: str, blocks=BLOCKS) -> Path:
    """One figure across methods: headline measure vs #Tokens, System 1 / System 2 / distilled
    marked alike in every task (shape), one colour per task; ours left, the paper's right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    shapes = {"System 1": "o", "System 2": "s", "distilled System 1": "^"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for i, b in enumerate(blocks):
        m, c, head = metrics[b.notebook], colors[i % len(colors)], b.headline
        for role, name in (("System 1", b.system1), ("System 2", b.system2), ("distilled System 1", b.distilled)):
            r = _row(m, name)
            axes[0].plot(max(r["tokens"], 0.5), 100 * r.get(head.key, r["accuracy"]), shapes[role], color=c, ms=8)
            acc, tok = b.paper.value(name, head.column), b.paper.value(name, head.tokens_column)
            if acc is not None and tok is not None:
                axes[1].plot(tok, acc, shapes[role], color=c, ms=8, mfc="none", mew=1.8)
    for ax, title in zip(axes, (f"ours: {model} ({profile})", f"paper: {report.PAPER_MODEL.split('/')[-1]}")):
        ax.set_xscale("log")
        ax.set_xlabel("#Tokens per input (generated, all calls)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy / agreement %")
    axes[0].set_ylim(-2, 102)
    handles = [Line2D([], [], color="grey", marker=s, ls="", label=k) for k, s in shapes.items()]
    handles += [Line2D([], [], color=colors[i % len(colors)], marker="s", ls="", label=b.label)
                for i, b in enumerate(blocks)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("System 1, System 2 and distilled System 1 across methods (paper: hollow markers)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path = report.output_path("fig_summary", profile, "png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tables_markdown(profile: str, blocks=BLOCKS) -> str:
    """Every method table file of the profile, verbatim (tables, notes and findings)."""
    parts = []
    for b in blocks:
        path = report.output_path(b.table, profile, "md")
        if not path.exists():
            raise FileNotFoundError(f"{b.notebook}: {path} is missing; run that notebook first")
        parts.append(path.read_text())
    return "\n\n".join(parts)
