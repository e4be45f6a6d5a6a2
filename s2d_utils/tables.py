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



# --- the README's results at a glance: the paper's claims, the paper's numbers, ours, the verdict ----

VERDICTS_JSON = "summary_verdicts.json"  # 06_summary: a row per (claim, method) with verdict and reason
REASON_CHARS = 120


def short_verdict(verdict: str) -> str:
    """A verdict as one short phrase: 'flips between seeds: held in 1 of 3: held (seed 0) / ...' -> 'flips
    between seeds (held in 1 of 3)'; others as they are."""
    verdict = verdict.strip().strip("*")
    if verdict.startswith("flips between seeds: "):
        return f"flips between seeds ({verdict.split(': ')[1]})"
    return verdict


def cut(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (with '...' where it was cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit - 3].rsplit(" ", 1)[0].rstrip(",;:(") + "..."


def verdict_rows(figures: Path) -> list[dict]:
    """The verdicts of `figures/summary_verdicts.json` (claim, method, verdict, reason); where only the
    markdown table exists, its claim / method / verdict columns with a reason cut from the first
    seed's evidence."""
    import json

    path = figures / VERDICTS_JSON
    if path.exists():
        return [{"claim": r["claim"], "method": r["method"], "verdict": r["verdict"], "reason": r["reason"],
                 "per_seed": r.get("verdict_per_seed"), "source": VERDICTS_JSON} for r in json.loads(path.read_text())]
    md = figures / "summary_verdicts.md"
    if not md.exists():
        raise FileNotFoundError(f"{path}: run `make reproduce` first (notebook 06 writes it)")
    rows = []
    for line in md.read_text().splitlines():
        cells = [c.strip().replace("\0", "|") for c in line.replace("\\|", "\0").split("|")[1:-1]]
        if len(cells) < 4 or not cells[2].startswith("**"):
            continue
        evidence = cells[3].split("[seed 1]")[0].replace("[seed 0]", "seed 0:").strip()
        rows.append({"claim": cells[0], "method": cells[1], "verdict": cells[2].strip("*"), "reason": cut(evidence),
                     "source": md.name})
    return rows


def method_record(method: str):
    """(the registry's notebook, the input group or None) of a verdict's method label
    ('S2A, sycophancy (biased inputs)' -> the S2A notebook, 'biased')."""
    from . import registry

    for nb in registry.NOTEBOOKS:
        if method == nb.label:
            return nb, None
        for group in nb.groups:
            if method == f"{nb.label} ({group} inputs)":
                return nb, group
    raise KeyError(f"no notebook in the registry has the method label {method!r}")


def glance_numbers(figures: Path, method: str) -> dict[str, list[str | None]]:
    """From the method's `figures/<table>.csv`: the paper's and our accuracy and #Tokens (as the csv
    writes them) for its System 1, System 2 and distilled rows; the measure is the paper's headline
    (S2A: the group's)."""
    import csv

    from .paper import paper_table

    nb, group = method_record(method)
    measures = paper_table(*nb.paper).measures
    acc = next(m for m in measures if m.key == f"accuracy[{group}]") if group else paper_table(*nb.paper).headline
    tok = next(m for m in measures if not m.percent and m.key == acc.tokens_key)
    path = figures / f"{nb.table}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `make reproduce` first ({nb.notebook} writes it)")
    with path.open(newline="") as f:
        rows = {r["Method"]: r for r in csv.DictReader(f)}
    roles = (nb.system1, nb.system2, nb.distilled)
    return {f"{who}_{what}": [rows[r].get(f"{m.label} ({who})") or None for r in roles]
            for who in ("paper", "ours") for what, m in (("acc", acc), ("tok", tok))}


def _triple(acc: list[str | None], tok: list[str | None]) -> str:
    na = lambda v: v if v is not None else "n.a."  # noqa: E731
    return " / ".join(map(na, acc)) + " (" + " / ".join(map(na, tok)) + " tok)"


def glance_table(figures: Path) -> str:
    """The README's first table: a row per paper claim and method, the paper's System 1 / System 2 /
    distilled accuracy (#Tokens), ours (a student's: the mean over its seeds), the verdict and why."""
    lines = ["| claim | method | paper: System 1 / System 2 / distilled, % (#Tokens) | ours: System 1 / System 2 / "
             "distilled, % (#Tokens) | verdict | why |", "|---|---|---|---|---|---|"]
    for v in verdict_rows(figures):
        n = glance_numbers(figures, v["method"])
        cells = [v["claim"], v["method"], _triple(n["paper_acc"], n["paper_tok"]), _triple(n["ours_acc"], n["ours_tok"]),
                 f"**{short_verdict(v['verdict'])}**" + (f" ({v['per_seed']})" if v.get("per_seed") else ""),
                 cut(v["reason"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def verdict_digest(markdown: str) -> str:
    """The verdict table's claims grouped by verdict ("held on every seed", "flips between seeds", ...),
    one line each, from the table's own cells."""
    groups: dict[str, list[str]] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.replace("\\|", "\0").split("|")[1:-1]]
        if len(cells) < 3 or not cells[2].startswith("**"):
            continue
        claim, method, verdict = cells[0], cells[1], cells[2].strip("*")
        detail = ""
        if verdict.startswith("flips between seeds: "):
            kind, detail = "flips between seeds", verdict.split(": ")[1]
        elif verdict.endswith(" seeds)") and " (" in verdict:
            kind = verdict.rsplit(" (", 1)[0] + " on every seed"
        else:
            kind = verdict.split(": ")[0] if verdict.startswith("depends on the parse rule") else verdict
        groups.setdefault(kind, []).append(f"{claim} ({method}{': ' + detail if detail else ''})")
    lines = [f"- **{kind}**: " + "; ".join(items) + "." for kind, items in groups.items()]
    return "Verdicts by kind (from `figures/summary_verdicts.md`, below):\n\n" + "\n".join(lines)
