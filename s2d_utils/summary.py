"""The summary notebook's logic: read every method notebook's metrics, check they belong together,
draw one figure across methods, and give a verdict per paper claim from the numbers.

Verdicts are computed from the per-input outcomes the notebooks record (`records.outcomes`),
so every comparison can be redone under each parse rule, per group and against the best
constant answer, and has four outcomes: held, not held, not shown (with the smallest difference
the test could detect) and not testable (with the missing precondition). A student trained on
several seeds is judged pooled over them (the verdict), each seed counted beside it. See `verdicts`
(its rows' fields) and `save_verdicts` (the short table, its JSON and docs/verdicts.md).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import claims, figures, paths, profiles, registry, tables
from .claims import FLOOR, FRACTION, HELD, MIN_GAIN, NEAR_MARGIN, NO_GAIN, NOT_TESTABLE
from .files import write_atomic
from .paper import CONSTANT
from .records import CONSTANT_SHARE, constant_system, load_metrics as _load
from .registry import BEATS, FILTER, NEAR, NO_DISTILL, Notebook
from .stats import holm, p_text

MIN_PAIRS = 8  # a student trained on fewer kept inputs cannot carry a claim
BLOCKS = registry.NOTEBOOKS  # the method notebooks whose claims are tested, in order
# blocks that exist only when their data was given (BSM on OASST2: OASST2_SOURCE); tested when present
OPTIONAL = (registry.OASST2,)


def load_metrics(profile: str, model: str | None = None, blocks: Sequence[Notebook] = BLOCKS,
                 allow_missing: bool = False) -> dict[str, dict[str, Any]]:
    """Every method notebook's metrics for ``profile`` (`records.load_metrics`): a clear error
    naming the notebook whose metrics are missing or stale; with ``allow_missing`` a notebook
    without metrics is left out, and its claims say so. The `OPTIONAL` blocks' metrics join where
    they exist (and are checked the same way)."""
    model = profiles.model_for(profile, model)
    out = _load([b.notebook for b in blocks], profile, model, allow_missing)
    if blocks is BLOCKS:
        extra = _load([b.notebook for b in OPTIONAL], profile, model, True)
        if extra:
            out = _load([b.notebook for b in (*blocks, *OPTIONAL) if b.notebook in {**out, **extra}], profile, model,
                        allow_missing)
    return out


def blocks_of(metrics: dict[str, dict], blocks: Sequence[Notebook] | None = None) -> tuple[Notebook, ...]:
    """The blocks a summary covers: ``blocks`` (default `BLOCKS`), then each `OPTIONAL` block
    whose metrics are in ``metrics``."""
    base = tuple(BLOCKS if blocks is None else blocks)
    return base + tuple(b for b in OPTIONAL if b.notebook in metrics and b not in base)


def method_label(b: Notebook, m: dict | None) -> str:
    """A block's name in the summary: BSM's MT-bench block says which label it was scored on
    (the proxy, or human votes: ``info["label_kind"]``)."""
    kind = ((m or {}).get("info") or {}).get("label_kind")
    return b.label.replace("proxy agreement", f"{kind} agreement") if kind else b.label


def _row(m: dict, name: str) -> dict:
    return m["rows"][name]


Comparison = claims.Comparison  # the evidence behind a verdict: the rules live in `claims`


# --- one view of a notebook's outcomes: a parse rule, a group, one seed or all pooled ----------------

@dataclass(frozen=True)
class View:
    rule: str
    group: str | None
    correct: dict[str, list[bool]]  # each row's outcomes (a multi-seed student: its first seed's, or the view's seed's)
    answers: dict[str, list]  # each row's answers (pooled: every seed's, one after another)
    runs: dict[str, list[list[bool]]] | None = None  # pooled: each row's outcomes per seed

    def constant_system(self, name: str) -> str | None:
        """Why ``name`` cannot carry a verdict (one answer to >= CONSTANT_SHARE of the inputs), or None."""
        found = constant_system(name, self.answers.get(name) or [])
        return found[0] if found else None

    def compare(self, a: str, b: str) -> Comparison:
        runs = self.runs or {}
        return Comparison.pooled(a, runs.get(a) or [self.correct[a]], b, runs.get(b) or [self.correct[b]])


def seeds_of(m: dict) -> list[int]:
    """The seeds a notebook's students were trained on (one: a single student per filter output)."""
    out = (m.get("outcomes") or {}).get("rows") or {}
    count = max([len(e.get("seeds") or [None]) for e in out.values()] or [1])
    for row in m.get("rows", {}).values():
        if len(row.get("seeds") or []) == count:
            return list(row["seeds"])
    return list(range(count))


