"""The steps every method notebook shares, so that a notebook holds the paper's method, not bookkeeping.

    exp = pipeline.start("01_rar_last_letter", "rar", task, MODEL=..., PROFILE=..., ...)   # checks, loads
    train, unlabeled, test = pipeline.data(exp, DATA_SOURCE)                            # labels hidden
    pipeline.evaluate_systems(exp, test, {"System 1": program, ...})                     # greedy, #Tokens
    kept = {...filters...}; pipeline.filter_report(exp, kept, train, traces)              # diagnostics
    pipeline.train_students(exp, kept, target)                                           # LoRA, cached
    pipeline.evaluate_students(exp, test, program)                                       # distilled System 1
    pipeline.finish(exp, ...)                                       # table, figure, McNemar, findings, metrics

An `Experiment` carries what the steps share: the model, sizes, seed, the manifest (timed
stages), and every result row and trace, in the order computed. Parameters are checked before
anything loads, and each error names the notebook parameter at fault.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from . import backends, distill, filters, paths, profiles, report
from .evaluate import SystemResult, _discordant, detectable_difference, evaluate, mcnemar, wilson
from .generation import backend_for, fits, generate
from .models import LoadedModel, conversion_record, free_memory, load_model, model_name_problem
from .system2 import Trace, cut_share, parse, rescore
from .tasks import Example, is_hub_id, parse_rules

DEVICES = ("auto", "cpu", "cuda")


def check_parameters(*, MODEL: str | None, PROFILE: str, SEED: int, DEVICE: str = "auto", DATA_SOURCE: Any = None,
                     FILTER_RULE: str = "majority", **others: Any) -> None:
    """Fail fast, naming the notebook parameter at fault, before any model or data loads."""
    if PROFILE not in profiles.PROFILES:
        raise ValueError(f"PROFILE={PROFILE!r}: expected one of {list(profiles.PROFILES)}")
    if MODEL is not None and (problem := model_name_problem(MODEL)):
        raise ValueError(f"MODEL={MODEL!r}: {problem}")
    if isinstance(SEED, bool) or not isinstance(SEED, int):
        raise ValueError(f"SEED={SEED!r}: expected an integer")
    if not (DEVICE in DEVICES or str(DEVICE).startswith("cuda:")):
        raise ValueError(f"DEVICE={DEVICE!r}: expected one of {list(DEVICES)} or cuda:N")
    if FILTER_RULE not in filters.RULES:
        raise ValueError(f"FILTER_RULE={FILTER_RULE!r}: expected one of {list(filters.RULES)}")
    if others.get("BACKEND") is not None and others["BACKEND"] not in backends.KINDS:
        raise ValueError(f"BACKEND={others['BACKEND']!r}: expected one of {list(backends.KINDS)} (or None: S2D_BACKEND)")
    sources = {"DATA_SOURCE": DATA_SOURCE, **{k: v for k, v in others.items() if k.endswith("_SOURCE")}}
    for name, value in sources.items():
        if value is not None and (not isinstance(value, (str, Path)) or (not Path(value).expanduser().exists()
                                                                          and not is_hub_id(str(value)))):
            raise ValueError(f"{name}={value!r}: expected None (the default data), an existing file or folder, or a "
                             "hub dataset id (owner/name)")


@dataclass
class Experiment:
    """What a notebook's steps share."""

    notebook: str
    method: str
    task: ModuleType
    profile: str
    seed: int
    sizes: profiles.Sizes
    lm: LoadedModel
    manifest: report.Manifest
    filter_rule: str = "majority"
    rows: list[SystemResult] = field(default_factory=list)
    traces: dict[str, list[list[Trace]]] = field(default_factory=dict)
    filters: dict[str, dict] = field(default_factory=dict)
    trained: dict[str, distill.TrainResult | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # method-specific numbers for findings and metrics
    test: list[Example] = field(default_factory=list)  # the labeled test set (set by `data`)

    @property
    def greedy(self) -> dict[str, Any]:
        """Generation settings for evaluation: greedy, one answer per input."""
        return dict(batch_size=self.sizes.batch_size)

    @property
    def sampling(self) -> dict[str, Any]:
        """Generation settings for distillation data: N samples per unlabeled input."""
        s = self.sizes
        return dict(n=s.samples, temperature=s.temperature, top_p=s.top_p, seed=self.seed, batch_size=s.batch_size)

    def row(self, name: str) -> SystemResult:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no result row {name!r}; rows: {[r.name for r in self.rows]}")


def start(notebook: str, method: str, task: ModuleType, *, MODEL: str | None, PROFILE: str, SEED: int,
          DEVICE: str = "auto", DATA_SOURCE: Any = None, FILTER_RULE: str = "majority", **others: Any) -> Experiment:
    """Check the notebook's parameters, pick the sizes and model of the profile, load the model.

    ``BACKEND`` / ``BASE_URL`` / ``SERVED_MODEL`` (optional; default: the ``S2D_BACKEND``,
    ``S2D_BASE_URL``, ``S2D_SERVED_MODEL`` environment) send generation to an OpenAI-compatible
    server: then only the tokenizer loads here (the weights wait until a student is fine-tuned),
    and the server is checked now, so a server that is down or serves another model fails in this
    cell with its URL and the models it lists.
    """
    params = dict(MODEL=MODEL, PROFILE=PROFILE, SEED=SEED, DEVICE=DEVICE, DATA_SOURCE=DATA_SOURCE,
                  FILTER_RULE=FILTER_RULE, **others)
    check_parameters(**params)
    variants = getattr(task, "VARIANTS", None)
    if "VARIANT" in others and variants is not None and others["VARIANT"] not in variants:
        raise ValueError(f"VARIANT={others['VARIANT']!r}: expected one of {list(variants)}")
    settings = backends.configure(others.get("BACKEND"), others.get("BASE_URL"), others.get("SERVED_MODEL"))
    if others.get("TRAIN_PROCESSES") is not None:  # > 1: students train under `accelerate launch`
        os.environ["S2D_TRAIN_PROCESSES"] = str(others["TRAIN_PROCESSES"])
    distill.train_processes()  # a bad setting fails here, not after System 2 has run
    sizes = profiles.sizes(method, task.NAME, PROFILE)
    model = profiles.model_for(PROFILE, MODEL)
    dtype = profiles.dtype_for(PROFILE)
    manifest = report.Manifest(notebook, {**params, "model": model, "sizes": sizes.as_dict()})
    with manifest.stage("load model"):
        lm = load_model(model, device=DEVICE, dtype=dtype, weights=settings.kind == "local")
    manifest.parameters["dtype"] = lm.dtype
    with manifest.stage("connect backend"):
        manifest.backend = backend_for(lm).identity(lm)
    manifest.model_fingerprint = lm.fingerprint
    record = conversion_record(Path(str(lm.path)))  # None for hub and other local models
    manifest.parameters["model_source_sha256"] = record.get("source_sha256") if record else None
    return Experiment(notebook, method, task, PROFILE, SEED, sizes, lm, manifest, FILTER_RULE)


def data(exp: Experiment, source: Any = None, **task_kw: Any) -> tuple[list[Example], list[Example], list[Example]]:
    """(labeled training inputs, the same without labels, test set). System 2 only ever sees the
    unlabeled copy (the task's ``unlabel`` drops the gold and any label-bearing details); the
    labels of the training inputs serve the filter diagnostics alone. A task with
    ``TRAIN_FROM_SOURCE`` takes its training inputs from the given source too."""
    s = exp.sizes
    train_source = source if getattr(exp.task, "TRAIN_FROM_SOURCE", False) else None
    train = exp.task.load("train", n=s.n_train, seed=exp.seed, source=train_source, **task_kw)
    test = exp.task.load("test", n=s.n_test, seed=exp.seed, source=source, **task_kw)
    exp.manifest.data = {"train": report.data_hash(train), "test": report.data_hash(test)}
    exp.test = list(test)
    unlabel = getattr(exp.task, "unlabel", lambda e: replace(e, gold=None))
    return train, [unlabel(e) for e in train], test


Score = Callable[[str, Sequence[Example], Any], "tuple[SystemResult, list[list[Trace]]]"]


def _score(exp: Experiment, name: str, test: Sequence[Example], out: Any, score: Score | None) -> SystemResult:
    if score is None:
        exp.traces[name] = out
        return evaluate(name, test, out, exp.task)
    result, traces = score(name, test, out)
    exp.traces[name] = traces
    return result


def evaluate_systems(exp: Experiment, test: Sequence[Example], programs: dict[str, Callable[[], Any]],
                     stage: str = "evaluate System 1 and System 2", score: Score | None = None) -> list[SystemResult]:
    """Run each program (a no-argument callable returning traces on ``test``) and score it.

    ``score(name, test, output)`` replaces the default scoring (`evaluate`) where a program's
    output is more than one trace list (e.g. a judge run in both orders); it returns the result
    row and the traces to keep."""
    out = []
    with exp.manifest.stage(stage):
        for name, run in programs.items():
            out.append(_score(exp, name, test, run(), score))
    exp.rows.extend(out)
    return out


def filter_report(exp: Experiment, kept: dict[str, filters.FilterResult], labeled: Sequence[Example],
                  sources: dict[str, list[list[Trace]]]) -> dict[str, dict]:
    """Diagnostics of each filter against the held-out gold of the training inputs (report only)."""
    exp.filters = {name: filters.diagnostics(res, labeled, sources[name], exp.task.score) for name, res in kept.items()}
    return exp.filters


def usc(exp: Experiment, examples: Sequence[Example], traces: list[list[Trace]],
        max_new_tokens: int = 24, require_answer: bool = True) -> filters.FilterResult:
    """Universal self-consistency with this model as the selector (greedy), and the paper's rule:
    20 responses, 10 if 20 do not fit the context window, else a random one. Records how often
    each rule chose in ``exp.info["usc"]``."""
    lm = exp.lm

    def select(prompts: list[str]) -> list[str]:
        outs = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=exp.sizes.batch_size, desc="USC select")
        return [cs[0].text for cs in outs]

    result = filters.universal_self_consistency(examples, traces, select, lambda p: fits(lm, p, max_new_tokens),
                                                sizes=(20, 10), seed=exp.seed, require_answer=require_answer)
    rules = Counter(d.detail["rule"] for d in result.decisions)
    exp.info["usc"] = {"rules": dict(rules), "fallbacks": sum(v for k, v in rules.items() if k != "usc"),
                       "shown": dict(Counter(d.detail.get("shown") for d in result.decisions if "shown" in d.detail))}
    return result


