"""Run sizes per notebook and profile: ``smoke`` (CI, about a minute), ``cpu`` (default: the
embedded model on 2 CPU cores), ``paper`` (the paper's sizes; expects a GPU and a big model).

The notebooks print the sizes they ran with; the metrics manifest records them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

PROFILES = ("smoke", "cpu", "paper")


@dataclass(frozen=True)
class RarSizes:
    """Sizes for the Rephrase-and-Respond notebooks (paper Table 1)."""

    n_train: int  # unlabeled training inputs given to System 2
    n_test: int  # held-out labeled inputs
    samples: int  # self-consistency samples per input (paper: 8)
    n_answer: int  # 2-step RaR answers per sampled rephrasing (paper, coin flip: both stages sampled)
    system1_tokens: int  # max new tokens per call
    rar1_tokens: int
    rephrase_tokens: int
    answer_tokens: int
    temperature: float = 0.7  # sampling for distillation data; evaluation is greedy
    top_p: float = 0.95
    epochs: int = 3
    lora_batch: int = 8
    max_steps: int | None = None  # caps fine-tuning steps (smoke)
    batch_size: int = 128  # generation rows in flight; 128 beat 64 by ~23% on 2 CPU cores

    def as_dict(self) -> dict:
        return asdict(self)


_SMOKE = RarSizes(n_train=6, n_test=6, samples=2, n_answer=1, system1_tokens=12, rar1_tokens=16,
                  rephrase_tokens=12, answer_tokens=12, max_steps=2, lora_batch=4)

RAR = {
    "last_letter": {
        "smoke": _SMOKE,
        # the whole 200-word test split; with n_train 64 a cold `make reproduce` took 14-24 minutes (two machines)
        "cpu": RarSizes(n_train=64, n_test=200, samples=8, n_answer=1, system1_tokens=32, rar1_tokens=96,
                        rephrase_tokens=48, answer_tokens=64),
        # Sec. 4.1: 200 train / 200 test, 8 samples; token caps generous for a 70B model
        "paper": RarSizes(n_train=200, n_test=200, samples=8, n_answer=1, system1_tokens=128, rar1_tokens=512,
                          rephrase_tokens=256, answer_tokens=256),
    },
    "coin_flip": {
        "smoke": _SMOKE,
        "cpu": RarSizes(n_train=64, n_test=200, samples=8, n_answer=1, system1_tokens=64, rar1_tokens=96,
                        rephrase_tokens=64, answer_tokens=64),
        # Sec. 4.1: 20k unlabeled train, 1.33k test; both RaR stages sampled 8 times
        "paper": RarSizes(n_train=20000, n_test=1333, samples=8, n_answer=8, system1_tokens=256, rar1_tokens=512,
                          rephrase_tokens=256, answer_tokens=256),
    },
}


def rar_sizes(task: str, profile: str, **overrides) -> RarSizes:
    """Sizes for a RaR task under a profile; keyword overrides replace single fields."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE={profile!r}: expected one of {PROFILES}")
    if task not in RAR:
        raise ValueError(f"task={task!r}: expected one of {list(RAR)}")
    sizes = replace(RAR[task][profile], **overrides)
    for name, value in sizes.as_dict().items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{name}={value}: sizes must be non-negative")
    for name in ("n_train", "n_test", "samples", "n_answer", "system1_tokens", "rar1_tokens", "rephrase_tokens",
                 "answer_tokens", "epochs", "lora_batch", "batch_size"):
        if getattr(sizes, name) < 1:
            raise ValueError(f"{name}={getattr(sizes, name)}: must be at least 1")
    return sizes
