"""The sentences under each table, computed from its numbers: comparisons by the paired score test
(`claims.beats`, the rule the verdict table uses too), the power a test size has, and the guards
that stop a constant from passing for a result.

Every function reads an experiment (`pipeline.Experiment`) only through what it recorded:
``exp.rows``, ``exp.row(name)``, ``exp.traces``, ``exp.task``, ``exp.test``, ``exp.filters``,
``exp.trained`` and ``exp.sizes``; so the method modules' ``findings`` build their sentences from
here without importing the pipeline.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from .claims import HELD, NOT_HELD, Comparison, beats
from .evaluate import SystemResult
from .records import CONSTANT_SHARE, DOMINANT_SHARE, constant_score, constant_system, one_answer
from .stats import detectable, discordant, p_text, pct, score_p, wilson
from .tasks import Example
from .traces import rescore


def mcnemar(a: SystemResult, b: SystemResult) -> float:
    """The paired score test's two-sided p (McNemar's) of two result rows on the same inputs."""
    if a.n != b.n:
        raise ValueError(f"{a.name} ({a.n}) and {b.name} ({b.n}) were not evaluated on the same inputs")
    return score_p(*discordant(a.correct, b.correct), a.n)


def mcnemar_tests(exp: Any, pairs: Sequence[tuple[str, str]]) -> dict[str, float | list[float]]:
    """McNemar p-values (the score test) for pairs of rows evaluated on the same inputs: a list,
    one per seed, where a multi-seed student is in the pair."""
    names = {r.name for r in exp.rows}
    out: dict[str, float | list[float]] = {}
    for a, b in pairs:
        if a in names and b in names:
            ps = [mcnemar(ra, rb) for _, ra, rb in seed_pairs(exp, a, b)]
            out[f"{a} vs {b}"] = ps[0] if len(ps) == 1 else ps
    return out


def difference(ra: SystemResult, rb: SystemResult, a: str) -> tuple[float, str]:
    """(McNemar p, what it shows) for two results on the same inputs, by the verdicts' rule
    (`claims.beats`): "<a> is higher" or "lower" (p < 0.05), else "no difference shown" with the
    smallest difference this n could detect at 80% power (absence of evidence is not evidence of no
    difference), or that the interval excludes a gain of 2 points."""
    if ra.n != rb.n:
        raise ValueError(f"{ra.name} ({ra.n}) and {rb.name} ({rb.n}) were not evaluated on the same inputs")
    c = Comparison.of(a, ra.correct, rb.name, rb.correct)
    dec = beats(c)
    if dec.verdict == HELD:
        return c.p, f"{a} is higher"
    if dec.verdict == NOT_HELD and c.lower:
        return c.p, f"{a} is lower"
    ci = f"95% CI {100 * c.low:+.1f} to {100 * c.high:+.1f} points"
    if c.detectable is None:
        return c.p, f"no difference shown ({ci}; n = {ra.n} is too small to detect any with 80% power)"
    return c.p, f"no difference shown ({ci}; n = {ra.n} detects {100 * c.detectable:.0f} points or more with 80% power)"


def seed_pairs(exp: Any, a: str, b: str) -> list[tuple[int | None, SystemResult, SystemResult]]:
    """(seed, row of a, row of b) for each seed a multi-seed student of the pair was trained on
    (``exp.seed_rows``); one (None, a, b) when neither is one."""
    rows = getattr(exp, "seed_rows", {})
    sa, sb = rows.get(a) or [], rows.get(b) or []
    count = max(len(sa), len(sb))
    if count <= 1:
        return [(None, exp.row(a), exp.row(b))]
    seeds = exp.student_seeds[:count]
    return [(seed, sa[min(k, len(sa) - 1)] if sa else exp.row(a), sb[min(k, len(sb) - 1)] if sb else exp.row(b))
            for k, seed in enumerate(seeds)]


def compare(exp: Any, a: str, b: str, pairs: Sequence[tuple[int | None, SystemResult, SystemResult]] | None = None,
            label: str = "") -> str:
    """"a X% vs b Y% (McNemar p = ...): higher / lower / no significant difference"; for a
    multi-seed student, the test on each seed and how many seeds find each direction."""
    pairs = pairs or seed_pairs(exp, a, b)
    if len(pairs) == 1:
        _, ra, rb = pairs[0]
        p, verdict = difference(ra, rb, a)
        return f"{label}{a} {pct(ra.accuracy)} vs {b} {pct(rb.accuracy)} (McNemar {p_text(p)}): {verdict}."
    tests = [(seed, ra, rb, *difference(ra, rb, a)) for seed, ra, rb in pairs]
    each = "; ".join(f"seed {seed}: {pct(ra.accuracy)} vs {pct(rb.accuracy)}, McNemar {p_text(p)}, {v}"
                     for seed, ra, rb, p, v in tests)
    higher = sum(v == f"{a} is higher" for *_, v in tests)
    lower = sum(v == f"{a} is lower" for *_, v in tests)
    mean_a = sum(t[1].accuracy for t in tests) / len(tests)
    mean_b = sum(t[2].accuracy for t in tests) / len(tests)
    return (f"{label}{a} {pct(mean_a)} vs {b} {pct(mean_b)} (means over {len(tests)} seeds): {a} is higher in "
            f"{higher} and lower in {lower} of {len(tests)} seeds ({each}).")


def group_row(exp: Any, name: str, group: str, test: Sequence[Example]) -> SystemResult:
    """A row restricted to the test inputs of one group (S2A: biased or unbiased)."""
    return _in_group(exp.row(name), group, test)


def compare_in_group(exp: Any, a: str, b: str, group: str, test: Sequence[Example]) -> str:
    """`compare` on one group's inputs (per seed for a multi-seed student)."""
    pairs = [(seed, _in_group(ra, group, test), _in_group(rb, group, test)) for seed, ra, rb in seed_pairs(exp, a, b)]
    return compare(exp, a, b, pairs, label=f"{group} inputs (n = {pairs[0][1].n}): ")


