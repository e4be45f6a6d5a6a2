"""Generation through a real OpenAI-compatible server: `transformers serve` on the embedded smoke
model (its converted folder), in a subprocess on a free port of 127.0.0.1, killed at the end.

Checks what issue 20 asks of the served path: greedy completions identical to the local engine on
the same weights; two sampled runs identical; a server killed mid-run and restarted resumes
without regenerating what was cached; a dead server or a wrong model name fails at once, naming
the URL. Every request has a timeout and every wait a deadline: nothing here can hang.
Deselect with ``-m "not served"``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi import Request  # at module level: the test server's handlers name it in (string) annotations

from s2d_utils import pipeline
from s2d_utils.backends import LOCAL, Settings
from s2d_utils.backends.openai import ServerError, connect
from s2d_utils.backends.serve import TransformersServe
from s2d_utils.cache import GenerationCache
from s2d_utils.generation import generate

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
    _served_env(monkeypatch, server.url)
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


# ----- students as LoRA adapters -----

@pytest.fixture(scope="module")
def student_adapter(smollm, tmp_path_factory):
    """A LoRA adapter that visibly changes the smoke model: trained to answer "Banana." to anything."""
    from s2d_utils import distill

    pairs = [{"id": str(i), "prompt": p, "completion": "Banana."} for i, p in enumerate(PROMPTS * 2)]
    settings = distill.LoraSettings(r=4, alpha=16, dropout=0.0, learning_rate=3e-3, batch_size=4, steps=12)
    return distill.finetune(smollm, pairs, settings, out_dir=tmp_path_factory.mktemp("adapter"), progress=False)


class LoraServer:
    """A minimal server with vLLM's routes for runtime LoRA (``GET /v1/models``, ``GET /version``,
    ``POST /v1/load_lora_adapter``, ``POST /v1/completions`` on token-id prompts), answering greedy
    requests with ``model.generate`` on the base or on the named adapter (loaded from the path the
    client sends), and ``echo`` requests with the prompt's log-probabilities, one forward pass.
    transformers serve has no adapter routes and no ``echo``; vLLM cannot run here."""

    def __init__(self, base, apply: bool = True, max_rank: int | None = None, fingerprint=None):
        """``apply=False``: it lists and "loads" adapters but answers every request with the base
        model; ``max_rank``: it refuses adapters of a higher rank, with vLLM's message;
        ``fingerprint``: a function of the request count giving each completion's ``system_fingerprint``."""
        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        from s2d_utils.backends import stop_token_ids
        from s2d_utils.models import load_model

        self.base, self.students, self.loads, self.requests = base, {}, [], []
        stops = sorted(stop_token_ids(base))
        app = FastAPI()

        @app.get("/v1/models")
        def models():
            return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "test"}
                                               for m in [base.path, *self.students]]}

        @app.get("/version")
        def version():
            return {"version": "0.0.test"}

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request):
            body = await request.json()
            self.loads.append(body)
            if body["lora_name"] in self.students:
                return JSONResponse({"message": f"The lora adapter '{body['lora_name']}' has already been loaded."}, 400)
            rank = json.loads((Path(body["lora_path"]) / "adapter_config.json").read_text())["r"]
            if max_rank is not None and rank > max_rank:
                return JSONResponse({"message": f"LoRA rank {rank} is greater than max_lora_rank {max_rank}."}, 400)
            self.students[body["lora_name"]] = load_model(base.name, device="cpu", adapter=body["lora_path"])
            return "Success: LoRA adapter loaded"

        @app.post("/v1/completions")
        async def complete(request: Request):
            import torch

            body = await request.json()
            self.requests.append(body)
            lm = base if body["model"] == base.path else self.students.get(body["model"])
            if lm is not None and not apply:
                lm = base
            if lm is None:
                return JSONResponse({"message": f"model {body['model']!r} not found"}, 404)
            ids = torch.tensor([body["prompt"]])
            if body.get("echo"):
                return self.echo(lm, body)
            with torch.no_grad():
                out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=body["max_tokens"],
                                        do_sample=False, eos_token_id=stops, pad_token_id=stops[0])
            new = out[0, ids.shape[1]:].tolist()
            stopped = bool(new) and new[-1] in stops
            text = lm.tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=True)
            return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                    "system_fingerprint": fingerprint(len(self.requests)) if fingerprint else None,
                    "choices": [{"index": 0, "text": text, "logprobs": None,
                                 "finish_reason": "stop" if stopped else "length"}],
                    "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(new),
                              "total_tokens": len(body["prompt"]) + len(new)}}

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @staticmethod
    def echo(lm, body) -> dict:
        """vLLM's answer to ``echo`` with ``logprobs``: each prompt token's log-probability (None for
        the first), then the one generated token's."""
        import torch

        prompt = body["prompt"]
        with torch.no_grad():
            logprobs = torch.log_softmax(lm.model(input_ids=torch.tensor([prompt])).logits[0].float(), -1)
        nxt = int(logprobs[-1].argmax())
        values = [None] + [float(logprobs[i, t]) for i, t in enumerate(prompt[1:])] + [float(logprobs[-1, nxt])]
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "text": "", "finish_reason": "length",
                             "logprobs": {"tokens": [str(t) for t in prompt + [nxt]], "token_logprobs": values}}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the test server did not start"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _served_env(monkeypatch, url):
    """The environment of a run served at ``url`` (the served model: the model's folder)."""
    monkeypatch.setenv("S2D_BACKEND", "openai")
    monkeypatch.setenv("S2D_BASE_URL", url)
    monkeypatch.delenv("S2D_SERVED_MODEL", raising=False)
    monkeypatch.setenv("S2D_SERVED_DTYPE", "float32")
    monkeypatch.setenv("S2D_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("S2D_MAX_RETRIES", "1")


def test_a_student_is_served_as_a_lora_adapter_named_by_its_content_hash(smollm, student_adapter, monkeypatch,
                                                                          tmp_path):
    from s2d_utils import distill
    from s2d_utils.backends.openai import adapter_name

    local_student = distill.load_distilled(smollm, student_adapter)
    local = generate(local_student, PROMPTS, cache=None, backend=LOCAL, **GREEDY)
    assert local != generate(smollm, PROMPTS, cache=None, backend=LOCAL, **GREEDY), "the adapter must change answers"
    name = adapter_name(student_adapter.adapter_dir)
    with LoraServer(smollm) as srv:
        _served_env(monkeypatch, srv.url)
        student = distill.load_distilled(smollm, student_adapter, weights=False)
        cache = GenerationCache(tmp_path / "g.sqlite")
        served = generate(student, PROMPTS, cache=cache, **GREEDY)
        assert not student.loaded, "a student served as an adapter needs no weights here"
        again = generate(distill.load_distilled(smollm, student_adapter, weights=False), PROMPTS, cache=cache, **GREEDY)
    assert served.stats.backend == "openai" and served.stats.computed == len(PROMPTS)
    assert served == local  # the same completions as the merged student here
    assert again.stats.cached == len(PROMPTS)
    assert [b["lora_name"] for b in srv.loads] == [name]  # loaded once, under its content hash
    assert srv.loads[0]["lora_path"] == str(Path(student_adapter.adapter_dir).resolve())
    assert {b["model"] for b in srv.requests[-len(PROMPTS):]} == {name}


def test_a_served_student_s_confidence_comes_from_its_server(smollm, student_adapter, monkeypatch, tmp_path):
    """The routing notebook's confidence for a student served as an adapter: teacher-forced on the
    server (prompt log-probabilities), no weights here; what the merged student here gives."""
    import math

    from s2d_utils import distill
    from handmade import call, trace
    from s2d_utils.backends import answer_confidence

    merged = distill.load_distilled(smollm, student_adapter)
    outs = generate(merged, PROMPTS[:2], cache=None, backend=LOCAL, **GREEDY)
    traces = [[trace(str(i), c.text, call("answer", p, c.text, c.n_tokens, c.finish_reason))]
              for i, (p, (c,)) in enumerate(zip(PROMPTS, outs))]  # no log-probability: each is scored
    here = answer_confidence(merged, traces, cache_dir=tmp_path)
    with LoraServer(smollm) as srv:
        _served_env(monkeypatch, srv.url)
        student = distill.load_distilled(smollm, student_adapter, weights=False)
        served = answer_confidence(student, traces, cache_dir=tmp_path / "unused")
        assert not student.loaded, "a served student is scored by its server"
    assert [math.log(c) for c in served] == pytest.approx([math.log(c) for c in here], abs=1e-3)
    assert [b["echo"] for b in srv.requests[-2:]] == [True, True]


def test_a_server_that_takes_text_prompts_only_scores_nothing_so_no_confidence(smollm, use_server):
    from handmade import call, trace
    from s2d_utils.backends import answer_confidence, backend_for

    traces = [[trace("0", "4", call("answer", PROMPTS[0], "4", 1))]]
    assert answer_confidence(smollm, traces, backend=backend_for(smollm)) is None  # text prompts only


def test_a_server_that_cannot_load_adapters_says_so_and_the_student_runs_locally(smollm, student_adapter, use_server,
                                                                                tmp_path):
    from s2d_utils import distill
    from s2d_utils.backends import ADAPTER_FALLBACKS

    student = distill.load_distilled(smollm, student_adapter, weights=False)
    with pytest.warns(UserWarning, match=rf"{use_server.url} cannot load the LoRA adapter .*evaluated locally"):
        served = generate(student, PROMPTS[:2], cache=GenerationCache(tmp_path / "g.sqlite"), **GREEDY)
    assert served.stats.backend == "local" and student.loaded
    assert student.adapter in ADAPTER_FALLBACKS
    local = generate(distill.load_distilled(smollm, student_adapter), PROMPTS[:2], cache=None, backend=LOCAL, **GREEDY)
    assert served == local


def test_a_server_that_lists_an_adapter_but_does_not_apply_it_is_caught(smollm, student_adapter, monkeypatch,
                                                                        tmp_path):
    """A server that accepts and lists the adapter but answers with the base model: the probe (the
    same log-probabilities with and without it) catches it, and the student runs locally."""
    from s2d_utils import distill
    from s2d_utils.backends import ADAPTER_FALLBACKS

    ADAPTER_FALLBACKS.clear()  # another test's fallback for this adapter would skip the server
    with LoraServer(smollm, apply=False) as srv:
        _served_env(monkeypatch, srv.url)
        student = distill.load_distilled(smollm, student_adapter, weights=False)
        with pytest.warns(UserWarning, match="answers with it exactly as the base model does"):
            served = generate(student, PROMPTS[:2], cache=None, **GREEDY)
    assert served.stats.backend == "local" and student.adapter in ADAPTER_FALLBACKS
    ADAPTER_FALLBACKS.pop(student.adapter)
    assert any(b.get("echo") for b in srv.requests), "the probe scores with echo"


def test_an_adapter_over_the_servers_rank_limit_says_which_flag_to_set(smollm, student_adapter, monkeypatch):
    from s2d_utils import distill
    from s2d_utils.backends import ADAPTER_FALLBACKS

    ADAPTER_FALLBACKS.clear()
    with LoraServer(smollm, max_rank=2) as srv:  # the adapter's rank is 4
        _served_env(monkeypatch, srv.url)
        student = distill.load_distilled(smollm, student_adapter, weights=False)
        with pytest.warns(UserWarning, match=r"rank is below the adapter's \(4\): start it with --max-lora-rank 4"):
            generate(student, PROMPTS[:1], cache=None, **GREEDY)
    ADAPTER_FALLBACKS.pop(student.adapter)


def test_the_servers_fingerprint_keys_the_cache_and_a_change_mid_run_stops_it(smollm, tmp_path):
    """A server that sets ``system_fingerprint``: the connect-time one joins the cache key; when a
    later completion carries another (the server's configuration changed), the run stops, with the
    samples finished before it cached under the old key."""
    with LoraServer(smollm, fingerprint=lambda n: "fp-a" if n <= 3 else "fp-b") as srv:  # request 1: the probe
        settings = Settings("openai", srv.url, None, "float32", timeout=60, max_retries=1, concurrency=1)
        backend = connect(settings, smollm)
        assert backend.identity()["system_fingerprint"] == "fp-a"
        cache = GenerationCache(tmp_path / "g.sqlite")
        with pytest.raises(ServerError, match=r"system_fingerprint changed during the run \('fp-a' .*'fp-b' now\)"):
            generate(smollm, PROMPTS, cache=cache, backend=backend, **GREEDY)
    with cache:
        assert len(cache) == 2  # requests 2 and 3 finished under fp-a; request 4 stopped the run


@pytest.mark.slow
def test_a_smoke_notebook_runs_end_to_end_through_the_server(server, monkeypatch, tmp_path):
    """Notebook 01 (smoke profile) with the one setting: System 1 and System 2 through the server,
    the student through it too or, as transformers serve cannot load adapters, locally; the table
    notes say which."""
    from test_notebooks import run_notebook

    _served_env(monkeypatch, server.url)
    metrics = run_notebook("01_rar_last_letter", tmp_path)
    backend = metrics["manifest"]["backend"]
    assert backend["kind"] == "openai" and backend["server"].startswith("transformers"), backend
    table = (tmp_path / "figures" / "table1_last_letter.smoke.md").read_text()
    assert "server" in table and "could not load their LoRA adapters" in table
