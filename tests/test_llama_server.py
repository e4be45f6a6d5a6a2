"""The served path against a real third-party server: llama.cpp's ``llama-server`` (built by
``make llama-server``) on the embedded smoke model's own GGUF file (SmolLM2's Q4_1).

Checks: the client tells the server from its ``/props`` (build, context); every sampling parameter
the client pins is the one the server used (its ``/slots`` report); sampled runs with the same
seeds are identical run to run; token counts agree with the local tokenizer exactly; a request the
context cannot hold is refused before it is sent; how often greedy completions equal the local
engine's is measured and printed (they need not: llama.cpp multiplies the quantized weights, the
local engine their dequantized values). Skipped when the binary is not built, unless
``S2D_REQUIRE_LLAMA=1`` (``make test-llama`` builds it and sets that).
"""

from __future__ import annotations

import os

import pytest

from s2d_utils import paths
from s2d_utils.backends import LOCAL, Sampling, Settings
from s2d_utils.backends.openai import ServerError, connect
from s2d_utils.backends.serve import LlamaServer
from s2d_utils.generation import generate

pytestmark = pytest.mark.llama

BINARY = paths.ROOT / ".llama" / "bin" / "llama-server"
ALIAS = "smollm2-135m-instruct-q4_1"
PROMPTS = ["What is 2+2?", "Name a color.", "Say hello.", "Name a fruit.", "Count to three.", "Is the sky blue?"]

if not BINARY.exists():
    if os.environ.get("S2D_REQUIRE_LLAMA") == "1":
        raise RuntimeError(f"{BINARY} is missing: `make llama-server` builds it")
    pytest.skip(f"{BINARY} is not built (`make llama-server`)", allow_module_level=True)


def _gguf():
    from s2d_utils.embedded import DEFAULT_MODEL, EMBEDDED, _part_paths

    (path,) = _part_paths(EMBEDDED[DEFAULT_MODEL])
    return path


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    srv = LlamaServer(_gguf(), tmp_path_factory.mktemp("llama"), ALIAS, context=4096, slots=4)
    try:
        yield srv.start()
    finally:
        srv.stop()


def _settings(url: str) -> Settings:
    return Settings("openai", url, served_model=ALIAS, timeout=60.0, max_retries=1, concurrency=4)


def test_the_client_knows_llama_server_and_its_context(smollm, llama):
    backend = connect(_settings(llama.url), smollm)
    assert backend.flavor == "llama.cpp" and backend.version and backend.context == 4096
    assert backend.identity()["server"].startswith("llama.cpp ")


def test_the_pinned_sampling_parameters_are_the_ones_the_server_used(smollm, llama):
    import httpx

    backend = connect(_settings(llama.url), smollm)
    generate(smollm, PROMPTS[:1], n=1, temperature=0.7, top_p=0.9, max_new_tokens=8, seed=3, progress=False,
             backend=backend, cache=None)
    slots = httpx.get(llama.url.removesuffix("/v1") + "/slots", timeout=10).json()
    used = next(s["params"] for s in slots if s.get("params", {}).get("n_predict") == 8 or s.get("id_task", -1) >= 0)
    assert used["top_k"] == 0 and used["min_p"] == 0.0 and used["repeat_penalty"] == 1.0
    assert used["presence_penalty"] == 0.0 and used["frequency_penalty"] == 0.0 and used["dry_multiplier"] == 0.0
    assert used["samplers"] == ["temperature", "top_p"] and used["temperature"] == pytest.approx(0.7)
    assert used["top_p"] == pytest.approx(0.9)


def test_sampled_runs_repeat_and_counts_are_exact(smollm, llama):
    # the client sends llama-server's sampled requests one at a time: measured here, 4 parallel
    # slots batched together changed 2 of 3 samples of a prompt between two identical runs
    backend = connect(_settings(llama.url), smollm)
    assert backend.concurrency(Sampling(0.8, 0.95, 12)) == 1
    kw = dict(n=3, temperature=0.8, top_p=0.95, max_new_tokens=12, seed=11, progress=False, backend=backend, cache=None)
    first = generate(smollm, PROMPTS, **kw)
    second = generate(smollm, PROMPTS, **kw)
    assert [[s.text for s in g] for g in first] == [[s.text for s in g] for g in second]
    for group in first:  # read_response checked each count against the local tokenizer; here: exact
        for s in group:
            local = len(smollm.tokenizer(s.text, add_special_tokens=False)["input_ids"])
            assert s.n_tokens == local or (s.finish_reason == "length" and s.n_tokens == 12)


def test_a_prompt_the_context_cannot_hold_is_refused(smollm, tmp_path):
    with LlamaServer(_gguf(), tmp_path, ALIAS, context=256, slots=1) as small:  # llama.cpp's smallest context
        backend = connect(_settings(small.url), smollm)
        assert backend.context == 256
        with pytest.raises(ServerError, match=r"holds 256: start llama-server with -c"):
            generate(smollm, ["Write a long story. " * 60], n=1, temperature=0.0, max_new_tokens=64, seed=0,
                     progress=False, backend=backend, cache=None)


def test_how_often_greedy_equals_the_local_engine(smollm, llama, capsys):
    backend = connect(_settings(llama.url), smollm)
    served = generate(smollm, PROMPTS, n=1, temperature=0.0, max_new_tokens=16, seed=0, progress=False,
                      backend=backend, cache=None)
    local = generate(smollm, PROMPTS, n=1, temperature=0.0, max_new_tokens=16, seed=0, progress=False,
                     backend=LOCAL, cache=None)
    same = sum(a[0].text == b[0].text for a, b in zip(served, local))
    with capsys.disabled():
        print(f"\nllama-server greedy == local engine on {same} of {len(PROMPTS)} prompts (16 tokens each)")
    assert all(g[0].text.strip() for g in served)  # it answered every prompt