def _in_group(r: SystemResult, group: str, test: Sequence[Example]) -> SystemResult:
    idx = [i for i, e in enumerate(test) if e.meta.get("group") == group]
    correct = tuple(r.correct[i] for i in idx)
    lo, hi = wilson(sum(correct), len(correct))
    return SystemResult(f"{r.name} ({group})", len(correct), sum(correct) / max(1, len(correct)), lo, hi,
                        r.tokens, r.parse_failures, correct)


def per_seed(exp: Any, name: str) -> list[tuple[str, list]]:
    """[(label, test traces)]: one per seed for a multi-seed student ("<name> (seed s)"), else the
    row's own [(name, traces)]; none for a row without traces."""
    runs = (getattr(exp, "seed_traces", None) or {}).get(name) or []
    if len(runs) > 1:
        return [(f"{name} (seed {s})", ts) for s, ts in zip(exp.student_seeds, runs)]
    traces = exp.traces.get(name)
    return [(name, traces)] if traces else []


def answer_profile(exp: Any, name: str, test: Sequence[Example]) -> str | None:
    """If one answer dominates a system's outputs (`DOMINANT_SHARE` up to `CONSTANT_SHARE`; above,
    `guard_findings` says it), name it with what that constant answer would score (per seed for a
    multi-seed student)."""
    notes = []
    for label, traces in per_seed(exp, name):
        answers = [ts[0].answer for ts in traces]
        found = one_answer(answers, DOMINANT_SHARE)
        if found is None or found[0] is None or found[1] >= CONSTANT_SHARE * len(answers):
            continue
        top, count = found
        constant = constant_score(exp.task, top, test)
        if constant is not None:
            notes.append(f"{label} answers {top!r} to {count} of {len(answers)} test inputs; that answer alone would "
                         f"score {pct(constant)}, so compare its accuracy with this, not with 0.")
    return " ".join(notes) or None


def output_profile(exp: Any, name: str, share: float = 0.5) -> str | None:
    """If one final completion makes up at least ``share`` of a system's test outputs, quote it
    (per seed for a multi-seed student)."""
    notes = []
    for label, traces in per_seed(exp, name):
        finals = [ts[0].final.strip() for ts in traces]
        found = one_answer(finals, share)
        if found is None:
            continue
        text, count = found
        parsed = next(ts[0].answer for ts in traces if ts[0].final.strip() == text)
        shown = text if len(text) <= 120 else text[:117] + "..."
        notes.append(f"{label} gives the same completion to {count} of {len(finals)} test inputs: {shown!r} "
                     f"(parsed as {parsed!r}).")
    return " ".join(notes) or None


def lenient_accuracy(exp: Any, names: Sequence[str], test: Sequence[Example]) -> str | None:
    """Accuracy under the task's lenient parse (if it has one), for the rows where it differs."""
    lenient = getattr(exp.task, "lenient_extract", None)
    if lenient is None:
        return None
    parts, rescored = [], {}
    for name in names:
        traces = exp.traces.get(name)
        if not traces:
            continue
        again = rescore([ts[:1] for ts in traces], test, exp.task, reader=lambda c, e: lenient(c.output, e))
        correct = tuple(bool(exp.task.score(ts[0].answer, e.gold)) for ts, e in zip(again, test))
        rescored[name] = replace(exp.row(name), accuracy=sum(correct) / len(correct), correct=correct)
        if correct != exp.row(name).correct:
            parts.append(f"{name} {pct(rescored[name].accuracy)} (table: {pct(exp.row(name).accuracy)})")
    if not parts:
        return None
    text = ("The parse rule matters: read leniently (a self-contradicting answer counts as its explicit "
            "yes/no), " + ", ".join(parts) + ".")
    first, last = names[0], names[-1]
    if first in rescored and last in rescored:
        p, verdict = difference(rescored[last], rescored[first], last)
        text += f" Under that reading, {last} vs {first}: McNemar {p_text(p)}, {verdict}."
    return text


