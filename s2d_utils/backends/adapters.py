"""A student served as a LoRA adapter (`openai.OpenAIBackend.with_adapter`): how each server gets
it (`attach`), its rank against the server's limit, what to do when the server refuses it, and a
probe that the server, having listed the adapter, really applies it.

- vLLM (``--enable-lora``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) and SGLang (``--enable-lora``)
  load the adapter folder at run time under `adapter_name`, its content hash; the server reads the
  folder itself, so it must see the same path.
- llama-server loads adapters only at start (``--lora <file.gguf>``): the student is converted to
  GGUF with llama.cpp's own converter (``python -m s2d_utils.backends.adapters <adapter folder>``
  writes ``<folder>/<adapter_name>.gguf``), the server started with ``--lora <that file>
  --lora-init-without-apply``, and the client finds it by file name in ``/lora-adapters`` and
  applies it per request: every request lists every start-up adapter with its scale, the student's
  at 1 and the others at 0, base requests all at 0 (a request that lists none gets the server's
  start-up scales, which are 1 for an adapter named by ``--lora`` even under
  ``--lora-init-without-apply``: measured, the base answered as the student).

A server that lists an adapter may still answer as the base model (a request routed by the wrong
field, an adapter that failed to load in a worker): a student evaluated that way would be the base
model under the student's name. The probe scores one fixed text with the base and with the
adapter (its prompt log-probabilities, ``echo``) and calls the adapter not applied when every
value is the same to 1e-6: a trained LoRA moves them by far more. A server that cannot echo
leaves the question open (no probe, no verdict).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ADAPTER_ROUTES = ("{base}/load_lora_adapter", "{root}/load_lora_adapter")  # vLLM (/v1/...), SGLang (root)
CONVERTER = Path(__file__).resolve().parents[2] / ".llama" / "convert" / "convert_lora_to_gguf.py"  # `make llama-server`


class AdapterUnsupported(RuntimeError):
    """The server cannot serve a LoRA adapter (the student is then evaluated locally)."""


def adapter_name(adapter_dir) -> str:
    """The name a student's adapter is served under: its content hash. vLLM keys its prefix cache
    by adapter name, so two different adapters must never share one, and one adapter keeps its name."""
    from ..models import adapter_hash

    return "s2d-lora-" + adapter_hash(adapter_dir)[:16]


def attach(backend, folder: Path) -> dict:
    """What a clone of ``backend`` needs to generate with the adapter in ``folder`` (attributes:
    vLLM ``served_model``, SGLang ``lora``, llama-server ``lora_id``), loading it where the
    server loads at run time. Raises `AdapterUnsupported`, with what to do."""
    import httpx

    name, rank = adapter_name(folder), adapter_rank(folder)
    if problem := rank_problem(rank, backend.info.max_lora_rank):
        raise AdapterUnsupported(f"{backend.base_url} cannot load the LoRA adapter {folder}: {problem}; meanwhile "
                                 "the student is evaluated locally.")
    if backend.flavor == "llama.cpp":
        return {"lora_id": _llama_adapter(backend, folder, name)}
    if name not in backend.served_names():
        answers = []
        for route in ADAPTER_ROUTES:
            url = route.format(base=backend.base_url, root=server_root(backend.base_url))
            try:
                reply = httpx.post(url, json={"lora_name": name, "lora_path": str(folder)},
                                   timeout=backend.settings.timeout, headers=backend.headers())
            except httpx.HTTPError as err:
                answers.append(f"{url}: {type(err).__name__}")
                continue
            text = reply.text[:300]
            if reply.status_code == 200 or (reply.status_code == 400 and "already" in text.lower()):
                break
            answers.append(f"{url}: HTTP {reply.status_code} {text}")
        else:
            raise AdapterUnsupported(
                f"{backend.base_url} cannot load the LoRA adapter {folder} as {name!r} ({'; '.join(answers)}): "
                f"{refusal_fix(answers, rank)}; meanwhile the student is evaluated locally.")
        if backend.listed and name not in backend.served_names():
            raise AdapterUnsupported(f"{backend.base_url} accepted the LoRA adapter {name!r} but does not list it")
    # SGLang picks the adapter from lora_path (a bare name in model is the base); vLLM from model
    return {"lora": name} if backend.flavor == "sglang" else {"served_model": name}


def server_root(base_url: str) -> str:
    """The server's own address: ``base_url`` without its ``/v1`` (where its native routes live)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def startup_adapters(backend) -> list[dict]:
    """llama-server's start-up adapters (``/lora-adapters``: each one's ``id`` and ``path``); none
    where the route does not answer."""
    import httpx

    try:
        answer = httpx.get(server_root(backend.base_url) + "/lora-adapters", timeout=30, headers=backend.headers())
        listed = answer.json() if answer.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        listed = []
    return [e for e in listed if isinstance(e, dict) and isinstance(e.get("id"), int)] if isinstance(listed, list) else []


def llama_lora(ids, chosen: int | None) -> list[dict]:
    """A llama-server request's ``lora`` field: every start-up adapter in ``ids`` named, ``chosen``
    at scale 1 and every other at 0 (an empty list would leave the server's start-up scales on)."""
    named = sorted(set(ids) | ({chosen} if chosen is not None else set()))
    return [{"id": i, "scale": 1.0 if i == chosen else 0.0} for i in named]


