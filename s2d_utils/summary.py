"""The summary notebook's logic: read every method notebook's metrics, check they belong together,
draw one figure across methods, and give a verdict per paper claim from the numbers.

Verdicts are computed from the per-input outcomes the notebooks record (`records.outcomes`),
so every comparison can be redone under each parse rule, per group and against the best
constant answer, and has four outcomes: held, not held, not shown (with the smallest difference
the test could detect) and not testable (with the missing precondition). See `verdicts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import claims, figures, profiles, registry, tables
from .claims import FLOOR, FRACTION, HELD, MIN_GAIN, NO_GAIN, NOT_SHOWN, NOT_TESTABLE
from .paper import CONSTANT
from .records import CONSTANT_SHARE, constant_system, load_metrics as _load
from .registry import BEATS, FILTER, NEAR, NO_DISTILL, Notebook
from .stats import ALPHA, holm

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


# --- the evidence behind a verdict: the rules live in `claims` ------------------------------------------

Comparison = claims.Comparison
beats = claims.beats


# --- one view of a notebook's outcomes: a parse rule and a group -------------------------------------

@dataclass(frozen=True)
class View:
    rule: str
    group: str | None
    correct: dict[str, list[bool]]
    answers: dict[str, list]

    def constant_system(self, name: str) -> str | None:
        """Why ``name`` cannot carry a verdict (one answer to >= CONSTANT_SHARE of the inputs), or None."""
        found = constant_system(name, self.answers.get(name) or [])
        return found[0] if found else None

    def compare(self, a: str, b: str) -> Comparison:
        return Comparison.of(a, self.correct[a], b, self.correct[b])


def seeds_of(m: dict) -> list[int]:
    """The seeds a notebook's students were trained on (one: a single student per filter output)."""
    out = (m.get("outcomes") or {}).get("rows") or {}
    count = max([len(e.get("seeds") or [None]) for e in out.values()] or [1])
    for row in m.get("rows", {}).values():
        if len(row.get("seeds") or []) == count:
            return list(row["seeds"])
    return list(range(count))


def views(m: dict, group: str | None, seed: int = 0) -> list[View]:
    """One view per parse rule the notebook recorded, restricted to ``group`` (None: all inputs),
    with each multi-seed student's outcomes of its ``seed``-th seed (0: the first)."""
    out = m.get("outcomes")
    if not out:
        raise ValueError(f"{m.get('manifest', {}).get('notebook', 'a notebook')}: its metrics have no per-input "
                         "outcomes (recorded by this version's pipeline.finish); rerun it")
    keep = [i for i, g in enumerate(out["groups"]) if group is None or g == group]
    result = []
    for rule in out["rules"]:
        correct, answers = {}, {}
        for name, entry in out["rows"].items():
            entry = (entry.get("seeds") or [entry])[min(seed, len(entry.get("seeds") or [entry]) - 1)]
            vec = entry["correct"].get(rule, entry["correct"][out["rules"][0]])
            correct[name] = [vec[i] for i in keep]
            ans = entry["answers"].get(rule, entry["answers"].get(out["rules"][0]))
            if ans is not None:
                answers[name] = [ans[i] for i in keep]
        result.append(View(rule, group, correct, answers))
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


def _claim(v: View, m: dict, b: Notebook, claim: str, adjusted: float | None = None) -> tuple[str, str, float]:
    """(verdict, numbers, p of the claim's primary test) in one view; ``adjusted``: that p after
    Holm's correction over the family (None: uncorrected)."""
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
    if claim == BEATS:
        c = v.compare(d, s1)
    elif claim == NEAR:
        c = v.compare(d, s2)
    elif claim == FILTER:
        c = v.compare(d, b.ablation)
    else:  # NO_DISTILL
        c = v.compare(s2, d)
    numbers = c.text(tokens)
    if why_not:
        return NOT_TESTABLE, f"{'; '.join(why_not)}. {numbers}", math.nan
    if claim in (BEATS, FILTER):
        dec = claims.beats(c, adjusted)
        if claim == BEATS and dec.verdict == HELD and has_constant:
            floor = v.compare(d, CONSTANT)
            if not floor.higher:
                dec = claims.Decision(NOT_SHOWN, f"{d} does not beat the best constant answer ({floor.text()})", dec.p)
    elif claim == NEAR:
        dec = claims.near(v.correct[d], v.correct[s1], v.correct[s2], (d, s1, s2), tokens, adjusted)
    else:  # CoT on GSM8k does not distill
        dec = claims.does_not_distill(c, v.compare(d, s1), adjusted)
    return dec.verdict, f"{numbers}; {dec.why}", dec.p


