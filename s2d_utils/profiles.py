"""Run sizes per method, task and profile, and each profile's model.

Profiles: ``smoke`` (CI and the tests: about a minute per notebook, SmolLM2-135M), ``cpu`` (the
default main job: the embedded Qwen2.5-Coder-0.5B on 2 CPU cores, at most ~20 minutes per notebook
cold), ``gpu`` (Qwen2.5-7B-Instruct on one 80 GB GPU: the paper's test sets where our data have
them, unlabeled inputs in the hundreds to low thousands), ``paper`` (the paper's sizes; expects
GPUs and the paper's model). `generation_budget` bounds the tokens a profile generates.

One small frozen dataclass per method; `sizes(method, task, profile)` returns it with every field
checked, and unknown method, task or profile names raise with the list of valid ones. The
notebooks print the sizes they ran with; the metrics manifest records them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

PROFILES = ("smoke", "cpu", "gpu", "paper")
PROFILE_MODELS = {
    "smoke": "smollm2-135m-instruct",
    "cpu": "qwen2.5-coder-0.5b-instruct",
    # Apache-2.0, not gated, and a Qwen2 the engine runs (Llama-3.1-8B's rope scaling sends it to
    # the slower fallback); any 7-8B instruct model works through MODEL
    "gpu": "Qwen/Qwen2.5-7B-Instruct",
    "paper": "meta-llama/Llama-2-70b-chat-hf",
}
# The weights' dtype per profile ("auto": fp32 on CPU, bf16 on CUDA; `models.load_model`). The cpu
# profile runs bf16: on CPUs with native bf16 products (AVX512_BF16, AMX) they are ~3x fp32's
# (`benchmarks/gemm_ceiling.py` prints both), and one dtype everywhere keeps the profile's numbers
# the same on every machine. ``S2D_DTYPE`` overrides (e.g. float32 on a CPU without bf16 products,
# where bf16 is emulated and slower; its samples and students are cached apart).
PROFILE_DTYPES = {"smoke": "auto", "cpu": "bfloat16", "gpu": "auto", "paper": "auto"}
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Sizes:
    """Fields every method shares. Integers must be >= 1 unless named in ``_MAY_BE_ZERO``."""

    n_train: int  # unlabeled training inputs given to System 2
    n_test: int  # held-out labeled inputs
    samples: int  # System 2 samples per unlabeled input (the filter's N)
    temperature: float = 0.7  # sampling for distillation data; evaluation is greedy
    top_p: float = 0.95
    epochs: int = 3
    lora_batch: int = 8
    max_steps: int | None = None  # caps fine-tuning steps (smoke)
    # training budget in optimizer steps: ``steps`` (the paper's count, `paper` profile) wins;
    # otherwise `epochs` passes over the kept pairs, but at least ``min_steps`` (a student trained on
    # 6 pairs for 3 epochs takes 3 steps and learns only the answer format: the floor stops that)
    min_steps: int = 1
    steps: int | None = None
    # the paper's unit (PAPER.md, "Setup"): real prompt + answer tokens per optimizer step. Set, a
    # step takes as many rows as these tokens hold at the kept pairs' mean length (`lora.rows_per_step`;
    # gradients accumulate over micro-batches), and ``lora_batch`` is unused. The paper's 66k, 131k
    # and 33k read as 16, 32 and 8 packed sequences of 4,096 tokens: real tokens, not padding.
    tokens_per_step: int | None = None
    warmup_share: float = 0.0  # share of the steps with a linear LR warmup (then linear decay to 0)
    # students trained per filter output, on seeds SEED, SEED+1, ...: each seed draws its own teacher
    # samples on the unlabeled inputs (`pipeline.draw_teacher`), then its LoRA init, data order and dropout
    seeds: int = 3
    batch_size: int = 128  # generation rows in flight; 128 beat 64 by ~23% on 2 CPU cores

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "Sizes":
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("max_steps", "steps", "n_test_k", "tokens_per_step"):
                continue
            if f.name == "target":
                if value not in TARGETS:
                    raise ValueError(f"target={value!r}: expected one of {list(TARGETS)}")
                continue
            if f.name == "format_hint":
                if not isinstance(value, bool):
                    raise ValueError(f"format_hint={value!r}: must be True or False")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name}={value!r}: must be a number")
            if f.name == "temperature":
                if value < 0:
                    raise ValueError(f"temperature={value}: must be >= 0")
            elif f.name == "top_p":
                if not 0 < value <= 1:
                    raise ValueError(f"top_p={value}: must be in (0, 1]")
            elif f.name == "warmup_share":
                if not 0 <= value < 1:
                    raise ValueError(f"warmup_share={value}: must be in [0, 1)")
            elif f.name == "unbiased_share":
                if not 0 <= value <= 1:
                    raise ValueError(f"unbiased_share={value}: must be in [0, 1]")
            elif not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name}={value!r}: must be an integer of at least 1")
        return self


# What a RaR student learns to say: "final", the response of the program's last call (the respond
# call of 2-step RaR) of a sample whose parsed answer is the vote's, as the paper's distilled
# #Tokens imply (25.5 last letter, 50.3 coin flip: a sentence, not a template); "template", "The
# answer is X." (~6 tokens), which the smoke and cpu profiles keep: a 0.5B student fine-tuned for
# 12 steps learns a short fixed form, and the committed cpu tables were made with it
TARGETS = ("final", "template")


@dataclass(frozen=True)
class RarSizes(Sizes):
    """Rephrase-and-Respond notebooks (paper Table 1)."""

    n_answer: int = 1  # 2-step RaR answers per sampled rephrasing (paper, coin flip: both stages sampled)
    target: str = "final"  # see TARGETS
    system1_tokens: int = 64  # max new tokens per call
    rar1_tokens: int = 128
    rephrase_tokens: int = 64
    answer_tokens: int = 64


@dataclass(frozen=True)
class S2aSizes(Sizes):
    """System 2 Attention notebook (paper Table 2). Sampling follows the S2A paper (T 0.6, top-p 0.9)."""

    unbiased_share: float = 0.125  # share of test inputs that are the bare question (paper: 50 of 400)
    system1_tokens: int = 64
    rewrite_tokens: int = 96  # S2A call 1
    answer_tokens: int = 64  # S2A call 2 (and the students, which answer directly)
    usc_tokens: int = 24  # the selection call ("The most consistent response is Response X")
    temperature: float = 0.6
    top_p: float = 0.9


@dataclass(frozen=True)
class BsmSizes(Sizes):
    """Branch-Solve-Merge judge notebook (paper Table 3). Judges decode greedily in both orders;
    ``samples`` is 1 (the filter compares the two orders, not samples)."""

    max_answer_chars: int = 600  # longer answers are cut, visibly (see tasks.judge.truncate)
    system1_tokens: int = 8  # "[[A]]" and the end token
    cot_tokens: int = 192
    branch_tokens: int = 128
    solve_tokens: int = 24
    # bsm.SOLVE_FORMAT_HINT in every solve call: a concession to the 0.5B model (without it, it answers
    # each solve call with one number), for the smoke and cpu profiles only
    format_hint: bool = True


@dataclass(frozen=True)
class CotSizes(Sizes):
    """Chain-of-Thought notebook (paper Table 4). ``samples`` is both the filter's K and the
    largest test-time k; test questions are sampled (temperature, top-p) so maj@k has votes."""

    shots: int = 8
    system1_tokens: int = 16
    cot_tokens: int = 160
    student_tokens: int = 16
    n_test_k: int | None = None  # test questions sampled ``samples`` times for maj@5/10 (None: all); the rest once


_RAR_SMOKE = RarSizes(n_train=6, n_test=6, samples=2, n_answer=1, system1_tokens=12, rar1_tokens=16,
                      rephrase_tokens=12, answer_tokens=12, max_steps=2, lora_batch=4, seeds=2, target="template")

SIZES: dict[str, dict[str, dict[str, Sizes]]] = {
    "rar": {
        "last_letter": {
            "smoke": _RAR_SMOKE,
            # 100 test questions and 24 unlabeled ones keep a cold run under 20 minutes (32 took 1,243 s
            # once each seed drew its own 8 samples); batch 4 (12 steps: 3 epochs of what the vote keeps)
            "cpu": RarSizes(n_train=24, n_test=100, samples=8, n_answer=1, system1_tokens=48, rar1_tokens=128,
                            rephrase_tokens=64, answer_tokens=64, lora_batch=4, min_steps=12, target="template"),
            # all 200 unlabeled and 200 test questions the task has; 12 steps of 16k tokens (~70
            # tokens a pair: ~14 epochs over what the vote keeps; LoRA at 2e-4 needs more steps
            # than the paper's 3), 10% warmup
            "gpu": RarSizes(n_train=200, n_test=200, samples=8, n_answer=1, system1_tokens=128, rar1_tokens=512,
                            rephrase_tokens=256, answer_tokens=256, steps=12, tokens_per_step=16_000,
                            warmup_share=0.1),
            # Sec. 4.1: 200 train / 200 test, 8 samples; token caps generous for a 70B model; 3 steps
            # of 66k tokens (the paper's budget), 10% warmup (1 step)
            "paper": RarSizes(n_train=200, n_test=200, samples=8, n_answer=1, system1_tokens=128, rar1_tokens=512,
                              rephrase_tokens=256, answer_tokens=256, steps=3, tokens_per_step=66_000,
                              warmup_share=0.1),
        },
        "coin_flip": {
            "smoke": _RAR_SMOKE,
            # 48 unlabeled inputs (32 kept 6: 3 optimizer steps; 64 took 1,338 s once each seed drew its
            # own samples) with 4 samples each, 80 test questions; one epoch at batch 4, floor of 12 steps
            "cpu": RarSizes(n_train=48, n_test=80, samples=4, n_answer=1, system1_tokens=64, rar1_tokens=128,
                            rephrase_tokens=64, answer_tokens=64, epochs=1, lora_batch=4, min_steps=12,
                            target="template"),
            # the paper's 1,333 test questions (its file, `TEST_FILES`), 2,000 of its 20,000 unlabeled
            # ones, both RaR stages sampled 8 times as in the paper; 100 steps as in the paper, of
            # 6.6k tokens (the paper's 66k scaled to a tenth of its pool: ~4 epochs), 10% warmup
            "gpu": RarSizes(n_train=2000, n_test=1333, samples=8, n_answer=8, system1_tokens=256, rar1_tokens=512,
                            rephrase_tokens=256, answer_tokens=256, steps=100, tokens_per_step=6_600,
                            warmup_share=0.1),
            # Sec. 4.1: 20k unlabeled train, 1.33k test (its file); both RaR stages sampled 8 times;
            # 100 steps of 66k tokens, 10% warmup
            "paper": RarSizes(n_train=20000, n_test=1333, samples=8, n_answer=8, system1_tokens=256, rar1_tokens=512,
                              rephrase_tokens=256, answer_tokens=256, steps=100, tokens_per_step=66_000,
                              warmup_share=0.1),
        },
    },
    "bsm": {
        "judge": {
            "smoke": BsmSizes(n_train=4, n_test=4, samples=1, max_answer_chars=200, system1_tokens=6, cot_tokens=12,
                              branch_tokens=24, solve_tokens=8, max_steps=2, lora_batch=4, seeds=2),
            # 2 CPU cores prefill ~150 tokens/s at 0.5B and fine-tune ~35 tokens/s: judge prompts of
            # ~350 tokens make every judgment seconds and every training step a minute, so 32 test
            # and 8 unlabeled pairs, answers cut at 300 characters, floor of 4 steps
            # (batch 4: batch 8 of judge prompts peaked at 8.7 GB resident; one epoch over both orders)
            "cpu": BsmSizes(n_train=8, n_test=32, samples=1, max_answer_chars=300, cot_tokens=128, epochs=1,
                            lora_batch=4, min_steps=4),
            # 768 unlabeled pairs (OASST2's train split with OASST2_SOURCE, else every MT-bench pair of
            # the train split), uncut answers, caps for a 7B judge; 100 steps of 32k tokens (both
            # orders of ~900 tokens: ~2 epochs), 10% warmup
            "gpu": BsmSizes(n_train=768, n_test=480, samples=1, max_answer_chars=100_000, system1_tokens=8,
                            cot_tokens=1024, branch_tokens=512, solve_tokens=256, steps=100, tokens_per_step=32_000,
                            warmup_share=0.1, format_hint=False),
            # Sec. 4.3: 19,672 unlabeled OASST2 pairs (OASST2_SOURCE: the profile refuses without it);
            # answers cut at 3,000 characters (~750 tokens each: two of them, the judge's prompt and
            # the CoT judge's 1,024 tokens fit Llama-2's 4,096-token context, which longer MT-bench
            # answers overflow); tests: OASST2's validation pairs and MT-bench (480 proxy pairs, or
            # every human vote); 600 steps of 131k tokens, 10% warmup
            "paper": BsmSizes(n_train=19672, n_test=480, samples=1, max_answer_chars=3_000, system1_tokens=8,
                              cot_tokens=1024, branch_tokens=512, solve_tokens=256, steps=600,
                              tokens_per_step=131_000, warmup_share=0.1, format_hint=False),
        },
    },
    "cot": {
        "gsm8k": {
            "smoke": CotSizes(n_train=4, n_test=4, samples=10, shots=2, system1_tokens=6, cot_tokens=12,
                              student_tokens=6, max_steps=2, lora_batch=4, seeds=2),
            # a CoT is ~130-150 tokens here: maj@1 on 100 test questions (one sample each), maj@5/10
            # only on the first 2 (illustrative, no power; 4 before three seeds cost ~5 min more);
            # 16 unlabeled questions x 10 samples, drawn anew on each of the 3 seeds (20 took 1,319 s cold
            # without AMX); CoT capped at 320 tokens (at 160, a third of the samples were cut before their
            # answer); batch 4, floor 12 steps
            "cpu": CotSizes(n_train=16, n_test=100, samples=10, n_test_k=2, cot_tokens=320, lora_batch=4, min_steps=12),
            # the whole GSM8k test set (maj@5/10 on its first 200), 2,000 unlabeled questions, K = 10;
            # 100 steps of 8k tokens (~150 tokens a pair: ~3.5 epochs), 10% warmup
            "gpu": CotSizes(n_train=2000, n_test=1319, samples=10, n_test_k=200, system1_tokens=32, cot_tokens=512,
                            student_tokens=32, steps=100, tokens_per_step=8_000, warmup_share=0.1),
            # Sec. 4.4: the GSM8k train set (7,473 questions, 7,461 kept) and test set (1,319), K = 10;
            # 5,000 steps of 33k tokens, 10% warmup
            "paper": CotSizes(n_train=7465, n_test=1319, samples=10, system1_tokens=32, cot_tokens=512,
                              student_tokens=32, steps=5000, tokens_per_step=33_000, warmup_share=0.1),
        },
    },
    "s2a": {
        "sycophancy": {
            "smoke": S2aSizes(n_train=4, n_test=6, samples=2, unbiased_share=0.5, system1_tokens=12, rewrite_tokens=16,
                              answer_tokens=12, usc_tokens=12, max_steps=2, lora_batch=4, seeds=2),
            # 2 CPU cores: 200 test questions (a quarter bare; with the facts' second pass 64 are
            # unbiased), 16 unlabeled inputs with 10 samples each (the paper's own fallback size for
            # USC); batch 4, floor 12 steps (3 epochs over 16 pairs)
            "cpu": S2aSizes(n_train=16, n_test=200, samples=10, unbiased_share=0.25, lora_batch=4, min_steps=12),
            # the analog's whole train split (139 questions; SycophancyEval's answer.jsonl as DATA_SOURCE
            # gives thousands), 200 test inputs (a quarter unbiased), USC over 20 samples; three epochs
            # 24 steps of 2.5k tokens (~150 tokens a pair: ~3 epochs over what USC keeps), 10% warmup
            "gpu": S2aSizes(n_train=139, n_test=200, samples=20, unbiased_share=0.25, system1_tokens=256,
                            rewrite_tokens=256, answer_tokens=256, usc_tokens=32, steps=24, tokens_per_step=2_500,
                            warmup_share=0.1),
            # Sec. 4.2: 6,668 unlabeled inputs (TriviaQA under SycophancyEval's biased template:
            # TRIVIAQA_SOURCE), 350 biased + 50 unbiased test inputs (SycophancyEval's answer.jsonl:
            # DATA_SOURCE), USC over 20 samples; 350 steps of 23k tokens, 10% warmup
            "paper": S2aSizes(n_train=6668, n_test=400, samples=20, unbiased_share=0.125, system1_tokens=256,
                              rewrite_tokens=256, answer_tokens=256, usc_tokens=32, steps=350, tokens_per_step=23_000,
                              warmup_share=0.1),
        },
    },
}


# The test file a profile reads when the notebook's DATA_SOURCE is None: the paper's own test set
# where the repository carries it (a folder of data/, checked against data/SHA256SUMS). Coin flip's
# 1,333 questions are the RaR paper's file, which Table 1 matches in size; smoke and cpu keep the
# synthetic generator (faster, and what the committed cpu tables used).
TEST_FILES = {("rar", "coin_flip"): {"gpu": "rephrase_and_respond", "paper": "rephrase_and_respond"}}


def test_source(method: str, task: str, profile: str):
    """The default test source of a profile (`TEST_FILES`, verified), or None: the task's own default."""
    folder = TEST_FILES.get((method, task), {}).get(profile)
    if folder is None:
        return None
    from .tasks import default_source

    return default_source(folder)