def train_students(exp: Experiment, kept: dict[str, filters.FilterResult],
                   target: Callable[[filters.Kept], str] = distill.answer_target,
                   prompt: Callable[[Example], Any] | None = None) -> dict[str, distill.TrainResult | None]:
    """LoRA-fine-tune one student per filter output (cached by content). A filter that kept nothing
    trains nothing: that student is the base model, and the table notes say so. ``prompt`` builds
    the student's prompt from an input (default: the input text, the System 1 prompt)."""
    s = exp.sizes
    lora = distill.LoraSettings(epochs=s.epochs, batch_size=s.lora_batch, max_steps=s.max_steps, min_steps=s.min_steps,
                                steps=s.steps, seed=exp.seed)
    with exp.manifest.stage("fine-tune"):
        for name, res in kept.items():
            pairs = distill.sft_pairs(res.kept, target, prompt)
            exp.trained[name] = distill.finetune(exp.lm, pairs, lora, name=name) if pairs else None
    return exp.trained


def training_summary(exp: Experiment) -> dict[str, dict]:
    return {name: {"pairs": t.examples if t else 0, "steps": t.steps if t else 0,
                   "final loss": t.losses[-1] if t else None,
                   "tokens/s": round(t.tokens_per_second, 1) if t and not t.reused else None,
                   "reused": t.reused if t else None} for name, t in exp.trained.items()}