def views(m: dict, group: str | None, seed: int | None = 0) -> list[View]:
    """One view per parse rule the notebook recorded, restricted to ``group`` (None: all inputs),
    with each multi-seed student's outcomes of its ``seed``-th seed (0: the first; None: every seed,
    pooled per input by `View.compare`)."""
    out = m.get("outcomes")
    if not out:
        raise ValueError(f"{m.get('manifest', {}).get('notebook', 'a notebook')}: its metrics have no per-input "
                         "outcomes (recorded by this version's pipeline.finish); rerun it")
    keep = [i for i, g in enumerate(out["groups"]) if group is None or g == group]
    first = out["rules"][0]
    result = []
    for rule in out["rules"]:
        correct, answers, runs = {}, {}, {}
        for name, whole in out["rows"].items():
            entries = whole.get("seeds") or [whole]
            chosen = entries if seed is None else [entries[min(seed, len(entries) - 1)]]
            runs[name] = [[e["correct"].get(rule, e["correct"][first])[i] for i in keep] for e in chosen]
            correct[name] = runs[name][0]
            ans = [e["answers"].get(rule, e["answers"].get(first)) for e in chosen]
            if all(a is not None for a in ans):
                answers[name] = [a[i] for a in ans for i in keep]
        result.append(View(rule, group, correct, answers, runs if seed is None else None))
    return result


# --- the claims ---------------------------------------------------------------------------------------

def _targets_problem(m: dict, name: str) -> str | None:
    """Why the student ``name`` cannot carry a verdict: untrained, too few kept inputs, or
    training targets that are all one answer; else None."""
    t = m.get("training", {}).get(name)
    if not t:
        return f"{name} was not trained (the filter kept no input): it is the base model"
    if t["pairs"] < MIN_PAIRS:
        return f"{name} was trained on {t['pairs']} pairs, fewer than the {MIN_PAIRS} a claim needs"
    targets = (m.get("filters", {}).get(name) or {}).get("targets") or {}
    if len(targets) == 1 and sum(targets.values()) > 1:
        (answer, count), = targets.items()
        return f"every one of {name}'s {count} kept targets is the same answer ({answer!r})"
    return None


@dataclass(frozen=True)
class Judged:
    """One claim in one view: its verdict, the long text, the p it enters Holm's correction with, the
    reason in a few words, and the claim's main comparison (the numbers of the short evidence)."""

    verdict: str
    numbers: str
    p: float
    reason: str
    main: Comparison
    context: str = ""  # System 1's accuracy where the main comparison does not name it