def verdicts(metrics: dict[str, dict], blocks: Sequence[Notebook] | None = None) -> list[dict[str, str]]:
    """One verdict per paper claim, method and group (S2A: biased and unbiased inputs separately),
    under every parse rule the notebook recorded; where the rules disagree the verdict says so and
    gives each. Outcomes (`claims`): held, not held (contradicted: significant the other way, or the
    interval excludes the effect the claim needs), not shown (the detectable difference is given),
    not testable (a precondition is missing: no System 2 gain for the claims about keeping it, no
    student trained on enough inputs, a constant system or constant training targets).

    Each seed's claims are one family: each claim's primary test (under the first parse rule) is
    Holm-corrected over every testable claim of that seed's students, and its verdict is decided on
    the adjusted p (both shown); the seeds' verdicts then combine (`_over_seeds`)."""
    cells = []  # (slot, block, label, group, claim, m)
    out: list[dict[str, str]] = []
    for b in blocks_of(metrics, blocks):
        m = metrics.get(b.notebook)
        if m is None:
            out.append({"claim": ", ".join(list(b.claims)), "method": b.label, "verdict": NOT_TESTABLE,
                        "numbers": f"{b.notebook} has not been run with this version (no per-input outcomes recorded)"})
            continue
        for group in b.groups or (None,):
            label = method_label(b, m) + (f" ({group} inputs)" if group else "")
            for claim in list(b.claims):
                cells.append((len(out), b, label, group, claim, m))
                out.append({})
    # one verdict per seed: each seed's students are a replicate of the whole table, so each seed's
    # claims are one family (Holm over its testable claims' primary p under the first parse rule)
    per_seed: list[dict[int, tuple[str, str]]] = []  # seed index -> cell -> (verdict, numbers)
    seeds = [seeds_of(m) for *_, m in cells]  # each cell's notebook's seeds, read once
    for s in range(max([len(x) for x in seeds] or [1])):
        active = [k for k in range(len(cells)) if s < len(seeds[k])]
        vs = {k: views(cells[k][5], cells[k][3], s) for k in active}
        first = {k: _claim(vs[k][0], cells[k][5], cells[k][1], cells[k][4])[2] for k in active}
        testable = [k for k in active if not math.isnan(first[k])]
        adjusted = dict(zip(testable, holm([first[k] for k in testable])))
        per_seed.append({k: _by_rule([(v.rule, *_claim(v, cells[k][5], cells[k][1], cells[k][4], adjusted.get(k))[:2])
                                      for v in vs[k]]) for k in active})
    for k, (slot, b, label, group, claim, m) in enumerate(cells):
        verdict, numbers = _over_seeds(seeds[k], [per_seed[s][k] for s in range(len(seeds[k]))])
        out[slot] = {"claim": claim, "method": label, "verdict": verdict, "numbers": numbers}
    return out


def _by_rule(results: list[tuple[str, str, str]]) -> tuple[str, str]:
    """(verdict, numbers) of one claim in one seed from its (rule, verdict, numbers) per parse rule."""
    first_rule, verdict, numbers = results[0]
    if len({r[1] for r in results}) == 1:
        others = [r[0] for r in results[1:]]
        if others:
            numbers += f". Same verdict under the {', '.join(others)} parse rule"
        return verdict, numbers
    shown = " / ".join(f"{r[1]} ({r[0]})" for r in results)
    return f"depends on the parse rule: {shown}", " // ".join(f"under the {r[0]} rule: {r[1]}: {r[2]}" for r in results)