def _choose(kind: str, name: str, valid) -> None:
    if name not in valid:
        raise ValueError(f"{kind}={name!r}: expected one of {sorted(valid)}")


def sizes(method: str, task: str, profile: str, **overrides) -> Sizes:
    """Sizes for a method's task under a profile; keyword overrides replace single fields."""
    _choose("PROFILE", profile, PROFILES)
    _choose("method", method, SIZES)
    _choose("task", task, SIZES[method])
    base = SIZES[method][task][profile]
    unknown = set(overrides) - {f.name for f in fields(base)}
    if unknown:
        raise ValueError(f"unknown size fields {sorted(unknown)}; {type(base).__name__} has "
                         f"{[f.name for f in fields(base)]}")
    return replace(base, **overrides).validate()


def rar_sizes(task: str, profile: str, **overrides) -> RarSizes:
    """Sizes for a RaR task (shorthand for ``sizes("rar", task, profile)``)."""
    return sizes("rar", task, profile, **overrides)


def model_for(profile: str, model: str | None = None) -> str:
    """The notebook's ``MODEL`` if given, else the profile's model."""
    _choose("PROFILE", profile, PROFILES)
    return model if model is not None else PROFILE_MODELS[profile]


def dtype_for(profile: str) -> str:
    """The weights' dtype for ``profile``: ``S2D_DTYPE`` if set, else `PROFILE_DTYPES`."""
    import os

    _choose("PROFILE", profile, PROFILES)
    dtype = os.environ.get("S2D_DTYPE") or PROFILE_DTYPES[profile]
    if dtype not in DTYPES:
        raise ValueError(f"S2D_DTYPE={dtype!r}: expected one of {list(DTYPES)}")
    return dtype