def evaluate_students(exp: Experiment, test: Sequence[Example], program: Callable[[LoadedModel], Any],
                      names: Sequence[str] | None = None, score: Score | None = None) -> list[SystemResult]:
    """Evaluate each distilled System 1 (greedy) with ``program(student)``; one student in memory at
    a time. ``score`` as in `evaluate_systems`."""
    out = []
    served = backends.Settings.from_env().kind != "local"  # students go to the server as adapters, if it can
    mode = distill.student_mode(exp.lm)
    exp.manifest.parameters["student_mode"] = "served" if served else mode
    with exp.manifest.stage("evaluate distilled"):
        for name in names or list(exp.trained):
            result = exp.trained[name]
            if result is None:
                out.append(_score(exp, name, test, program(exp.lm), score))
                _confidence(exp, name, exp.lm, served)
            elif mode == "attached" and not served:  # on the loaded base, removed afterwards
                with distill.attached(exp.lm, result) as student:
                    out.append(_score(exp, name, test, program(student), score))
                    _confidence(exp, name, student, served)
            else:
                student = distill.load_distilled(exp.lm, result, weights=not served)
                out.append(_score(exp, name, test, program(student), score))
                _confidence(exp, name, student, served)
                del student
                free_memory()
    exp.rows.extend(out)
    return out


