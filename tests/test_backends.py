"""The backend seam without a server: settings, cache keys per backend identity, the served
client's reading of token counts, lazy weights, and whole-file weight hashes."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import pytest

from s2d_utils import generation, models
from s2d_utils.backends import Job, Sampling, Settings
from s2d_utils.generation import LOCAL, backend_for, generate, model_key
from s2d_utils.served import ServerError, TokenCountMismatch, read_response


def test_settings_come_from_the_environment_and_name_the_variable_at_fault(monkeypatch):
    for var in ("S2D_BACKEND", "S2D_BASE_URL", "S2D_SERVED_MODEL", "S2D_CONCURRENCY"):
        monkeypatch.delenv(var, raising=False)
    assert Settings.from_env().kind == "local"
    monkeypatch.setenv("S2D_BACKEND", "vllm")
    with pytest.raises(ValueError, match="S2D_BACKEND='vllm': expected one of"):
        Settings.from_env()
    monkeypatch.setenv("S2D_BACKEND", "openai")
    with pytest.raises(ValueError, match="needs S2D_BASE_URL"):
        Settings.from_env()
    monkeypatch.setenv("S2D_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("S2D_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="S2D_CONCURRENCY=0 must be >= 1"):
        Settings.from_env()


def test_the_cache_key_carries_the_backend_identity(tiny_lm):
    fp32 = model_key(tiny_lm, LOCAL.identity(tiny_lm))
    assert fp32 == tiny_lm.fingerprint  # the key every existing cache was written with
    bf16 = model_key(tiny_lm, {"kind": "local", "dtype": "bfloat16"})
    served = model_key(tiny_lm, {"kind": "openai", "server": "vllm 0.31.0", "served_model": "m", "dtype": "bfloat16"})
    assert len({fp32, bf16, served}) == 3


def test_a_distilled_student_follows_the_setting_to_the_server(tiny_lm, monkeypatch):
    """Local setting: every model, student or not, generates here. Served: a student goes to the
    server too (as its LoRA adapter; tests/test_served.py), so a dead server fails for it as well."""
    student = dataclasses.replace(tiny_lm, adapter="results/checkpoints/some-adapter")
    monkeypatch.setenv("S2D_BACKEND", "local")
    assert backend_for(student) is LOCAL and backend_for(tiny_lm) is LOCAL
    monkeypatch.setenv("S2D_BACKEND", "openai")
    monkeypatch.setenv("S2D_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: connecting fails
    for lm in (student, tiny_lm):
        with pytest.raises(ServerError, match=r"http://127\.0\.0\.1:9/v1: no OpenAI-compatible server answers"):
            backend_for(lm)


def _response(text, reason, completion, prompt=None):
    return SimpleNamespace(choices=[SimpleNamespace(text=text, finish_reason=reason)],
                           usage=SimpleNamespace(completion_tokens=completion, prompt_tokens=prompt))


def test_token_counts_from_usage_are_checked_against_the_local_tokenizer(tiny_lm):
    text = "The answer is 4."
    n = len(tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    job = Job("<rendered>", (1, 2, 3), 7)
    cap = Sampling(0.0, 1.0, 64)
    # a server that counts the end-of-turn token (transformers serve, vLLM) and one that does not
    assert read_response(tiny_lm, job, cap, _response(text, "stop", n + 1, 3)) == generation.Generated(text, n, "stop")
    assert read_response(tiny_lm, job, cap, _response(text, "stop", n)) == generation.Generated(text, n, "stop")
    # the cap reached: "length"; transformers serve also says "length" when the stop token was the last allowed
    assert read_response(tiny_lm, job, Sampling(0.0, 1.0, n), _response(text, "length", n)).finish_reason == "length"
    assert read_response(tiny_lm, job, Sampling(0.0, 1.0, n + 1), _response(text, "length", n + 1)) == \
        generation.Generated(text, n, "stop")
    # sampled ids that are not the tokenizer's own split of the text: the server's count stands, within slack
    assert read_response(tiny_lm, job, cap, _response(text, "stop", n + 2)) == generation.Generated(text, n + 1, "stop")
    with pytest.raises(TokenCountMismatch, match=f"the server counted {n + 5} generated tokens"):
        read_response(tiny_lm, job, cap, _response(text, "stop", n + 5))
    with pytest.raises(TokenCountMismatch, match="read the prompt as 4 tokens, the local tokenizer as 3"):
        read_response(tiny_lm, job, cap, _response(text, "stop", n, 4))
    with pytest.raises(TokenCountMismatch, match="returned no usage"):
        read_response(tiny_lm, job, cap, SimpleNamespace(choices=[SimpleNamespace(text=text, finish_reason="stop")],
                                                         usage=None))


def test_weights_load_lazily_and_give_the_same_samples(tiny_model_dir, tiny_lm):
    lazy = models.load_model(str(tiny_model_dir), device="cpu", weights=False)
    assert not lazy.loaded and lazy.fingerprint == tiny_lm.fingerprint and lazy.dtype == "float32"
    assert generation.context_window(lazy) == 512 and generation.stop_token_ids(lazy) == generation.stop_token_ids(tiny_lm)
    kw = dict(max_new_tokens=5, cache=None, progress=False)
    assert generate(lazy, ["Hello there"], **kw) == generate(tiny_lm, ["Hello there"], **kw)
    assert lazy.loaded


def test_weight_hashes_read_every_byte_and_are_computed_once_per_file_version(tmp_path, monkeypatch):
    monkeypatch.setattr(models.paths, "MODELS", tmp_path / "models")
    a, b = tmp_path / "a", tmp_path / "b"
    blob = bytearray(3 << 20)  # 3 MiB: the old hash read only the first and last MiB
    for folder, middle in ((a, 0), (b, 1)):
        folder.mkdir()
        blob[len(blob) // 2] = middle
        (folder / "model.safetensors").write_bytes(bytes(blob))
    assert models.weights_hash(a) != models.weights_hash(b)
    calls = []
    real = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p, *k: calls.append(p) or real(p, *k))
    first = models.weights_hash(a)
    assert calls == [] and models.weights_hash(a) == first  # remembered by path, size and mtime
    (a / "model.safetensors").write_bytes(bytes(blob))  # rewritten in place (a new fine-tune): hashed again
    st = (a / "model.safetensors").stat()
    os.utime(a / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # whatever the clock's grain
    assert models.weights_hash(a) == models.weights_hash(b) and len(calls) == 1


def test_the_preflight_names_a_dead_server_in_seconds(monkeypatch):
    import socket

    from s2d_utils import preflight

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("S2D_BACKEND", "openai")
    monkeypatch.setenv("S2D_BASE_URL", f"http://127.0.0.1:{port}/v1")
    (finding,) = preflight.check_backend()
    assert not finding.ok and f"127.0.0.1:{port}/v1/models" in finding.detail and "S2D_BACKEND" in finding.fix
    monkeypatch.setenv("S2D_BACKEND", "local")
    assert preflight.check_backend()[0].ok
