"""The seam below `generation.generate`: what a backend takes, what it gives back, and which one runs.

`generate` renders prompts, looks samples up in the cache and hands the missing ones to a
backend as `Job`s (rendered prompt, its token ids, the sample's own seed) with one `Sampling`;
the backend yields one `Generated` per job (text, generated-token count, finish reason) as each
finishes, and `generate` caches it at once. Two backends:

- ``local`` (`generation.LocalBackend`): the model in this process, through our engine
  (continuous batching, shared prefixes) or the model's own forward. Bit-for-bit reproducible.
- ``openai`` (`served.OpenAIBackend`): any OpenAI-compatible server (vLLM, SGLang, llama.cpp's
  ``llama-server``, ``transformers serve``), one ``/v1/completions`` request per sample carrying
  the sample's seed; the prompt is rendered here, with the model's own chat template.

One setting chooses: the environment (``S2D_BACKEND=openai S2D_BASE_URL=http://host:8000/v1
S2D_SERVED_MODEL=<name>``), or a notebook's ``BACKEND`` / ``BASE_URL`` / ``SERVED_MODEL`` passed to
`pipeline.start` (which writes the same variables). A distilled student (a model with a LoRA
adapter merged in) always generates locally: the server serves the base model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

KINDS = ("local", "openai")


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
    """What `generate` needs of a backend."""

    kind: str
    flush_every: int | None  # commit cached samples every this many (None: every batch_size)

    def identity(self, lm) -> dict[str, str]:
        """What besides the model's fingerprint decides a sample (kind, server, served model, dtype)."""

    def run(self, lm, jobs: Sequence[Job], sampling: Sampling, batch_size: int,
            stats) -> Iterator[tuple[int, Generated]]:
        """Yield ``(job index, Generated)`` as jobs finish, in any order."""


@dataclass(frozen=True)
class Settings:
    """Which backend generates, read from the environment (see the module docstring)."""

    kind: str = "local"
    base_url: str | None = None
    served_model: str | None = None  # the server's name for the model (default: the model's folder or hub id)
    served_dtype: str | None = None  # the dtype the server runs (servers rarely report it; it keys the cache)
    concurrency: int = 8  # requests in flight at once
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
                           env.get("S2D_SERVED_DTYPE") or None, int(env.get("S2D_CONCURRENCY", 8)),
                           float(env.get("S2D_REQUEST_TIMEOUT", 600)), int(env.get("S2D_MAX_RETRIES", 5)))
        except ValueError as err:
            raise ValueError(f"S2D_CONCURRENCY / S2D_REQUEST_TIMEOUT / S2D_MAX_RETRIES: not a number ({err})") from err
        if kind == "openai" and not settings.base_url:
            raise ValueError("S2D_BACKEND=openai needs S2D_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
        if settings.concurrency < 1 or settings.timeout <= 0 or settings.max_retries < 0:
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
