"""The fast engine's runs: prefill with prefix caching, and continuous batching over
`decoder.Decoder`, for Llama- and Qwen2-architecture models (`supports`).

`backends.local` runs each prompt once through the model's own forward (prefill) and then, for
models the decoder supports, decodes with `Decoder.step` instead of the transformers forward
(`run_continuous`). What this module adds to the decode step:

- continuous batching: a row whose sequence stops is refilled from the queue at once, so the
  batch stays full instead of decoding padding.
- one prefill per prompt while any of its samples runs: its K/V sit in a prefix slot that all
  its rows read (`decoder`), and its last-position logits give every such sample its first token.
- prefix caching (`shared_prefix_groups`): prompts admitted together that share a token prefix
  of at least `MIN_SHARED` tokens prefill it once and reuse its K/V.
- a root shared by every prompt of a run (8-shot exemplars, a judge's instructions: at least
  `ROOT_MIN` tokens) is prefilled and held once for all rows; the prefix slots hold only what
  follows it. Measured on the 0.5B model, 48 GSM8k 8-shot CoT prompts (root 1,286 tokens), 96
  greedy tokens: 214 s without, 133 s with, identical outputs on 48/48 (`benchmarks/bench_root.py`).
- prefill in chunks of at most `PREFILL_TOKENS` padded tokens, so the transient K/V cache and
  activations of a prefill call stay small however many prompts arrive at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .decoder import Decoder, supports  # noqa: F401 - `engine.Decoder` / `engine.supports`: what callers use


@dataclass
class RunStats:
    """What a `run_continuous` call did (for tests and the curious): the caller passes one in and
    reads it after the run (no module-level state: two runs never overwrite each other's counts)."""

    prefilled_prompts: int = 0  # prompts run through prefill (once per stay in a prefix slot)
    prefill_tokens: int = 0  # prompt tokens computed in prefill
    prefix_reused_tokens: int = 0  # prompt tokens not computed: their K/V came from a shared prefix
    root_tokens: int = 0  # the run's root: tokens every prompt begins with, held once for all rows
    decode_steps: int = 0
    gathered_steps: int = 0  # steps that fell back to copying each row's prefix (too uneven a grid)


def left_pad(prompts: list[tuple[int, ...]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded ids and attention mask for a prefill batch, so every row's last token aligns."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, toks in enumerate(prompts):
        ids[r, width - len(toks):] = torch.tensor(toks)
        mask[r, width - len(toks):] = 1
    return ids.to(device), mask.to(device), width


PREFILL_TOKENS = 4096  # padded prompt tokens per prefill call: large enough for efficient GEMMs, small
# enough that the call's transient K/V cache and activations stay a few hundred MB


PREFILL_CONTEXT = 4 * PREFILL_TOKENS  # rows x (cached prefix + padded prompt) per prefill call: the
# prefix's K/V is copied into every row of the call


def _prefill_chunks(prompts: list[tuple[int, ...]], offset: int = 0) -> Iterator[list[tuple[int, ...]]]:
    """Consecutive groups of ``prompts`` of at most `PREFILL_TOKENS` padded tokens, and at most
    `PREFILL_CONTEXT` once each row's ``offset`` tokens of cached prefix count too (one prompt at least)."""
    chunk: list[tuple[int, ...]] = []
    width = 0
    for p in prompts:
        w = max(width, len(p))
        if chunk and (w * (len(chunk) + 1) > PREFILL_TOKENS or (w + offset) * (len(chunk) + 1) > PREFILL_CONTEXT):
            yield chunk
            chunk, width = [], 0
        chunk.append(p)
        width = max(width, len(p))
    if chunk:
        yield chunk


MIN_SHARED = 16  # tokens: prompts sharing a shorter prefix are prefilled whole. 16 lets the chat template
# header (system prompt, ~30 tokens with Qwen) be shared: measured 38 s instead of 55-60 s for System 1 on
# 100 coin-flip prompts of 56 tokens (0.5B model, 2 cores), identical greedy outputs


def _common(a: tuple[int, ...], b: tuple[int, ...], limit: int) -> int:
    n = min(limit, len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def common_prefix(prompts) -> int:
    """Tokens every prompt begins with, leaving each at least one of its own (0 for fewer than two)."""
    if len(prompts) < 2:
        return 0
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = _common(prompts[0], p, n)
    return max(n, 0)


def prefill_prefix(model, prefix, device: str, past=None):
    """A transformers cache holding ``prefix``'s K/V (one row), for `repeat_prefix`; with ``past``
    (a one-row cache, left unchanged) ``prefix`` continues it."""
    from transformers import DynamicCache

    base = DynamicCache(config=model.config) if past is None else repeat_prefix(model, past, 1)
    offset = base.get_seq_length()
    positions = torch.arange(offset, offset + len(prefix), device=device)[None]
    with torch.inference_mode():
        model(input_ids=torch.tensor([list(prefix)], device=device), past_key_values=base, use_cache=True,
              position_ids=positions, logits_to_keep=1)
    return base


def repeat_prefix(model, base, rows: int):
    """A fresh cache with ``base``'s one row of K/V copied for ``rows`` rows (what a batch of prompts
    sharing that prefix continues from)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(base.layers):
        cache.update(layer.keys.expand(rows, -1, -1, -1).contiguous(), layer.values.expand(rows, -1, -1, -1).contiguous(), i)
    return cache


def shared_prefix_groups(prompts, min_shared: int | None = None) -> list[tuple[int, list[tuple[int, ...]]]]:
    """Cluster distinct prompts by a common token prefix of at least ``min_shared`` tokens.

    Returns ``[(shared, members)]``: ``shared`` tokens begin every member (and every member has
    at least one token after them); ``shared`` is 0 for a prompt that shares nothing, and such
    prompts come last, in one group. Prefix caching (as in vLLM and SGLang, here per prefill
    batch): the shared part of a group is prefilled once and its K/V reused by each member,
    e.g. the solve calls of Branch-Solve-Merge, which repeat the question and both answers and
    differ only in the criterion at the end.
    """
    min_shared = MIN_SHARED if min_shared is None else min_shared
    ordered = sorted(set(map(tuple, prompts)))
    groups: list[tuple[int, list[tuple[int, ...]]]] = []
    for p in ordered:
        if groups:
            shared, members = groups[-1]
            head = members[0]
            limit = shared if len(members) > 1 else len(head)
            common = min(_common(head, p, limit), len(p) - 1, len(head) - 1)
            # join if the group still saves at least as much with the shorter shared part
            # (BSM: the next pair's solve calls share only the instruction: they start a group)
            saved_now = shared * (len(members) - 1) if len(members) > 1 else 0
            if common >= min_shared and common * len(members) >= saved_now:
                groups[-1] = (common, members + [p])
                continue
        groups.append((0, [p]))
    alone = [m[0] for s, m in groups if len(m) == 1]
    return [(s, m) for s, m in groups if len(m) > 1] + ([(0, alone)] if alone else [])


def sharing_order(prompts: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, int]]:
    """A sort key per prompt that keeps prompts with a shared prefix next to each other (so one
    admission prefills them together), groups ordered by their longest prompt, short first."""
    key = {}
    for g, (shared, members) in enumerate(shared_prefix_groups(prompts)):
        if shared:
            width = max(len(m) for m in members)
            for m in members:
                key[m] = (width, g + 1)
        else:
            for m in members:
                key[m] = (len(m), 0)
    return key


def _prefill(model, decoder: "Decoder", prompts: list[tuple[int, ...]], pad_id: int, device: str, slot_for,
             stats: RunStats, root=None):
    """Prefill ``prompts`` into prefix slots (``slot_for(prompt)`` picks one) with prefix caching;
    yields (slot, last-position logits) per prompt. ``root``: a one-row cache of the decoder's root
    (the first ``decoder.root_len`` tokens of every prompt): prompts continue it, and their slots
    hold only what follows it."""
    from transformers import DynamicCache

    R = decoder.root_len
    head = prompts[0][:R] if prompts else ()
    for shared, members in shared_prefix_groups([p[R:] for p in prompts]):
        base = root
        if shared:
            base = prefill_prefix(model, members[0][:shared], device, past=root)
            stats.prefill_tokens += shared
            stats.prefix_reused_tokens += shared * (len(members) - 1)
        offset = R + shared
        rests = [m[shared:] for m in members]
        done = 0
        for chunk in _prefill_chunks(rests, offset):
            ids, mask, width = left_pad(chunk, pad_id, device)
            position = (mask.cumsum(-1) - 1).clamp(min=0) + offset
            if base is not None:
                cache = repeat_prefix(model, base, len(chunk))
                mask = torch.cat([mask.new_ones((len(chunk), offset)), mask], dim=-1)
            else:
                cache = DynamicCache(config=model.config)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=cache,
                               use_cache=True, logits_to_keep=1).logits[:, -1, :]
            for r, rest in enumerate(chunk):
                slot = slot_for(head + members[done + r])
                spans = ([(R, offset)] if shared else []) + [(offset + width - len(rest), offset + width)]
                decoder.store_prefix(cache, r, spans, slot)
                yield slot, logits[r]
            stats.prefill_tokens += sum(len(c) for c in chunk)
            stats.prefix_reused_tokens += R * len(chunk)
            stats.prefilled_prompts += len(chunk)
            done += len(chunk)
            del cache, logits


ROOT_MIN = 64  # tokens: a run whose prompts all begin with at least this many tokens in common (8-shot
# exemplars, a judge's instructions) holds their K/V once, read by every row, instead of once per prompt


def run_root(prompts) -> int:
    """The root of a run over ``prompts``: their common prefix if at least `ROOT_MIN` tokens, else 0."""
    n = common_prefix(list(set(map(tuple, prompts))))
    return n if n >= ROOT_MIN else 0


def run_continuous(model, decoder: Decoder, jobs: list[list[int]], sample: Callable, max_new_tokens: int,
                   stops: set[int], slots: int, pad_id: int, device: str,
                   stats: RunStats | None = None) -> Iterator[tuple[int, list[int], str]]:
    """Continuous batching: decode ``jobs`` (token lists) in ``slots`` rows, refilling a row as
    soon as its sequence stops, so the batch stays full instead of decoding padding.

    ``sample(logits, job_indices)`` picks the next token of each row (each job has its own RNG).
    A prompt is prefilled once while any of its jobs runs: its K/V sit in a prefix slot that all
    its rows read, and its last-position logits give every such job its first token. Prompts
    admitted together that share a long prefix prefill it once (`shared_prefix_groups`).
    Yields ``(job index, generated tokens without the stop token, "stop" | "length")`` as jobs finish;
    ``stats`` (if given) counts the run's prefill and decode work as it goes.
    """
    slots = max(1, min(slots, len(jobs)))
    prompts = [tuple(t) for t in jobs]
    # live prefixes are distinct prompts and each has a running row: this many slots always suffice
    n_prefix = min(slots, len(set(prompts)))
    queue = list(range(len(jobs)))
    queue.reverse()  # pop() from the end keeps the caller's order
    job_of = [-1] * slots  # job in each row, -1 = free
    prefix_of = [-1] * slots  # prefix slot each row reads, -1 = free
    live: dict[tuple[int, ...], int] = {}  # prompt -> its prefix slot
    users = [0] * n_prefix  # running rows per prefix slot
    free_prefix = list(range(n_prefix))  # a heap: the lowest free slot first keeps the used ones packed
    first_logits: torch.Tensor | None = None  # [n_prefix, vocab]: each live prompt's next-token logits
    produced: dict[int, list[int]] = {}
    feed = torch.zeros(slots, dtype=torch.long, device=device)
    own = torch.zeros(slots, dtype=torch.long, device=device)
    admit_at = max(1, slots // 8)  # admit in groups: one prefill call per group, not per row
    R = run_root(prompts)
    decoder.allocate(slots, n_prefix, max(len(t) for t in jobs) - R, max_new_tokens, root=R)
    stats = RunStats() if stats is None else stats
    root = None

    def finish(row: int, reason: str):
        j, p = job_of[row], prefix_of[row]
        job_of[row] = prefix_of[row] = -1
        users[p] -= 1
        if users[p] == 0:
            del live[prompts[j]]
            heapq.heappush(free_prefix, p)
        return j, produced.pop(j), reason

    try:
        if R:  # the root's K/V, once for the run
            root = prefill_prefix(model, prompts[0][:R], device)
            decoder.store_root(root, R)
            stats.prefill_tokens += R
            stats.root_tokens = R
        layout = None
        while queue or any(j >= 0 for j in job_of):
            free = [s for s, j in enumerate(job_of) if j < 0]
            if queue and free and (len(free) >= min(admit_at, len(queue)) or len(free) == len(job_of)):
                take = [queue.pop() for _ in range(min(len(free), len(queue)))]
                new = list(dict.fromkeys(prompts[j] for j in take if prompts[j] not in live))

                def slot_for(prompt):
                    live[prompt] = heapq.heappop(free_prefix)
                    return live[prompt]

                # prefill the prompts not already held in a prefix slot (shared prefixes once)
                for p, logits in _prefill(model, decoder, new, pad_id, device, slot_for, stats, root):
                    if first_logits is None:
                        first_logits = logits.new_empty((n_prefix, logits.shape[-1]))
                    first_logits[p] = logits
                for j, row in zip(take, free):
                    job_of[row], prefix_of[row] = j, live[prompts[j]]
                    users[prefix_of[row]] += 1
                    produced[j] = []
                first = sample(first_logits[torch.tensor([live[prompts[j]] for j in take], device=device)], take).tolist()
                for j, row, tok in zip(take, free, first):
                    if tok in stops:
                        yield finish(row, "stop")
                        continue
                    produced[j].append(tok)
                    if max_new_tokens == 1:
                        yield finish(row, "length")
                        continue
                    own[row] = 0
                    feed[row] = tok
                layout = None
                continue  # admit again if rows stopped at once; otherwise decode
            active = [s for s, j in enumerate(job_of) if j >= 0]
            if not queue and len(active) <= 0.75 * len(job_of):  # tail: shrink the batch to the live rows
                idx = torch.tensor(active, device=device)
                decoder.select(idx)
                feed, own = feed[idx], own[idx]
                job_of = [job_of[s] for s in active]
                prefix_of = [prefix_of[s] for s in active]
                active = list(range(len(job_of)))
                layout = None
            if layout is None:
                layout = decoder.layout(prefix_of)
                prefix = torch.tensor([max(p, 0) for p in prefix_of], device=device)
            logits = decoder.step(feed, own, prefix, layout)
            stats.decode_steps += 1
            stats.gathered_steps += layout.gather is not None
            act = torch.tensor(active, device=device)
            own[act] += 1  # free rows stay put (their rows are computed but ignored)
            nxt = sample(logits[act], [job_of[s] for s in active]).tolist()
            for row, tok in zip(active, nxt):
                j = job_of[row]
                if tok in stops:
                    own[row] = 0
                    layout = None
                    yield finish(row, "stop")
                else:
                    produced[j].append(tok)
                    if len(produced[j]) >= max_new_tokens:
                        own[row] = 0
                        layout = None
                        yield finish(row, "length")
                    else:
                        feed[row] = tok
    finally:
        decoder.release()
        del root
