"""The README's generated blocks, rebuilt from the committed files in figures/ (`make readme`).

Every number a reader sees in the README comes from a file the notebooks or the benchmarks wrote:
each block between ``<!-- generated: NAME ... -->`` and ``<!-- end of generated: NAME -->`` is
rebuilt by one function here, and a test fails when the README and figures/ disagree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import embedded, paths, profiles, registry, tables
from .benchblocks import BENCH_FILE, readme_bench, readme_bench_llama, readme_bench_vllm  # noqa: F401

def marks(block: str) -> tuple[str, str]:
    return (f"<!-- generated: {block} (by `make readme` from figures/; do not edit by hand) -->",
            f"<!-- end of generated: {block} -->")


def _table_parts(text: str) -> tuple[str, list[str], str]:
    """A table file's (table, notes, findings): the markdown table, its note bullets, and what follows
    "What these numbers say" (its own '# title' line dropped)."""
    body = text.split("\n", 1)[1].strip()
    head, _, findings = body.partition("\nWhat these numbers say")
    table = "\n".join(x for x in head.splitlines() if x.startswith("|"))
    notes = [x[2:] for x in head.splitlines() if x.startswith("- ")]
    return table, notes, ("What these numbers say" + findings).strip() if findings else ""


def readme_results(root: Path | None = None) -> str:
    """Every committed table (cpu profile) with its notes, findings and figure; a note that every
    table carries is said once, above them."""
    figures = (root or paths.ROOT) / "figures"
    parts = {}
    for nb in registry.NOTEBOOKS:
        md = figures / f"{nb.table}.md"
        if not md.exists():
            raise FileNotFoundError(f"{md}: run `make reproduce` first (the results page shows the committed tables)")
        parts[nb] = _table_parts(md.read_text())
    common = [n for n in next(iter(parts.values()))[1] if all(n in notes for _, notes, _ in parts.values())]
    out = ["Notes that hold for every table below:\n\n" + "\n".join(f"- {n}" for n in common)] if common else []
    for nb, (table, notes, findings) in parts.items():
        own = "\n".join(f"- {n}" for n in notes if n not in common)
        out += [f"### {nb.readme}", table] + ([own] if own else []) + ([findings] if findings else [])
        out.append(f"![{nb.readme}](figures/{nb.figure}.png)")
    return "\n\n".join(out)


def _table_and_figure(root: Path | None, name: str, figure: str, alt: str, notebook: str) -> str:
    """A committed table file (without its '# title' line) and its figure."""
    md = (root or paths.ROOT) / "figures" / f"{name}.md"
    if not md.exists():
        raise FileNotFoundError(f"{md}: run `make reproduce` first ({notebook} writes it)")
    body = md.read_text().split("\n", 1)[1].strip()
    return f"{body}\n\n![{alt}](figures/{figure}.png)"


def readme_summary(root: Path | None = None) -> str:
    """The README's verdicts on the paper's claims, by kind, then the table and the figure across
    methods (06_summary)."""
    table = _table_and_figure(root, registry.SUMMARY_FILE, registry.SUMMARY_FIGURE, "All methods: accuracy vs #Tokens",
                              registry.SUMMARY)
    return tables.verdict_digest(((root or paths.ROOT) / "figures" / f"{registry.SUMMARY_FILE}.md").read_text()) + "\n\n" + table


def readme_routing(root: Path | None = None) -> str:
    """The README's routing table and figure (07_routing)."""
    return _table_and_figure(root, registry.ROUTING_FILE, registry.ROUTING_FIGURE,
                             "Routing: accuracy vs #Tokens and calibration", registry.ROUTING)


RUN_FILE = "reproduce_cpu.json"  # written by benchmarks/record_run.py after a `make reproduce`


def _run_record(root: Path | None) -> dict:
    path = (root or paths.ROOT) / "figures" / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: run `make record` (a cold `make reproduce`, measured)")
    return json.loads(path.read_text())


