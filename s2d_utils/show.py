"""The method, printed from the objects a notebook ran: what each call's prompt was (chat template
included), what the filter saw and chose, the training pairs as the tokenizer sees them with the
tokens that carry the loss marked, the LoRA settings and budget, the loss curves, and the
teacher's trace beside the students' answers.

Nothing here is retyped: prompts come from the `Call` records (rendered by the same
`generation.render` every call and every training pair goes through), the loss marks from the
collation the training loop uses (`lora.tokenize`, `lora.collate`: a token is marked where its
label is not -100), the settings from the student's own training log. Every function returns a
string or a matplotlib figure (`png` turns one into bytes for `IPython.display.Image`), and each
is cheap: nothing is generated or trained, and no object a later step reads is changed.

Outputs are cut to stay short (`cut`: the first and last lines, "... (N characters cut) ...").
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .filters import Decision, FilterResult, usc_prompt
from .generation import render
from .lora import LoraSettings, TrainResult, collate, tokenize
from .tasks import Example
from .traces import Call, Trace

LIMIT = 480  # characters of a prompt or output shown before it is cut
OPEN, CLOSE = "⟦", "⟧"  # around the tokens that carry the loss


def cut(text: str, limit: int = LIMIT) -> str:
    """``text`` if it is at most ``limit`` characters, else its head and tail (at line breaks where
    one is near) around a line saying how many characters were cut."""
    if len(text) <= limit:
        return text
    half = max(1, limit // 2)
    head, tail = text[:half], text[-half:]
    if (nl := head.rfind("\n")) > half // 2:
        head = head[:nl + 1]
    if 0 <= (nl := tail.find("\n")) < half // 2:
        tail = tail[nl + 1:]
    n = len(text) - len(head) - len(tail)
    return f"{head.rstrip(chr(10))}\n... ({n} characters cut) ...\n{tail}"


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _one_line(text: str | None, limit: int) -> str:
    return repr(cut(" ".join((text or "").split()), limit)) if text is not None else "None"


def messages(call: Call) -> str | list[dict]:
    """What the program handed `generate` for ``call``: a user message, or a chat (a judge's system
    and user messages, which the trace keeps as JSON)."""
    p = call.prompt
    if isinstance(p, list):  # a chat handed over as messages (few-shot CoT)
        return [dict(m) for m in p]
    if p.startswith("["):
        try:
            chat = json.loads(p)
        except ValueError:
            return p
        if isinstance(chat, list) and chat and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in chat):
            return chat
    return p


def prompt_of(call: Call, lm=None) -> str:
    """The prompt of ``call``: with ``lm``, the text the model saw (`generation.render`: its chat
    template and the assistant header); without, the messages, one ``[role]`` block each."""
    m = messages(call)
    if lm is not None:
        return render(lm, m)
    chat = [{"role": "user", "content": m}] if isinstance(m, str) else m
    return "\n".join(f"[{x['role']}]\n{x['content']}" for x in chat)


def trace_text(trace: Trace, example: Example | None = None, lm=None, limit: int = LIMIT,
               per_name: int | None = None) -> str:
    """One trace call by call: each call's prompt and output (cut), then the parsed answer (and gold).
    ``per_name``: at most that many calls of each name (BSM's solve calls), the rest counted."""
    seen: dict[str, int] = {}
    calls, rest = [], []
    for j, c in enumerate(trace.calls, 1):
        seen[c.name] = seen.get(c.name, 0) + 1
        (calls if per_name is None or seen[c.name] <= per_name else rest).append((j, c))
    out = []
    for j, c in calls:
        p = prompt_of(c, lm)
        out += [f"--- call {j}: {c.name} ({c.n_tokens} tokens generated, {c.finish_reason})",
                f"> prompt ({len(p)} characters{', chat template applied' if lm is not None else ''}):", cut(p, limit),
                "> output:", cut(c.output, limit)]
    if rest:
        names = ", ".join(f"{n} x{sum(c.name == n for _, c in rest)}" for n in dict.fromkeys(c.name for _, c in rest))
        out.append(f"--- ({len(rest)} more calls not shown: {names})")
    gold = f" | gold: {example.gold!r}" if example is not None and example.gold is not None else ""
    out.append(f"parsed answer: {trace.answer!r}{gold}")
    return "\n".join(out)


def prompts(traces: Mapping[str, Sequence[Sequence[Trace]]], examples: Sequence[Example], i: int = 0, lm=None,
            limit: int = LIMIT, per_name: int | None = None) -> str:
    """Input ``i`` as every program in ``traces`` (name -> one trace list per input) ran it: every
    call's prompt as the model saw it, and its output."""
    e = examples[i]
    out = [f"input {e.id}: {_one_line(e.input, limit)}"]
    for name, ts in traces.items():
        t = ts[i][0]
        out += ["", f"=== {name}: {len(t.calls)} call(s), {t.n_tokens} tokens generated",
                trace_text(t, e, lm, limit, per_name)]
    return "\n".join(out)


def choice(decision: Decision) -> str:
    """What a filter decided on one input, in words (a vote, USC's pick, two orders, a random pick)."""
    d, kept = decision.detail, decision.kept
    verdict = f"kept, target answer {decision.answer!r}" if kept else "dropped (no target)"
    if "original" in d:  # perturbation agreement (BSM's two orders)
        return (f"original order: {d['original']!r}; swapped order: {d['perturbed']!r}, which means "
                f"{d['perturbed_mapped_back']!r} in the original order -> {verdict}")
    if "rule" in d:  # universal self-consistency
        shown = f"shown {d['shown']} responses, " if "shown" in d else ""
        reply = f"its reply {_one_line(d.get('reply'), 160)}, " if "reply" in d else ""
        return f"USC {shown}{reply}rule {d['rule']!r} -> sample #{d['pick']}; {verdict}"
    if "pick" in d:
        return f"a sample drawn at random: #{d['pick']} -> {verdict}"
    return (f"votes {decision.votes} ({decision.abstained} of {decision.n} samples gave no answer), margin "
            f"{decision.margin} -> {verdict}")


def samples(result: FilterResult, examples: Sequence[Example], traces: Sequence[Sequence[Trace]],
            i: int | None = None, perturbed: Sequence[Sequence[Trace]] | None = None, limit: int = 120,
            lm=None) -> str:
    """One unlabeled input (``i``; None: the first the filter kept, else the first): its samples
    (each one's parsed answer and final output, cut) and what the filter did with them;
    ``perturbed``: the program on the perturbed input too (BSM's swap). USC's selection prompt is
    shown as `filters.usc_prompt` builds it (rendered for ``lm`` when given)."""
    if i is None:
        i = next((j for j, d in enumerate(result.decisions) if d.kept), 0)
    e, d = examples[i], result.decisions[i]
    if d.id != e.id:
        raise ValueError(f"decision {i} is of input {d.id}, not {e.id}")
    out = [f"unlabeled input {e.id}: {_one_line(e.input, 2 * limit)}"]
    groups = [("sample", traces[i])] if perturbed is None else [("original order", traces[i]),
                                                                ("swapped order", perturbed[i])]
    for label, ts in groups:
        for t in ts:
            out.append(f"  {label} #{t.sample}: answer {t.answer!r:<8} <- {t.calls[-1].name}: "
                       f"{_one_line(t.final, limit)}")
    if "shown" in d.detail:  # USC: its selection prompt, rebuilt by the function that built it
        p = usc_prompt(e.input, [t.final for t in traces[i][:d.detail["shown"]]])
        p = render(lm, p) if lm is not None else p
        out += ["> USC's selection prompt" + (" (chat template applied):" if lm is not None else ":"), cut(p, 4 * limit)]
    out.append(choice(d))
    kept = next((k for k in result.kept if k.example.id == e.id), None)
    if kept is not None and perturbed is None:
        out.append(f"the kept trace: sample #{kept.trace.sample}")
    return "\n".join(out)


def loss_marks(lm, pairs: Sequence[dict]) -> list[list[tuple[int, bool]]]:
    """Each pair's tokens as training collates them (`lora.tokenize`, then `lora.collate` as one
    batch, padding dropped), each with whether it carries the loss (its label is not -100)."""
    data = [tokenize(lm, p) for p in pairs]
    ids, mask, labels = collate(data, lm.tokenizer.pad_token_id)
    return [[(int(t), int(y) != -100) for t, y, m in zip(ids[r], labels[r], mask[r]) if int(m)]
            for r in range(len(data))]


def marked(lm, tokens: Sequence[tuple[int, bool]], limit: int = LIMIT) -> str:
    """The decoded tokens, each run that carries the loss between ⟦ and ⟧ (runs without loss cut)."""
    runs: list[tuple[bool, list[int]]] = []
    for t, loss in tokens:
        if runs and runs[-1][0] == loss:
            runs[-1][1].append(t)
        else:
            runs.append((loss, [t]))
    text = lambda ids: lm.tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    return "".join(f"{OPEN}{text(ids)}{CLOSE}" if loss else cut(text(ids), limit) for loss, ids in runs)


def training_pairs(lm, pairs: Sequence[dict], k: int = 2, limit: int = LIMIT) -> str:
    """The first ``k`` training pairs as the tokenizer sees them: the rendered prompt (cut) and the
    completion, the tokens that carry the loss between ⟦ and ⟧ (and listed)."""
    shown = list(pairs[:k])
    out = [f"{_n(len(pairs), 'training pair')}; {'the first ' + str(len(shown)) if len(shown) < len(pairs) else 'shown'}"
           f" as training tokenizes them (loss on the tokens between {OPEN} and {CLOSE} only):"]
    for p, tokens in zip(shown, loss_marks(lm, shown)):
        loss = [t for t, on in tokens if on]
        pieces = [lm.tokenizer.decode([t]) for t in loss]
        listed = repr(pieces[:16])[:-1] + (f", ... {len(pieces) - 16} more]" if len(pieces) > 16 else "]")
        out += ["", f"--- pair {p.get('id', '?')}: {len(tokens)} tokens, {len(loss)} of them carry the loss",
                marked(lm, tokens, limit), f"loss tokens: {listed}"]
    return "\n".join(out)


def _settings(result: TrainResult | None, settings: LoraSettings | None) -> dict:
    if result is not None and result.settings:
        return dict(result.settings)
    return asdict(settings) if settings is not None else {}


def lora_text(result: TrainResult | None, settings: LoraSettings | None = None) -> str:
    """The LoRA settings (the student's training log, else ``settings``) and the budget it ran."""
    s = _settings(result, settings)
    out = []
    if s:
        scale = s["alpha"] / s["r"] if s.get("r") else float("nan")
        out += [f"LoRA: rank r = {s['r']}, alpha = {s['alpha']} (scale alpha/r = {scale:g}), dropout {s['dropout']}, "
                f"on {', '.join(s['target_modules'])}",
                f"optimizer: AdamW, learning rate {s['learning_rate']:g}, warmup share {s.get('warmup_share', 0.0):g}, "
                "then linear decay to 0; weight decay 0",
                "budget: " + (f"exactly {s['steps']} steps" if s.get("steps") else
                              f"{s['epochs']} epochs, at least {_n(s['min_steps'], 'step')}"
                              + (f", at most {s['max_steps']}" if s.get("max_steps") else ""))
                + (f"; {s['tokens_per_step']} real tokens a step" if s.get("tokens_per_step") else
                   f"; {s['batch_size']} rows a step") + f"; seed {s['seed']}"]
    if result is None:
        out.append("trained: nothing (the filter kept no input; the student is the base model)")
    elif result.planned is not None:
        out.append(f"planned only (simulated run): {result.steps} steps of {result.rows} rows over {result.examples} pairs")
    else:
        loss = f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}" if result.losses else "no loss recorded"
        out.append(f"ran: {result.steps} steps of {result.rows} rows ({result.warmup} warmup) over {result.examples} "
                   f"pairs = {result.epochs:.2f} epochs, {result.tokens:,} tokens ({result.tokens_per_step:.0f} a step), "
                   f"{loss}, adapter {Path(result.adapter_dir).name}")  # the same words cold or warm (a
        # reused student is named as a trained one), so the executed copies do not change on a rerun
    return "\n".join(out)


