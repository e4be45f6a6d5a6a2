"""When to pay for System 2: route each input by the distilled student's confidence.

For a threshold t the router answers with the student where its confidence is >= t and runs
System 2 (its cached result on that input) elsewhere. #Tokens counts the student's tokens on
every input (it always answers first) plus System 2's where it was called. Everything here is
computed from per-input arrays the notebooks already recorded (`records`), the student's
confidence included (`backends.answer_confidence`, recorded as the student generated); nothing
is generated and no model is loaded.

`route_curve` gives one point per distinct confidence value (all of System 2 at one end, all of
the student at the other). Between two points the straight line is exact in expectation: it is
what breaking the ties of one confidence value at random gives. So a constant confidence gives
the straight line between the two fixed points, and a perfect one (1 where the student is right,
0 where not) gives the oracle curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from . import figures, registry, tables
from .claims import Comparison
from .paper import CONSTANT
from .records import CONSTANT_SHARE, constant_system
from .registry import Notebook
from .stats import mcnemar_p, wilson


@dataclass(frozen=True)
class RoutePoint:
    threshold: float  # the student answers where its confidence >= threshold (inf: never)
    student_share: float  # share of inputs the student answered
    accuracy: float
    tokens: float  # mean generated tokens per input: the student's always, System 2's where called
    correct: tuple[bool, ...]  # per input, the routed answer's correctness


def _check(n: int, **arrays: Sequence) -> None:
    for name, a in arrays.items():
        if len(a) != n:
            raise ValueError(f"{name}: {len(a)} values for {n} inputs")
    if n == 0:
        raise ValueError("no inputs to route")


def route_curve(confidence: Sequence[float], student_correct: Sequence[bool], system2_correct: Sequence[bool],
                student_tokens: Sequence[float], system2_tokens: Sequence[float]) -> list[RoutePoint]:
    """The router's points, from System 2 on every input (threshold inf) to the student on every
    input (threshold = the lowest confidence), one per distinct confidence value."""
    n = len(confidence)
    _check(n, student_correct=student_correct, system2_correct=system2_correct, student_tokens=student_tokens,
           system2_tokens=system2_tokens)
    levels = [float("inf")] + sorted(set(float(c) for c in confidence), reverse=True)
    points = []
    for t in levels:
        use = [c >= t for c in confidence]
        correct = tuple(bool(sc if u else s2) for u, sc, s2 in zip(use, student_correct, system2_correct))
        tokens = sum(st + (0 if u else s2t) for u, st, s2t in zip(use, student_tokens, system2_tokens)) / n
        points.append(RoutePoint(t, sum(use) / n, sum(correct) / n, tokens, correct))
    return points


@dataclass(frozen=True)
class Choice:
    point: RoutePoint | None  # the cheapest point within System 2's CI (None: no point is)
    system2_accuracy: float
    system2_ci: tuple[float, float]
    p_vs_system2: float | None  # exact McNemar, the routed answers against System 2's
    beats_fixed_points: bool  # fewer tokens than System 2 at an accuracy above the student's
    sentence: str


def choose(points: Sequence[RoutePoint], system2_correct: Sequence[bool], student_correct: Sequence[bool],
           system2_tokens: float) -> Choice:
    """The threshold that keeps the routed accuracy within System 2's 95% Wilson interval, and not
    significantly below System 2 (exact McNemar, same inputs), at the fewest tokens; whether routing
    beats the better fixed point (fewer tokens than System 2 alone, ``system2_tokens``, and more
    accurate than the student)."""
    n = len(system2_correct)
    s2_acc = sum(system2_correct) / n
    lo, hi = wilson(sum(system2_correct), n)
    student_acc = sum(student_correct) / n
    def keeps(point: RoutePoint) -> bool:  # within the CI, and not significantly below System 2 on the same inputs
        return point.accuracy >= lo and (point.accuracy >= s2_acc or mcnemar_p(point.correct, system2_correct) >= 0.05)

    within = [p for p in points if keeps(p)]
    if not within:
        return Choice(None, s2_acc, (lo, hi), None, False,
                      f"No threshold keeps the accuracy within System 2's 95% CI ({100 * lo:.1f}-{100 * hi:.1f}%) "
                      "without falling significantly below System 2.")
    best = min(within, key=lambda p: (p.tokens, -p.accuracy))
    p = mcnemar_p(best.correct, system2_correct)
    beats = best.tokens < system2_tokens and best.accuracy > student_acc and 0 < best.student_share < 1
    if best.student_share == 1:
        verdict = ("the student alone is within System 2's CI: routing adds nothing over the distilled model")
    elif best.student_share == 0:
        verdict = "only System 2 itself is within its CI: routing does not beat the better fixed point"
    elif beats:
        verdict = (f"routing answers {100 * best.student_share:.0f}% of inputs with the student at "
                   f"{best.tokens:.1f} tokens per input (its own plus System 2's where called) instead of System 2's "
                   f"{system2_tokens:.1f}")
    else:
        verdict = "routing does not beat the better fixed point"
    sentence = (f"Threshold {best.threshold:.3g}: accuracy {100 * best.accuracy:.1f}% vs System 2 "
                f"{100 * s2_acc:.1f}% (CI {100 * lo:.1f}-{100 * hi:.1f}%, exact McNemar p = {p:.2g}); {verdict}.")
    return Choice(best, s2_acc, (lo, hi), p, beats, sentence)


@dataclass(frozen=True)
class Calibration:
    bins: tuple[tuple[float, float, int, float | None, float | None], ...]  # (low, high, n, mean conf, accuracy)
    ece: float | None  # expected calibration error over the bins with enough inputs (None: none has)
    sparse: int  # bins with inputs but fewer than min_per_bin (left out of the ECE)
    sentence: str


def calibration(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10,
                min_per_bin: int = 5) -> Calibration:
    """A reliability table: equal-width confidence bins, each with its count, mean confidence and
    accuracy; the expected calibration error over the bins holding at least ``min_per_bin`` inputs
    (weighted by their counts). Bins with fewer are reported and left out, and said to be."""
    n = len(confidence)
    _check(n, correct=correct)
    bins, gap, counted, sparse = [], 0.0, 0, 0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i, c in enumerate(confidence) if lo <= c < hi or (b == n_bins - 1 and c == hi)]
        if not members:
            bins.append((lo, hi, 0, None, None))
            continue
        conf = sum(confidence[i] for i in members) / len(members)
        acc = sum(bool(correct[i]) for i in members) / len(members)
        bins.append((lo, hi, len(members), conf, acc))
        if len(members) >= min_per_bin:
            gap += len(members) * abs(conf - acc)
            counted += len(members)
        else:
            sparse += 1
    ece = gap / counted if counted else None
    if ece is None:
        sentence = f"Too few test inputs for calibration: no bin holds {min_per_bin} or more."
    else:
        left = f"; {sparse} bin(s) with fewer than {min_per_bin} inputs left out ({n - counted} inputs)" if sparse else ""
        sentence = f"Expected calibration error {100 * ece:.1f} points over {counted} inputs{left}."
    return Calibration(tuple(bins), ece, sparse, sentence)


# ----- the routing notebook (07): every method whose student was trained -----

@dataclass(frozen=True)
class MethodRouting:
    label: str
    student: str
    system2: str
    n: int
    points: tuple[RoutePoint, ...]
    fixed: dict  # role -> (tokens, accuracy) for System 1, System 2, the student
    choice: Choice | None
    calibration: Calibration | None
    problem: str | None  # why this method has no curve
    guard: str | None = None  # why its curve carries no finding (the summary's constant-answer rule)


def constant_guard(outcomes: dict, rule: str, student: str, system2: str) -> str | None:
    """The summary's guard against constants, for routing: the student or System 2 giving one answer to
    at least `records.CONSTANT_SHARE` of the inputs (`records.constant_system`), or System 2 not
    beating the best constant answer significantly (where the answers are a closed set) leaves no
    finding to draw: the routed accuracy would be a constant's. Else None."""
    rows = outcomes["rows"]
    for name in (student, system2):
        found = constant_system(name, ((rows.get(name) or {}).get("answers") or {}).get(rule) or [])
        if found:
            return found[0]
    if CONSTANT in rows:
        floor = Comparison.of(system2, rows[system2]["correct"][rule], CONSTANT, rows[CONSTANT]["correct"][rule])
        if not floor.higher:
            return f"{system2} does not beat the best constant answer significantly ({floor.text()})"
    return None