def _minutes(seconds: float) -> str:
    return f"{seconds} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def readme_record(root: Path | None = None) -> str:
    """The record of one cold `make reproduce` (and its warm rerun): time and peak memory per notebook."""
    data = _run_record(root)
    cold, warm = data["cold"], data.get("warm", {})
    unfinished, stopped = cold.get("unfinished", []), cold.get("stopped_after_s")
    total = sum(cold["notebook_s"].values()) + (stopped or 0)
    head = (f"One uninterrupted cold `make reproduce` (profile {data['profile']}, commit {data['commit']}, "
            f"{data['date']}, {data['machine']}, nothing else running): ")
    if unfinished:
        head += f"stopped in {', '.join(unfinished)} after {stopped} s (not finished), {total / 60:.1f} minutes by then"
    else:
        head += f"{total / 60:.1f} minutes for the notebooks"
    lines = [head + f"; peak resident memory {cold['peak_process_gb']:.2f} GB in one process, "
             f"{cold['peak_tree_gb']:.2f} GB for the whole process tree.", ""]
    peaks = cold.get("peak_notebook_gb") or {}  # older records have no per-notebook memory
    lines += (["| notebook | cold (s) | its slowest stages (s) | warm rerun (s) | peak memory (GB) |", "|---|---|---|---|---|"]
              if peaks else ["| notebook | cold (s) | its slowest stages (s) | warm rerun (s) |", "|---|---|---|---|"])
    for name, sec in cold["notebook_s"].items():
        stages = sorted(cold.get("stage_s", {}).get(name, {}).items(), key=lambda kv: -kv[1])[:3]
        w = warm.get("notebook_s", {}).get(name)
        peak = peaks.get(name)
        lines.append(f"| {name} | {sec} | " + ", ".join(f"{k} {v}" for k, v in stages) + f" | {'' if w is None else w} |"
                     + (f" {'' if peak is None else round(peak, 2)} |" if peaks else ""))
    lines += [f"| {name} | stopped after {stopped} | | |" for name in unfinished]
    lines += ["", f"From `figures/{RUN_FILE}`, written by `benchmarks/record_run.py` from the run's log and manifests."]
    return "\n".join(lines)


def readme_run(root: Path | None = None) -> str:
    """One cold `make reproduce` against the project's budgets (bold: over), for whoever records a run
    (`make record`); the pages show `readme_record`, without the budgets."""
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


def readme_times(root: Path | None = None) -> str:
    """The README's quickstart times: each notebook's cold and warm minutes and the run's peak memory."""
    data = _run_record(root)
    cold, warm = data["cold"], data.get("warm", {}).get("notebook_s", {})
    lines = ["| notebook | first run (cold) | rerun (warm, from the cache) |", "|---|---|---|"]
    lines += [f"| `{name}` | {_minutes(sec)} | {_minutes(warm[name]) if name in warm else 'n.a.'} |"
              for name, sec in cold["notebook_s"].items()]
    if len(warm) == len(cold["notebook_s"]):
        lines.append(f"| all, `make reproduce` | {_minutes(sum(cold['notebook_s'].values()))} | "
                     f"{_minutes(sum(warm.values()))} |")
    spec = embedded.EMBEDDED[profiles.PROFILE_MODELS[data["profile"]]]
    lines += ["", f"Measured on {data['machine']} (commit {data['commit']}, {data['date']}, `figures/{RUN_FILE}`); "
              f"the largest notebook peaked at {cold['peak_process_gb']:.2f} GB of memory. The first run also "
              f"downloads the `{data['profile']}` profile's model, {spec.name} ({spec.size / 1e6:.0f} MB in pinned "
              "wheels), and converts it once into `results/models/`."]
    return "\n".join(lines)


def readme_glance(root: Path | None = None) -> str:
    """The README's first table (the paper's claims: its numbers, ours, the verdict and why), the
    figure across methods, and where the numbers come from."""
    root = root or paths.ROOT
    run = (root / "figures" / RUN_FILE)
    made = ""
    if run.exists():
        data = json.loads(run.read_text())
        made = (f" Every table and figure in `figures/` comes from one cold `make reproduce` of commit {data['commit']} "
                f"(profile {data['profile']}, {data['machine']}, {data['date']}).")
    model = profiles.PROFILE_MODELS["cpu"]
    return (tables.glance_table(root / "figures") + "\n\n"
            f"Paper: Llama-2-70B-chat. Ours: {model} on 2 CPU cores (profile `cpu`); a student's numbers are the mean "
            f"over its 3 seeds (each seed draws the teacher's samples and trains anew), and the test over those seeds (each "
            f"input's mean) decides the verdict, beside how many seeds' own tests agree.{made} Verdicts: **held** (the data show it), "
            "**not held** (they contradict it), **not shown** (this test size cannot tell), **not testable** (a "
            "precondition is missing, e.g. System 2 does not beat System 1, or a system gives one answer to nearly "
            "every input). The rules and every seed's evidence: [docs/verdicts.md](docs/verdicts.md); the tables: "
            "[docs/results.md](docs/results.md).\n\n"
            f"![All methods: accuracy vs #Tokens](figures/{registry.SUMMARY_FIGURE}.png)")


ESTIMATE_FILE = "estimate_cpu.json"  # benchmarks/estimate_time.py's estimate beside a measured cold run