def _llama_adapter(backend, folder: Path, name: str) -> int:
    """The id of ``folder``'s adapter among llama-server's start-up adapters (``/lora-adapters``)."""
    entries = startup_adapters(backend)
    for entry in entries:
        if Path(str(entry.get("path", ""))).name == f"{name}.gguf":
            return int(entry["id"])
    raise AdapterUnsupported(
        f"{backend.base_url} (llama-server) loads LoRA adapters only at start, and it was not started with this "
        f"student's ({len(entries)} adapters loaded): convert it with `python -m s2d_utils.backends.adapters {folder}` "
        f"(writes {folder / (name + '.gguf')}) and restart llama-server with --lora <that file> "
        "--lora-init-without-apply; meanwhile the student is evaluated locally.")


def to_gguf(folder, base=None, converter: Path = CONVERTER) -> Path:
    """The adapter in ``folder`` as a GGUF file llama-server loads (``--lora``): ``<folder>/<adapter_name>.gguf``,
    written by llama.cpp's own ``convert_lora_to_gguf.py`` (with its ``conversion`` and ``gguf-py``,
    copied to ``.llama/convert/`` by `make llama-server`) against
    ``base`` (the base model's folder in Hugging Face layout; default: the adapter's own record of it).
    Written once: the name is the adapter's content hash."""
    import subprocess
    import sys

    folder = Path(folder).resolve()
    out = folder / f"{adapter_name(folder)}.gguf"
    if out.exists():
        return out
    if base is None:
        config = json.loads((folder / "adapter_config.json").read_text())
        base = config.get("base_model_name_or_path")
    if not base or not Path(str(base)).is_dir():
        raise FileNotFoundError(f"{folder}: the base model's folder ({base!r}) is not on this machine; pass --base")
    if not converter.exists():
        raise FileNotFoundError(f"{converter} is missing: `make llama-server` copies llama.cpp's converter there")
    partial = out.with_suffix(".gguf.partial")
    proc = subprocess.run([sys.executable, str(converter), "--base", str(base), "--outtype", "f32", "--outfile",
                           str(partial), str(folder)], capture_output=True, text=True)
    if proc.returncode != 0 or not partial.exists():
        raise RuntimeError(f"convert_lora_to_gguf.py failed on {folder}:\n{proc.stderr[-3000:]}")
    partial.rename(out)
    return out


PROBE_TEXT = "Question: what is the capital of France? Answer briefly.\nThe answer is"
SAME = 1e-6  # log-probabilities closer than this count as the same


def adapter_rank(folder) -> int | None:
    """The LoRA rank in the adapter's ``adapter_config.json`` (None if it does not say)."""
    try:
        config = json.loads((Path(folder) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    r = config.get("r")
    return int(r) if isinstance(r, int) else None


def rank_problem(rank: int | None, limit: int | None) -> str | None:
    """Why a server whose largest LoRA rank is ``limit`` cannot load an adapter of ``rank``, or None."""
    if rank is not None and limit is not None and rank > limit:
        return (f"the adapter's rank is {rank} and the server takes at most {limit}: start it with "
                f"--max-lora-rank {rank} (or more)")
    return None


def refusal_fix(answers: list[str], rank: int | None) -> str:
    """What to do, from the server's answers to the load requests."""
    text = " ".join(answers)
    if re.search(r"max_lora_rank|max-lora-rank|lora rank", text, re.IGNORECASE):
        return (f"the server's largest LoRA rank is below the adapter's ({rank}): start it with --max-lora-rank "
                f"{rank or '<rank>'}")
    return ("start vLLM with --enable-lora --max-lora-rank <rank> and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "
            "(or SGLang with --enable-lora --max-lora-rank <rank> --lora-target-modules all) on a machine that sees "
            "this folder")


def _logprobs(backend, tokens: list[int]) -> list[float] | None:
    """The prompt's log-probabilities (``echo``); None where the server gives none."""
    import openai

    extra = {"lora_path": backend.lora} if getattr(backend, "lora", None) else {}
    client = backend.client.with_options(max_retries=0)
    try:
        response = client.completions.create(model=backend.served_model, prompt=tokens, max_tokens=1,
                                             temperature=0.0, logprobs=1, echo=True,
                                             **({"extra_body": extra} if extra else {}))
    except (openai.APIStatusError, openai.APIConnectionError, openai.APITimeoutError):
        return None
    logprobs = getattr(response.choices[0], "logprobs", None)
    values = [v for v in (getattr(logprobs, "token_logprobs", None) or []) if v is not None]
    # one near-certain token could read the same with and without a working adapter: a whole prompt
    return values if len(values) > 1 else None


def applied(base, student, tokenizer) -> bool | None:
    """Whether ``student`` (the server with the adapter) answers otherwise than ``base``: False when
    the probe's log-probabilities are the same, None when the server gives none to compare."""
    if not getattr(base, "token_prompts", False) or tokenizer is None:
        return None
    tokens = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    a, b = _logprobs(base, tokens), _logprobs(student, tokens)
    if a is None or b is None or len(a) != len(b):
        return None
    return any(abs(x - y) > SAME for x, y in zip(a, b))


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Convert students' LoRA adapters to GGUF for llama-server (--lora)")
    ap.add_argument("folders", nargs="+", type=Path, help="adapter folders (the table notes and warnings name them)")
    ap.add_argument("--base", type=Path, default=None, help="the base model's folder (default: the adapter's record)")
    args = ap.parse_args(argv)
    for folder in args.folders:
        print(to_gguf(folder, args.base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