def analyse(metrics: dict[str, dict], blocks: Sequence[Notebook] = registry.NOTEBOOKS) -> list[MethodRouting]:
    """Route each method's test inputs between its distilled student and its System 2, from the
    metrics notebooks 01-05 recorded (per-input outcomes under the first parse rule, the
    student's confidences, each row's mean #Tokens). A method whose student was not trained, or
    whose metrics carry no confidences (written before routing existed), gets the reason instead."""
    out = []
    for b in blocks:
        m = metrics.get(b.notebook)
        if m is None:
            out.append(MethodRouting(b.label, b.distilled, b.system2, 0, (), {}, None, None,
                                     f"{b.notebook}: no metrics"))
            continue
        rows, outcomes = m["rows"], m.get("outcomes") or {}
        conf = (m.get("info") or {}).get("confidence", {}).get(b.distilled)
        trained = (m.get("training") or {}).get(b.distilled)
        problem = None
        if not outcomes:
            problem = f"{b.notebook}: no per-input outcomes; rerun it"
        elif conf is None:
            problem = f"{b.notebook}: no student confidences recorded (metrics from before routing); rerun it"
        elif not trained:
            problem = f"{b.distilled} was not trained (no kept pairs): there is no student to route with"
        # a multi-seed student routes as its first seed (whose confidences and outcomes are recorded)
        fixed = {role: ((rows[name].get("seed_tokens") or [rows[name]["tokens"]])[0],
                        (rows[name].get("seed_accuracy") or [rows[name]["accuracy"]])[0])
                 for role, name in
                 (("System 1", b.system1), ("System 2", b.system2), ("distilled System 1", b.distilled)) if name in rows}
        if problem:
            out.append(MethodRouting(b.label, b.distilled, b.system2, 0, (), fixed, None, None, problem))
            continue
        rule = outcomes["rules"][0]
        student = outcomes["rows"][b.distilled]["correct"][rule]
        system2 = outcomes["rows"][b.system2]["correct"][rule]
        n = len(student)
        st, s2t = rows[b.distilled]["tokens"], rows[b.system2]["tokens"]
        points = route_curve(conf, student, system2, [st] * n, [s2t] * n)
        choice = choose(points, system2, student, s2t)
        guard = constant_guard(outcomes, rule, b.distilled, b.system2)
        if guard:
            choice = replace(choice, point=None, p_vs_system2=None, beats_fixed_points=False,
                             sentence=f"{guard}: the routed accuracy is a constant answer's, so no threshold is chosen "
                                      "and routing carries no finding (the summary's constant-answer rule).")
        out.append(MethodRouting(b.label, b.distilled, b.system2, n, tuple(points), fixed, choice,
                                 calibration(conf, student), None, guard))
    return out