def _confidence(exp: Experiment, name: str, student: LoadedModel, served: bool) -> None:
    """The student's probability of its own answer on each test input (`routing.answer_confidence`),
    for the routing notebook; not computed for a student a server generated for (no weights here)."""
    from . import routing

    if served and not student.loaded:
        return
    exp.info.setdefault("confidence", {})[name] = [round(c, 6) for c in routing.answer_confidence(student, exp.traces[name])]


def show_trace(trace: Trace, example: Example) -> None:
    """Print one trace call by call: what the distilled model will learn to skip."""
    for call in trace.calls:
        print(f"--- {call.name} ({call.n_tokens} tokens, {call.finish_reason})\n{call.output}\n")
    print("parsed answer:", trace.answer, "| gold:", example.gold)


def mcnemar_tests(exp: Experiment, pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Exact McNemar p-values for pairs of rows evaluated on the same inputs."""
    names = {r.name for r in exp.rows}
    return {f"{a} vs {b}": mcnemar(exp.row(a), exp.row(b)) for a, b in pairs if a in names and b in names}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def difference(ra: SystemResult, rb: SystemResult, a: str) -> tuple[float, str]:
    """(exact McNemar p, what it shows) for two results on the same inputs: "<a> is higher" or
    "lower" (p < 0.05), else "not shown" with the smallest difference this n could detect at 80%
    power (absence of evidence is not evidence of no difference)."""
    p = mcnemar(ra, rb)
    if p >= 0.05:
        only_a, only_b = _discordant(ra.correct, rb.correct)
        mde = detectable_difference(ra.n, (only_a + only_b) / ra.n)
        return p, (f"no difference shown (n = {ra.n} detects {100 * mde:.0f} points or more with 80% power)")
    return p, f"{a} is {'higher' if ra.accuracy > rb.accuracy else 'lower'}"


def compare(exp: Experiment, a: str, b: str) -> str:
    """"a X% vs b Y% (McNemar p = ...): higher / lower / no significant difference"."""
    ra, rb = exp.row(a), exp.row(b)
    p, verdict = difference(ra, rb, a)
    return f"{a} {_pct(ra.accuracy)} vs {b} {_pct(rb.accuracy)} (exact McNemar {_p(p)}): {verdict}."


DOMINANT_SHARE = 0.8  # one answer to this share of inputs: its constant score is named (`answer_profile`)
CONSTANT_SHARE = 0.9  # to this share: the system cannot carry a verdict (`guard_findings`, `summary`)


def _constant_score(exp: Experiment, answer: Any, test: Sequence[Example]) -> float | None:
    """What ``answer`` given to every test input would score (None where the task cannot say)."""
    if answer is None or not test:
        return 0.0 if test else None
    try:
        return sum(exp.task.score(answer, e.gold) for e in test) / len(test)
    except (TypeError, ValueError, AttributeError, KeyError):
        return None


def answer_profile(exp: Experiment, name: str, test: Sequence[Example]) -> str | None:
    """If one answer dominates a system's outputs (`DOMINANT_SHARE` up to `CONSTANT_SHARE`; above,
    `guard_findings` says it), name it with what that constant answer would score."""
    answers = [ts[0].answer for ts in exp.traces.get(name, [])]
    if not answers:
        return None
    top, count = Counter(answers).most_common(1)[0]
    if top is None or not DOMINANT_SHARE * len(answers) <= count < CONSTANT_SHARE * len(answers):
        return None
    constant = _constant_score(exp, top, test)
    if constant is None:
        return None
    return (f"{name} answers {top!r} to {count} of {len(answers)} test inputs; that answer alone would score "
            f"{_pct(constant)}, so compare its accuracy with this, not with 0.")


def output_profile(exp: Experiment, name: str, share: float = 0.5) -> str | None:
    """If one final completion makes up at least ``share`` of a system's test outputs, quote it."""
    finals = [ts[0].final.strip() for ts in exp.traces.get(name, [])]
    if not finals:
        return None
    text, count = Counter(finals).most_common(1)[0]
    if count < share * len(finals):
        return None
    parsed = next(ts[0].answer for ts in exp.traces[name] if ts[0].final.strip() == text)
    shown = text if len(text) <= 120 else text[:117] + "..."
    return (f"{name} gives the same completion to {count} of {len(finals)} test inputs: {shown!r} "
            f"(parsed as {parsed!r}).")


