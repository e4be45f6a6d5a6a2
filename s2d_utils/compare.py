"""Two runs' tables side by side: how far a rerun's numbers moved from the committed ones, in points
and in units of the row's spread (`make compare`; docs/machines.md, `--page`, is written from here).

    python -m s2d_utils.compare                      # the working tree's figures/ vs the committed ones (HEAD)
    python -m s2d_utils.compare --other <folder>     # another run's figures (table*.csv, reproduce_*.json)
    python -m s2d_utils.compare --page               # (re)write docs/machines.md from docs/cross_cpu_2026-12.json

Each table's accuracy-like measures are compared (a "% (ours)" column with a 95% CI beside it: Acc,
Agree, Biased / Unbiased, maj@1). A row's spread: for a student (a row with "Acc over seeds"), the
standard deviation of its accuracy over seeds (the root mean square of both runs' where both give
one); for a row with no seeds (System 1, System 2: greedy, evaluated once), or students whose seeds
agree exactly, the binomial standard error sqrt(p(1-p)/n) at the two runs' mean p, with n the
table's n, or the n the measure's Wilson interval implies where that differs (a measure on a subset
of the inputs: S2A's biased and unbiased inputs).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .files import write_atomic

HEAD = "HEAD"  # the committed figures: `git show HEAD:figures/<file>`
PAGE = paths.ROOT / "docs" / "machines.md"
CROSS_CPU = paths.ROOT / "docs" / "cross_cpu_2026-12.json"  # the one measured pair of runs on two CPU kinds
OUT = paths.RESULTS / "compare.md"
Z = 1.959964  # the Wilson intervals' 95%
_SEEDS = re.compile(r"sd\s+([\d.]+):\s*([\d.\s/]+)")


@dataclass(frozen=True)
class Run:
    """One run's figures: csv text by table name, and its record (reproduce_<profile>.json) if any."""

    label: str
    tables: dict[str, str]
    record: dict | None


def _table_names(names: list[str], profile: str) -> list[str]:
    suffix = ".csv" if profile == "cpu" else f".{profile}.csv"
    return sorted(n for n in names if n.startswith("table") and n.endswith(suffix) and n.count(".") == suffix.count("."))


def load_run(source: str | Path, profile: str = "cpu") -> Run:
    """A folder of figures, or ``HEAD`` (the committed figures/, read with `git show`)."""
    record_name = f"reproduce_{profile}.json"
    if str(source) == HEAD:
        git = ["git", "-C", str(paths.ROOT)]
        listed = subprocess.run([*git, "ls-tree", "--name-only", "HEAD", "figures/"], capture_output=True, text=True)
        if listed.returncode:
            raise FileNotFoundError(f"{paths.ROOT}: no committed figures/ to compare with ({listed.stderr.strip()})")
        names = [Path(n).name for n in listed.stdout.split()]

        def read(name: str) -> str:
            return subprocess.run([*git, "show", f"HEAD:figures/{name}"], capture_output=True, text=True, check=True).stdout
        label = "committed (git HEAD:figures/)"
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (expected a run's figures: table*.csv, reproduce_*.json)")
        names = [p.name for p in folder.iterdir()]

        def read(name: str) -> str:
            return (folder / name).read_text()
        where = folder.resolve()
        label = str(where.relative_to(paths.ROOT)) if where.is_relative_to(paths.ROOT) else str(folder)
    tables = {n[:-len(".csv")].split(".")[0]: read(n) for n in _table_names(names, profile)}
    if not tables:
        raise FileNotFoundError(f"{label if str(source) == HEAD else Path(source)}: no table*.csv for profile "
                                f"{profile} here (expected another run's figures: table*.csv and {record_name})")
    record = json.loads(read(record_name)) if record_name in names else None
    return Run(label, tables, record)


def describe_cpu(record: dict | None) -> str:
    """A run's CPU as its record names it: model, cores, the kernel-deciding flags, torch / transformers."""
    if not record:
        return "not recorded (no reproduce_*.json)"
    cpu = record.get("cpu")
    if not cpu:
        return f"{record.get('machine', 'not recorded')} (flags not recorded)"
    flags = [f for f, on in cpu.get("flags", {}).items() if on]
    text = f"{cpu.get('model')}, {cpu.get('cores')} cores, flags: {' '.join(flags) or 'none of the kernel flags'}"
    return text + f"; torch {cpu.get('torch')}, transformers {cpu.get('transformers')}"


def seeds_of(cell: str | None) -> tuple[float, list[float]] | None:
    """("sd 6.2: 56.2 / 57.5 / 46.2") -> (6.2, [56.2, 57.5, 46.2]); None for a row without seeds."""
    m = _SEEDS.search(cell or "")
    if not m:
        return None
    return float(m.group(1)), [float(v) for v in m.group(2).split("/") if v.strip()]


def sd(values: list[float]) -> float:
    """The sample standard deviation (n - 1), as the tables' "Acc over seeds" gives it."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def wilson(p: float, n: float) -> tuple[float, float]:
    centre, half = p + Z * Z / (2 * n), Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (centre - half) / (1 + Z * Z / n), (centre + half) / (1 + Z * Z / n)


def n_from_interval(p: float, lo: float, hi: float) -> int:
    """The n whose Wilson interval around ``p`` (fractions) is as wide as lo-hi: the measure's n
    where the table gives only the whole test's (S2A's biased and unbiased inputs)."""
    width = hi - lo
    return min(range(1, 100_001), key=lambda n: abs(wilson(p, n)[1] - wilson(p, n)[0] - width))


def binomial_se(p_points: float, n: int) -> float:
    """sqrt(p(1-p)/n), in points, for a proportion given in points."""
    p = min(max(p_points / 100, 0.0), 1.0)
    return 100 * math.sqrt(p * (1 - p) / n)


def spread(base: float, other: float, n: int, base_seeds: list[float] | None,
           other_seeds: list[float] | None) -> tuple[float, str]:
    """The unit a move is measured in: the seeds' standard deviation (root mean square over the runs
    that give seeds), else the binomial SE at the two runs' mean accuracy. Returns (points, kind)."""
    sds = [sd(s) for s in (base_seeds, other_seeds) if s and len(s) > 1]
    if sds and max(sds) > 0:
        return math.sqrt(sum(s * s for s in sds) / len(sds)), "seed sd"
    return binomial_se((base + other) / 2, n), "binomial SE"