def generation_budget(method: str, task: str, profile: str) -> dict[str, int]:
    """Upper bounds on one notebook's generated tokens (every call at its cap) and calls, from the
    sizes alone: what a wall-time estimate on new hardware divides by a measured tokens/s.

    The bounds follow the notebooks' programs: System 1 and each System 2 program on the test set
    (greedy), System 2 sampled ``samples`` times on the unlabeled inputs once per seed (BSM's greedy
    teacher once), each student on the test set on each of its seeds. Real runs stop early (end of
    turn), so the tokens are a ceiling, 2-5 times the real count (see the cpu run's #Tokens columns)."""
    z = sizes(method, task, profile)
    calls: dict[str, tuple[int, int]] = {}  # stage -> (calls, tokens per call at the cap)
    if method == "rar":
        calls["test: System 1"] = (z.n_test, z.system1_tokens)
        calls["test: 1-step RaR"] = (z.n_test, z.rar1_tokens)
        calls["test: 2-step RaR"] = (2 * z.n_test, max(z.rephrase_tokens, z.answer_tokens))
        calls["train: 1-step RaR"] = (z.n_train * z.samples, z.rar1_tokens)
        calls["train: 2-step RaR"] = (z.n_train * z.samples * (1 + z.n_answer), max(z.rephrase_tokens, z.answer_tokens))
        calls["test: students"] = (2 * z.n_test, z.system1_tokens)
    elif method == "s2a":
        calls["test: System 1"] = (z.n_test, z.system1_tokens)
        calls["test: S2A"] = (z.n_test, z.rewrite_tokens + z.answer_tokens)
        calls["train: S2A"] = (z.n_train * z.samples, z.rewrite_tokens + z.answer_tokens)
        calls["train: USC"] = (z.n_train, z.usc_tokens)
        calls["test: students"] = (2 * z.n_test, z.answer_tokens)
    elif method == "bsm":
        orders = 2  # every pair is judged in both orders
        branch = z.branch_tokens + 5 * z.solve_tokens  # branch, then (at most) five criteria solved
        calls["test: System 1"] = (orders * z.n_test, z.system1_tokens)
        calls["test: CoT judge"] = (orders * z.n_test, z.cot_tokens)
        calls["test: BSM"] = (orders * z.n_test, branch)
        calls["train: BSM"] = (orders * z.n_train, branch)
        calls["test: students"] = (orders * z.n_test, z.system1_tokens)
    elif method == "cot":
        k_questions = z.n_test if z.n_test_k is None else z.n_test_k
        calls["test: System 1"] = (z.n_test, z.system1_tokens)
        calls["test: CoT (0- and few-shot)"] = (2 * (z.n_test + k_questions * (z.samples - 1)), z.cot_tokens)
        calls["train: CoT"] = (z.n_train * z.samples, z.cot_tokens)
        calls["test: students"] = (z.n_test, z.student_tokens)
    else:
        raise ValueError(f"method={method!r}: expected one of {sorted(SIZES)}")
    # every student on every seed; a sampled teacher drawn anew on every seed (BSM's is greedy: one draw)
    calls.update({k: (n * z.seeds, cap) for k, (n, cap) in calls.items()
                  if k == "test: students" or (k.startswith("train:") and method != "bsm")})
    out = {stage: n * cap for stage, (n, cap) in calls.items()}
    out["total"] = sum(out.values())
    out["calls"] = sum(n for n, _ in calls.values())
    return out


