"""Paper-style tables: ours beside the paper's, as markdown (with notes and findings) and csv.

Files go to ``figures/<name>[.<profile>].<ext>``: the cpu profile owns the plain, committed names;
every other profile writes beside them under its own suffix and never overwrites them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths
from .evaluate import SystemResult
from .paper import PaperTable
from .stats import wilson

def _suffix(profile: str) -> str:
    # the default profile owns the plain names; others never overwrite its committed outputs
    return "" if profile == "cpu" else f".{profile}"


def output_path(name: str, profile: str, ext: str) -> Path:
    """``figures/<name>[.<profile>].<ext>``: the cpu profile owns the plain (committed) names."""
    return paths.ensure(paths.FIGURES) / f"{name}{_suffix(profile)}.{ext}"


def interval(r: SystemResult, key: str) -> tuple[float, float] | None:
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
            ci = interval(r, m.key) if m in ci_measures else None
            if ci is not None:
                label = "95% CI" if len(ci_measures) == 1 else f"{m.label.rstrip(' %')} 95% CI"
                row[label] = f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}"
        if any("seed_accuracy" in x.extra for x in results):
            row["Acc over seeds"] = seed_spread(r.extra.get("seed_accuracy"))
        row["Parse fail %"] = round(100 * r.parse_failures, 1)
        row["Cut %"] = round(100 * r.extra["cut"], 1) if "cut" in r.extra else None
        for m in paper.measures:
            row[f"{m.label} (paper)"] = reference.get(m.column)
        rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(each: Sequence[float] | None) -> str | None:
    """A multi-seed row's spread: the standard deviation over seeds and each seed's accuracy (%)."""
    if not each or len(each) < 2:
        return None
    mean = sum(each) / len(each)
    sd = (sum((x - mean) ** 2 for x in each) / (len(each) - 1)) ** 0.5
    return f"sd {100 * sd:.1f}: " + " / ".join(f"{100 * x:.1f}" for x in each)


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