def _claim(v: View, m: dict, b: Notebook, claim: str, adjusted: float | None = None) -> Judged:
    """The claim in one view; ``adjusted``: its p after Holm's correction over the family (None:
    uncorrected)."""
    s1, s2, d = b.system1, b.system2, b.distilled
    tokens = {name: _row(m, name)["tokens"] for name in (s1, s2, d, b.ablation) if name and name in m["rows"]}
    has_constant = CONSTANT in v.correct
    why_not = []
    # a teacher's gain is a precondition only of the claims that are about keeping it
    if claim in (NEAR, NO_DISTILL):
        teacher = v.compare(s2, s1)
        if not teacher.higher:
            why_not.append(f"{s2} does not beat {s1} significantly ({teacher.text(tokens)}), so there is no gain "
                           "to keep")
        elif has_constant:
            floor = v.compare(s2, CONSTANT)
            if not floor.higher:
                why_not.append(f"{s2} does not beat the best constant answer significantly ({floor.text()})")
    students = [d] + ([b.ablation] if claim == FILTER and b.ablation else [])
    why_not += [x for x in (_targets_problem(m, name) for name in students) if x]
    involved = {FILTER: [d, b.ablation], NEAR: [d, s2, s1], BEATS: [d, s1], NO_DISTILL: [s2, d]}[claim]
    why_not += [x for x in (v.constant_system(name) for name in involved) if x]
    a, other = {BEATS: (d, s1), NEAR: (d, s2), FILTER: (d, b.ablation), NO_DISTILL: (s2, d)}[claim]
    c = v.compare(a, other)
    numbers = c.text(tokens)
    s1_acc = sum(v.correct[s1]) / len(v.correct[s1])
    context = "" if s1 in (a, other) else f" ({s1} {100 * s1_acc:.1f}%)"
    if why_not:
        return Judged(NOT_TESTABLE, f"{'; '.join(why_not)}. {numbers}", math.nan, re.split(r" \((?=[^)]*(?:%|points|tok))", why_not[0])[0], c,
                      f"{context}; {why_not[0]}")
    if claim in (BEATS, FILTER):
        floor = v.compare(d, CONSTANT) if claim == BEATS and has_constant else None
        dec = claims.beats(c, adjusted, floor)
    elif claim == NEAR:
        runs = (v.runs or {}).get(d)
        dec = claims.near(v.correct[d], v.correct[s1], v.correct[s2], (d, s1, s2), tokens, adjusted, runs)
    else:  # CoT on GSM8k does not distill
        dec = claims.does_not_distill(c, v.compare(d, s1), adjusted)
    return Judged(dec.verdict, f"{numbers}; {dec.why}", dec.p, dec.reason, c, context)


def _family(cells: list, vs: dict[int, list[View]]) -> dict[int, tuple[tuple[str, str], Judged, float | None]]:
    """One family of claims (Holm over their first-rule p): per cell, (verdict, numbers) over the
    parse rules (`_by_rule`), the first rule's judgement, and its Holm-adjusted p."""
    first = {k: _claim(vs[k][0], cells[k][5], cells[k][1], cells[k][4]).p for k in vs}
    testable = [k for k in vs if not math.isnan(first[k])]
    adjusted = dict(zip(testable, holm([first[k] for k in testable])))
    out = {}
    for k in vs:
        judged = [_claim(v, cells[k][5], cells[k][1], cells[k][4], adjusted.get(k)) for v in vs[k]]
        out[k] = (_by_rule([(v.rule, j.verdict, j.numbers) for v, j in zip(vs[k], judged)]), judged[0], adjusted.get(k))
    return out