def power_note(n: int) -> list[str]:
    """What this test size can detect: the smallest difference the paired score test (McNemar's)
    finds with 80% power at alpha 0.05, computed exactly, for systems that disagree on 10%, 30% or
    50% of the inputs; at an n too small for any, it says so."""
    if not n:
        return []
    found = [(psi, d) for psi in (0.1, 0.3, 0.5) if (d := detectable(n, psi)) is not None and d <= psi]
    if not found:
        return [f"Power: with n = {n} paired test inputs, no difference between two systems that disagree on up to "
                "half the inputs is found by a McNemar test with 80% power (alpha 0.05): every comparison here is "
                "'not shown' unless it is overwhelming."]
    mdes = ", ".join(f"{100 * d:.0f} points if they disagree on {psi:.0%} of inputs" for psi, d in found)
    return [f"Power: with n = {n} paired test inputs, two systems' accuracies must differ by at least {mdes} for a "
            "McNemar test (the score test, power computed exactly) to find it with 80% power (alpha 0.05); smaller "
            "differences are 'not shown', not absent."]


def budget_text(sizes: Any) -> str:
    """A profile's fine-tuning budget in words: steps x tokens a step (the paper's unit) or epochs of
    a batch of rows, and the schedule."""
    s = sizes
    warmup = f", {s.warmup_share:.0%} warmup" if getattr(s, "warmup_share", 0) else ", no warmup"
    if getattr(s, "tokens_per_step", None):
        return f"{s.steps} steps x {s.tokens_per_step / 1000:g}k tokens{warmup}, linear decay"
    if s.steps:
        return f"{s.steps} steps of {s.lora_batch} rows{warmup}, linear decay"
    return f"{s.epochs} epoch{'s' * (s.epochs != 1)} of {s.lora_batch} rows, at least {s.min_steps} steps{warmup}, linear decay"


def training_notes(trained: dict[str, Any], sizes: Any, paper_budget: str | None = None) -> list[str]:
    """One note on the training budget and schedule, with each trained student's pairs, steps, rows
    and tokens a step, epochs and final loss; what still differs from the paper's fine-tuning."""
    parts = []
    for name, t in trained.items():
        if t is None or not t.losses and t.planned is None:
            continue
        loss = "no loss (simulated: nothing trained)" if t.planned is not None else f"final training loss {t.losses[-1]:.3f}"
        parts.append(f"{name}: {t.examples:,} pair{'s' * (t.examples != 1)}, {t.steps:,} optimizer steps of {t.rows:,} "
                     f"row{'s' * (t.rows != 1)} ({t.tokens_per_step:,.0f} tokens a step, {t.epochs:.1f} epochs), {loss}")
    if not parts:
        return []
    paper = f"; the paper's: {paper_budget}" if paper_budget else ""
    notes = [f"Training (the profile's budget: {budget_text(sizes)}{paper}): " + "; ".join(parts) + "."]
    settings = next(t.settings for t in trained.values() if t is not None)
    if settings:
        notes.append(f"Fine-tuning here is LoRA (rank {settings.get('r')}, LR {settings.get('learning_rate'):g}, dropout "
                     f"{settings.get('dropout'):g}, loss on the answer tokens only); the paper states dropout 0.1 and "
                     "LR 5.5e-6, which reads as full fine-tuning (not offered here: every student is a LoRA adapter).")
    return notes


def guard_findings(exp: Any, share: float = CONSTANT_SHARE) -> list[str]:
    """Sentences that stop a constant from passing for a result: a system giving one answer to
    ``share`` of the test inputs (with what that answer alone scores, where the task can say), and
    a filter whose kept targets are (nearly) all one answer."""
    out = []
    for r in exp.rows:
        for label, traces in per_seed(exp, r.name):
            answers = [ts[0].answer for ts in traces]
            found = constant_system(label, answers, share)
            if found is not None:
                said, top = found
                constant = constant_score(exp.task, top, exp.test) if len(exp.test) == len(answers) else None
                alone = "" if constant is None or top is None else f" (that answer alone scores {pct(constant)})"
                out.append(f"{said}{alone}: its accuracy is that answer's, and it cannot carry a verdict on the "
                           "paper's claims.")
    for name, f in exp.filters.items():
        targets = f.get("targets") or {}
        kept = sum(targets.values())
        if kept > 1 and None not in targets:
            top, count = max(targets.items(), key=lambda kv: kv[1])
            shown = ", ".join(f"{a!r} {c}" for a, c in targets.items())
            if count == kept:
                out.append(f"Every one of the {kept} targets the filter kept for {name} is {top!r}: that student can "
                           "learn only a constant.")
            elif count >= share * kept:
                out.append(f"The filter's targets for {name} are nearly one answer ({shown}).")
    return out
