"""The distilled students: each filter output's student trained on every seed of the profile,
evaluated seed by seed, and the mean over seeds as its table row (`evaluate.over_seeds`).

`pipeline` re-exports `train_students`, `evaluate_students` and `training_summary`: the notebooks
call them from there. Each seed (SEED, SEED+1, ...: `Sizes.seeds`) draws its own teacher samples
on the unlabeled inputs and the filter's choices (`pipeline.draw_teacher`), then its own LoRA
initialization, data order and dropout: the spread over seeds is the whole pipeline's after the
test set (a greedy teacher, BSM's, draws the same on every seed). The first seed's student is the
one the routing notebook and the trace dumps use; the paired tests and the verdicts use every seed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

from . import backends, distill, filters, profiles
from .evaluate import SystemResult, evaluate, over_seeds
from .models import LoadedModel, free_memory
from .tasks import Example
from .traces import Trace

Experiment = Any  # `pipeline.Experiment` (not imported: pipeline imports this module)


Score = Callable[[str, Sequence[Example], Any], "tuple[SystemResult, list[list[Trace]]]"]


def score_row(exp: Experiment, name: str, test: Sequence[Example], out: Any, score: Score | None) -> SystemResult:
    if score is None:
        exp.traces[name] = out
        return evaluate(name, test, out, exp.task)
    result, traces = score(name, test, out)
    exp.traces[name] = traces
    if hasattr(score, "answer_traces"):
        exp.answer_traces[name] = score.answer_traces(out)
    return result


def train_students(exp: Experiment, kept: dict[str, filters.FilterResult] | dict[int, Any],
                   target: Callable[[filters.Kept], str] = distill.answer_target,
                   prompt: Callable[[Example], Any] | None = None) -> dict[str, distill.TrainResult | None]:
    """LoRA-fine-tune one student per filter output and seed (cached by content). ``kept`` is
    either every seed's draw of the teacher (`pipeline.draw_teacher`: {seed: (kept, samples)}), each
    seed's student trained on its own draw, or one filter output per student that every seed
    shares (a greedy teacher, whose draws coincide). A filter that kept nothing trains nothing:
    that student is the base model, and the table notes say so. ``prompt`` builds the student's
    prompt from an input (default: the input text, the System 1 prompt)."""
    s = exp.sizes
    exp.info["target"] = distill.target_note(target)
    per_seed = bool(kept) and all(isinstance(k, int) for k in kept)
    exp.info["teacher_draws"] = "per seed" if per_seed else "shared"

    def kept_at(seed: int) -> dict[str, filters.FilterResult]:
        return kept[seed][0] if per_seed else kept

    names = list(kept_at(exp.student_seeds[0]))
    with exp.manifest.stage("fine-tune"):
        for name in names:
            runs = []
            for k, seed in enumerate(exp.student_seeds):
                pairs = distill.sft_pairs(kept_at(seed)[name].kept, target, prompt)
                runs.append(distill.finetune(exp.lm, pairs, profiles.lora_settings(s, seed),
                                             name=name if k == 0 else f"{name} (seed {seed})") if pairs else None)
            exp.trained[name], exp.trained_seeds[name] = runs[0], runs
    return exp.trained


def training_summary(exp: Experiment) -> dict[str, dict]:
    return {name: {"pairs": t.examples if t else 0, "steps": t.steps if t else 0, "rows/step": t.rows if t else 0,
                   "tokens/step": round(t.tokens_per_step) if t else 0, "epochs": round(t.epochs, 2) if t else 0,
                   "final loss": t.losses[-1] if t and t.losses else None,
                   "tokens/s": round(t.tokens_per_second, 1) if t and not t.reused and t.seconds else None,
                   "reused": t.reused if t else None} for name, t in exp.trained.items()}


def evaluate_students(exp: Experiment, test: Sequence[Example], program: Callable[[LoadedModel], Any],
                      names: Sequence[str] | None = None, score: Score | None = None) -> list[SystemResult]:
    """Evaluate each distilled System 1 (greedy) with ``program(student)``; one student in memory at
    a time. ``score`` as in `evaluate_systems`."""
    out = []
    served = backends.Settings.from_env().kind != "local"  # students go to the server as adapters, if it can
    mode = distill.student_mode(exp.lm)
    exp.manifest.parameters["student_mode"] = "served" if served else mode
    def one(name: str, result: distill.TrainResult | None, k: int) -> SystemResult:
        first = k == 0
        if result is None or result.planned is not None:  # untrained, or planned only (simulated): the base
            plan = f"+plan:{name}" if first else f"+plan:{name}#{k}"
            base = exp.lm if result is None else replace(exp.lm, fingerprint=f"{exp.lm.fingerprint}{plan}")
            row = score_row(exp, name, test, program(base), score)
            if first:
                _confidence(exp, name, base)
        elif mode == "attached" and not served:  # on the loaded base, removed afterwards
            with distill.attached(exp.lm, result) as student:
                row = score_row(exp, name, test, program(student), score)
                if first:
                    _confidence(exp, name, student)
        else:
            student = distill.load_distilled(exp.lm, result, weights=not served)
            row = score_row(exp, name, test, program(student), score)
            if first:
                _confidence(exp, name, student)
            del student
            free_memory()
        return row

    with exp.manifest.stage("evaluate distilled"):
        for name in names or list(exp.trained):
            runs = exp.trained_seeds.get(name) or [exp.trained[name]]
            if all(r is None for r in runs):  # untrained: the base model, the same on every seed
                runs = runs[:1]
            seeds = exp.student_seeds[:len(runs)]
            rows, traces, answer_traces = [], [], []
            for k, result in enumerate(runs):
                rows.append(one(name, result, k))
                traces.append(exp.traces[name])
                answer_traces.append(exp.answer_traces.get(name))
            # the first seed's traces stand for the student where one is needed (trace dumps, routing)
            exp.traces[name] = traces[0]
            if answer_traces and answer_traces[0] is not None:
                exp.answer_traces[name] = answer_traces[0]
            exp.seed_rows[name], exp.seed_traces[name] = rows, traces
            out.append(over_seeds(rows, seeds))
    exp.rows.extend(out)
    return out


def _confidence(exp: Experiment, name: str, student: LoadedModel) -> None:
    """The student's probability of its own answer on each test input (`backends.answer_confidence`),
    for the routing notebook: scored here where its weights are, by its server where it is served
    as an adapter; none where that server cannot score (it returns text alone)."""
    traces = exp.answer_traces.get(name, exp.traces[name])
    confidence = backends.answer_confidence(student, traces)
    if confidence is not None:  # None: a server that cannot score its outputs
        exp.info.setdefault("confidence", {})[name] = [round(c, 6) for c in confidence]


def training_record(exp: Experiment) -> dict[str, Any]:
    def one(t):
        return ({"pairs": t.examples, "steps": t.steps, "tokens": t.tokens, "seconds": round(t.seconds, 1),
                 "final_loss": t.losses[-1] if t.losses else None, "reused": t.reused,
                 **({"planned": t.planned} if t.planned else {})} if t else None)

    out = {}
    for k, t in exp.trained.items():
        out[k] = one(t)
        runs = exp.trained_seeds.get(k) or []
        if out[k] is not None and len(runs) > 1:
            out[k]["seeds"] = exp.student_seeds[:len(runs)]
            out[k]["pairs_by_seed"] = [r.examples if r else 0 for r in runs]
            out[k]["final_loss_by_seed"] = [r.losses[-1] if r and r.losses else None for r in runs]
            out[k]["seconds_by_seed"] = [round(r.seconds, 1) if r else None for r in runs]
    return out


def seed_outcomes(exp: Experiment) -> dict[str, list[tuple[SystemResult, list[list[Trace]]]]]:
    """Each multi-seed student's per-seed rows and traces, for `records.outcomes`."""
    return {name: list(zip(rows, exp.seed_traces[name])) for name, rows in exp.seed_rows.items() if len(rows) > 1}