def verdicts(metrics: dict[str, dict], blocks: Sequence[Notebook] | None = None) -> list[dict[str, Any]]:
    """One verdict per paper claim, method and group (S2A: biased and unbiased inputs separately), under
    every parse rule the notebook recorded (where they disagree the verdict gives each): held, not held,
    not shown or not testable (`claims`; a missing precondition: no System 2 gain for the claims about
    keeping it, a student trained on too few inputs, a constant system or constant targets).

    The verdict is the pooled one: each multi-seed student's per-input mean over its seeds, tested over
    inputs (`claims.Comparison.pooled`; without seeds: McNemar), every claim of the table one Holm
    family. Beside it, each seed's verdict (each seed's claims their own family) counted in
    ``verdict_per_seed``. Each row's fields (`ROW_FIELDS`, as figures/summary_verdicts.json
    holds them):

    - ``claim``, ``method``: the paper's claim and the block (with its group);
    - ``verdict``: the pooled verdict (held / not held / not shown / not testable, or "depends on the
      parse rule: ..."); ``verdict_per_seed``: e.g. "held on 2 of 3 seeds (not shown on 1)";
    - ``reason``: why, in at most `REASON_CHARS` characters; ``evidence``: the deciding test in at most
      `EVIDENCE_CHARS` (means, difference, 95% CI, p, Holm-adjusted p, the seeds' count);
    - ``evidence_per_seed``: every seed's full text; ``numbers``: the pooled verdict's full text;
    - the numbers of the claim's main comparison (a against b): ``a``, ``b``, ``mean_a``, ``mean_b``,
      ``diff``, ``ci_low``, ``ci_high``, ``p`` (the claim's p, the largest of its tests'), ``p_holm``,
      ``n``, ``seeds``, ``test``."""
    cells, out = [], []  # cells: (slot, block, label, group, claim, m); out: the rows
    for b in blocks_of(metrics, blocks):
        m = metrics.get(b.notebook)
        if m is None:
            text = f"{b.notebook} has not been run with this version (no per-input outcomes recorded)"
            out.append({**dict.fromkeys(ROW_FIELDS), "claim": ", ".join(list(b.claims)), "method": b.label,
                        "verdict": NOT_TESTABLE, "verdict_per_seed": "", "reason": text[:REASON_CHARS],
                        "evidence": text, "evidence_per_seed": text, "numbers": text})
            continue
        for group in b.groups or (None,):
            label = method_label(b, m) + (f" ({group} inputs)" if group else "")
            for claim in list(b.claims):
                cells.append((len(out), b, label, group, claim, m))
                out.append({})
    seeds = [seeds_of(m) for *_, m in cells]  # each cell's notebook's seeds, read once
    pooled = _family(cells, {k: views(cells[k][5], cells[k][3], None) for k in range(len(cells))})
    per_seed = [_family(cells, {k: views(cells[k][5], cells[k][3], s) for k in range(len(cells)) if s < len(seeds[k])})
                for s in range(max([len(x) for x in seeds] or [1]))]  # each seed's claims their own family
    for k, (slot, b, label, group, claim, m) in enumerate(cells):
        (verdict, numbers), j, adjusted = pooled[k]
        each = [per_seed[s][k] for s in range(len(seeds[k]))]
        c = j.main
        out[slot] = {"claim": claim, "method": label, "verdict": verdict,
                     "verdict_per_seed": _seed_count([e[1].verdict for e in each]), "reason": _cut(j.reason, REASON_CHARS),
                     "evidence": "", "evidence_per_seed": " ".join(
                         f"[seed {seed}] {e[0][0]}: {e[0][1].rstrip('.')}." for seed, e in zip(seeds[k], each)),
                     "numbers": numbers, "a": c.a, "b": c.b, "mean_a": c.acc_a, "mean_b": c.acc_b, "diff": c.diff,
                     "ci_low": c.low, "ci_high": c.high, "p": None if math.isnan(j.p) else j.p, "p_holm": adjusted,
                     "n": c.n, "seeds": len(seeds[k]), "test": c.test_name}
        holm_note = "" if adjusted is None or math.isnan(j.p) else f"; claim {p_text(j.p)}, Holm {p_text(adjusted)[2:]}"
        out[slot]["evidence"] = _cut(f"{c.short()}{j.context}{holm_note}; {c.test_name}; "
                                     f"{out[slot]['verdict_per_seed']}", EVIDENCE_CHARS)
    return out


REASON_CHARS, EVIDENCE_CHARS = 120, 300
ROW_FIELDS = ("claim", "method", "verdict", "verdict_per_seed", "reason", "evidence", "evidence_per_seed", "numbers",
              "a", "b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p", "p_holm", "n", "seeds", "test")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _by_rule(results: list[tuple[str, str, str]]) -> tuple[str, str]:
    """(verdict, numbers) of one claim in one family from its (rule, verdict, numbers) per parse rule."""
    first_rule, verdict, numbers = results[0]
    if len({r[1] for r in results}) == 1:
        others = [r[0] for r in results[1:]]
        if others:
            numbers += f". Same verdict under the {', '.join(others)} parse rule"
        return verdict, numbers
    shown = " / ".join(f"{r[1]} ({r[0]})" for r in results)
    return f"depends on the parse rule: {shown}", " // ".join(f"under the {r[0]} rule: {r[1]}: {r[2]}" for r in results)


