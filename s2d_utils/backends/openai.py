"""Generation through an OpenAI-compatible server (vLLM, SGLang, llama.cpp's ``llama-server``,
``transformers serve``), with the official ``openai`` client.

- The prompt is rendered here by the model's own chat template (`base.render`), so the
  server reads exactly what the local engine reads and the cache keys mean the same thing. It is
  sent as token ids where the server takes them (vLLM, SGLang, llama-server: no second BOS or
  re-tokenization); as text where it does not (``transformers serve``), and then the server's
  prompt token count must equal ours.
- One ``/v1/completions`` request per sample, carrying the sample's own seed
  (`generation.sample_seed`, reduced to 31 bits, which every server accepts). vLLM's ``n > 1``
  would give a request's samples seeds seed, seed+1, ..., which overlap across requests.
- At most ``concurrency`` requests in flight; every request has a timeout; 429, 5xx, timeouts
  and lost connections are retried with exponential backoff (the client's own retry loop).
- Generated-token counts come from the response's ``usage`` and are checked against the local
  tokenizer: a mismatch is an error, not a silent #Tokens.
- `connect` fails at once, naming the URL, when no server answers there, or when it serves
  another model (with the models it lists).
- `OpenAIBackend.score`: teacher-forced probabilities from the server's prompt log-probabilities
  (``echo``), where it gives them; None where it does not.

``transformers serve`` specifics (see NOTES): ``temperature`` alone does not turn sampling on, so
its requests carry a ``generation_config`` JSON (``do_sample``, ``top_k=0``, the stop tokens); its
seed is process-global, so sampled requests go one at a time there.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Sequence

from .base import Job, Sampling, Settings, answer_tokens, stop_token_ids
from . import adapters
from .adapters import ADAPTER_ROUTES, AdapterUnsupported, adapter_name, server_root  # noqa: F401 - re-exported
from .servers import ServerInfo, identify
from .vllm_launch import trouble
from .responses import (RETOKENIZE_SLACK, ServerError, TokenCountMismatch, TruncatedSample,  # noqa: F401 - re-exported
                        read_response, server_tokens)

SEED_BITS = 31  # llama-server takes a uint32 seed, the others int64: 31 bits fit everywhere
PROBE_TIMEOUT = 10.0  # seconds for the first start-up check: a server that is down fails in seconds


class OpenAIBackend:
    """One server, one model. Build it with `connect` (checks first, then generates)."""

    kind = "openai"
    flavor = "openai"  # set by _identify
    lora: str | None = None  # SGLang: the adapter a request names in lora_path
    lora_id: int | None = None  # llama-server: the start-up adapter a request applies (the others at scale 0)
    lora_ids: tuple[int, ...] = ()  # llama-server: its start-up adapters, each named in every request
    dtype = "unreported"  # set in __init__ (S2D_SERVED_DTYPE, else what the server reports)
    tokenizer = None  # the model's, for the adapter probe (set in __init__)
    info: ServerInfo = ServerInfo()  # what the server says of itself; `_identify` gives each backend its own
    context: int | None = None  # tokens a request may hold (prompt + max_tokens), where the server says
    flush_every = 1  # every finished sample is committed at once: a killed run resumes where it was

    def __init__(self, settings: Settings, lm, served_model: str | None = None):
        from openai import OpenAI

        import os

        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.served_model = served_model or settings.served_model or lm.path or lm.name
        self.dtype = settings.served_dtype or "unreported"
        self.api_key = os.environ.get("S2D_API_KEY", "EMPTY")
        self.client = OpenAI(base_url=self.base_url, api_key=self.api_key,
                             timeout=settings.timeout, max_retries=settings.max_retries)
        self.listed: list[str] = []
        self.tally: dict[str, int] = {}  # made here so that the adapter clones share it (`_tally`)
        self._adapted: dict[str, "OpenAIBackend"] = {}  # adapter folder -> this server generating with it
        self.version: str | None = None
        self.info = ServerInfo()  # what the server says of itself (`_identify`)
        # "vllm" (/version), "sglang" (/get_server_info), "llama.cpp" (/props), "transformers" (takes a
        # generation_config), "openai" (none of these: its own sampling defaults cannot be pinned)
        self.flavor = "openai"
        self.token_prompts = True
        self.stops = sorted(stop_token_ids(lm))
        self.tokenizer = lm.tokenizer  # for the adapter probe (`adapters.applied`)
        # server fields set on every request after the pinned ones (a benchmark's switch, e.g. llama-server's
        # cache_prompt; the notebooks set none)
        self.extra_body: dict = {}
        self._check(lm)

    # ----- start-up checks -----

    def _fail(self, what: str) -> ServerError:
        listed = ", ".join(self.listed) if self.listed else "none listed"
        return ServerError(f"{self.base_url}: {what} (served model asked for: {self.served_model!r}; the server "
                           f"lists: {listed}). Start the server (README, 'At scale'), set S2D_SERVED_MODEL to the "
                           "name it serves, or set S2D_BACKEND=local.")

    def _check(self, lm) -> None:
        import openai

        quick = self.client.with_options(timeout=PROBE_TIMEOUT, max_retries=0)
        try:
            self.listed = [m.id for m in quick.models.list().data]
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise self._fail(f"no OpenAI-compatible server answers ({type(err).__name__}: {err})") from err
        except openai.APIStatusError:  # a server that cannot list (transformers serve without a hub cache
            self.listed = []  # folder answers 500): the probe below decides whether it serves the model
        if self.listed and self.served_model not in self.listed:
            raise self._fail("the server does not serve this model")
        self._identify()
        # a server's first generation may take a while (loading, warming up): the probes get the
        # request timeout; a server that is down has failed above, within PROBE_TIMEOUT
        quick = self.client.with_options(max_retries=0)
        probe = lm.tokenizer("Hi", add_special_tokens=False)["input_ids"][:4] or [0]
        try:
            first = quick.completions.create(model=self.served_model, prompt=probe, max_tokens=1, temperature=0.0)
        except openai.APIStatusError as err:
            if err.status_code not in (400, 422):
                raise self._fail(f"a 1-token probe answered HTTP {err.status_code}: {_detail(err)}") from err
            self.token_prompts = False  # the server takes text prompts only
            try:
                first = quick.completions.create(model=self.served_model, prompt="Hi", max_tokens=1, temperature=0.0)
            except openai.APIStatusError as err2:
                raise self._fail(f"a 1-token probe answered HTTP {err2.status_code}: {_detail(err2)}") from err2
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise self._fail(f"a 1-token probe failed ({type(err).__name__}: {err})") from err
        self.info.fingerprint = _fingerprint(first)  # keys the cache where the server sets one
        if self.version is None and not self.token_prompts:
            try:  # transformers serve takes a generation_config (and rejects fields it does not know)
                quick.completions.create(model=self.served_model, prompt="Hi", max_tokens=1, temperature=0.0,
                                         extra_body={"generation_config": json.dumps({"do_sample": False})})
                self.flavor = self.info.flavor = "transformers"
            except openai.APIStatusError:
                pass

    def headers(self) -> dict[str, str]:
        """The API key on every route, the ones outside the openai client included."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def _get(self, path: str):
        """GET ``path`` at the server's root: its JSON, or None."""
        import httpx

        try:
            answer = httpx.get(server_root(self.base_url) + path, timeout=PROBE_TIMEOUT, headers=self.headers())
            body = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def _identify(self) -> None:
        """Which server this is, its version, model file, dtype, context and slots (`servers.identify`)."""
        self.info = identify(self._get, self.served_model)
        self.flavor, self.version, self.context = self.info.flavor, self.info.version, self.info.context
        if self.dtype == "unreported" and self.info.dtype:
            self.dtype = self.info.dtype
        if self.flavor == "llama.cpp":
            self.lora_ids = tuple(int(e["id"]) for e in adapters.startup_adapters(self))

    def identity(self, lm=None) -> dict[str, str]:
        """What decides a sample besides the weights (the cache key): server and version, served
        model, dtype, and what the server says of its model file and batching (`ServerInfo.key`)."""
        server = self.flavor + (f" {self.version}" if self.version else "")
        return {"kind": self.kind, "server": server, "served_model": self.served_model, "dtype": self.dtype,
                **self.info.key()}

    def _tally(self) -> dict[str, int]:
        """This run's samples counted from the server's ids ("exact") or re-encoded ("text"); a
        backend built without __init__ gets its own here."""
        return self.__dict__.setdefault("tally", {})

    def counting(self) -> str:
        """How this run's #Tokens were counted, for the table notes: from the server's generated
        token ids, or re-encoded from the text it returned (within `RETOKENIZE_SLACK` of its count)."""
        tally = self._tally()
        exact, text = tally.get("exact", 0), tally.get("text", 0)
        if not exact + text:
            return ""
        if not text:
            return f"#Tokens: the server's generated token ids, for all {exact} samples generated in this run."
        return (f"#Tokens: the server's generated token ids for {exact} of the {exact + text} samples generated in this "
                f"run; the other {text} re-encoded from the text it returned (it gave no ids that matched its count), "
                f"checked to be within 2 tokens or {RETOKENIZE_SLACK:.0%} of the server's count.")

    def reproducible(self) -> str:
        """Whether a rerun repeats these samples, for the table notes (`ServerInfo.reproducible`)."""
        return self.info.reproducible(self.concurrency(Sampling(0.0, 1.0, 1)))

    # ----- students as LoRA adapters -----

    def with_adapter(self, adapter_dir) -> "OpenAIBackend":
        """This server, generating with the LoRA adapter in ``adapter_dir`` on its base model
        (`adapters.attach`: loaded at run time by vLLM and SGLang, found among llama-server's
        start-up adapters), checked to be applied (`adapters.applied`). Raises `AdapterUnsupported`,
        with what to do, where the server cannot serve it."""
        import copy
        from pathlib import Path

        folder = Path(adapter_dir).resolve()
        if str(folder) in self._adapted:
            return self._adapted[str(folder)]
        clone = copy.copy(self)
        clone.__dict__.update(adapters.attach(self, folder))
        if adapters.applied(self, clone, self.tokenizer) is False:
            raise AdapterUnsupported(f"{self.base_url} lists the LoRA adapter {adapter_name(folder)!r} but answers "
                                     "with it exactly as the base model does (a probe's log-probabilities are the "
                                     "same): it does not apply it; the student is evaluated locally.")
        self._adapted[str(folder)] = clone
        return clone

    def served_names(self) -> list[str]:
        """The model names the server lists (``/v1/models``); none where it cannot list them."""
        try:
            return [m.id for m in self.client.with_options(timeout=PROBE_TIMEOUT, max_retries=0).models.list().data]
        except Exception:  # noqa: BLE001 - a server that cannot list (transformers serve): none known
            return []

    # ----- generation -----

    def request_for(self, job: Job, sampling: Sampling) -> dict:
        """One request with every sampling parameter pinned, so no server default reaches a sample:
        temperature and top-p as the local engine applies them (top-k off, min-p 0, no penalties), in
        each server's own names; llama-server also gets its sampler chain (temperature, then top-p,
        as transformers orders them) and no prompt cache (it can change results)."""
        greedy = sampling.temperature == 0
        kw = dict(model=self.served_model, prompt=list(job.tokens) if self.token_prompts else job.prompt,
                  max_tokens=sampling.max_new_tokens, temperature=float(sampling.temperature),
                  top_p=1.0 if greedy else float(sampling.top_p), seed=job.seed & ((1 << SEED_BITS) - 1))
        extra: dict = {}
        if self.flavor == "transformers":
            config = {"do_sample": not greedy, "max_new_tokens": sampling.max_new_tokens, "eos_token_id": self.stops,
                      "repetition_penalty": 1.0}
            if not greedy:
                config.update(temperature=float(sampling.temperature), top_p=float(sampling.top_p), top_k=0)
            extra["generation_config"] = json.dumps(config)
        else:
            kw.update(presence_penalty=0.0, frequency_penalty=0.0)
        if self.flavor in ("vllm", "sglang"):
            extra.update(stop_token_ids=self.stops, top_k=-1, min_p=0.0, repetition_penalty=1.0)
        if self.flavor == "vllm":  # the generated ids and each one's log-probability (raw logits): exact #Tokens
            extra["return_token_ids"] = True
            kw["logprobs"] = 0
        if self.flavor == "sglang" and self.lora:
            extra["lora_path"] = self.lora
        elif self.flavor == "llama.cpp":
            # every start-up adapter named, the student's at 1, the others at 0 (`adapters.llama_lora`)
            extra["lora"] = adapters.llama_lora(self.lora_ids, self.lora_id)
            extra.update(top_k=0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, repeat_last_n=0, dry_multiplier=0.0,
                         xtc_probability=0.0, mirostat=0, top_n_sigma=-1.0, samplers=["temperature", "top_p"],
                         cache_prompt=False, n_probs=1)  # n_probs: each generated token's id and log-probability
        extra.update(self.extra_body)
        if extra:
            kw["extra_body"] = extra
        return kw

    def check_context(self, job: Job, sampling: Sampling) -> None:
        """Refuse a request the server's context cannot hold (it would cut the sample short)."""
        need = len(job.tokens) + sampling.max_new_tokens
        if self.context is not None and need > self.context:
            fix = {"llama.cpp": "start llama-server with -c <slots x tokens> --kv-unified, or fewer slots (-np)",
                   "vllm": "start vLLM with a larger --max-model-len",
                   "sglang": "start SGLang with a larger --context-length"}.get(self.flavor, "give it a larger context")
            raise ServerError(f"{self.base_url}: a request needs {need} tokens (prompt {len(job.tokens)} + max_tokens "
                              f"{sampling.max_new_tokens}) and the server's context holds {self.context}: {fix}")

    def _one(self, job: Job, sampling: Sampling):
        """One request (in a worker thread); the response is read in the caller's thread, where
        the tokenizer is used (a Rust tokenizer shared across threads can raise "Already borrowed")."""
        return self._create(**self.request_for(job, sampling))

    def _create(self, **request):
        """One ``/v1/completions`` request; its failure, after the client's retries, a `ServerError`."""
        import openai

        try:
            return self.client.completions.create(**request)
        except openai.APIStatusError as err:
            failed = f" The server failed. {trouble(self.base_url)}" if err.status_code >= 500 else ""
            raise ServerError(f"{self.base_url}: HTTP {err.status_code} after {self.settings.max_retries} retries: "
                              f"{_detail(err)}{failed}") from err
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise ServerError(f"{self.base_url}: {type(err).__name__} after {self.settings.max_retries} retries "
                              f"(timeout {self.settings.timeout:g} s per request): {err}. The server went away or "
                              f"stopped answering. {trouble(self.base_url)}") from err

    def check_fingerprint(self, response) -> None:
        """A response whose ``system_fingerprint`` is not the one the server gave at connect time
        comes from a server whose configuration changed under the run (restarted with other
        arguments, another build): its samples would be cached under a key that no longer says
        what made them, so the run stops."""
        now = _fingerprint(response)
        if now is not None and now != self.info.fingerprint:
            raise ServerError(f"{self.base_url}: the server's system_fingerprint changed during the run "
                              f"({self.info.fingerprint!r} at connect time, {now!r} now): its configuration changed, "
                              "so the cache key no longer names what made these samples. Rerun the notebook from "
                              "the top (it reconnects and keys the new samples apart; the cached ones stay).")

    def concurrency(self, sampling: Sampling) -> int:
        if self.flavor == "transformers" and sampling.temperature > 0:
            return 1  # its seed is process-global: concurrent sampled requests would share one RNG
        if self.flavor == "llama.cpp" and sampling.temperature > 0:
            return 1  # parallel slots decode in one batch, which changes the logits: samples then differ run to run
        return self.settings.concurrency or self.info.concurrency()

    def run(self, lm, jobs: Sequence[Job], sampling: Sampling, batch_size: int = 0, stats=None):
        """Yield ``(job index, Generated)`` as requests finish. On a failure, stops sending, lets
        the requests in flight finish (and yields them: they get cached), then raises."""
        width = self.concurrency(sampling)
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="s2d-request") as pool:
            pending = {}
            queue = iter(range(len(jobs)))
            while True:
                while error is None and len(pending) < width:
                    j = next(queue, None)
                    if j is None:
                        break
                    try:
                        self.check_context(jobs[j], sampling)
                    except ServerError as err:
                        error = err
                        break
                    pending[pool.submit(self._one, jobs[j], sampling)] = j
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    j = pending.pop(future)
                    try:
                        response = future.result()
                        self.check_fingerprint(response)
                        result = read_response(lm, jobs[j], sampling, response, self._tally())
                    except BaseException as err:  # noqa: BLE001 - re-raised below, after the others finish
                        error = error or err
                        continue
                    yield j, result
        if error is not None:
            raise error


    # ----- scoring -----

    def score(self, lm, prompts: Sequence[str], outputs: Sequence[str], finish_reasons: Sequence[str],
              batch_size: int = 0, cache_dir=None) -> list[float] | None:
        """Teacher-forced probabilities (`base.Backend.score`) from the server's prompt log-probabilities,
        as lm-evaluation-harness scores a continuation: one request per pair, the prompt's and the
        answer's token ids as the prompt, ``echo`` with ``logprobs=1`` and one generated token, ignored.

        None where the server cannot: it takes text prompts only (it would tokenize the pair itself,
        not necessarily into our tokens), refuses the request (HTTP 400 / 422: no ``echo``), reads
        another number of prompt tokens, or leaves an answer token without its log-probability.
        One request at a time, not cached; ``batch_size`` and ``cache_dir`` are not used.
        """
        import math

        if not self.token_prompts or self.flavor == "llama.cpp":  # llama-server: "Only no echo is supported"
            return None
        out = []
        for text, output, reason in zip(prompts, outputs, finish_reasons):
            prompt = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            answer = answer_tokens(lm, output, reason)
            if not answer:
                out.append(1.0)
                continue
            try:
                response = self._create(model=self.served_model, prompt=prompt + answer, max_tokens=1, temperature=0.0,
                                        echo=True, logprobs=1)
            except ServerError as err:
                if getattr(err.__cause__, "status_code", None) in (400, 422):
                    return None
                raise
            read = getattr(response.usage, "prompt_tokens", None)
            logprobs = getattr(response.choices[0], "logprobs", None)
            values = list(getattr(logprobs, "token_logprobs", None) or [])[len(prompt) : len(prompt) + len(answer)]
            if read not in (None, len(prompt) + len(answer)) or len(values) < len(answer) or None in values:
                return None
            out.append(math.exp(sum(values)))
        return out


def _fingerprint(response) -> str | None:
    value = getattr(response, "system_fingerprint", None)
    return str(value) if value else None


def _detail(err) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("message") or body.get("error") or body)
    return str(body or err)


_BACKENDS: dict[tuple, OpenAIBackend] = {}


def connect(settings: Settings, lm) -> OpenAIBackend:
    """The backend for ``settings`` and ``lm``, checked once per process (then reused)."""
    key = (settings, lm.path)
    if key not in _BACKENDS:
        started = time.perf_counter()
        _BACKENDS[key] = OpenAIBackend(settings, lm)
        _BACKENDS[key].connect_seconds = time.perf_counter() - started
    return _BACKENDS[key]
