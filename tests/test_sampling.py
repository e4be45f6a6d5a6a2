"""The sampler: top-k-first top-p gives exactly what a full sort gives."""

import torch

from s2d_utils.backends import local


def full_sort_reference(logits, temperature, top_p, us):
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    out = []
    for row, u in zip(probs, us):
        sp, od = row.sort(descending=True)
        cum = sp.cumsum(0)
        sp = sp.masked_fill((cum - sp) >= top_p, 0.0)
        cum = sp.cumsum(0)
        out.append(int(od[min(int(torch.searchsorted(cum, u * cum[-1])), len(cum) - 1)]))
    return out


def test_topk_first_equals_full_sort_including_flat_rows(monkeypatch):
    torch.manual_seed(0)
    peaked = torch.randn(6, 5000) * 6
    flat = torch.randn(2, 5000) * 0.01  # top-128 holds far less than top_p: exercises the fallback
    logits = torch.cat([peaked, flat])
    for seed in range(5):
        gens = [torch.Generator().manual_seed(seed * 100 + r) for r in range(len(logits))]
        us = [torch.rand((), generator=torch.Generator().manual_seed(seed * 100 + r), dtype=torch.float64).float()
              for r in range(len(logits))]
        got = local._sample_rows(logits, 0.7, 0.95, gens).tolist()
        assert got == full_sort_reference(logits, 0.7, 0.95, us)


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    seen = {int(local._sample_rows(logits, 1.0, 0.85, [torch.Generator().manual_seed(s)])) for s in range(200)}
    assert seen == {0, 1}
    assert local._sample_rows(logits, 0.0, 1.0, None).tolist() == [0]  # greedy
