"""The backend seam without a server: settings, cache keys per backend identity, the served
client's reading of token counts, lazy weights, and whole-file weight hashes."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import pytest

from reference import output_logprob
from s2d_utils import generation, models
from s2d_utils.backends import LOCAL, Generated, Job, Sampling, Settings, backend_for, stop_token_ids
from s2d_utils.backends.openai import ServerError, TokenCountMismatch, read_response
from s2d_utils.generation import generate, model_key


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
    assert read_response(tiny_lm, job, cap, _response(text, "stop", n + 1, 3)) == Generated(text, n, "stop")
    assert read_response(tiny_lm, job, cap, _response(text, "stop", n)) == Generated(text, n, "stop")
    # the cap reached: "length"; transformers serve also says "length" when the stop token was the last allowed
    assert read_response(tiny_lm, job, Sampling(0.0, 1.0, n), _response(text, "length", n)).finish_reason == "length"
    assert read_response(tiny_lm, job, Sampling(0.0, 1.0, n + 1), _response(text, "length", n + 1)) == \
        Generated(text, n, "stop")
    # sampled ids that are not the tokenizer's own split of the text: the server's count stands, within slack
    assert read_response(tiny_lm, job, cap, _response(text, "stop", n + 2)) == Generated(text, n + 1, "stop")
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
    assert generation.context_window(lazy) == 512 and stop_token_ids(lazy) == stop_token_ids(tiny_lm)
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


# ----- scoring: the confidence through the backend seam -----

class _Echo:
    """A stand-in for the openai client's ``completions``: answers every request with ``logprobs``
    (a list, or None), or raises ``error``; keeps the requests."""

    def __init__(self, logprobs=None, error=None, prompt_tokens=None):
        self.logprobs, self.error, self.prompt_tokens, self.requests = logprobs, error, prompt_tokens, []

    def create(self, **request):
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        values = self.logprobs if self.logprobs is not None else [None] + [-0.5] * len(request["prompt"])
        return SimpleNamespace(choices=[SimpleNamespace(logprobs=SimpleNamespace(token_logprobs=values))],
                               usage=SimpleNamespace(prompt_tokens=self.prompt_tokens))


def _served(completions, token_prompts=True):
    """An `OpenAIBackend` without a server: its client's completions are ``completions``."""
    from s2d_utils.backends.openai import OpenAIBackend

    backend = object.__new__(OpenAIBackend)
    backend.client = SimpleNamespace(completions=completions)
    backend.token_prompts, backend.served_model, backend.extra_body = token_prompts, "m", {}
    backend.base_url, backend.settings = "http://server/v1", Settings("openai", "http://server/v1", max_retries=0)
    return backend