def readme_estimate(root: Path | None = None) -> str:
    """The README's wall-time estimate check: the estimate of the cpu profile from rates measured
    here, beside the cold run of `figures/reproduce_cpu.json`; then the gpu profile's work."""
    path = (root or paths.ROOT) / "figures" / ESTIMATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: run benchmarks/estimate_time.py --profile cpu --rates figures/rates_cpu.json "
                                f"--record figures/reproduce_cpu.json --json {path}")
    data = json.loads(path.read_text())
    r, m = data["rates"], data["rates_measured"]
    run = (root or paths.ROOT) / "figures" / RUN_FILE
    machine = json.loads(run.read_text())["machine"] if run.exists() else None
    cold_on = "" if machine is None else f" ({machine}{'' if machine == m['machine'] else ': another machine'})"
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
              f"`figures/{RUN_FILE}`{cold_on} without model loading. The runs took {min(ratios):.0%} to "
              f"{max(ratios):.0%} of the estimate: it is a ceiling (calls end before their cap; the engine "
              "computes shared prompt prefixes once, the estimate for every call).",
              "", "The `gpu` profile's work, from its sizes (every call at its cap; steps if the filter keeps every "
              "input):", "", "| notebook | generated tokens (cap) | calls | fine-tuning steps x tokens, per seed |", "|---|---|---|---|"]
    for nb in registry.NOTEBOOKS:
        b = profiles.generation_budget(nb.method, nb.task, "gpu")
        steps, rows, tokens = profiles.training_bound(nb.method, nb.task, "gpu")
        size = f"{tokens / 1000:g}k tokens" if tokens else f"{rows} rows"
        seeds = profiles.sizes(nb.method, nb.task, "gpu").seeds
        lines.append(f"| {nb.notebook} | {b['total']:,} | {b['calls']:,} | {steps} x {size}, {seeds} seeds |")
    return "\n".join(lines)


def readme_workplan(root: Path | None = None) -> str:
    """The work plans of the simulated full-size runs (`simulate`: ``docs/workplans/<profile>.json``)."""
    from .simulate import markdown

    root = root or paths.ROOT
    out = []
    for profile in ("gpu", "paper"):
        path = root / "docs" / "workplans" / f"{profile}.json"
        if not path.exists():
            out.append(f"`PROFILE={profile}`: no work plan yet (`make simulate PROFILE={profile}` writes {path.name}).")
            continue
        plan = json.loads(path.read_text())
        seeds = {profiles.sizes(nb.method, nb.task, profile).seeds for nb in registry.NOTEBOOKS}
        one_seed = all(" (seed " not in k for p in plan["notebooks"] for k in p["training"])
        stale = (f" **This plan predates students on {max(seeds)} seeds**: its training GPU-h and its students' "
                 f"test calls are one seed's; a run now trains and tests each student {max(seeds)} times "
                 f"(`make simulate PROFILE={profile}` plans it anew)." if one_seed and max(seeds) > 1 else "")
        out.append(markdown(plan["notebooks"], profile) + f"\n\nThe simulated run took {plan['wall_s'] / 60:.1f} "
                   f"minutes on 2 CPU cores; its largest notebook kernel peaked at "
                   f"{plan['peak_rss_gb']:.1f} GB (`docs/workplans/{path.name}`).{stale}")
    return "\n\n".join(out)


README_BLOCKS = {"glance": readme_glance, "times": readme_times, "summary": readme_summary, "results": readme_results,
                 "routing": readme_routing, "bench": readme_bench, "bench-llama": readme_bench_llama,
                 "bench-vllm": readme_bench_vllm, "run": readme_record,
                 "estimate": readme_estimate, "workplan": readme_workplan}

# where each generated block lives: the README, then the pages it links to
PAGES = {"README.md": ("glance", "times"), "docs/results.md": ("summary", "results", "routing"),
         "docs/performance.md": ("run", "bench", "bench-llama", "bench-vllm"), "docs/scale.md": ("estimate", "workplan")}


def relink(text: str, page: str) -> str:
    """Relative links and images of a block written for the repository root, as seen from ``page``."""
    depth = len(Path(page).parts) - 1
    return re.sub(r"\]\((?![a-z]+:|#|/)", "](" + "../" * depth, text) if depth else text


def block(name: str, page: str, root: Path | None = None) -> str:
    """A generated block as it stands in ``page``: its markers around what its function builds."""
    start, end = marks(name)
    return f"{start}\n\n{relink(README_BLOCKS[name](root), page)}\n\n{end}"


def update_page(path: Path, blocks: tuple[str, ...], root: Path | None = None) -> bool:
    """Rewrite a page's generated ``blocks`` from the files in figures/; True if it changed."""
    page = path.relative_to(root or paths.ROOT).as_posix()
    text = original = path.read_text()
    for name in blocks:
        start, end = marks(name)
        if start not in text or end not in text:
            raise ValueError(f"{path}: no generated {name!r} block (markers {start!r} ... {end!r})")
        head, rest = text.split(start, 1)
        text = head + block(name, page, root) + rest.split(end, 1)[1]
    if text != original:
        path.write_text(text)
    return text != original


def update_pages(root: Path | None = None) -> list[str]:
    """Rewrite every page's generated blocks (`make readme`); the pages that changed."""
    root = root or paths.ROOT
    return [page for page, blocks in PAGES.items() if update_page(root / page, blocks, root)]


if __name__ == "__main__":  # `python -m s2d_utils.readme` = `make readme`
    changed = update_pages()
    print(f"updated: {', '.join(changed)}" if changed else "README.md and docs/ already match figures/")