def trained_pairs(result: TrainResult | None) -> list[dict]:
    """The pairs a student was trained on, as its adapter folder keeps them (``train_data.jsonl``)."""
    path = Path(result.adapter_dir) / "train_data.jsonl" if result is not None else None
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training(exp: Any, name: str, k: int = 2, limit: int = LIMIT) -> str:
    """Student ``name`` of an experiment: its LoRA settings and budget on every seed, and its first
    ``k`` training pairs (the adapter folder's copy) with the loss tokens marked."""
    runs = exp.trained_seeds.get(name) or [exp.trained.get(name)]
    seeds = exp.student_seeds[:len(runs)]
    out = [f"=== {name}", lora_text(runs[0])]
    for seed, r in list(zip(seeds, runs))[1:]:
        out.append(f"seed {seed}: " + (lora_text(r).splitlines()[-1] if r is not None else "not trained"))
    pairs = trained_pairs(runs[0])
    out += ["", training_pairs(exp.lm, pairs, k, limit) if pairs else "(no training pairs on disk)"]
    return "\n".join(out)


def loss_curves(trained_seeds: Mapping[str, Sequence[TrainResult | None]], seeds: Sequence[int] = (),
                title: str = "Training loss per optimizer step"):
    """A figure: each student's loss per step, one colour per student and one line style per seed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    styles = ("-", "--", ":", "-.")
    drawn = 0
    for i, (name, runs) in enumerate(trained_seeds.items()):
        for k, r in enumerate(runs):
            if r is None or not r.losses:
                continue
            seed = seeds[k] if k < len(seeds) else k
            ax.plot(range(1, len(r.losses) + 1), r.losses, color=colors[i % 10], ls=styles[k % len(styles)],
                    marker="o" if len(r.losses) < 20 else None, ms=3, label=f"{name}, seed {seed}")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no student was trained", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="upper right")
    ax.set(xlabel="optimizer step", ylabel="mean answer-token loss", title=title)
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    """A figure as PNG bytes (``Image(show.png(fig))`` in a notebook): no pyplot, no backend change."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _mark(answer: str | None, gold: Any, score: Callable | None) -> str:
    if score is None or gold is None:
        return ""
    return " (right)" if score(answer, gold) else " (wrong)"


