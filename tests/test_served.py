"""Generation through a real OpenAI-compatible server: `transformers serve` on the embedded smoke
model (its converted folder), in a subprocess on a free port of 127.0.0.1, killed at the end.

Checks what issue 20 asks of the served path: greedy completions identical to the local engine on
the same weights; two sampled runs identical; a server killed mid-run and restarted resumes
without regenerating what was cached; a dead server or a wrong model name fails at once, naming
the URL. Every request has a timeout and every wait a deadline: nothing here can hang.
Deselect with ``-m "not served"``.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from s2d_utils import pipeline
from s2d_utils.backends import Settings
from s2d_utils.cache import GenerationCache
from s2d_utils.generation import LOCAL, generate
from s2d_utils.served import ServerError, TransformersServe, connect

pytestmark = pytest.mark.served

PROMPTS = ["What is 2+2?", "Name a color.", "Say hello.", "Name a fruit."]
GREEDY = dict(max_new_tokens=6, progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm, tmp_path_factory):
    srv = TransformersServe(Path(smollm.path), tmp_path_factory.mktemp("serve"))
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture
def use_server(server, monkeypatch):
    """The one setting: S2D_BACKEND=openai and the server's URL (served model: the model's folder)."""
    monkeypatch.setenv("S2D_BACKEND", "openai")
    monkeypatch.setenv("S2D_BASE_URL", server.url)
    monkeypatch.delenv("S2D_SERVED_MODEL", raising=False)
    monkeypatch.setenv("S2D_SERVED_DTYPE", "float32")
    monkeypatch.setenv("S2D_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("S2D_MAX_RETRIES", "1")
    return server


def test_greedy_completions_through_the_server_equal_the_local_engine(smollm, use_server, tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    # 12 tokens: "What is 2+2?" ends with its end-of-turn token as the 12th, which transformers serve
    # reports as "length" with 12 tokens; the client must read it as our "stop" after 11
    kw = dict(max_new_tokens=12, progress=False)
    local = generate(smollm, PROMPTS[:2], cache=cache, backend=LOCAL, **kw)
    served = generate(smollm, PROMPTS[:2], cache=cache, **kw)  # the backend the environment chooses
    assert served.stats.backend == "openai"
    assert served.stats.computed == 2, "served samples must not reuse the local ones (the backend keys the cache)"
    assert served == local  # text, generated-token count and finish reason, sample by sample
    assert [(c.n_tokens, c.finish_reason) for (c,) in served] == [(11, "stop"), (12, "length")]


def test_two_sampled_runs_through_the_server_are_identical(smollm, use_server, tmp_path):
    kw = dict(n=2, temperature=1.0, top_p=0.95, max_new_tokens=5, seed=11, progress=False)
    first = generate(smollm, PROMPTS[1:2], cache=GenerationCache(tmp_path / "a.sqlite"), **kw)
    second = generate(smollm, PROMPTS[1:2], cache=GenerationCache(tmp_path / "b.sqlite"), **kw)
    assert first.stats.computed == second.stats.computed == 2
    assert first == second


def test_a_wrong_model_name_or_a_dead_server_fails_at_once_naming_the_url(smollm, server):
    t0 = time.perf_counter()
    wrong = Settings("openai", server.url, "someone/another-model", "float32", timeout=30, max_retries=0)
    with pytest.raises(ServerError, match=rf"127\.0\.0\.1:{server.port}/v1: .*another-model"):
        connect(wrong, smollm)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match=rf"{dead}: no OpenAI-compatible server answers"):
        connect(Settings("openai", dead, None, "float32", timeout=30, max_retries=3), smollm)
    assert time.perf_counter() - t0 < 30


def test_a_notebook_pointed_at_a_dead_server_fails_in_its_first_cell(monkeypatch):
    from s2d_utils.tasks import coin_flip

    for var in ("S2D_BACKEND", "S2D_BASE_URL", "S2D_SERVED_MODEL"):
        monkeypatch.setenv(var, "")  # unset for the settings, and restored after the test (start writes them)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.perf_counter()
    with pytest.raises(ServerError, match=rf"{dead}: no OpenAI-compatible server answers .*the server lists: none"):
        pipeline.start("02_rar_coin_flip", "rar", coin_flip, MODEL=None, PROFILE="smoke", SEED=0, BACKEND="openai",
                       BASE_URL=dead)
    assert time.perf_counter() - t0 < 60  # the tokenizer loads, the weights do not


def test_a_server_killed_mid_run_and_restarted_resumes_from_the_cache(smollm, use_server, monkeypatch, tmp_path):
    db = tmp_path / "resume.sqlite"
    GenerationCache(db).close()  # created here: polling a file the worker is still creating could read it half-made
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = generate(smollm, PROMPTS, cache=GenerationCache(db), **GREEDY)
        except BaseException as err:  # noqa: BLE001 - inspected below
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and worker.is_alive() and stored < 1:
        with GenerationCache(db) as c:
            stored = len(c)
        time.sleep(0.05)
    use_server.stop(kill=True)  # SIGKILL mid-run: the requests in flight fail
    worker.join(timeout=120)
    assert not worker.is_alive(), "generate must fail, not hang, when its server dies"
    assert isinstance(outcome.get("error"), ServerError), outcome
    assert str(use_server.url) in str(outcome["error"])
    with GenerationCache(db) as c:
        stored = len(c)
    assert 1 <= stored < len(PROMPTS), "the server should have died part-way"

    use_server.start()  # a new process, on a new port
    monkeypatch.setenv("S2D_BASE_URL", use_server.url)
    resumed = generate(smollm, PROMPTS, cache=GenerationCache(db), **GREEDY)
    assert (resumed.stats.cached, resumed.stats.computed) == (stored, len(PROMPTS) - stored)
    assert resumed == generate(smollm, PROMPTS, cache=None, backend=LOCAL, **GREEDY)
