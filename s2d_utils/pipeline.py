"""The steps every method notebook shares, so that a notebook holds the paper's method, not bookkeeping.

    exp = pipeline.start("01_rar_last_letter", "rar", task, MODEL=..., PROFILE=..., ...)   # checks, loads
    train, unlabeled, test = pipeline.data(exp, DATA_SOURCE)                            # labels hidden
    pipeline.evaluate_systems(exp, test, {"System 1": program, ...})                     # greedy, #Tokens
    kept = {...filters...}; pipeline.filter_report(exp, kept, train, traces)              # diagnostics
    pipeline.train_students(exp, kept, target)                                           # LoRA, cached
    pipeline.evaluate_students(exp, test, program)                                       # distilled System 1
    pipeline.finish(exp, findings=rar.findings(exp, test))          # table, figure, McNemar, findings, metrics

An `Experiment` carries what the steps share: the model, sizes, seed, the manifest (timed
stages), the notebook's record in the registry (what it writes, which rows play which role),
and every result row and trace, in the order computed. Parameters are checked before anything
loads, and each error names the notebook parameter at fault.

The sentences under the tables come from `findings`, the metrics schema from `records`, the
tables and figures from `tables` and `figures`: this module only runs the steps in order.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from . import backends, distill, figures, filters, findings as sentences, profiles, records, registry, tables
from .evaluate import SystemResult
from .backends import backend_for
from .generation import fits, generate
from .models import LoadedModel, conversion_record, load_model, model_name_problem
from .paper import CONSTANT, paper_table
from .tasks import Example, is_hub_id
from .notes import table_notes
from .traces import Trace, cut_share
from .students import Score, score_row, seed_outcomes, training_record, evaluate_students, train_students, training_summary  # noqa: F401

DEVICES = ("auto", "cpu", "cuda")
# one draw of the teacher (`draw_teacher`): the filter's output per student, and the samples each was filtered from
Draw = tuple[dict[str, filters.FilterResult], dict[str, list[list[Trace]]]]


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
    manifest: records.Manifest
    filter_rule: str = "majority"
    rows: list[SystemResult] = field(default_factory=list)
    traces: dict[str, list[list[Trace]]] = field(default_factory=dict)
    filters: dict[str, dict] = field(default_factory=dict)
    trained: dict[str, distill.TrainResult | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # method-specific numbers for findings and metrics
    # per row, the traces whose last call states each input's answer, where a scorer joined several
    # (a judge's two orders): the student's confidence is the mean over them
    answer_traces: dict[str, list[list[Trace]]] = field(default_factory=dict)
    test: list[Example] = field(default_factory=list)  # the labeled test set (set by `data`)
    # every student is trained on `student_seeds`: ``trained`` and ``traces`` hold the first seed's,
    # these each seed's (the student's row in ``rows`` is the mean over them: `evaluate.over_seeds`)
    trained_seeds: dict[str, list[distill.TrainResult | None]] = field(default_factory=dict)
    seed_rows: dict[str, list[SystemResult]] = field(default_factory=dict)
    seed_traces: dict[str, list[list[list[Trace]]]] = field(default_factory=dict)

    @property
    def greedy(self) -> dict[str, Any]:
        """Generation settings for evaluation: greedy, one answer per input."""
        return dict(batch_size=self.sizes.batch_size)

    @property
    def sampling(self) -> dict[str, Any]:
        """Generation settings for distillation data: N samples per unlabeled input (the first seed's)."""
        return self.sampling_at(self.seed)

    def sampling_at(self, seed: int) -> dict[str, Any]:
        """The distillation data's sampling settings of one seed's draw of the teacher."""
        return dict(n=self.sizes.samples, **{**self.test_sampling, "seed": seed})

    @property
    def test_sampling(self) -> dict[str, Any]:
        """The same settings without the count: for sampled evaluation (maj@k), where the count
        is per input."""
        s = self.sizes
        return dict(temperature=s.temperature, top_p=s.top_p, seed=self.seed, batch_size=s.batch_size)

    @property
    def student_seeds(self) -> list[int]:
        """The seeds of the whole pipeline after the test set: SEED, SEED+1, ... (`Sizes.seeds` of
        them). Each seed draws its own teacher samples (`draw_teacher`), filters them, and trains its
        student on what it kept (LoRA init, data order, dropout)."""
        return [self.seed + k for k in range(self.sizes.seeds)]

    @property
    def record(self) -> registry.Notebook:
        """This notebook's record in the registry: its table, figure, title, rows and roles."""
        return registry.notebook(self.notebook)

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
    if hasattr(task, "check_sources"):  # a profile that needs data the repository cannot carry refuses here
        task.check_sources(PROFILE, {"DATA_SOURCE": DATA_SOURCE, **{k: v for k, v in others.items()
                                                                     if k.endswith("_SOURCE")}})
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
    manifest = records.Manifest(notebook, {**params, "model": model, "sizes": sizes.as_dict()})
    with manifest.stage("load model"):
        lm = load_model(model, device=DEVICE, dtype=dtype, weights=settings.kind == "local")
    if settings.kind == "simulated":  # a dry run: random answers, students planned (`simulate`)
        from .simulate import begin

        begin(task.NAME, PROFILE, lm)
    manifest.parameters["dtype"] = lm.dtype
    with manifest.stage("connect backend"):
        manifest.backend = backend_for(lm).identity(lm)
    manifest.model_fingerprint = lm.fingerprint
    record = conversion_record(Path(str(lm.path)))  # None for hub and other local models
    manifest.parameters["model_source_sha256"] = record.get("source_sha256") if record else None
    return Experiment(notebook, method, task, PROFILE, SEED, sizes, lm, manifest, FILTER_RULE)


def data(exp: Experiment, source: Any = None, train_source: Any = None,
         **task_kw: Any) -> tuple[list[Example], list[Example], list[Example]]:
    """(labeled training inputs, the same without labels, test set). System 2 only ever sees the
    unlabeled copy (the task's ``unlabel`` drops the gold and any label-bearing details); the
    labels of the training inputs serve the filter diagnostics alone. A task with
    ``TRAIN_FROM_SOURCE`` takes its training inputs from the given source too; ``train_source``
    (the task's ``load(train_source=...)``) takes them from another dataset, as the paper did for
    S2A (TriviaQA) and BSM (OASST2)."""
    s = exp.sizes
    own = source if getattr(exp.task, "TRAIN_FROM_SOURCE", False) else None
    extra = {} if train_source is None else {"train_source": train_source}
    train = exp.task.load("train", n=s.n_train, seed=exp.seed, source=own, **extra, **task_kw)
    default = profiles.test_source(exp.method, exp.task.NAME, exp.profile) if source is None else None
    test = exp.task.load("test", n=s.n_test, seed=exp.seed, source=source if default is None else default, **task_kw)
    exp.manifest.data = {"train": records.data_hash(train), "test": records.data_hash(test)}
    if train_source is not None:
        exp.manifest.data["train_source"] = str(train_source)
        exp.info["train_source"] = str(train_source)
    if default is not None:
        exp.manifest.data["test_source"] = f"the profile's default test file, {default}"
        exp.info["test_source"] = str(default)
    exp.test = list(test)
    return train, [unlabeled(exp.task, e) for e in train], test


def unlabeled(task: ModuleType, example: Example) -> Example:
    """What System 2 may see of a training input: the task's ``unlabel`` (gold and every
    label-derived detail dropped), checked to have left no gold behind."""
    out = task.unlabel(example)
    if out.gold is not None:
        raise ValueError(f"{task.NAME}.unlabel left the gold of {example.id}")
    return out


def use_test(exp: Experiment, test: Sequence[Example], why: str) -> list[Example]:
    """Replace the test set (e.g. the same questions with human labels): the table, the verdicts
    and the data hash in the manifest follow; ``why`` is recorded beside the hash."""
    exp.test = list(test)
    exp.manifest.data["test"] = records.data_hash(exp.test)
    exp.manifest.data["test_source"] = why
    return exp.test


def another_test(exp: Experiment, record: registry.Notebook, test: Sequence[Example]) -> Experiment:
    """The same model, sizes and students on another test set, written under ``record``'s names
    (its own table, figure and metrics): BSM's OASST2 column."""
    manifest = records.Manifest(record.notebook, dict(exp.manifest.parameters), exp.manifest.model_fingerprint,
                                dict(exp.manifest.backend), {**exp.manifest.data, "test": records.data_hash(test)})
    kept = {k: v for k, v in exp.info.items() if k in TRAINING_INFO}  # what the students learned stays; the rest is per test
    return replace(exp, notebook=record.notebook, manifest=manifest, rows=[], traces={}, answer_traces={}, info=kept,
                   test=list(test), seed_rows={}, seed_traces={})


TRAINING_INFO = ("target", "train_source", "train_label")  # exp.info keys about training, not about one test set


def evaluate_systems(exp: Experiment, test: Sequence[Example], programs: dict[str, Callable[[], Any]],
                     stage: str = "evaluate System 1 and System 2", score: Score | None = None) -> list[SystemResult]:
    """Run each program (a no-argument callable returning traces on ``test``) and score it.

    ``score(name, test, output)`` replaces the default scoring (`evaluate`) where a program's
    output is more than one trace list (e.g. a judge run in both orders); it returns the result
    row and the traces to keep. A scorer with an ``answer_traces(output)`` attribute also says
    which traces state each input's answer (both orders of a judge), for the confidence."""
    out = []
    with exp.manifest.stage(stage):
        for name, run in programs.items():
            out.append(score_row(exp, name, test, run(), score))
    exp.rows.extend(out)
    return out


def draw_teacher(exp: Experiment, draw: Callable[[dict[str, Any]], Draw]) -> dict[int, Draw]:
    """The teacher drawn once per seed of ``exp.student_seeds``: ``draw(sampling)`` samples System 2
    (and any baseline) on the unlabeled inputs with that seed's sampling settings and filters the
    samples, returning (kept, samples): the filter's output per student and the samples each was
    filtered from. Every seed's student then trains on its own draw, so the spread over seeds
    carries the teacher's sampling as well as training's (`train_students`)."""
    with exp.manifest.stage("sample distillation data"):
        return {seed: draw(exp.sampling_at(seed)) for seed in exp.student_seeds}


def filter_report(exp: Experiment, kept: dict[str, filters.FilterResult] | dict[int, Draw], labeled: Sequence[Example],
                  sources: dict[str, list[list[Trace]]] | None = None) -> dict[str, dict]:
    """Diagnostics of each filter against the held-out gold of the training inputs (report only).

    Given the per-seed draws of `draw_teacher` (and no ``sources``), every seed's filters are
    reported, one row per student and seed; the metrics keep the first seed's as ``filters`` and
    every seed's as ``filters_by_seed``."""
    def diagnose(kept_one: dict[str, filters.FilterResult], samples: dict[str, list[list[Trace]]]) -> dict[str, dict]:
        return {name: filters.diagnostics(res, labeled, samples[name], exp.task.score) for name, res in kept_one.items()}

    if sources is not None:
        exp.filters = diagnose(kept, sources)
        return exp.filters
    by_seed = {seed: diagnose(*draw) for seed, draw in kept.items()}
    exp.filters = by_seed[exp.student_seeds[0]]
    exp.info["filters_by_seed"] = {name: {str(seed): by_seed[seed][name] for seed in by_seed} for name in exp.filters}
    return {f"{name} (seed {seed})": diag for seed, diags in by_seed.items() for name, diag in diags.items()}


def usc(exp: Experiment, examples: Sequence[Example], traces: list[list[Trace]],
        max_new_tokens: int = 24, require_answer: bool = True, seed: int | None = None) -> filters.FilterResult:
    """Universal self-consistency with this model as the selector (greedy), and the paper's rule:
    20 responses, 10 if 20 do not fit the context window, else a random one (drawn by ``seed``,
    default the notebook's). Records how often each rule chose in ``exp.info["usc"]`` (the first
    seed's) and ``exp.info["usc_by_seed"]``."""
    seed = exp.seed if seed is None else seed
    lm = exp.lm

    def select(prompts: list[str]) -> list[str]:
        outs = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=exp.sizes.batch_size, desc="USC select")
        return [cs[0].text for cs in outs]

    result = filters.universal_self_consistency(examples, traces, select, lambda p: fits(lm, p, max_new_tokens),
                                                sizes=(20, 10), seed=seed, require_answer=require_answer)
    rules = Counter(d.detail["rule"] for d in result.decisions)
    info = {"rules": dict(rules), "fallbacks": sum(v for k, v in rules.items() if k != "usc"),
            "shown": dict(Counter(d.detail.get("shown") for d in result.decisions if "shown" in d.detail))}
    exp.info.setdefault("usc_by_seed", {})[str(seed)] = info
    if seed == exp.seed:
        exp.info["usc"] = info
    return result


