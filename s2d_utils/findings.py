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

from .claims import Comparison
from .evaluate import SystemResult
from .records import CONSTANT_SHARE, DOMINANT_SHARE, constant_score, constant_system, one_answer
from .stats import detectable, discordant, p_text, paired_p, pct, wilson
from .tasks import Example
from .traces import rescore


def mcnemar(a: SystemResult, b: SystemResult) -> float:
    """The claims' paired test's two-sided p (McNemar's: the score test, exact below `stats.EXACT_BELOW`
    discordant pairs) of two result rows on the same inputs."""
    if a.n != b.n:
        raise ValueError(f"{a.name} ({a.n}) and {b.name} ({b.n}) were not evaluated on the same inputs")
    return paired_p(*discordant(a.correct, b.correct), a.n)


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


def _test(ra: SystemResult, rb: SystemResult, a: str) -> tuple[float, str, float | None]:
    """(McNemar p, what it shows, the smallest difference this n detects with 80% power) of two results
    on the same inputs: higher or lower where the paired test (`claims.Comparison`) shows it."""
    if ra.n != rb.n:
        raise ValueError(f"{ra.name} ({ra.n}) and {rb.name} ({rb.n}) were not evaluated on the same inputs")
    c = Comparison.of(a, ra.correct, rb.name, rb.correct)
    if c.higher:  # what the test shows, before any claim's margin (`claims.beats` adds those)
        return c.p, f"{a} is higher", c.detectable
    if c.lower:
        return c.p, f"{a} is lower", c.detectable
    return c.p, f"no difference shown (95% CI {100 * c.low:+.1f} to {100 * c.high:+.1f} points; {_power(ra.n, c.detectable)})", \
        c.detectable


def _power(n: int, detectable: float | None) -> str:
    if detectable is None:
        return f"n = {n} is too small to detect any with 80% power"
    return f"n = {n} detects {100 * detectable:.0f} points or more with 80% power"


def difference(ra: SystemResult, rb: SystemResult, a: str) -> tuple[float, str]:
    """(McNemar p, what it shows) for two results on the same inputs, by the verdicts' rule
    (`claims.beats`): "<a> is higher" or "lower" (p < 0.05), else "no difference shown" with the
    smallest difference this n could detect at 80% power (absence of evidence is not evidence of no
    difference), or that the interval excludes a gain of 2 points."""
    p, verdict, _ = _test(ra, rb, a)
    return p, verdict


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
    multi-seed student one line: the means over seeds, in how many seeds each direction is shown,
    the range of p, each seed's accuracies, and what this n can detect where nothing is shown."""
    pairs = pairs or seed_pairs(exp, a, b)
    if len(pairs) == 1:
        _, ra, rb = pairs[0]
        p, verdict = difference(ra, rb, a)
        return f"{label}{a} {pct(ra.accuracy)} vs {b} {pct(rb.accuracy)} (McNemar {p_text(p)}): {verdict}."
    tests = [(seed, ra, rb, *_test(ra, rb, a)) for seed, ra, rb in pairs]
    higher = sum(t[4] == f"{a} is higher" for t in tests)
    lower = sum(t[4] == f"{a} is lower" for t in tests)
    mean_a = sum(t[1].accuracy for t in tests) / len(tests)
    mean_b = sum(t[2].accuracy for t in tests) / len(tests)
    each = ", ".join(f"seed {seed}: {pct(ra.accuracy)} vs {pct(rb.accuracy)}" for seed, ra, rb, *_ in tests)
    unshown = [t[5] for t in tests if t[4].startswith("no difference shown")]
    power = ""
    if unshown:
        small = [d for d in unshown if d is not None]
        power = ("; where none is shown, " + _power(tests[0][1].n, max(small)) if small
                 else "; " + _power(tests[0][1].n, None))
    return (f"{label}{a} {pct(mean_a)} vs {b} {pct(mean_b)} (mean over {len(tests)} seeds): {a} is higher in {higher} "
            f"and lower in {lower} of {len(tests)} seeds, McNemar {p_range([t[3] for t in tests])} ({each}){power}.")


def p_range(ps: Sequence[float]) -> str:
    """The McNemar p of every seed in a few words: "p = 1 on every seed", "p 0.0039 to 0.059"."""
    low, high = p_text(min(ps)), p_text(max(ps))
    if low == high:
        return f"{low} on every seed"
    return f"p {low[2:].removeprefix('= ')} to {high[2:].removeprefix('= ')}"


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
    ``share`` of the test inputs (with what that answer alone scores, where the task can say; one
    line per system, with its seeds), and a filter whose kept targets are (nearly) all one answer."""
    out = []
    for r in exp.rows:
        runs = per_seed(exp, r.name)
        seeds = exp.student_seeds[:len(runs)] if len(runs) > 1 else [None]
        found = []
        for seed, (label, traces) in zip(seeds, runs):
            answers = [ts[0].answer for ts in traces]
            said = constant_system(label, answers, share)
            if said is not None:
                alone = constant_score(exp.task, said[1], exp.test) if len(exp.test) == len(answers) else None
                found.append((seed, said[0], said[1], one_answer(answers, share)[1], len(answers), alone))
        if found:
            out.append(constant_line(r.name, found, len(runs)))
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


_NO_VERDICT = ": its accuracy is that answer's, and it cannot carry a verdict on the paper's claims."


def constant_line(name: str, found: Sequence[tuple], runs: int) -> str:
    """One sentence for a system that gives one answer to nearly every test input: ``found`` holds
    (seed or None, the sentence `constant_system` says, the answer, its count, n, what it alone
    scores) for each seed where it does, of ``runs`` seeds."""
    def said(top):
        return "no parsed answer" if top is None else repr(top)

    def alone(items):
        scores = {said(f[2]): f[5] for f in items if f[2] is not None and f[5] is not None}
        if not scores:
            return ""
        if len(scores) == 1:
            return f" (that answer alone scores {pct(next(iter(scores.values())))})"
        return " (alone, " + ", ".join(f"{a} scores {pct(v)}" for a, v in scores.items()) + ")"

    if found[0][0] is None:  # one run: the sentence as `constant_system` says it
        return found[0][1] + alone(found) + _NO_VERDICT
    seeds = ", ".join(str(f[0]) for f in found)
    where = f"on every seed ({seeds})" if len(found) == runs else f"on seed{'s' * (len(found) > 1)} {seeds} of {runs}"
    n = found[0][4]
    if len({f[2] for f in found}) == 1:
        counts = sorted({f[3] for f in found})
        count = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
        return f"{name} gives one answer ({said(found[0][2])}) to {count} of {n} test inputs {where}{alone(found)}{_NO_VERDICT}"
    each = ", ".join(f"{said(f[2])} to {f[3]} (seed {f[0]})" for f in found)
    return f"{name} gives one answer to nearly every one of its {n} test inputs {where}: {each}{alone(found)}{_NO_VERDICT}"
