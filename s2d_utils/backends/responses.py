"""Reading one completion response of an OpenAI-compatible server: the sample's text, its exact or
checked token count and log-probability, and the errors a response can raise (a server that cannot
be used, a count that disagrees with the local tokenizer, a sample cut short by a full context)."""

from __future__ import annotations

from .base import Generated, Job, Sampling, stop_token_ids


class ServerError(RuntimeError):
    """The server cannot be used: down, another model, or a request that failed after its retries."""


class TokenCountMismatch(RuntimeError):
    """The server's token count disagrees with the local tokenizer's."""


class TruncatedSample(ServerError):
    """The server ended a sample for length before the requested ``max_tokens``: its context is full."""


def read_response(lm, job: Job, sampling: Sampling, response, tally: dict | None = None) -> Generated:
    """A `Generated` from one completion response, its token counts checked against the local tokenizer.

    Servers count the end-of-turn token that stopped a sample in ``completion_tokens`` or not
    (transformers serve and vLLM do); we do not count it (the paper's #Tokens). The text never
    shows it (special tokens are skipped), so ``completion_tokens`` is the local count of the
    text, or one more when the sample stopped. transformers serve reports "length" when the stop
    token was the last one allowed; a counted, invisible last token is that stop token. Where the
    re-encoded text is split otherwise than the generated ids (sampling), the server's count
    stands if it is within `RETOKENIZE_SLACK`; a larger gap is an error. ``tally`` counts how each
    sample was counted: "exact" (the server's generated ids) or "text" (re-encoded).
    """
    tally = tally if tally is not None else {}
    choice = response.choices[0]
    text, reason = choice.text or "", choice.finish_reason
    usage = response.usage
    if usage is None or usage.completion_tokens is None:
        raise TokenCountMismatch(f"the server returned no usage for a request (prompt {job.prompt[:60]!r}...): "
                                 "the generated-token count cannot be checked")
    if usage.prompt_tokens is not None and usage.prompt_tokens != len(job.tokens):
        raise TokenCountMismatch(f"the server read the prompt as {usage.prompt_tokens} tokens, the local tokenizer "
                                 f"as {len(job.tokens)} (prompt {job.prompt[:60]!r}...): it tokenizes differently "
                                 "(another tokenizer, or added special tokens), so it does not read the same prompt")
    counted = usage.completion_tokens
    if reason not in ("stop", "length"):
        raise ServerError(f"finish_reason {reason!r} for prompt {job.prompt[:60]!r}...: expected 'stop' or 'length'")
    if reason == "length" and counted < sampling.max_new_tokens:
        raise TruncatedSample(f"the server stopped a sample for length after {counted} of the {sampling.max_new_tokens} "
                              f"tokens asked (prompt {len(job.tokens)} tokens, {job.prompt[:60]!r}...): its context "
                              "cannot hold prompt + max_tokens, so the sample is cut short. Give the server a larger "
                              "context (llama-server -c with --kv-unified, vLLM --max-model-len)")
    exact = server_tokens(choice)
    if exact is not None:  # the generated ids and their log-probabilities: #Tokens exact, no re-encoding
        ids, logprobs = exact
        n = len(ids) - (1 if ids and ids[-1] in stop_token_ids(lm) else 0)  # the stop token is not counted
        if counted in (n, n + 1):
            tally["exact"] = tally.get("exact", 0) + 1
            logprob = sum(logprobs) if logprobs and None not in logprobs else None
            return Generated(text, n, reason, logprob=logprob)
        # a list that disagrees with the count (llama-server leaves out tokens it has not yet turned
        # into text): not the generated ids, so the count is checked by re-encoding below
    local = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    tally["text"] = tally.get("text", 0) + 1
    if counted == local + 1 and (reason == "stop" or counted == sampling.max_new_tokens):
        return Generated(text, local, "stop")  # the stop token, counted by the server
    if counted == local and (reason == "stop" or counted == sampling.max_new_tokens):
        return Generated(text, local, reason)
    # A sampled sequence of token ids need not be the tokenizer's own split of its text ("Sorcereer"
    # sampled as three pieces re-encodes as two): then the re-encoded count differs by a token or
    # two, and the server's count is the truth (the ids it generated, as the local engine counts).
    # A wrong tokenizer differs by far more.
    generated = counted - 1 if reason == "stop" and abs(counted - 1 - local) <= abs(counted - local) else counted
    if abs(generated - local) <= max(2, RETOKENIZE_SLACK * local):
        return Generated(text, generated, reason)
    raise TokenCountMismatch(f"the server counted {counted} generated tokens (finish_reason {reason!r}), the local "
                             f"tokenizer {local} for the text it returned ({text[:60]!r}...; prompt "
                             f"{job.prompt[:60]!r}...): is the server's tokenizer the model's?")


RETOKENIZE_SLACK = 0.25  # re-encoding a sampled text may split it otherwise: up to 2 tokens or 25% apart


def server_tokens(choice) -> tuple[list[int], list[float | None]] | None:
    """(generated token ids, their log-probabilities) where the server returned them: llama-server's
    ``logprobs.content`` (with ``n_probs``: each entry's ``id`` and ``logprob``), vLLM's and SGLang's
    ``token_ids`` (with ``return_token_ids``, log-probabilities from ``logprobs.token_logprobs``);
    None where it gave text alone."""
    def field(obj, name):
        if obj is None:
            return None
        if isinstance(obj, dict):
            return obj.get(name)
        value = getattr(obj, name, None)
        extra = getattr(obj, "model_extra", None) or {}
        return value if value is not None else extra.get(name)

    lp = field(choice, "logprobs")
    content = field(lp, "content")
    if isinstance(content, list) and all(isinstance(field(c, "id"), int) for c in content):
        return [field(c, "id") for c in content], [field(c, "logprob") for c in content]
    ids = field(choice, "token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
        values = field(lp, "token_logprobs")
        values = list(values) if isinstance(values, list) and len(values) == len(ids) else [None] * len(ids)
        return list(ids), values
    return None