def _seed_count(verdicts: Sequence[str]) -> str:
    """Each seed's verdict (first parse rule) counted: "held on 2 of 3 seeds (not shown on 1)"."""
    n = len(verdicts)
    if n == 1:
        return f"{verdicts[0]} (one seed)"
    counts = {v: verdicts.count(v) for v in dict.fromkeys([HELD, *verdicts])}
    rest = [f"{v} on {c}" for v, c in counts.items() if v != HELD and c]
    if counts[HELD] == 0 and len(rest) == 1:
        return f"{verdicts[0]} on {n} of {n} seeds"
    return f"held on {counts[HELD]} of {n} seeds" + (f" ({', '.join(rest)})" if rest else "")


def verdicts_markdown(rows: list[dict[str, Any]]) -> str:
    """The short table: claim, method, the pooled verdict, the seeds', the reason and the deciding test."""
    head = ("| claim | method | verdict | over seeds | reason | the deciding test (means, paired difference, 95% CI, p) |"
            "\n|---|---|---|---|---|---|")

    def cell(text: str) -> str:  # a "|" in the evidence (rules, seeds) would open a new column
        return str(text or "").replace("|", "\\|")

    body = [f"| {r['claim']} | {r['method']} | **{cell(r['verdict'])}** | {cell(r['verdict_per_seed'])} | "
            f"{cell(r['reason'])} | {cell(r['evidence'])} |" for r in rows]
    return "\n".join([head, *body])


LEGEND = (f"- **held**: the data show it, after Holm's correction over every claim of the table. 'Beats' and 'the "
          f"filter matters': the paired test finds the higher accuracy (above the best constant answer too where the "
          f"answers are a closed set) and its interval does not lie wholly below {100 * MIN_GAIN:.0f} points. 'Near "
          f"System 2 at a fraction of its tokens': the student keeps more than {FLOOR:.0%} of System 2's gain over "
          f"System 1 (Fieller's interval of the retained share clears {FLOOR:.0%}), beats System 1, is not below System 2 "
          f"by more than {100 * NEAR_MARGIN:.0f} points (the interval's lower end), at most {FRACTION:.0%} of System 2's "
          f"tokens. 'CoT does not distill': CoT beats the student and the student's gain over System 1 is shown below "
          f"{100 * NO_GAIN:.0f} points. **not held**: the data contradict it (significant the other way; for 'beats', an "
          f"interval that excludes a gain of {100 * MIN_GAIN:.0f} points, below every gain the paper reports; for "
          f"'near', a retained share significantly under {FLOOR:.0%} or a student shown more than "
          f"{100 * NEAR_MARGIN:.0f} points below System 2; for 'does not distill', a gain over System 1 shown above "
          f"{100 * NO_GAIN:.0f} points, or a student within {100 * NO_GAIN:.0f} points of CoT). **not shown**: this n "
          f"cannot tell (the smallest difference the test detects with 80% power is given). **not testable**: a "
          f"precondition is missing (for the claims about keeping System 2's gain, System 2 does not beat System 1 "
          f"significantly; a student trained on fewer than {MIN_PAIRS} kept inputs or on targets that are all one "
          f"answer; a system that gives one answer to at least {CONSTANT_SHARE:.0%} of the inputs).\n"
          "- The paired test is McNemar's (the score test; exact below 25 discordant pairs) and each interval inverts "
          "it, so an interval excludes 0 exactly when p < 0.05. A claim that needs several tests enters Holm's "
          "correction with the largest of their p, and each of its tests is judged at its Holm-adjusted level.\n"
          "- Every student is trained on several seeds on the same test inputs, so the verdict pools them: each "
          "input's mean correctness over the seeds against the other system's outcome, tested over inputs (the exact "
          "sign-flip permutation test; a paired t-test as the cross-check). 'Over seeds' counts each seed's own "
          "verdict (each seed's claims one Holm family): how robust the pooled verdict is. The full per-seed evidence "
          "is on docs/verdicts.md.\n"
          "- Each verdict is computed under every parse rule the task has (the table's first); 'depends on the parse "
          "rule' gives each. S2A is judged on biased and unbiased inputs separately. Test items that share a question "
          "(BSM's pairs and votes on one MT-bench question) are treated as independent, which makes those intervals "
          "too narrow.\n")