def lenient_accuracy(exp: Experiment, names: Sequence[str], test: Sequence[Example]) -> str | None:
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
            parts.append(f"{name} {_pct(rescored[name].accuracy)} (table: {_pct(exp.row(name).accuracy)})")
    if not parts:
        return None
    text = ("The parse rule matters: read leniently (a self-contradicting answer counts as its explicit "
            "yes/no), " + ", ".join(parts) + ".")
    first, last = names[0], names[-1]
    if first in rescored and last in rescored:
        p, verdict = difference(rescored[last], rescored[first], last)
        text += f" Under that reading, {last} vs {first}: exact McNemar {_p(p)}, {verdict}."
    return text


CONSTANT = report.CONSTANT


def constant_row(exp: Experiment, test: Sequence[Example]) -> SystemResult | None:
    """Where the answer space is closed (``task.ANSWERS``: yes/no, a judge's A/B/tie), the best
    one-answer-for-everything system, scored on the test labels: the floor any claim must clear."""
    answers = getattr(exp.task, "ANSWERS", None)
    if not answers:
        return None
    scored = {a: tuple(bool(exp.task.score(a, e.gold)) for e in test) for a in answers}
    best = max(answers, key=lambda a: sum(scored[a]))
    correct = scored[best]
    lo, hi = wilson(sum(correct), len(correct))
    extra = {"answer": best}
    groups = [str(e.meta.get("group")) for e in test]
    for g in sorted(set(groups)) if any("group" in e.meta for e in test) else ():
        hits = [c for c, x in zip(correct, groups) if x == g]
        extra[f"accuracy[{g}]"], extra[f"n[{g}]"] = sum(hits) / len(hits), len(hits)
    return SystemResult(CONSTANT, len(test), sum(correct) / len(correct), lo, hi, 0.0, 0.0, correct, 1, extra)