def routing_markdown(results: Sequence[MethodRouting], profile: str, model: str) -> str:
    lines = [f"# Routing by the student's confidence: {model} (profile {profile})", "",
             "| method | n | System 2 (acc, #Tokens) | student (acc, #Tokens) | cheapest threshold within System 2's CI "
             "| routed acc | routed #Tokens | student share | McNemar vs System 2 | calibration (ECE) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        if r.problem:
            lines.append(f"| {r.label} | - | - | - | not computed | - | - | - | - | - |")
            notes.append(f"{r.label}: {r.problem}.")
            continue
        s2_tok, s2_acc = r.fixed["System 2"]
        st_tok, st_acc = r.fixed["distilled System 1"]
        c = r.choice
        if r.guard:
            cells = ["none: a constant answer", "-", "-", "-", "-"]
        elif c.point is None:
            cells = ["none", "-", "-", "-", "-"]
        else:
            p = c.point
            cells = [f"{p.threshold:.3g}", f"{100 * p.accuracy:.1f}%", f"{p.tokens:.1f}", f"{100 * p.student_share:.0f}%",
                     f"p = {c.p_vs_system2:.2g}"]
        ece = "too few inputs" if r.calibration.ece is None else f"{100 * r.calibration.ece:.1f} points"
        lines.append(f"| {r.label} | {r.n} | {100 * s2_acc:.1f}%, {s2_tok:.1f} | {100 * st_acc:.1f}%, {st_tok:.1f} | "
                     + " | ".join(cells) + f" | {ece} |")
        notes.append(f"{r.label}: {c.sentence} {r.calibration.sentence}")
    lines += ["", "- Confidence: the probability the distilled student gives its own greedy answer (the product of its "
              "next-token probabilities, recorded as it generated); a student trained on several seeds routes as its "
              "first seed's. "
              "The router answers with the student where confidence >= the threshold and takes System 2's cached "
              "answer elsewhere; #Tokens = the student's tokens on every input plus System 2's where it was called "
              "(each row's mean #Tokens). Correctness under each notebook's first parse rule.",
              "- 'Within System 2's CI': routed accuracy at or above the lower end of System 2's 95% Wilson "
              "interval. Calibration: 10 equal-width bins, ECE over bins with at least 5 inputs.",
              "- The summary's guard against constants applies: a student or System 2 that gives one answer to at "
              f"least {CONSTANT_SHARE:.0%} of the inputs, or a System 2 that does not beat the best constant answer, leaves no threshold "
              "to choose.",
              "", "## What these numbers say", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot_routing(results: Sequence[MethodRouting], profile: str, model: str) -> Path:
    """The routing curves and reliability diagrams (`figures.plot_routing`), figures/fig_routing[.profile].png."""
    return figures.plot_routing(results, profile, model, registry.ROUTING_FIGURE)


def save_routing(results: Sequence[MethodRouting], profile: str, model: str) -> Path:
    """Write the routing table and its findings, figures/routing[.profile].md."""
    path = tables.output_path(registry.ROUTING_FILE, profile, "md")
    path.write_text(routing_markdown(results, profile, model))
    return path