def measures(columns: list[str]) -> list[tuple[str, str]]:
    """(measure, value column) for every "% (ours)" column with a 95% CI beside it."""
    out = []
    values = [c for c in columns if c.endswith("% (ours)")]
    for i, col in enumerate(values):
        name = col[:-len("% (ours)")].strip()
        if f"{name} 95% CI" in columns or (i == 0 and "95% CI" in columns):
            out.append((name, col))
    return out


def _rows(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), {row[reader.fieldnames[0]]: row for row in reader}


def _num(cell: str | None) -> float | None:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None


def _ci(cell: str | None) -> tuple[float, float] | None:
    m = re.fullmatch(r"\s*([\d.]+)-([\d.]+)\s*", cell or "")
    return (float(m.group(1)) / 100, float(m.group(2)) / 100) if m else None


def compare_tables(base: Run, other: Run) -> list[dict]:
    """One dict per (table, row, measure) in either run: both values, the move (other - base) in
    points and in spreads, and the spread's kind."""
    out = []
    for table in sorted(set(base.tables) | set(other.tables)):
        cols_b, rows_b = _rows(base.tables.get(table, ""))
        cols_o, rows_o = _rows(other.tables.get(table, ""))
        cols = cols_b or cols_o
        for measure, col in measures(cols):
            ci_col = f"{measure} 95% CI" if f"{measure} 95% CI" in cols else "95% CI"
            for row in list(rows_b) + [r for r in rows_o if r not in rows_b]:
                b, o = rows_b.get(row, {}), rows_o.get(row, {})
                vb, vo = _num(b.get(col)), _num(o.get(col))
                item = {"table": table, "row": row, "measure": measure, "base": vb, "other": vo,
                        "move": None, "spread": None, "kind": None, "spreads": None}
                if vb is not None and vo is not None:
                    n = int(_num(b.get("n")) or _num(o.get("n")) or 0)
                    if ci := _ci(b.get(ci_col)):  # a measure on a subset of the n inputs: its interval's n
                        implied = n_from_interval(vb / 100, *ci)
                        n = n if n and abs(implied - n) <= max(2, n // 20) else implied
                    sb, so = seeds_of(b.get("Acc over seeds")), seeds_of(o.get("Acc over seeds"))
                    unit, kind = spread(vb, vo, max(n, 1), sb and sb[1], so and so[1])
                    item.update(move=round(vo - vb, 1), spread=unit, kind=kind,
                                spreads=(vo - vb) / unit if unit > 0 else (0.0 if vo == vb else math.inf))
                out.append(item)
    return out


def _fmt(v: float | None, spec: str = ".1f", sign: bool = False) -> str:
    if v is None:
        return "absent"
    if math.isinf(v):
        return "inf"
    return format(v, ("+" if sign else "") + spec)


def largest(items: list[dict]) -> str:
    moved = [i for i in items if i["move"] is not None]
    if not moved:
        return "largest move: none (no row is in both runs)"
    top = max(moved, key=lambda i: (abs(i["move"]), abs(i["spreads"])))
    if top["move"] == 0:
        return f"largest move: 0 points: all {len(moved)} rows in both runs are the same"
    unit = "seed-spreads" if top["kind"] == "seed sd" else "binomial SEs"
    return (f"largest move: {_fmt(top['move'], sign=True)} points ({_fmt(abs(top['spreads']), '.1f')} {unit}) "
            f"in row {top['row']} ({top['measure']}) of table {top['table']}")


def markdown(items: list[dict], base_label: str, other_label: str, base_cpu: str, other_cpu: str) -> str:
    """The comparison as a markdown table, with each run's CPU and the summary line."""
    lines = [f"# {other_label} vs {base_label}", "",
             f"- base: {base_label}; CPU: {base_cpu}", f"- other: {other_label}; CPU: {other_cpu}",
             "- move: other - base, in points; spreads: the move over the row's spread (seed sd: the standard "
             "deviation of the student's accuracy over seeds, root mean square over both runs; binomial SE: "
             "sqrt(p(1-p)/n) at the two runs' mean p, for a row evaluated once or a student whose seeds agree)", "",
             "| table | row | measure | base | other | move (points) | spread (points) | move / spread | spread from |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i in items:
        lines.append(f"| {i['table']} | {i['row']} | {i['measure']} | {_fmt(i['base'])} | {_fmt(i['other'])} | "
                     f"{_fmt(i['move'], sign=True)} | {_fmt(i['spread'], '.2f') if i['spread'] is not None else ''} | "
                     f"{_fmt(i['spreads'], '.1f', sign=True) if i['spreads'] is not None else ''} | {i['kind'] or ''} |")
    return "\n".join([*lines, "", largest(items), ""])


def compare(other: str | Path | None = None, base: str | Path = HEAD, profile: str = "cpu") -> str:
    """The comparison's markdown; ``other`` defaults to this working tree's figures/."""
    run_b = load_run(base, profile)
    run_o = load_run(other if other is not None else paths.FIGURES, profile)
    items = compare_tables(run_b, run_o)
    return markdown(items, run_b.label, run_o.label, describe_cpu(run_b.record), describe_cpu(run_o.record))


def cross_cpu_rows(data: dict) -> list[dict]:
    """The measured pair's rows (docs/cross_cpu_2026-12.json) with their moves, as `compare_tables`
    gives them: points, spread (seed sd where seeds are given, else binomial SE at n), spreads."""
    out = []
    for r in data["rows"]:
        unit, kind = spread(r["committed"], r["rerun"], r["n"], r.get("committed_seeds"), r.get("rerun_seeds"))
        out.append({**r, "move": round(r["rerun"] - r["committed"], 1), "spread": unit, "kind": kind,
                    "spreads": (r["rerun"] - r["committed"]) / unit})
    return out


def _value(v: float, seeds: list[float] | None) -> str:
    return f"{v:.1f}" + (f" ({' / '.join(f'{s:.1f}' for s in seeds)})" if seeds else "")


def page(source: Path = CROSS_CPU) -> str:
    """docs/machines.md: what reproduces byte for byte, what does not, and the one measured pair."""
    data = json.loads(source.read_text())
    a, b = data["committed"], data["rerun"]
    rows = cross_cpu_rows(data)
    top = max(rows, key=lambda r: abs(r["move"]))
    k = sum(1 for r in rows if r["move"])
    moved = "every one" if k == len(rows) else f"{k} of {len(rows)}"
    table = ["| table | row | measure | n | committed (Intel) | rerun (AMD) | move (points) | spread (points) "
             "| move / spread | spread from |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['table']} | {r['row']} | {r['measure']} | {r['n']} | "
                     f"{_value(r['committed'], r.get('committed_seeds'))} | {_value(r['rerun'], r.get('rerun_seeds'))} | "
                     f"{r['move']:+.1f} | {r['spread']:.2f} | {r['spreads']:+.1f} | {r['kind']} |")
    verdicts = ["| claim | method | committed (Intel) | rerun (AMD) |", "|---|---|---|---|"]
    verdicts += [f"| {v['claim']} | {v['method']} | {v['committed']} | {v['rerun']} |" for v in data["verdicts"]]
    notes = [f"- {n}" for n in data.get("notes", [])]
    return "\n".join([
        "# Machines: what a rerun repeats byte for byte, and what moves", "",
        f"Written by `python -m s2d_utils.compare --page` from `{source.relative_to(paths.ROOT)}`; edit that file, "
        "not this page.", "",
        "## Byte-identical", "",
        "- **Same CPU kind, same versions** (the ISA flags that pick the kernels: `amx_bf16` / `amx_tile` / `amx_int8`, "
        "`avx512_bf16`, `avx512f`, `avx2`, `fma`; the pinned torch and transformers): a warm rerun reads every "
        "generation from the cache (`results/cache/`) and reloads each student by content, so it writes the same "
        "tables; a cold rerun on the same CPU kind runs the same kernels in the same order and repeats the same tables.",
        *[f"- {line}" for line in data.get("same_kind", [])],
        "- The record of the committed tables, `figures/reproduce_cpu.json`, names their CPU: `machine` (model and "
        "cores) and `cpu` (model, cores, those flags, torch's and transformers' versions).", "",
        "## Not byte-identical: another CPU kind", "",
        "- The cpu profile runs the model in bfloat16. torch picks its bf16 matrix kernels by the CPU's flags (AMX "
        "tiles where `amx_bf16` is, else AVX-512 BF16, else AVX-512 or AVX2 with conversions); they add the products "
        "in other orders and round at other points, so a greedy decode can take another token at a near tie, and "
        "from there the samples, the filter's kept targets, the students and every table move.",
        "- `make compare OTHER=<folder>` sets another run's tables (its `table*.csv` and `reproduce_cpu.json`) beside "
        "the committed ones; plain `make compare` sets this working tree's `figures/` (after your own `make "
        "reproduce`) beside them. Each row: both values, the move in points and in units of the row's spread (the "
        "students' standard deviation over seeds; for a row evaluated once, the binomial standard error "
        "sqrt(p(1-p)/n)), and each run's CPU; written to `results/compare.md`.", "",
        "## The one measured pair of runs", "",
        f"- committed: {a['run']} at commit {a['commit']} on {a['cpu']}: {a['minutes']} min, peak {a['peak_gb']} GB "
        f"({a['source']}).",
        f"- rerun: {b['run']} at commit {b['commit']} on {b['cpu']}: {b['minutes']} min, peak {b['peak_gb']} GB "
        f"({b['source']}).",
        "- **Both runs predate the current pipeline**, in which each seed redraws the teacher's samples: in them the "
        "seeds changed only the students' LoRA initialization, data order and dropout over one shared draw, so the "
        "seed spreads below are the old seeds' spread, not the current pipeline's.", *notes, "",
        *table, "",
        f"The rows above are those the rerun's record lists (every table changed); {moved} moved. The largest move: {top['move']:+.1f} points ({abs(top['spreads']):.1f} "
        f"{'seed-spreads' if top['kind'] == 'seed sd' else 'binomial SEs'}) in row {top['row']} ({top['measure']}) "
        f"of {top['table']}. Moves in spreads: " + ", ".join(f"{r['row']} {r['spreads']:+.1f}" for r in rows) + ".", "",
        "The verdicts that moved:", "", *verdicts, ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", default=None, help="a folder with another run's figures (default: figures/)")
    ap.add_argument("--base", default=HEAD, help="a folder, or HEAD for the committed figures (default)")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--page", action="store_true", help=f"write {PAGE.relative_to(paths.ROOT)} and stop")
    args = ap.parse_args(argv)
    if args.page:
        write_atomic(PAGE, page())
        print(f"written: {PAGE.relative_to(paths.ROOT)}")
        return 0
    try:
        text = compare(args.other, args.base, args.profile)
    except FileNotFoundError as e:
        print(f"make compare: {e}", file=sys.stderr)
        return 2
    print(text)
    paths.ensure(OUT.parent)
    write_atomic(OUT, text)
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