def teacher_and_students(examples: Sequence[Example], traces: Mapping[str, Sequence[Sequence[Trace]]],
                         teacher: str, students: Sequence[str], i: int = 0,
                         seed_traces: Mapping[str, Sequence[Sequence[Sequence[Trace]]]] | None = None,
                         seeds: Sequence[int] = (), score: Callable | None = None, limit: int = 240,
                         others: Sequence[str] = (), trained: Mapping[str, Sequence[Any]] | None = None) -> str:
    """Test input ``i``: the teacher's trace (each call's output, cut) beside each student's answer
    on every seed (and ``others``, e.g. System 1, for reference); ``trained``: each student's runs
    per seed (None where nothing was trained: that seed's student is the base model)."""
    e = examples[i]
    t = traces[teacher][i][0]
    out = [f"test input {e.id} (gold {e.gold!r}): {_one_line(e.input, 2 * limit)}", "",
           f"=== teacher: {teacher}, {len(t.calls)} call(s), {t.n_tokens} tokens generated"]
    for c in t.calls:
        out.append(f"  {c.name} ({c.n_tokens} tokens): {_one_line(c.output, limit)}")
    out.append(f"  answer: {t.answer!r}{_mark(t.answer, e.gold, score)}")
    for name in [*students, *others]:
        runs = (seed_traces or {}).get(name) or [traces[name]]
        out += ["", f"=== {'student' if name in students else 'for reference'}: {name}"]
        for k, ts in enumerate(runs):
            s = ts[i][0]
            label = f"seed {seeds[k]}" if k < len(seeds) and len(runs) > 1 else "answer"
            runs_of = (trained or {}).get(name)
            if runs_of is not None and (runs_of[k] if k < len(runs_of) else None) is None:
                label += ", not trained: the base model"
            out.append(f"  {label} ({s.n_tokens} tokens): {_one_line(s.final, limit)} -> {s.answer!r}"
                       f"{_mark(s.answer, e.gold, score)}")
    return "\n".join(out)


def teacher_beside_students(exp: Any, teacher: str, names: Sequence[str], i: int = 0, others: Sequence[str] = (),
                            limit: int = 240) -> str:
    """`teacher_and_students` on an experiment's test set, traces and seeds."""
    return teacher_and_students(exp.test, exp.traces, teacher, names, i, exp.seed_traces, exp.student_seeds,
                                exp.task.score, limit, others, exp.trained_seeds)