def show_trace(trace: Trace, example: Example) -> None:
    """Print one trace call by call: what the distilled model will learn to skip."""
    for call in trace.calls:
        print(f"--- {call.name} ({call.n_tokens} tokens, {call.finish_reason})\n{call.output}\n")
    print("parsed answer:", trace.answer, "| gold:", example.gold)


def _cut(exp: Experiment, name: str) -> float:
    """The share of calls the token cap stopped: over every seed of a multi-seed student (its mean)."""
    runs = exp.seed_traces.get(name) or [exp.traces[name]]
    return sum(cut_share(ts) for ts in runs) / len(runs)


def finish(exp: Experiment, *, findings: Sequence[str] = (), notes: Sequence[str] = (),
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the table (md + csv, paper beside ours), the figure and the metrics under the names the
    notebook's registry record gives; return the metrics and the paths."""
    rec = exp.record
    paper = paper_table(*rec.paper)
    test = exp.test or None
    if test is not None and (const := records.constant_row(exp.task, test)) is not None \
            and CONSTANT not in {r.name for r in exp.rows}:
        exp.rows.append(const)
    exp.rows = [replace(r, extra={**r.extra, "cut": _cut(exp, r.name)}) if r.name in exp.traces else r
                for r in exp.rows]
    tests = sentences.mcnemar_tests(exp, rec.mcnemar)
    base_notes = table_notes(exp)
    findings = [*findings, *sentences.guard_findings(exp)]
    df = tables.results_table(exp.rows, paper)
    md, _ = tables.save_table(df, rec.table, exp.profile, rec.title, [*base_notes, *notes], findings)
    fig = figures.plot_accuracy_vs_tokens(exp.rows, paper, rec.figure_title or f"{rec.title}: accuracy vs #Tokens",
                                          rec.figure, exp.profile, exp.lm.name)
    metrics = {
        "model": exp.lm.name,
        "rows": {r.name: r.as_dict() for r in exp.rows},
        "paper": paper.as_dict(),
        "filters": exp.filters,
        "training": training_record(exp),
        "outcomes": records.outcomes(exp.rows, exp.traces, exp.task, test, seeds=seed_outcomes(exp))
        if test is not None else None,
        "mcnemar": tests,
        "info": exp.info,
        "findings": list(findings),
        "outputs": {"table": md.name, "figure": fig.name},
        **(extra or {}),
    }
    if exp.manifest.backend.get("kind") == "simulated":
        from .simulate import record_workplan

        metrics["workplan"] = record_workplan(exp)
    path = records.save_metrics(exp.notebook, exp.profile, metrics, exp.manifest)
    records.save_test_traces(exp.notebook, exp.profile, exp.traces, exp.test)
    return {"metrics": metrics, "table": df, "table_path": md, "figure_path": fig, "metrics_path": path}


def show(out: dict[str, Any]) -> str:
    """A finished table with its findings, as markdown (the notebooks display it)."""
    return tables.markdown_table(out["table"]) + "\n\n" + "\n".join(f"- {f}" for f in out["metrics"]["findings"])
