"""The seam below `generation.generate`: what a backend takes, what it gives back, and the helpers
every backend shares.

`generate` renders prompts (`render`), looks samples up in the cache and hands the missing ones to
a backend as `Job`s (rendered prompt, its token ids, the sample's own seed) with one `Sampling`;
the backend yields one `Generated` per job (text, generated-token count, finish reason) as each
finishes, and `generate` caches it at once. `backends.answer_confidence` asks the same backend to
`score` outputs it generated: their teacher-forced probability under the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence, Union

KINDS = ("local", "openai", "simulated")  # simulated: random answers for dry runs (`simulated`)

Prompt = Union[str, Sequence[dict]]


def render(lm, prompt: Prompt) -> str:
    """The exact text the model sees for ``prompt``: chat template plus the assistant header."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("empty prompt: a System 1 or System 2 call needs some input text")
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
        if not messages:
            raise ValueError("empty chat: a prompt needs at least one message")
    return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stop_token_ids(lm) -> set[int]:
    """The tokens that end a sample: the tokenizer's end-of-sequence and the generation config's."""
    ids = {lm.tokenizer.eos_token_id}
    eos = getattr(lm.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    return {i for i in ids if i is not None}


def answer_tokens(lm, output: str, finish_reason: str) -> list[int]:
    """The tokens a score is taken over: ``output`` re-tokenized from its text, and the
    end-of-sequence token when the sample stopped there."""
    tok = lm.tokenizer
    answer = tok(output, add_special_tokens=False)["input_ids"]
    return answer + [tok.eos_token_id] if finish_reason == "stop" else answer


@dataclass(frozen=True)
class Job:
    """One sample to generate."""

    prompt: str  # the rendered prompt (chat template applied): exactly what the model reads
    tokens: tuple[int, ...]  # its token ids (no special tokens added)
    seed: int  # the sample's own seed (`generation.sample_seed`)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by a call's jobs (temperature 0: greedy)."""

    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Generated:
    """One finished sample: ``n_tokens`` generated tokens, not counting the stop token."""

    text: str
    n_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)
    logprob: float | None = field(default=None, compare=False)  # the model's log-probability of the tokens (and the stop token), if known


class Backend(Protocol):
    """What `generate` and `answer_confidence` need of a backend."""

    kind: str
    flush_every: int | None  # commit cached samples every this many (None: every batch_size)

    def identity(self, lm) -> dict[str, str]:
        """What besides the model's fingerprint decides a sample (kind, server, served model, dtype)."""

    def run(self, lm, jobs: Sequence[Job], sampling: Sampling, batch_size: int,
            stats) -> Iterator[tuple[int, Generated]]:
        """Yield ``(job index, Generated)`` as jobs finish, in any order."""

    def score(self, lm, prompts: Sequence[str], outputs: Sequence[str], finish_reasons: Sequence[str],
              batch_size: int = 8, cache_dir=None) -> list[float] | None:
        """Per (rendered prompt, output text, finish reason), the probability the model gives the
        output teacher-forced on the prompt: the product of its next-token probabilities (temperature
        1) over `answer_tokens`. A probability, not its log: the local backend's confidence cache
        stores what torch's ``exp`` gives. None: this backend cannot score (a server that gives no
        prompt log-probabilities). ``cache_dir``: where a backend that caches its scores keeps them."""


@dataclass(frozen=True)
class Settings:
    """Which backend generates, read from the environment (see `backends`)."""

    kind: str = "local"
    base_url: str | None = None
    served_model: str | None = None  # the server's name for the model (default: the model's folder or hub id)
    served_dtype: str | None = None  # the dtype the server runs (servers rarely report it; it keys the cache)
    concurrency: int | None = None  # requests in flight at once (None: the server's default, `servers.DEFAULT_CONCURRENCY`)
    timeout: float = 600.0  # seconds per request
    max_retries: int = 5  # per request, with exponential backoff, on 429, 5xx, timeouts and lost connections

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        kind = env.get("S2D_BACKEND", "local").strip().lower() or "local"
        if kind not in KINDS:
            raise ValueError(f"S2D_BACKEND={kind!r}: expected one of {list(KINDS)}")
        try:
            settings = cls(kind, env.get("S2D_BASE_URL") or None, env.get("S2D_SERVED_MODEL") or None,
                           env.get("S2D_SERVED_DTYPE") or None, int(env["S2D_CONCURRENCY"]) if env.get("S2D_CONCURRENCY") else None,
                           float(env.get("S2D_REQUEST_TIMEOUT", 600)), int(env.get("S2D_MAX_RETRIES", 5)))
        except ValueError as err:
            raise ValueError(f"S2D_CONCURRENCY / S2D_REQUEST_TIMEOUT / S2D_MAX_RETRIES: not a number ({err})") from err
        if kind == "openai" and not settings.base_url:  # (simulated needs nothing)
            raise ValueError("S2D_BACKEND=openai needs S2D_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
        if (settings.concurrency is not None and settings.concurrency < 1) or settings.timeout <= 0 or settings.max_retries < 0:
            raise ValueError(f"S2D_CONCURRENCY={settings.concurrency} must be >= 1, S2D_REQUEST_TIMEOUT="
                             f"{settings.timeout} > 0 and S2D_MAX_RETRIES={settings.max_retries} >= 0")
        return settings


def configure(backend: str | None = None, base_url: str | None = None, served_model: str | None = None,
              served_dtype: str | None = None) -> Settings:
    """Set the backend for this process (and the notebooks it starts) by writing the environment
    variables `Settings.from_env` reads; None leaves a setting as it is. Returns the settings."""
    for var, value in (("S2D_BACKEND", backend), ("S2D_BASE_URL", base_url), ("S2D_SERVED_MODEL", served_model),
                       ("S2D_SERVED_DTYPE", served_dtype)):
        if value is not None:
            os.environ[var] = str(value)
    return Settings.from_env()