def training_bound(method: str, task: str, profile: str) -> tuple[int, int | None, int | None]:
    """(optimizer steps, rows a step, tokens a step) of one student on one seed (`Sizes.seeds` of
    them are trained) when the filter keeps every
    unlabeled input (BSM: each pair in both orders): an upper bound on a notebook's fine-tuning
    work. A budget in rows gives no tokens (they follow from the pairs); one in tokens, no rows."""
    from .lora import training_steps

    z = sizes(method, task, profile)
    pairs = z.n_train * (2 if method == "bsm" else 1)
    settings = lora_settings(z)
    if z.tokens_per_step:  # rows follow from the pairs' lengths (`lora.rows_per_step`); the budget is the steps'
        return training_steps(pairs, settings, 1), None, z.tokens_per_step
    return training_steps(pairs, settings), min(z.lora_batch, pairs), None


def lora_settings(z: Sizes, seed: int = 0):
    """The `lora.LoraSettings` a profile's sizes give a student (budget, warmup, batch, seed)."""
    from .lora import LoraSettings

    return LoraSettings(epochs=z.epochs, batch_size=z.lora_batch, max_steps=z.max_steps, min_steps=z.min_steps,
                        steps=z.steps, tokens_per_step=z.tokens_per_step, warmup_share=z.warmup_share, seed=seed)
