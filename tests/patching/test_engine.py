import numpy as np
import pytest

from thinklens.errors import ThinklensError
from thinklens.modules import attention_shape
from thinklens.patching.engine import run_patches
from thinklens.patching.metrics import LogitDiff, normalize
from thinklens.patching.targets import Site, SiteKind


def _items(model, pair):
    n_layers, n_heads, _, _ = attention_shape(model)
    T = len(pair)
    positions = [pair.positions["answer_flip"], T - 3, T - 1]
    items = []
    for p in positions:
        for kind in SiteKind:
            for layer in range(n_layers):
                items.append([(Site(kind, layer, 1 if kind is SiteKind.HEAD else None), p)])
    items.append([(Site("resid_pre", 1), positions[1]), (Site("mlp_out", 0), T - 2)])  # several sites in one run
    items.append([(Site("head", 2, h), T - 1) for h in range(n_heads)])
    return items


def conditioned_metric(model, pair):
    """On a random model, the answer pair whose logit difference moves most between the runs (well conditioned)."""
    import torch

    with torch.no_grad():
        c = model(input_ids=torch.tensor([pair.clean_ids]), attention_mask=torch.tensor([pair.clean_mask])).logits
        b = model(input_ids=torch.tensor([pair.corrupted_ids]),
                  attention_mask=torch.tensor([pair.corrupted_mask])).logits
    d = c[0, -1] - b[0, -1]
    return LogitDiff(int(d.argmax()), int(d.argmin()))


@pytest.mark.slow
def test_fast_matches_naive(random_model, profile, toy_pairs4, padded_pair):
    """The prefix-reusing batched engine agrees with one full forward per patch (all site kinds, padded pairs)."""
    for pair in [toy_pairs4[0], padded_pair]:
        metric = conditioned_metric(random_model, pair)
        items = _items(random_model, pair)
        fast = run_patches(random_model, profile, pair, items, metric, engine="fast", max_tokens=64)
        naive = run_patches(random_model, profile, pair, items, metric, engine="naive")
        assert abs(fast.clean - naive.clean) < 1e-5 and abs(fast.corrupted - naive.corrupted) < 1e-5
        assert abs(fast.clean - fast.corrupted) > 0.5  # well conditioned: NLD differences are not float noise
        nf = normalize(fast.patched, fast.clean, fast.corrupted)
        nn_ = normalize(naive.patched, naive.clean, naive.corrupted)
        assert np.max(np.abs(nf - nn_)) <= 1e-4
        assert np.ptp(nn_) > 0.05  # some patches matter, so agreement is not trivial


def test_batched_fallback_matches_naive(monkeypatch, qwen_model, profile, padded_pair):
    """Attention implementations without custom 4D masks use a batch of rows over an expanded cache instead."""
    from thinklens.patching import engine

    monkeypatch.setattr(engine, "_can_pack", lambda model: False)
    metric = conditioned_metric(qwen_model, padded_pair)
    items = _items(qwen_model, padded_pair)[::5]
    fast = run_patches(qwen_model, profile, padded_pair, items, metric, engine="fast", batch_size=4)
    naive = run_patches(qwen_model, profile, padded_pair, items, metric, engine="naive")
    assert np.max(np.abs(fast.patched - naive.patched)) < 1e-4 * abs(naive.clean - naive.corrupted)


def test_pad_positions_are_masked(qwen_model, profile, padded_pair):
    """The padded pair has mask-0 pads and its final logits do not depend on the pad token id."""
    assert 0 in padded_pair.clean_mask or 0 in padded_pair.corrupted_mask
    metric = LogitDiff(padded_pair.clean_answer, padded_pair.corrupted_answer)
    items = [[(Site("resid_pre", 0), len(padded_pair) - 1)]]
    a = run_patches(qwen_model, profile, padded_pair, items, metric)
    from dataclasses import replace

    ids = [t if m else 7 for t, m in zip(padded_pair.corrupted_ids, padded_pair.corrupted_mask)]
    b = run_patches(qwen_model, profile, replace(padded_pair, corrupted_ids=ids), items, metric)
    assert abs(a.corrupted - b.corrupted) < 1e-5


def test_bad_items(qwen_model, profile, padded_pair):
    metric = LogitDiff(padded_pair.clean_answer, padded_pair.corrupted_answer)
    with pytest.raises(ThinklensError, match="outside"):
        run_patches(qwen_model, profile, padded_pair, [[(Site("resid_pre", 0), 10_000)]], metric)
    with pytest.raises(ThinklensError, match="unknown engine"):
        run_patches(qwen_model, profile, padded_pair, [[(Site("resid_pre", 0), 1)]], metric, engine="slow")