def test_a_server_scores_with_prompt_log_probabilities_or_says_it_cannot(tiny_lm):
    import math

    import httpx
    import openai

    tok = tiny_lm.tokenizer
    prompt = tok("Is it?", add_special_tokens=False)["input_ids"]
    answer = tok("Yes.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # stopped: its stop token counts
    n = len(prompt) + len(answer)
    echo = _Echo([None] + [-9.0] * (len(prompt) - 1) + [-0.25] * len(answer) + [-3.0])  # prompt, answer, 1 generated
    (p,) = _served(echo).score(tiny_lm, ["Is it?"], ["Yes."], ["stop"])
    assert p == pytest.approx(math.exp(-0.25 * len(answer)))
    (request,) = echo.requests
    assert request["prompt"] == prompt + answer and request["echo"] is True
    assert (request["logprobs"], request["max_tokens"], request["temperature"]) == (1, 1, 0.0)
    assert _served(_Echo(prompt_tokens=n - 1)).score(tiny_lm, ["Is it?"], ["Yes."], ["length"]) == \
        [pytest.approx(math.exp(-0.5 * (len(answer) - 1)))]  # cut by the cap: no stop token
    # where the server cannot: text prompts only, no log-probabilities, another tokenization, no echo
    assert _served(_Echo(), token_prompts=False).score(tiny_lm, ["Is it?"], ["Yes."], ["stop"]) is None
    assert _served(_Echo([None] * (n + 1))).score(tiny_lm, ["Is it?"], ["Yes."], ["stop"]) is None
    assert _served(_Echo(prompt_tokens=n + 1)).score(tiny_lm, ["Is it?"], ["Yes."], ["stop"]) is None
    refused = openai.BadRequestError("echo is not supported", response=httpx.Response(
        400, request=httpx.Request("POST", "http://server/v1/completions")), body=None)
    assert _served(_Echo(error=refused)).score(tiny_lm, ["Is it?"], ["Yes."], ["stop"]) is None
    gone = openai.APIConnectionError(request=httpx.Request("POST", "http://server/v1/completions"))
    with pytest.raises(ServerError, match="http://server/v1: APIConnectionError"):
        _served(_Echo(error=gone)).score(tiny_lm, ["Is it?"], ["Yes."], ["stop"])


def test_answer_confidence_scores_through_the_backend_only_what_carries_no_log_probability(tiny_lm, tmp_path):
    import json
    import math

    from handmade import call, trace
    from s2d_utils import backends

    class Scorer:
        def __init__(self, answer):
            self.answer, self.asked = answer, []

        def score(self, lm, prompts, outputs, finish_reasons, batch_size=8, cache_dir=None):
            self.asked.append((list(prompts), list(outputs), list(finish_reasons)))
            return None if self.answer is None else [self.answer] * len(prompts)

    chat = [{"role": "system", "content": "Judge."}, {"role": "user", "content": "A or B?"}]
    traces = [[trace("0", "4", call("answer", "2+2?", "4", 1)),
               trace("0", "4", call("answer", "2+2?", "4", 1, logprob=math.log(0.5)), sample=1)],
              [trace("1", "A", call("judge", json.dumps(chat), "[[A]]", 3, "length"))]]
    scorer = Scorer(0.25)
    assert backends.answer_confidence(tiny_lm, traces, backend=scorer) == [pytest.approx(0.375), 0.25]
    assert scorer.asked == [([backends.render(tiny_lm, "2+2?"), backends.render(tiny_lm, chat)], ["4", "[[A]]"],
                             ["stop", "length"])]  # a call's own log-probability is not scored again
    assert backends.answer_confidence(tiny_lm, traces, backend=Scorer(None)) is None  # the backend cannot score
    # the weights are here: scored here, into the confidence cache, whatever the setting
    local = backends.answer_confidence(tiny_lm, traces, batch_size=2, cache_dir=tmp_path)
    assert len(json.loads(next(tmp_path.iterdir()).read_text())) == 2
    # each scored output is its teacher-forced probability on its prompt alone (the stop token after the
    # stopped one; a random model's are tiny: compared as logs), and the first input's is the mean with
    # its other sample's own 0.5
    scored = backends.answer_confidence(tiny_lm, [traces[0][:1], traces[1]], cache_dir=tmp_path)
    four, judged = output_logprob(tiny_lm, "2+2?", "4"), output_logprob(tiny_lm, chat, "[[A]]", stopped=False)
    assert [math.log(c) for c in scored] == pytest.approx([four, judged], abs=1e-3)
    assert local == [pytest.approx((scored[0] + 0.5) / 2), scored[1]]


# ----- every sampling parameter pinned, per server -----

# what each server applies to a field a request leaves unset (its defaults, or the model's
# generation_config.json under vLLM's --generation-config auto): a request that leaves one open
# samples with it
SERVER_DEFAULTS = {
    "vllm": {"top_k": 20, "min_p": 0.0, "repetition_penalty": 1.05, "presence_penalty": 0.0, "frequency_penalty": 0.0},
    "sglang": {"top_k": 20, "min_p": 0.0, "repetition_penalty": 1.05, "presence_penalty": 0.0, "frequency_penalty": 0.0},
    "llama.cpp": {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0, "typical_p": 1.0, "presence_penalty": 0.0,
                  "frequency_penalty": 0.0, "dry_multiplier": 0.0, "xtc_probability": 0.0, "mirostat": 0,
                  "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc",
                               "temperature"], "cache_prompt": True},
}
# what the local engine does (transformers' order: temperature, then top-p; nothing else)
NEUTRAL = {"top_k": (-1, 0), "min_p": (0.0,), "repetition_penalty": (1.0,), "repeat_penalty": (1.0,),
           "presence_penalty": (0.0,), "frequency_penalty": (0.0,), "typical_p": (1.0,), "dry_multiplier": (0.0,),
           "xtc_probability": (0.0,), "mirostat": (0,), "samplers": (["temperature", "top_p"],),
           "cache_prompt": (False,)}


def applied(flavor: str, request: dict) -> dict:
    """The sampling settings a server of ``flavor`` applies to ``request``: the request's fields
    (top level or in its extra body), else the server's defaults."""
    given = {**request, **request.get("extra_body", {})}
    return {k: given.get(k, v) for k, v in SERVER_DEFAULTS[flavor].items()}


@pytest.mark.parametrize("flavor", sorted(SERVER_DEFAULTS))
def test_every_sampling_parameter_is_pinned_in_every_request(tiny_lm, flavor):
    backend = _served(None)
    backend.flavor, backend.stops = flavor, [2]
    for sampling in (Sampling(0.0, 1.0, 16), Sampling(0.7, 0.9, 16)):
        request = backend.request_for(Job("p", (1, 2, 3), 12345), sampling)
        got = applied(flavor, request)
        wrong = {k: v for k, v in got.items() if v not in NEUTRAL[k]}
        assert not wrong, f"{flavor} would sample with its own {wrong}"
        assert request["temperature"] == sampling.temperature and request["seed"] == 12345
        assert request["top_p"] == (1.0 if sampling.temperature == 0 else sampling.top_p)



