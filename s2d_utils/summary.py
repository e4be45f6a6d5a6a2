"""The summary notebook's logic: read every method notebook's metrics, check they belong together,
draw one figure across methods, and give a verdict per paper claim from the numbers.

Verdicts are computed from the per-input outcomes the notebooks record (`records.outcomes`),
so every comparison can be redone under each parse rule, per group and against the best
constant answer, and has four outcomes: held, not held, not shown (with the smallest difference
the test could detect) and not testable (with the missing precondition). See `verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import figures, profiles, registry, tables
from .paper import CONSTANT
from .records import CONSTANT_SHARE, constant_system, load_metrics as _load
from .registry import BEATS, FILTER, NEAR, NO_DISTILL, Notebook
from .stats import ALPHA, detectable_difference, discordant, mcnemar_p, p_text, paired_difference_ci

FRACTION = 0.5  # "a fraction of System 2's tokens": at most half
MARGIN = 0.10  # "near" / "equivalent": within 10 accuracy points (the 95% CI of the paired difference)
MIN_PAIRS = 8  # a student trained on fewer kept inputs cannot carry a claim
HELD, NOT_HELD, NOT_SHOWN, NOT_TESTABLE = "held", "not held", "not shown", "not testable"
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


# --- the evidence behind a verdict ----------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """System a against system b on the same test inputs (one parse rule, one group)."""

    a: str
    b: str
    n: int
    acc_a: float
    acc_b: float
    p: float  # exact McNemar
    diff: float  # acc_a - acc_b
    low: float  # 95% CI of diff (Agresti-Min)
    high: float
    detectable: float  # smallest difference this n detects with 80% power

    @classmethod
    def of(cls, a: str, va: Sequence[bool], b: str, vb: Sequence[bool]) -> "Comparison":
        n = len(va)
        only_a, only_b = discordant(va, vb)
        diff, low, high = paired_difference_ci(va, vb)
        return cls(a, b, n, sum(va) / n, sum(vb) / n, mcnemar_p(va, vb), diff, low, high,
                   detectable_difference(n, (only_a + only_b) / n))

    @property
    def higher(self) -> bool:
        return self.p < ALPHA and self.diff > 0

    @property
    def lower(self) -> bool:
        return self.p < ALPHA and self.diff < 0

    def text(self, tokens: dict[str, float] | None = None) -> str:
        tok = tokens or {}

        def side(name, acc):
            return f"{name} {100 * acc:.1f}%" + (f" ({tok[name]:.1f} tok)" if name in tok else "")

        return (f"{side(self.a, self.acc_a)} vs {side(self.b, self.acc_b)}: {100 * self.diff:+.1f} points "
                f"(95% CI {100 * self.low:+.0f} to {100 * self.high:+.0f}), n = {self.n}, McNemar {p_text(self.p)}")

    def not_shown(self) -> str:
        return (f"not shown: n = {self.n} detects a difference of {100 * self.detectable:.0f} points or more "
                f"with 80% power")


def beats(c: Comparison) -> tuple[str, str]:
    """(verdict, why) for the claim "a beats b"."""
    if c.higher:
        return HELD, ""
    if c.lower:
        return NOT_HELD, f"{c.a} is significantly lower"
    if -MARGIN < c.low and c.high < MARGIN:
        return NOT_HELD, f"equivalent within ±{100 * MARGIN:.0f} points (the CI lies inside the margin)"
    return NOT_SHOWN, c.not_shown()


def at_least_near(c: Comparison) -> tuple[str, str]:
    """(verdict, why) for "a is no worse than b by more than the margin" (non-inferiority: the CI's
    lower end above -MARGIN), never from a p-value above 0.05 alone."""
    if c.low > -MARGIN:
        return HELD, f"the CI's lower end is above -{100 * MARGIN:.0f} points"
    if c.high < -MARGIN:
        return NOT_HELD, f"{c.a} is more than {100 * MARGIN:.0f} points lower (the whole CI)"
    return NOT_SHOWN, c.not_shown() + f"; the CI reaches below -{100 * MARGIN:.0f} points"


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


def views(m: dict, group: str | None) -> list[View]:
    """One view per parse rule the notebook recorded, restricted to ``group`` (None: all inputs)."""
    out = m.get("outcomes")
    if not out:
        raise ValueError(f"{m.get('manifest', {}).get('notebook', 'a notebook')}: its metrics have no per-input "
                         "outcomes (recorded by this version's pipeline.finish); rerun it")
    keep = [i for i, g in enumerate(out["groups"]) if group is None or g == group]
    result = []
    for rule in out["rules"]:
        correct, answers = {}, {}
        for name, entry in out["rows"].items():
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


def _claim(v: View, m: dict, b: Notebook, claim: str) -> tuple[str, str]:
    """(verdict, numbers) of one claim in one view."""
    s1, s2, d = b.system1, b.system2, b.distilled
    tokens = {name: _row(m, name)["tokens"] for name in (s1, s2, d, b.ablation) if name and name in m["rows"]}
    has_constant = CONSTANT in v.correct
    # preconditions shared by every distillation claim
    teacher = v.compare(s2, s1)
    gain = teacher.higher
    why_not = []
    if not gain:
        why_not.append(f"{s2} does not beat {s1} significantly ({teacher.text(tokens)})")
    if has_constant and gain:
        floor = v.compare(s2, CONSTANT)
        if not floor.higher:
            why_not.append(f"{s2} does not beat the best constant answer significantly ({floor.text()})")
    students = [d] + ([b.ablation] if claim == FILTER and b.ablation else [])
    why_not += [x for x in (_targets_problem(m, name) for name in students) if x]
    involved = {FILTER: [d, b.ablation], NEAR: [d, s2], BEATS: [d, s1], NO_DISTILL: [s2, d]}[claim]
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
        return NOT_TESTABLE, f"{'; '.join(why_not)}. {numbers}"
    if claim == BEATS:
        verdict, why = beats(c)
        if verdict == HELD and has_constant:
            floor = v.compare(d, CONSTANT)
            if not floor.higher:
                verdict, why = NOT_SHOWN, f"{d} does not beat the best constant answer ({floor.text()})"
    elif claim == NEAR:
        if tokens[d] > FRACTION * tokens[s2]:
            return NOT_HELD, f"{d} spends {tokens[d]:.1f} tokens, more than {FRACTION:.0%} of {s2}'s {tokens[s2]:.1f}. {numbers}"
        verdict, why = at_least_near(c)
    elif claim == FILTER:
        verdict, why = beats(c)
    else:  # CoT on GSM8k does not distill: System 2 beats the distilled model
        verdict, why = beats(c)
        if verdict == NOT_HELD and not c.lower:  # equivalence would contradict "does not distill"
            pass
        elif verdict == NOT_SHOWN:
            near_v, _ = at_least_near(v.compare(d, s2))
            if near_v == HELD:
                verdict, why = NOT_HELD, f"{d} is within {100 * MARGIN:.0f} points of {s2} (non-inferior)"
    return verdict, f"{numbers}" + (f"; {why}" if why else "")


def verdicts(metrics: dict[str, dict], blocks: Sequence[Notebook] | None = None) -> list[dict[str, str]]:
    """One verdict per paper claim, method and group (S2A: biased and unbiased inputs separately),
    under every parse rule the notebook recorded; where the rules disagree the verdict says so and
    gives each. Outcomes: held, not held (contradicted: significant the other way, or equivalence /
    a margin shown), not shown (underpowered: the detectable difference is given), not testable (a
    precondition is missing: System 2 no better than System 1 or a constant answer, no student
    trained on enough inputs, a constant system or constant training targets)."""
    out = []
    for b in blocks_of(metrics, blocks):
        m = metrics.get(b.notebook)
        if m is None:
            out.append({"claim": ", ".join(list(b.claims)), "method": b.label, "verdict": NOT_TESTABLE,
                        "numbers": f"{b.notebook} has not been run with this version (no per-input outcomes recorded)"})
            continue
        for group in b.groups or (None,):
            vs = views(m, group)
            label = method_label(b, m) + (f" ({group} inputs)" if group else "")
            for claim in list(b.claims):
                results = [(v.rule, *_claim(v, m, b, claim)) for v in vs]
                first_rule, verdict, numbers = results[0]
                if len({r[1] for r in results}) == 1:
                    others = [r[0] for r in results[1:]]
                    if others:
                        numbers += f". Same verdict under the {', '.join(others)} parse rule"
                    out.append({"claim": claim, "method": label, "verdict": verdict, "numbers": numbers})
                else:
                    shown = " / ".join(f"{r[1]} ({r[0]})" for r in results)
                    numbers = " || ".join(f"under the {r[0]} rule: {r[1]}: {r[2]}" for r in results)
                    out.append({"claim": claim, "method": label, "verdict": f"depends on the parse rule: {shown}",
                                "numbers": numbers})
    return out


def verdicts_markdown(rows: list[dict[str, str]]) -> str:
    head = ("| claim | method | verdict | the evidence (accuracy, paired difference with its 95% CI, exact McNemar) |"
            "\n|---|---|---|---|")
    body = [f"| {r['claim']} | {r['method']} | **{r['verdict']}** | {r['numbers']} |" for r in rows]
    return "\n".join([head, *body])


LEGEND = (f"- **held**: the data show it (a claim that one system beats another: exact McNemar p < {ALPHA} in that "
          f"direction, and above the best constant answer where the answers are a closed set; 'near System 2': the "
          f"95% CI of the paired difference stays above -{100 * MARGIN:.0f} points, at most {FRACTION:.0%} of System 2's "
          f"tokens). **not held**: the data contradict it (significant the other way, or the CI inside the "
          f"±{100 * MARGIN:.0f}-point margin). **not shown**: this n cannot tell (the smallest difference it detects "
          f"with 80% power is given). **not testable**: a precondition is missing (System 2 does not beat System 1 "
          f"significantly, a student trained on fewer than {MIN_PAIRS} kept inputs or on targets that are all one answer, "
          f"or a system that gives one answer to at least {CONSTANT_SHARE:.0%} of the inputs).\n"
          "- Each verdict is computed under every parse rule the task has (the table's first); 'depends on the parse "
          "rule' gives each. S2A is judged on biased and unbiased inputs separately, as the paper reports them.\n")


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
