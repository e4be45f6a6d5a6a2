"""Which rows each optimizer step takes, how many steps a budget gives, the learning-rate schedule,
and the plan of every step worked out without training (`plan`).

The in-notebook loop (`lora.train_loop`), the `s2d_utils.train` entry point and the simulated
trainer (`simulate`) all follow these functions, so a plan is what training does. ``settings`` is a
`lora.LoraSettings` (read for ``batch_size``, ``epochs``, ``min_steps``, ``max_steps``, ``steps``,
``tokens_per_step``, ``warmup_share`` and ``seed``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator, Sequence


def warmup_steps(settings, total: int) -> int:
    """Steps of linear warmup: ``warmup_share`` of ``total``, rounded up (0 without a warmup)."""
    return min(total - 1, math.ceil(settings.warmup_share * total)) if settings.warmup_share > 0 and total > 1 else 0


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate of 0-based ``step`` as a share of the peak: a linear rise over ``warmup``
    steps ((s + 1) / (warmup + 1)), then a linear decay that reaches 1 / (total - warmup) on the
    last step. Without warmup it is 1 - step / total, the schedule the committed students had."""
    if not warmup:
        return max(0.0, 1.0 - step / max(total, 1))  # this exact expression: the committed students' LRs
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(total - warmup, 1))



def rows_per_step(lengths: Sequence[int], settings) -> int:
    """Rows of one optimizer step: ``batch_size``, or with ``tokens_per_step`` as many rows as that
    many tokens hold at the mean of ``lengths`` (each pair's prompt + answer tokens), at least one."""
    if settings.tokens_per_step is None:
        return settings.batch_size
    if not lengths:
        raise ValueError("rows_per_step: no pairs")
    return max(1, round(settings.tokens_per_step * len(lengths) / sum(lengths)))


def step_batches(n_pairs: int, settings, rows: int | None = None) -> Iterator[list[int]]:
    """The pairs (by index) of each optimizer step, `training_steps` of them. With a batch size:
    epochs of a seeded shuffle cut into batches (an epoch's last batch may be short). With
    ``tokens_per_step`` (``rows`` from `rows_per_step`): a stream of seeded shuffles, ``rows`` a
    step, so a step may end one epoch and start the next, or span several when the pairs are fewer
    than its rows. The in-notebook loop and the `s2d_utils.train` entry point both follow it, so
    they see the same batches in the same order."""
    rng = random.Random(settings.seed)
    if settings.tokens_per_step is not None:
        if not rows:
            raise ValueError("step_batches: a tokens_per_step budget needs the rows a step takes (rows_per_step)")
        stream: list[int] = []
        for _ in range(training_steps(n_pairs, settings, rows)):
            while len(stream) < rows:
                order = list(range(n_pairs))
                rng.shuffle(order)
                stream += order
            yield stream[:rows]
            del stream[:rows]
        return
    step, total = 0, training_steps(n_pairs, settings)
    while step < total:
        order = list(range(n_pairs))
        rng.shuffle(order)
        for start in range(0, n_pairs, settings.batch_size):
            if step >= total:
                return
            yield order[start : start + settings.batch_size]
            step += 1



def training_steps(n_pairs: int, settings, rows: int | None = None) -> int:
    """Optimizer steps for ``n_pairs`` pairs: the exact budget if set, else ``epochs`` passes (of
    ``rows`` a step, default ``batch_size``) but at least ``min_steps``; ``max_steps`` caps either."""
    if settings.tokens_per_step is not None and not settings.steps:
        epochs = math.ceil(n_pairs * settings.epochs / max(rows or settings.batch_size, 1))
        total = max(epochs, settings.min_steps)
    else:
        total = settings.steps or max(math.ceil(n_pairs / settings.batch_size) * settings.epochs, settings.min_steps)
    return min(total, settings.max_steps) if settings.max_steps else total