def test_a_benchmarks_extra_field_reaches_every_request_and_the_notebooks_send_none(tiny_lm):
    backend = _served(None)
    backend.flavor, backend.stops = "llama.cpp", [2]
    job, greedy = Job("p", (1, 2, 3), 7), Sampling(0.0, 1.0, 8)
    assert backend.extra_body == {} and backend.request_for(job, greedy)["extra_body"]["cache_prompt"] is False
    backend.extra_body["cache_prompt"] = True  # bench_llama.py's prompt-cache run
    request = backend.request_for(job, greedy)
    extra = request["extra_body"]
    assert extra["cache_prompt"] is True and extra["samplers"] == ["temperature", "top_p"]  # the pinned ones stay


def test_a_sample_cut_by_a_full_context_is_an_error_and_the_cap_is_not(tiny_lm):
    from s2d_utils.backends.openai import TruncatedSample

    text = "The answer is"
    n = len(tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    job = Job("<rendered>", (1, 2, 3), 7)
    assert read_response(tiny_lm, job, Sampling(0.0, 1.0, n), _response(text, "length", n)).finish_reason == "length"
    with pytest.raises(TruncatedSample, match=f"after {n} of the 64 tokens asked"):
        read_response(tiny_lm, job, Sampling(0.0, 1.0, 64), _response(text, "length", n))


def test_a_request_the_servers_context_cannot_hold_is_refused_before_it_is_sent(tiny_lm):
    backend = _served(_Echo())
    backend.flavor, backend.context = "llama.cpp", 256
    backend.check_context(Job("p", tuple(range(200)), 1), Sampling(0.0, 1.0, 56))  # fits exactly
    with pytest.raises(ServerError, match=r"needs 257 tokens \(prompt 200 \+ max_tokens 57\).*holds 256.*-c"):
        backend.check_context(Job("p", tuple(range(200)), 1), Sampling(0.0, 1.0, 57))
    with pytest.raises(ServerError, match="holds 256"):
        list(backend.run(tiny_lm, [Job("p", tuple(range(250)), 1)], Sampling(0.0, 1.0, 16)))
    assert backend.client.completions.requests == []  # nothing was sent


def test_the_server_is_identified_from_its_own_route(monkeypatch):
    backend = _served(None)
    backend.served_model, backend.api_key = "m", "secret"
    routes = {
        "sglang": {"/get_server_info": {"model_path": "m", "version": "0.5.1", "context_length": 8192}},
        "llama.cpp": {"/props": {"default_generation_settings": {"n_ctx": 4096}, "build_info": "b6000-abc"}},
        "vllm": {"/version": {"version": "0.10.1"}, "/v1/models": {"data": [{"id": "m", "max_model_len": 32768}]}},
        "openai": {},
    }
    asked = []
    for flavor, answers in routes.items():
        def get(self, path, answers=answers):
            asked.append(self.headers())
            return answers.get(path)
        monkeypatch.setattr(type(backend), "_get", get)
        backend.flavor, backend.version, backend.context = "openai", None, None
        backend._identify()
        assert backend.flavor == flavor
    assert (backend.flavor, backend.context) == ("openai", None)
    assert all(h == {"Authorization": "Bearer secret"} for h in asked)


def llama_scales(startup: dict[int, float], request: dict) -> dict[int, float]:
    """The adapter scales llama-server applies to ``request`` (its launch_slot_with_task): a
    non-empty ``lora`` list sets the ones it names and zeroes the rest; an empty or missing one
    leaves every start-up adapter at its start-up scale, which is 1 for ``--lora <file>`` even under
    ``--lora-init-without-apply`` (measured: base requests then answered as the student)."""
    given = {e["id"]: e["scale"] for e in request.get("extra_body", {}).get("lora") or []}
    return {i: given.get(i, 0.0) for i in startup} if given else dict(startup)


def test_llama_server_requests_set_every_start_up_adapter_s_scale(tiny_lm):
    backend = _served(None)
    backend.flavor, backend.stops = "llama.cpp", [2]
    startup = {0: 1.0, 1: 1.0}  # two students' adapters, loaded with --lora ... --lora-init-without-apply
    backend.lora_ids = tuple(startup)
    job, greedy = Job("p", (1, 2), 3), Sampling(0.0, 1.0, 8)
    assert llama_scales(startup, backend.request_for(job, greedy)) == {0: 0.0, 1: 0.0}  # the base: none applied
    backend.lora_id = 1
    assert llama_scales(startup, backend.request_for(job, greedy)) == {0: 0.0, 1: 1.0}  # the student's alone
    backend.lora_ids, backend.lora_id = (), None  # a server with no adapters: the field names none
    assert backend.request_for(job, greedy)["extra_body"]["lora"] == []


def test_an_sglang_student_is_named_in_lora_path_not_in_model(tiny_lm, tmp_path, monkeypatch):
    import httpx

    from s2d_utils.backends import openai as served

    backend = _served(None)
    backend.flavor, backend.stops, backend.listed, backend._adapted, backend.api_key = "sglang", [2], [], {}, "k"
    backend.lora = None
    posted = []
    monkeypatch.setattr(httpx, "post", lambda url, **kw: posted.append((url, kw)) or SimpleNamespace(status_code=200,
                                                                                                      text="ok"))
    monkeypatch.setattr(type(backend), "served_names", lambda self: [])
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w")
    student = backend.with_adapter(tmp_path)
    request = student.request_for(Job("p", (1, 2), 3), Sampling(0.0, 1.0, 8))
    assert request["model"] == "m" and request["extra_body"]["lora_path"] == served.adapter_name(tmp_path)
    assert posted and posted[0][1]["headers"] == {"Authorization": "Bearer k"}
    assert "lora_path" not in backend.request_for(Job("p", (1, 2), 3), Sampling(0.0, 1.0, 8))["extra_body"]


def test_token_ids_from_the_server_make_counts_exact_and_give_log_probabilities(tiny_lm):
    from s2d_utils.backends.openai import server_tokens

    stop = sorted(stop_token_ids(tiny_lm))[0]
    job = Job("<rendered>", (1, 2, 3), 7)
    cap = Sampling(0.7, 1.0, 64)

    def reply(choice_extra, completion, reason="stop"):
        choice = SimpleNamespace(text="whatever the text re-encodes to", finish_reason=reason, **choice_extra)
        return SimpleNamespace(choices=[choice], usage=SimpleNamespace(completion_tokens=completion, prompt_tokens=3))

    # llama-server (n_probs): logprobs.content with each token's id; the stop token listed and counted
    content = {"logprobs": {"content": [{"id": 5, "logprob": -0.5}, {"id": 6, "logprob": -0.25},
                                        {"id": stop, "logprob": -0.125}]}}
    assert read_response(tiny_lm, job, cap, reply(content, 3)) == Generated("whatever the text re-encodes to", 2, "stop")
    assert read_response(tiny_lm, job, cap, reply(content, 3)).logprob == pytest.approx(-0.875)
    # vLLM (return_token_ids, logprobs 0): token_ids and logprobs.token_logprobs, the stop token not counted
    vllm = {"token_ids": [5, 6, 7], "logprobs": SimpleNamespace(token_logprobs=[-1.0, -1.0, -1.0])}
    got = read_response(tiny_lm, job, Sampling(0.7, 1.0, 3), reply(vllm, 3, "length"))
    assert (got.n_tokens, got.finish_reason, got.logprob) == (3, "length", -3.0)
    with pytest.raises(TokenCountMismatch, match="the server counted 30 generated tokens"):
        read_response(tiny_lm, job, cap, reply(vllm, 30))  # a list that disagrees: re-encoded, and far off
    assert server_tokens(SimpleNamespace(text="x", logprobs=None)) is None  # text alone: re-encoding, with slack


def test_the_notes_say_how_the_servers_token_counts_were_taken(tiny_lm):
    """#Tokens from the server's ids, or re-encoded with slack from the text where it gave none:
    each sample is tallied, and the table notes say which, and for how many."""
    stop = sorted(stop_token_ids(tiny_lm))[0]
    job, cap = Job("<rendered>", (1, 2, 3), 7), Sampling(0.7, 1.0, 64)
    text = "hello there"
    local = len(tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def reply(**extra):
        choice = SimpleNamespace(text=text, finish_reason="stop", **extra)
        return SimpleNamespace(choices=[choice], usage=SimpleNamespace(completion_tokens=local + 1, prompt_tokens=3))

    backend = _served(None)
    assert backend.counting() == ""  # nothing generated here yet: nothing said
    tally = backend.__dict__.setdefault("tally", {})
    ids = {"logprobs": {"content": [{"id": 5, "logprob": -0.5}] * local + [{"id": stop, "logprob": -0.1}]}}
    for _ in range(3):
        read_response(tiny_lm, job, cap, reply(**ids), tally)
    assert backend.counting() == "#Tokens: the server's generated token ids, for all 3 samples generated in this run."
    read_response(tiny_lm, job, cap, reply(logprobs=None), tally)  # text alone
    assert backend.counting().startswith("#Tokens: the server's generated token ids for 3 of the 4 samples generated in "
                                         "this run; the other 1 re-encoded from the text")