def outcomes(exp: Experiment, test: Sequence[Example]) -> dict[str, Any]:
    """Per test input and row: the answer and whether it is right under each of the task's parse
    rules (the first is the table's), re-read from the cached traces (`system2.rescore`), nothing
    regenerated; plus each input's group and each constant answer's outcomes. The summary's
    verdicts are computed from these."""
    rules = parse_rules(exp.task)
    table_rule = next(iter(rules))
    rows = {}
    for r in exp.rows:
        traces = exp.traces.get(r.name)
        entry = {"correct": {table_rule: [bool(c) for c in r.correct]}, "answers": {}}
        if traces is not None:
            firsts = [ts[:1] for ts in traces]
            entry["answers"][table_rule] = [ts[0].answer for ts in firsts]
            for rule, kw in list(rules.items())[1:]:
                again = rescore(firsts, test, exp.task, lambda c, e, kw=kw: parse(exp.task, c.output, c.finish_reason,
                                                                                   e, **kw))
                entry["answers"][rule] = [ts[0].answer for ts in again]
                entry["correct"][rule] = [bool(exp.task.score(ts[0].answer, e.gold)) for ts, e in zip(again, test)]
        elif r.name == CONSTANT:
            entry["answers"][table_rule] = [r.extra["answer"]] * r.n
        rows[r.name] = entry
    return {"rules": list(rules), "rows": rows,
            "groups": [e.meta.get("group") for e in test]}


def power_note(exp: Experiment) -> list[str]:
    """What this test size can detect: the smallest difference an exact McNemar test finds with 80%
    power at alpha 0.05, for systems that disagree on 10%, 30% or 50% of the inputs."""
    n = len(exp.test)
    if not n:
        return []
    mdes = ", ".join(f"{100 * d:.0f} points if they disagree on {psi:.0%} of inputs"
                     for psi in (0.1, 0.3, 0.5) if (d := detectable_difference(n, psi)) <= psi)
    return [f"Power: with n = {n} paired test inputs, two systems' accuracies must differ by at least {mdes} for a "
            "McNemar test to find it with 80% power (alpha 0.05); smaller differences are 'not shown', not absent."]


def training_notes(exp: Experiment) -> list[str]:
    """One note per trained student: kept pairs, optimizer steps against the profile's budget, final loss."""
    s = exp.sizes
    budget = (f"the profile's budget: {s.steps} steps" if s.steps else
              f"the profile's budget: {s.epochs} epochs of batch {s.lora_batch}, at least {s.min_steps} steps")
    parts = [f"{name}: {t.examples} pair{'s' * (t.examples != 1)}, {t.steps} optimizer steps, final training loss "
             f"{t.losses[-1]:.3f}"
             for name, t in exp.trained.items() if t is not None and t.losses]
    return [f"Training ({budget}): " + "; ".join(parts) + "."] if parts else []


def guard_findings(exp: Experiment, share: float = CONSTANT_SHARE) -> list[str]:
    """Sentences that stop a constant from passing for a result: a system giving one answer to
    ``share`` of the test inputs (with what that answer alone scores, where the task can say), and
    a filter whose kept targets are (nearly) all one answer."""
    out = []
    for r in exp.rows:
        traces = exp.traces.get(r.name)
        if not traces:
            continue
        answers = [ts[0].answer for ts in traces]
        top, count = Counter(answers).most_common(1)[0]
        if count >= share * len(answers):
            said = "no parsed answer" if top is None else repr(top)
            constant = _constant_score(exp, top, exp.test) if len(exp.test) == len(answers) else None
            alone = "" if constant is None or top is None else f" (that answer alone scores {_pct(constant)})"
            out.append(f"{r.name} gives one answer ({said}) to {count} of {len(answers)} test inputs{alone}: its "
                       "accuracy is that answer's, and it cannot carry a verdict on the paper's claims.")
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


