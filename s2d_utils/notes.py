"""The notes every method table carries (`pipeline.finish` writes them under the table): the model,
the machine or server, how to read the columns, the constant row, untrained students, the
students' target, the training budget, and what this n can detect."""

from __future__ import annotations

import os

from . import backends, findings as sentences
from .paper import CONSTANT, PAPER_MODEL, training_budget


def where(exp) -> str:
    """Where the numbers were computed, for the table notes."""
    lm = exp.lm
    where = f"{os.cpu_count()} CPU cores" if lm.device == "cpu" else lm.device
    if exp.manifest.backend.get("kind") == "openai":  # the base model's samples came from a server
        runs = [t for ts in (getattr(exp, "trained_seeds", None) or {k: [t] for k, t in exp.trained.items()}).values()
                for t in ts if t is not None]
        local = [t for t in runs if str(t.adapter_dir) in backends.ADAPTER_FALLBACKS]
        students = ("no student was trained" if not runs
                    else f"students on {where} (the server could not load their LoRA adapters)" if local
                    else "students as LoRA adapters on the same server")
        server = exp.manifest.backend["server"]
        name = (f"an OpenAI-compatible server of unknown kind (its own sampling defaults could not be pinned)"
                if server.split()[0] == "openai" else f"a {server} server")
        where = f"{name} ({exp.manifest.backend['served_model']}), {students}"
    return where


def served_note(exp) -> str:
    """What the server said of itself (version, model file, dtype, slots: they key the cache) and
    whether a rerun can repeat its samples."""
    b = exp.manifest.backend
    said = ", ".join(f"{k.replace('_', ' ')} {b[k]}" for k in ("server", "model_file", "dtype", "server_dtype",
                                                               "slots", "deterministic", "system_fingerprint")
                     if b.get(k))
    backend = backends.backend_for(exp.lm)
    again = backend.reproducible() if hasattr(backend, "reproducible") else ""
    counted = backend.counting() if hasattr(backend, "counting") else ""
    return " ".join(x for x in (f"Served by {said} (these key the cache).", again, counted) if x)


def table_notes(exp) -> list[str]:
    """The notes every table carries: model and machine, how to read the columns, the constant row,
    untrained students, the training budget and what this n can detect."""
    lm = exp.lm
    dtype = exp.manifest.backend.get("dtype") or lm.dtype  # a server's, where one generated
    simulated = ["SIMULATED RUN: every output is a random answer in the task's format, independent of the gold, and no "
                 "student was trained (each is the base model): nothing in this table is a result."] \
        if exp.manifest.backend.get("kind") == "simulated" else []
    notes = [*simulated,
             f"ours: {lm.name} ({dtype} weights) on {where(exp)}, profile {exp.profile}, seed {exp.seed}; "
             f"paper: {PAPER_MODEL}.",
             "Accuracy 95% CI: Wilson interval. #Tokens: mean generated tokens per input over all calls. "
             "Parse fail: share of answers that do not parse (counted as wrong). Cut: share of calls the "
             "token cap stopped (a cut completion counts only if it states its answer in the strict form)."]
    if exp.manifest.backend.get("kind") == "openai":
        notes.append(served_note(exp))
    if CONSTANT in {r.name for r in exp.rows}:
        notes.append(f"{CONSTANT}: the one answer ({exp.row(CONSTANT).extra['answer']!r}) that, given to every "
                     "test input, scores best; any claim must clear it as well as System 1.")
    notes += [f"{name}: no training input had a usable target, so no fine-tuning step ran; the row is the base model."
              for name, t in exp.trained.items() if t is None]
    multi = {name: rows for name, rows in getattr(exp, "seed_rows", {}).items() if len(rows) > 1}
    if multi:
        seeds = ", ".join(map(str, exp.student_seeds[:max(map(len, multi.values()))]))
        draws = ("each seed draws its own teacher samples and filter choices, then its LoRA initialization, data "
                 "order and dropout" if exp.info.get("teacher_draws") == "per seed" else
                 "LoRA initialization, data order and dropout; the teacher decodes greedily, so its output is the same "
                 "on every seed")
        notes.append(f"Every student is trained on seeds {seeds} ({draws}): its row gives the mean over the seeds, with "
                     "Wilson's interval at the test's n for that mean (conservative: a mean over seeds varies less), and "
                     "'Acc over seeds' gives the standard deviation and each seed's accuracy. The paired tests are per seed; a "
                     "student the filter gave no pairs is the base model, evaluated once.")
    if exp.info.get("target"):
        notes.append(f"Students' training target: {exp.info['target']} (no intermediate tokens).")
    return (notes + sentences.training_notes(exp.trained, exp.sizes, training_budget(exp.task.NAME))
            + sentences.power_note(len(exp.test)))