MICRO_TOKENS = 1024  # padded tokens per forward/backward pass: a step's rows beyond it accumulate
# gradients in several passes (same gradient). Measured on the 0.5B model, BSM judge prompts at batch
# 4 (~3,000 tokens in one pass) held 13.8 GB resident in the 04 notebook; activations scale with this


def micro_batches(batch: Sequence[tuple[list[int], list[int]]], limit: int | None = None) -> list[list[int]]:
    """The rows of one optimizer step cut into consecutive passes of at most ``limit`` padded
    tokens (`MICRO_TOKENS`; one row at least)."""
    limit = MICRO_TOKENS if limit is None else limit
    parts: list[list[int]] = []
    width = 0
    for r, (ids, _) in enumerate(batch):
        w = max(width, len(ids))
        if parts and w * (len(parts[-1]) + 1) <= limit:
            parts[-1].append(r)
            width = w
        else:
            parts.append([r])
            width = len(ids)
    return parts


@dataclass(frozen=True)
class TrainPlan:
    """Every optimizer step of one student, worked out without training: what the loop will do
    (the simulated trainer checks and records it; the real loop follows it)."""

    pairs: int
    steps: int
    rows: int  # rows a step
    warmup: int  # warmup steps
    step_tokens: tuple[int, ...]  # real prompt + answer tokens of each step
    step_passes: tuple[int, ...]  # forward/backward passes (micro-batches) of each step
    answer_tokens: int  # loss tokens over all steps
    target_tokens: int | None  # the budget's tokens a step, if it has one

    @property
    def tokens(self) -> int:
        return sum(self.step_tokens)

    @property
    def epochs(self) -> float:
        return self.steps * self.rows / self.pairs if self.pairs else 0.0

    def as_dict(self) -> dict:
        n = max(self.steps, 1)
        return {"pairs": self.pairs, "steps": self.steps, "rows_per_step": self.rows, "warmup_steps": self.warmup,
                "epochs": round(self.epochs, 2), "tokens": self.tokens, "tokens_per_step": round(self.tokens / n),
                "min_step_tokens": min(self.step_tokens, default=0), "max_step_tokens": max(self.step_tokens, default=0),
                "passes_per_step": round(sum(self.step_passes) / n, 2), "answer_tokens": self.answer_tokens,
                "target_tokens_per_step": self.target_tokens}


def plan(data: Sequence[tuple[list[int], list[int]]], settings) -> TrainPlan:
    """The `TrainPlan` of tokenized pairs ``data`` under ``settings`` (`step_batches`, `micro_batches`)."""
    lengths = [len(ids) for ids, _ in data]
    rows = rows_per_step(lengths, settings)
    total = training_steps(len(data), settings, rows)
    step_tokens, passes, answer = [], [], 0
    for batch in step_batches(len(data), settings, rows):
        step_tokens.append(sum(lengths[i] for i in batch))
        passes.append(len(micro_batches([data[i] for i in batch])))
        answer += sum(sum(t != -100 for t in data[i][1][1:]) for i in batch)
    return TrainPlan(len(data), total, min(rows, len(data)) if settings.tokens_per_step is None else rows,
                     warmup_steps(settings, total), tuple(step_tokens), tuple(passes), answer, settings.tokens_per_step)


def plan_problems(p: TrainPlan, settings, tolerance: float = 0.25) -> list[str]:
    """Where a plan misses its budget: a step count other than the budget's, or (with a tokens
    budget) a mean step more than ``tolerance`` off the budget's tokens. [] when it keeps to it."""
    out = []
    if settings.steps and p.steps != min(settings.steps, settings.max_steps or settings.steps):
        out.append(f"{p.steps} steps planned, the budget says {settings.steps}")
    if len(p.step_tokens) != p.steps:
        out.append(f"{len(p.step_tokens)} step batches for {p.steps} steps")
    if p.target_tokens and p.steps:
        mean = p.tokens / p.steps
        if abs(mean - p.target_tokens) > tolerance * p.target_tokens:
            out.append(f"{mean:,.0f} tokens a step on average, the budget says {p.target_tokens:,}")
    return out