def _suffix(profile: str) -> str:
    return "" if profile == "cpu" else f".{profile}"  # as `tables.output_path`: the cpu profile owns the plain names


def docs_path(profile: str) -> Path:
    """The generated page of definitions and per-seed evidence: ``docs/verdicts[.<profile>].md`` beside
    the figures folder (the repository's docs/ for the committed figures)."""
    return paths.ensure(paths.FIGURES.parent / "docs") / f"verdicts{_suffix(profile)}.md"


def verdicts_json(rows: list[dict[str, Any]]) -> str:
    """figures/summary_verdicts.json: a list of rows, each with exactly `ROW_FIELDS` (see `verdicts`)."""
    return json.dumps([{k: r.get(k) for k in ROW_FIELDS} for r in rows], indent=1, default=str)


def verdicts_page(rows: list[dict[str, Any]], profile: str, model: str) -> str:
    """docs/verdicts.md: the rules (the claims module's definitions, quoted) and every verdict's evidence
    per seed."""
    rules = "\n".join("> " + line if line else ">" for line in (claims.__doc__ or "").strip().splitlines())
    parts = [f"# The verdicts: rules and per-seed evidence ({model}, profile {profile})", "",
             f"Generated by `summary.save_verdicts`; the short table is `figures/{registry.SUMMARY_FILE}"
             f"{_suffix(profile)}.md`.", "", "## The rules (`s2d_utils/claims.py`)", "", rules, "", LEGEND,
             "## The evidence, claim by claim", ""]
    for r in rows:
        parts += [f"### {r['claim']}: {r['method']}", "", f"**{r['verdict']}** ({r.get('verdict_per_seed') or ''}). "
                  f"{r.get('reason') or ''}", "", f"Pooled: {r.get('numbers') or ''}", "",
                  f"Per seed: {r.get('evidence_per_seed') or ''}", ""]
    return "\n".join(parts)


def save_verdicts(rows: list[dict[str, Any]], profile: str, model: str) -> Path:
    """Write the short table (figures/summary_verdicts[.profile].md), its rows as JSON
    (figures/summary_verdicts[.profile].json, `ROW_FIELDS`) and the page of rules and per-seed
    evidence (`docs_path`); return the table's path."""
    path = tables.output_path(registry.SUMMARY_FILE, profile, "md")
    text = f"# The paper's claims, tested on {model} (profile {profile})\n\n{verdicts_markdown(rows)}\n\n{LEGEND}"
    write_atomic(path, text)
    write_atomic(tables.output_path(registry.SUMMARY_FILE, profile, "json"), verdicts_json(rows) + "\n")
    write_atomic(docs_path(profile), verdicts_page(rows, profile, model))
    return path


def plot(metrics: dict[str, dict], profile: str, model: str, blocks: Sequence[Notebook] | None = None) -> Path:
    """One figure across methods (`figures.plot_summary`): headline measure vs #Tokens."""
    return figures.plot_summary(metrics, profile, model, blocks_of(metrics, blocks), registry.SUMMARY_FIGURE)


def tables_markdown(profile: str, blocks: Sequence[Notebook] | None = None) -> str:
    """Every method table file of the profile, verbatim (tables, notes and findings); an
    `OPTIONAL` block's where it exists."""
    parts = []
    base = tuple(BLOCKS if blocks is None else blocks)
    present = tuple(b for b in OPTIONAL if blocks is None and tables.output_path(b.table, profile, "md").exists())
    for b in base + present:
        path = tables.output_path(b.table, profile, "md")
        if not path.exists():
            raise FileNotFoundError(f"{b.notebook}: {path} is missing; run that notebook first")
        parts.append(path.read_text())
    return "\n\n".join(parts)
