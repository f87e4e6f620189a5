import pytest
import torch

from thinklens.errors import ThinklensError
from thinklens.modules import attention_shape
from thinklens.patching.targets import Patch, Site, SiteKind, capture, patching


def _run(model, ids, patches=()):
    with torch.no_grad(), patching(model, _profile(), list(patches)):
        return model(input_ids=ids[None]).logits[0, -1]  # [vocab]


def _profile():
    from thinklens.profiles import get_profile

    return get_profile("tiny-r1")


def _all_positions(model, clean, corrupted, sites):
    """Patches that copy every clean activation of ``sites`` at every position into the corrupted run."""
    with torch.no_grad(), capture(model, _profile(), sites) as acts:
        model(input_ids=clean[None])
    return [Patch(0, s, p, acts[s][0, p]) for s in sites for p in range(len(clean))]


@pytest.fixture(scope="module")
def ids(toy_pairs4):
    pair = toy_pairs4[0]
    return torch.tensor(pair.clean_ids), torch.tensor(pair.corrupted_ids)


def test_full_patches_restore_or_match(random_model, ids):
    """Patching a whole activation reproduces the clean run; equivalent sites give equal results (GQA heads)."""
    model = random_model
    clean, corr = ids
    n_layers, n_heads, n_kv, _ = attention_shape(model)
    assert n_kv < n_heads  # the fixture is GQA
    clean_logits, corr_logits = _run(model, clean), _run(model, corr)
    assert (clean_logits - corr_logits).abs().max() > 1e-2  # the runs differ, so the checks below can fail
    last = n_layers - 1
    for kind in (SiteKind.RESID_PRE, SiteKind.RESID_MID, SiteKind.RESID_POST):
        layer = 0 if kind is SiteKind.RESID_PRE else last
        out = _run(model, corr, _all_positions(model, clean, corr, [Site(kind, layer)]))
        assert torch.allclose(out, clean_logits, atol=1e-4), kind
    # resid_mid at layer l (all positions) == resid_pre at layer l + 1 (all positions)
    mid = _run(model, corr, _all_positions(model, clean, corr, [Site("resid_mid", 0)]))
    pre = _run(model, corr, _all_positions(model, clean, corr, [Site("resid_pre", 1)]))
    assert torch.allclose(mid, pre, atol=1e-4)
    # every query head of a layer == that layer's attention output (o_proj is linear, no bias)
    heads = _run(model, corr, _all_positions(model, clean, corr, [Site("head", 1, h) for h in range(n_heads)]))
    attn = _run(model, corr, _all_positions(model, clean, corr, [Site("attn_out", 1)]))
    assert torch.allclose(heads, attn, atol=1e-4)
    assert not torch.allclose(attn, corr_logits, atol=1e-3)
    # attention + MLP outputs of every layer == the clean run
    both = [Site(k, layer) for layer in range(n_layers) for k in (SiteKind.ATTN_OUT, SiteKind.MLP_OUT)]
    assert torch.allclose(_run(model, corr, _all_positions(model, clean, corr, both)), clean_logits, atol=1e-4)


def test_hooks_are_removed_after_errors(qwen_model, ids):
    clean, corr = ids
    before = _run(qwen_model, corr)
    bad = [Patch(0, Site("resid_pre", 0), 10_000, torch.zeros(64))]
    with pytest.raises(ThinklensError, match="outside"):
        _run(qwen_model, corr, bad)
    assert torch.equal(_run(qwen_model, corr), before)


def test_site_validation(qwen_model):
    with pytest.raises(ThinklensError, match="head is required"):
        Site("head", 0)
    with pytest.raises(ThinklensError, match="unknown site kind"):
        Site("resid", 0)
    with pytest.raises(ThinklensError, match="layer out of range"):
        with capture(qwen_model, _profile(), [Site("resid_pre", 99)]):
            pass
    with pytest.raises(ThinklensError, match="head out of range"):
        with patching(qwen_model, _profile(), [Patch(0, Site("head", 0, 4), 0, torch.zeros(16))]):
            pass
