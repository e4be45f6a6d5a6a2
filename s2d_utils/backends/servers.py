"""What an OpenAI-compatible server says of itself, read from its own identity route: which server
it is, its version, the model file it serves, the dtype or quantization it runs, the context a
request may hold, how many requests it decodes at once, and whether it runs deterministically.

- SGLang: ``/get_server_info`` (its server arguments: ``model_path``, ``dtype``, ``quantization``,
  ``kv_cache_dtype``, ``context_length``, ``enable_deterministic_inference``, ``max_lora_rank``;
  and ``version``).
  Asked first: SGLang may answer ``/version`` too.
- llama.cpp's ``llama-server``: ``/props`` (``build_info``, ``model_path``, ``total_slots``, the
  slot's ``n_ctx``).
- vLLM: ``/version``, and ``root`` (the model's path) and ``max_model_len`` in ``/v1/models``;
  it reports no dtype, which ``S2D_SERVED_DTYPE`` then gives.
- Any server: the ``system_fingerprint`` of its completions (the connect-time probe's), where it
  sets one: a server whose fingerprint changes during a run changed its configuration
  (`OpenAIBackend.check_fingerprint` stops the run).

`ServerInfo.key` is what of this decides a sample, so it joins the cache key (a server restarted
with the same arguments keeps its cache; another model file, quantization or version does not);
`ServerInfo.reproducible` says whether a rerun can repeat the samples, for the table notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Callable

# requests in flight by default, per server: vLLM and SGLang batch continuously and sit idle at a
# handful (their schedulers take 256 and more); llama-server decodes one request a slot; a server
# of unknown kind gets a modest number
DEFAULT_CONCURRENCY = {"vllm": 64, "sglang": 64, "transformers": 8, "openai": 8}


@dataclass
class ServerInfo:
    flavor: str = "openai"  # vllm, sglang, llama.cpp, transformers, openai (none of these)
    version: str | None = None
    model_file: str | None = None  # the file or folder the server loaded (its last path part)
    dtype: str | None = None  # as the server reports it (SGLang's dtype, quantization and KV cache dtype)
    context: int | None = None  # tokens a request may hold (prompt + max_tokens)
    slots: int | None = None  # llama-server: requests decoded at once
    deterministic: bool | None = None  # SGLang's deterministic inference; None: not reported
    max_lora_rank: int | None = None  # the largest LoRA rank it loads, where it says (SGLang)
    fingerprint: str | None = None  # the completions' system_fingerprint, where the server sets one

    def key(self) -> dict[str, str]:
        """What decides a sample besides the weights and the request: the model file, the reported
        dtype and, for llama-server, its slots (requests decoded in one batch change the logits)."""
        out = {}
        if self.model_file:
            out["model_file"] = self.model_file
        if self.dtype:
            out["server_dtype"] = self.dtype
        if self.flavor == "llama.cpp" and self.slots:
            out["slots"] = str(self.slots)
        if self.deterministic:
            out["deterministic"] = "on"
        if self.fingerprint:
            out["system_fingerprint"] = self.fingerprint
        return out

    def concurrency(self) -> int:
        """Requests in flight when ``S2D_CONCURRENCY`` does not say: each server's own (`DEFAULT_CONCURRENCY`;
        llama-server: its slots)."""
        if self.flavor == "llama.cpp":
            return max(1, self.slots or 1)
        return DEFAULT_CONCURRENCY.get(self.flavor, 8)

    def reproducible(self, concurrency: int) -> str:
        """Whether a rerun repeats the samples, in a sentence for the table notes."""
        if self.flavor == "sglang" and self.deterministic:
            return "SGLang ran with deterministic inference on: a rerun with the same seeds should repeat the samples."
        if self.flavor == "llama.cpp" and self.slots == 1 and concurrency == 1:
            return "llama-server ran one slot, one request at a time: a rerun with the same seeds repeats the samples."
        if concurrency == 1:
            return "Requests went one at a time; a server may still vary with its own batching."
        name = {"vllm": "vLLM", "sglang": "SGLang", "llama.cpp": "llama-server"}.get(self.flavor, "The server")
        return (f"{name} decodes concurrent requests in one batch ({concurrency} in flight here), and a batch's "
                "shape changes the logits' rounding: a rerun with the same seeds can give other samples (and "
                "greedy answers can differ where two tokens tie closely), so these tables cannot be reproduced "
                "bit for bit from a server; the cache keeps the samples used here, and the local backend "
                "reproduces exactly.")


def _name(path) -> str | None:
    return PurePath(str(path)).name or None if path else None


def identify(get: Callable[[str], dict | None], served_model: str) -> ServerInfo:
    """The server's `ServerInfo`, from ``get(path)`` (the JSON of a GET at the server's root, or None)."""
    if (body := get("/get_server_info")) and ("model_path" in body or "tokenizer_path" in body):
        states = body.get("internal_states")
        ctx = body.get("context_length") or (states[0].get("context_length") if isinstance(states, list) and states
                                             and isinstance(states[0], dict) else None)
        dtype = "/".join(str(body[k]) for k in ("dtype", "quantization", "kv_cache_dtype")
                         if body.get(k) not in (None, "", "auto")) or None
        rank = body.get("max_lora_rank")
        return ServerInfo("sglang", str(body.get("version") or "") or None, _name(body.get("model_path")), dtype,
                          int(ctx) if ctx else None, None, bool(body.get("enable_deterministic_inference")),
                          int(rank) if isinstance(rank, int) else None)
    if (body := get("/props")) and "default_generation_settings" in body:
        ctx = (body.get("default_generation_settings") or {}).get("n_ctx")
        slots = body.get("total_slots")
        return ServerInfo("llama.cpp", str(body.get("build_info") or "") or None, _name(body.get("model_path")), None,
                          int(ctx) if ctx else None, int(slots) if slots else None)
    if (body := get("/version")) and body.get("version"):
        info = ServerInfo("vllm", str(body["version"]))
        for m in (get("/v1/models") or {}).get("data") or []:
            if isinstance(m, dict) and m.get("id") == served_model:
                info.context = int(m["max_model_len"]) if m.get("max_model_len") else None
                info.model_file = _name(m.get("root"))
        return info
    return ServerInfo()
