"""Every figure: accuracy vs #Tokens per table, the summary across methods, the routing curves.

One matplotlib setup (`pyplot`: the Agg backend, headless) and one way to write a figure
(`save`: ``figures/<name>[.<profile>].png``, as `tables.output_path` names files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .evaluate import SystemResult
from .paper import CONSTANT, PAPER_MODEL, PaperTable
from .registry import Notebook
from .tables import interval, output_path


def pyplot():
    """(matplotlib.pyplot, Line2D) on the Agg backend: figures render without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    return plt, Line2D


def save(fig, name: str, profile: str, dpi: int) -> Path:
    """Write ``fig`` as ``figures/<name>[.<profile>].png`` and close it."""
    plt, _ = pyplot()
    path = output_path(name, profile, "png")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


MARKERS = ("o", "^", "D", "v")


def plot_accuracy_vs_tokens(results: Sequence[SystemResult], paper: PaperTable,
                            title: str, name: str, profile: str, model_label: str) -> Path:
    """Two panels, ours and the paper's: each percentage measure (accuracy, or e.g. biased and
    unbiased accuracy: one marker shape each) against #Tokens, one colour per system."""
    plt, Line2D = pyplot()
    measures = [m for m in paper.measures if m.percent]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for i, r in enumerate(results):
        c = colors[i % len(colors)]
        values = r.as_dict()
        if r.name == CONSTANT:  # no tokens to plot: a floor across the axis
            for m in measures:
                if values.get(m.key) is not None:
                    axes[0].axhline(100 * values[m.key], color="grey", ls="--", lw=1)
            handles.append(Line2D([], [], color="grey", ls="--", label=f"{r.name} ({values.get('answer')!r})"))
            continue
        for m, marker in zip(measures, MARKERS):
            v = values.get(m.key)
            if v is None:
                continue
            ci = interval(r, m.key)
            # clamped: at 0% or 100% the interval's rounding can put its edge a hair past the value
            err = [[max(0.0, 100 * (v - ci[0]))], [max(0.0, 100 * (ci[1] - v))]] if ci else None
            axes[0].errorbar(values.get(m.tokens_key, r.tokens), 100 * v, yerr=err, fmt=marker, color=c, capsize=3)
            p_val, p_tok = paper.value(r.name, m.column), paper.value(r.name, m.tokens_column)
            if p_val is not None and p_tok is not None:
                axes[1].plot(p_tok, p_val, marker, color=c)
            elif p_val is not None:  # paper gives no #Tokens for this row: mark the value across the axis
                axes[1].axhline(p_val, color=c, ls=":", lw=1.2)
        handles.append(Line2D([], [], color=c, marker="s", ls="", label=r.name))
    if len(measures) > 1:
        handles += [Line2D([], [], color="grey", marker=mk, ls="", label=m.label.rstrip(" %"))
                    for m, mk in zip(measures, MARKERS)]
    axes[0].set_title(f"ours: {model_label}")
    axes[1].set_title(f"paper: {PAPER_MODEL.split('/')[-1]} (dotted: #Tokens n.a.)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("#Tokens per input (generated, all calls)")
        ax.grid(alpha=0.3)
    label = " / ".join(m.label for m in measures) if len(measures) <= 2 else "accuracy % (marker: see legend)"
    axes[0].set_ylabel(label + " (ours: 95% CI)")
    axes[0].set_ylim(-2, 102)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return save(fig, name, profile, dpi=120)



def plot_summary(metrics: dict[str, dict], profile: str, model: str, notebooks: Sequence[Notebook], name: str) -> Path:
    """One figure across methods: headline measure vs #Tokens, System 1 / System 2 / distilled
    marked alike in every task (shape), one colour per task; ours left, the paper's right."""
    from .paper import paper_table

    plt, Line2D = pyplot()
    shapes = {"System 1": "o", "System 2": "s", "distilled System 1": "^"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for i, b in enumerate(notebooks):
        if b.notebook not in metrics:
            continue
        paper = paper_table(*b.paper)
        m, c, head = metrics[b.notebook], colors[i % len(colors)], paper.headline
        for role, row in (("System 1", b.system1), ("System 2", b.system2), ("distilled System 1", b.distilled)):
            r = m["rows"][row]
            axes[0].plot(max(r["tokens"], 0.5), 100 * r.get(head.key, r["accuracy"]), shapes[role], color=c, ms=8)
            acc, tok = paper.value(row, head.column), paper.value(row, head.tokens_column)
            if acc is not None and tok is not None:
                axes[1].plot(tok, acc, shapes[role], color=c, ms=8, mfc="none", mew=1.8)
    for ax, title in zip(axes, (f"ours: {model} ({profile})", f"paper: {PAPER_MODEL.split('/')[-1]}")):
        ax.set_xscale("log")
        ax.set_xlabel("#Tokens per input (generated, all calls)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy / agreement %")
    axes[0].set_ylim(-2, 102)
    handles = [Line2D([], [], color="grey", marker=s, ls="", label=k) for k, s in shapes.items()]
    handles += [Line2D([], [], color=colors[i % len(colors)], marker="s", ls="", label=b.label)
                for i, b in enumerate(notebooks)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("System 1, System 2 and distilled System 1 across methods (paper: hollow markers)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return save(fig, name, profile, dpi=120)


def plot_routing(results: Sequence[Any], profile: str, model: str, name: str) -> Path:
    """Accuracy against #Tokens for each method's router (line through its thresholds) beside the
    fixed points; and a reliability diagram per method (``results``: `routing.MethodRouting`)."""
    plt, _ = pyplot()
    shown = [r for r in results if not r.problem]
    cols = max(1, len(shown))
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7.5), squeeze=False)
    marks = {"System 1": "o", "System 2": "s", "distilled System 1": "^"}
    for j, r in enumerate(shown):
        ax = axes[0][j]
        ax.plot([p.tokens for p in r.points], [100 * p.accuracy for p in r.points], "-", color="grey", lw=1.2,
                label="router (thresholds)")
        for role, (tok, acc) in r.fixed.items():
            ax.plot(max(tok, 0.5), 100 * acc, marks[role], ms=8, label=role)
        if r.choice and r.choice.point is not None:
            ax.plot(r.choice.point.tokens, 100 * r.choice.point.accuracy, "*", ms=14, color="C3", label="chosen")
        ax.set_xscale("log")
        ax.set_title(r.label, fontsize=9)
        ax.set_xlabel("#Tokens per input")
        ax.grid(alpha=0.3)
        ax2 = axes[1][j]
        bins = [bn for bn in r.calibration.bins if bn[2]]
        ax2.plot([0, 1], [0, 1], ":", color="grey")
        ax2.bar([(bn[0] + bn[1]) / 2 for bn in bins], [bn[4] for bn in bins], width=0.09, alpha=0.6)
        for bn in bins:
            ax2.annotate(str(bn[2]), ((bn[0] + bn[1]) / 2, bn[4]), ha="center", va="bottom", fontsize=7)
        ax2.set_xlim(0, 1)
        ax2.set_ylim(0, 1.05)
        ax2.set_xlabel("student confidence (bin; n above the bar)")
        ax2.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy %")
    axes[1][0].set_ylabel("student accuracy in the bin")
    if shown:
        axes[0][0].legend(fontsize=7, loc="best")
    else:
        axes[0][0].text(0.5, 0.5, "no method has a trained student with confidences", ha="center", va="center")
    fig.suptitle(f"Routing between the distilled student and System 2: {model} ({profile})")
    fig.tight_layout()
    return save(fig, name, profile, dpi=110)
