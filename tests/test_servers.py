"""What a server says of itself (`backends.servers`): read from each server's identity route into
the cache key, the default concurrency and the reproducibility note; the adapter checks' rules
(`backends.adapters`). Pure functions on recorded answers: the live servers are in test_served
and test_llama_server."""

import pytest

from s2d_utils.backends import adapters, servers


def _get(routes):
    return lambda path: routes.get(path)


def test_sglang_reports_its_model_dtype_context_determinism_and_rank_limit():
    info = servers.identify(_get({"/get_server_info": {
        "model_path": "/models/Qwen2.5-7B-Instruct", "dtype": "bfloat16", "quantization": None,
        "kv_cache_dtype": "auto", "context_length": 32768, "enable_deterministic_inference": True,
        "max_lora_rank": 16, "version": "0.5.3"}, "/version": {"version": "0.5.3"}}), "qwen")
    assert (info.flavor, info.version, info.model_file, info.dtype, info.context) == (
        "sglang", "0.5.3", "Qwen2.5-7B-Instruct", "bfloat16", 32768)
    assert info.deterministic and info.max_lora_rank == 16
    assert info.key() == {"model_file": "Qwen2.5-7B-Instruct", "server_dtype": "bfloat16", "deterministic": "on"}
    assert "should repeat" in info.reproducible(64) and info.concurrency() == 64


def test_llama_server_reports_its_file_slots_and_context():
    info = servers.identify(_get({"/props": {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4,
                                            "model_path": "/m/smollm2-135m-instruct-q8_0.gguf",
                                            "build_info": "b1-abc"}}), "x")
    assert (info.flavor, info.version, info.model_file, info.context, info.slots) == (
        "llama.cpp", "b1-abc", "smollm2-135m-instruct-q8_0.gguf", 4096, 4)
    assert info.key() == {"model_file": "smollm2-135m-instruct-q8_0.gguf", "slots": "4"}  # slots change the logits
    assert info.concurrency() == 4 and "cannot be reproduced bit for bit" in info.reproducible(4)
    one = servers.identify(_get({"/props": {"default_generation_settings": {}, "total_slots": 1}}), "x")
    assert "repeats the samples" in one.reproducible(1)


def test_vllm_reports_its_version_model_root_and_length_and_batches_wide():
    info = servers.identify(_get({"/version": {"version": "0.11.0"}, "/v1/models": {"data": [
        {"id": "other", "root": "/o", "max_model_len": 1}, {"id": "qwen", "root": "/models/Qwen", "max_model_len": 8192}]}}),
        "qwen")
    assert (info.flavor, info.version, info.model_file, info.context, info.dtype) == ("vllm", "0.11.0", "Qwen", 8192, None)
    assert info.concurrency() == 64 and "vLLM decodes concurrent requests in one batch" in info.reproducible(64)
    unknown = servers.identify(_get({}), "qwen")
    assert unknown.flavor == "openai" and unknown.key() == {} and unknown.concurrency() == 8


def test_an_explicit_concurrency_wins_and_a_bad_one_is_refused(monkeypatch):
    from s2d_utils.backends import Settings

    monkeypatch.setenv("S2D_BACKEND", "openai")
    monkeypatch.setenv("S2D_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.delenv("S2D_CONCURRENCY", raising=False)
    assert Settings.from_env().concurrency is None  # the server's own default
    monkeypatch.setenv("S2D_CONCURRENCY", "16")
    assert Settings.from_env().concurrency == 16
    monkeypatch.setenv("S2D_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="S2D_CONCURRENCY=0 must be >= 1"):
        Settings.from_env()


def test_rank_rules(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 16, "lora_alpha": 32}')
    assert adapters.adapter_rank(tmp_path) == 16 and adapters.adapter_rank(tmp_path / "none") is None
    assert adapters.rank_problem(16, 8) == ("the adapter's rank is 16 and the server takes at most 8: start it with "
                                            "--max-lora-rank 16 (or more)")
    assert adapters.rank_problem(16, 16) is None and adapters.rank_problem(16, None) is None
    assert "--max-lora-rank 16" in adapters.refusal_fix(["HTTP 400 LoRA rank 16 is greater than max_lora_rank 8."], 16)
    assert "--enable-lora" in adapters.refusal_fix(["HTTP 404 Not Found"], 16)