def save_test_traces(exp: Experiment) -> Path:
    """Every row's first test sample, call by call, one JSON line per row and input
    (``results/traces/<notebook>.<profile>.jsonl``): what a reader checks a parse rule against."""
    import json

    path = paths.ensure(paths.TRACES) / f"{exp.notebook}.{exp.profile}.jsonl"
    lines = []
    for name, traces in exp.traces.items():
        for e, ts in zip(exp.test, traces):
            t = ts[0]
            lines.append(json.dumps({"row": name, "id": e.id, "group": e.meta.get("group"), "input": e.input,
                                     "gold": e.gold, "answer": t.answer,
                                     "calls": [{"name": c.name, "output": c.output, "tokens": c.n_tokens,
                                                "finish": c.finish_reason} for c in t.calls]}, default=str))
    tmp = path.with_suffix(".partial")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def finish(exp: Experiment, *, table: str, figure: str, paper: report.PaperTable, title: str,
           mcnemar_pairs: Sequence[tuple[str, str]],
           findings: Sequence[str] = (), notes: Sequence[str] = (), figure_title: str | None = None,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the table (md + csv, paper beside ours), the figure and the metrics; return the metrics."""
    test = exp.test or None
    if test is not None and (const := constant_row(exp, test)) is not None and CONSTANT not in {r.name for r in exp.rows}:
        exp.rows.append(const)
    exp.rows = [replace(r, extra={**r.extra, "cut": cut_share(exp.traces[r.name])}) if r.name in exp.traces else r
                for r in exp.rows]
    tests = mcnemar_tests(exp, mcnemar_pairs)
    lm = exp.lm
    where = f"{os.cpu_count()} CPU cores" if lm.device == "cpu" else lm.device
    if exp.manifest.backend.get("kind") == "openai":  # the base model's samples came from a server
        from .generation import ADAPTER_FALLBACKS

        local = [t for t in exp.trained.values() if t is not None and str(t.adapter_dir) in ADAPTER_FALLBACKS]
        students = (f"students on {where} (the server could not load their LoRA adapters)" if local
                    else "students as LoRA adapters on the same server")
        where = f"a {exp.manifest.backend['server']} server ({exp.manifest.backend['served_model']}), {students}"
    dtype = exp.manifest.backend.get("dtype") or lm.dtype  # a server's, where one generated
    base_notes = [f"ours: {lm.name} ({dtype} weights) on {where}, profile {exp.profile}, seed {exp.seed}; "
                  f"paper: {report.PAPER_MODEL}.",
                  "Accuracy 95% CI: Wilson interval. #Tokens: mean generated tokens per input over all calls. "
                  "Parse fail: share of answers that do not parse (counted as wrong). Cut: share of calls the "
                  "token cap stopped (a cut completion counts only if it states its answer in the strict form)."]
    if CONSTANT in {r.name for r in exp.rows}:
        base_notes.append(f"{CONSTANT}: the one answer ({exp.row(CONSTANT).extra['answer']!r}) that, given to every "
                          "test input, scores best; any claim must clear it as well as System 1.")
    base_notes += [f"{name}: no training input had a usable target, so no fine-tuning step ran; the row is the base model."
                   for name, t in exp.trained.items() if t is None]
    base_notes += training_notes(exp) + power_note(exp)
    findings = [*findings, *guard_findings(exp)]
    df = report.results_table(exp.rows, paper)
    md, _ = report.save_table(df, table, exp.profile, title, [*base_notes, *notes], findings)
    fig = report.plot_accuracy_vs_tokens(exp.rows, paper, figure_title or f"{title}: accuracy vs #Tokens",
                                         figure, exp.profile, lm.name)
    metrics = {
        "model": lm.name,
        "rows": {r.name: r.as_dict() for r in exp.rows},
        "paper": paper.as_dict(),
        "filters": exp.filters,
        "training": {k: ({"pairs": t.examples, "steps": t.steps, "tokens": t.tokens, "seconds": round(t.seconds, 1),
                          "final_loss": t.losses[-1] if t.losses else None, "reused": t.reused} if t else None)
                     for k, t in exp.trained.items()},
        "outcomes": outcomes(exp, test) if test is not None else None,
        "mcnemar": tests,
        "info": exp.info,
        "findings": list(findings),
        "outputs": {"table": md.name, "figure": fig.name},
        **(extra or {}),
    }
    path = report.save_metrics(exp.notebook, exp.profile, metrics, exp.manifest)
    save_test_traces(exp)
    return {"metrics": metrics, "table": df, "table_path": md, "figure_path": fig, "metrics_path": path}