def _over_seeds(seeds: Sequence[int], results: list[tuple[str, str]]) -> tuple[str, str]:
    """One claim's verdict over its seeds: the verdict with "(k of k seeds)" when every seed gives
    it, else "flips between seeds: held in j of k" with each seed's; the numbers of every seed."""
    if len(results) == 1:
        return results[0]
    verdicts = [v for v, _ in results]
    numbers = " ".join(f"[seed {seed}] {text.rstrip('.')}." for seed, (_, text) in zip(seeds, results))
    n = len(results)
    if len(set(verdicts)) == 1:
        return f"{verdicts[0]} ({n} of {n} seeds)", numbers
    held = sum(v == HELD for v in verdicts)
    each = " / ".join(f"{v} (seed {seed})" for seed, v in zip(seeds, verdicts))
    return f"flips between seeds: held in {held} of {n}: {each}", numbers


def verdicts_markdown(rows: list[dict[str, str]]) -> str:
    head = ("| claim | method | verdict | the evidence (accuracy, paired difference with its 95% score CI, McNemar score test) |"
            "\n|---|---|---|---|")
    def cell(text: str) -> str:  # a "|" in the evidence (rules, seeds) would open a new column
        return text.replace("|", "\\|")

    body = [f"| {r['claim']} | {r['method']} | **{cell(r['verdict'])}** | {cell(r['numbers'])} |" for r in rows]
    return "\n".join([head, *body])


LEGEND = (f"- **held**: the data show it. 'Beats' and 'the filter matters': the paired score test (McNemar's, "
          f"alpha {ALPHA}) finds the higher accuracy, and above the best constant answer where the answers are a closed "
          f"set. 'Near System 2 at a fraction of its tokens': the student keeps more than {FLOOR:.0%} of System 2's gain "
          f"over System 1 (Fieller's interval of the retained share clears {FLOOR:.0%}) and beats System 1, at most "
          f"{FRACTION:.0%} of System 2's tokens. 'CoT does not distill': CoT beats the student and the student's gain over "
          f"System 1 is shown to stay below {100 * NO_GAIN:.0f} points. **not held**: the data contradict it (significant "
          f"the other way; for 'beats', an interval that excludes a gain of {100 * MIN_GAIN:.0f} points, below every "
          f"gain the paper reports; for 'near', a retained share significantly under {FLOOR:.0%}; for 'does not "
          f"distill', a student that beats System 1). **not shown**: this n cannot tell (the smallest difference the "
          f"test detects with 80% power, computed exactly for that test, is given). **not testable**: a precondition "
          f"is missing (for the claims about keeping System 2's gain, System 2 does not beat System 1 significantly; a "
          f"student trained on fewer than {MIN_PAIRS} kept inputs or on targets that are all one answer; a system that "
          f"gives one answer to at least {CONSTANT_SHARE:.0%} of the inputs).\n"
          "- The intervals are the ones that invert the test (Tango's score interval for a paired difference), so an "
          "interval excludes 0 exactly when p < 0.05. Each seed's claims are one family: each claim's primary test is "
          "Holm-corrected over every testable claim of that seed, and the verdict is decided on the adjusted p "
          "(shown beside the raw one where they differ); preconditions and the secondary conditions are tested "
          "at alpha 0.05 uncorrected.\n"
          "- Each verdict is computed under every parse rule the task has (the table's first); 'depends on the parse "
          "rule' gives each. S2A is judged on biased and unbiased inputs separately, as the paper reports them. Test "
          "items that share a question (BSM's pairs and votes on one MT-bench question) are treated as independent, "
          "which makes those intervals too narrow.\n"
          "- Every student is trained on several seeds (its LoRA initialization, data order and dropout; the teacher's "
          "samples are one draw): each verdict is computed per seed, each seed's claims one Holm family, and reads "
          "e.g. 'held (3 of 3 seeds)' where every seed gives the same verdict, else 'flips between seeds: held in j of 3' "
          "with each seed's. A student row's accuracy in the tables is the mean over its seeds. Holm's correction "
          "depends on the rest of a seed's family, so a claim can flip between seeds near alpha even where its own "
          "outcomes barely move; the per-seed numbers show where.\n")


def save_verdicts(rows: list[dict[str, str]], profile: str, model: str) -> Path:
    path = tables.output_path(registry.SUMMARY_FILE, profile, "md")
    text = f"# The paper's claims, tested on {model} (profile {profile})\n\n{verdicts_markdown(rows)}\n\n{LEGEND}"
    path.write_text(text)
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
