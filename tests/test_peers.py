"""Independent oracles: thinklens' head scores and patching sweeps equal TransformerLens' (and nnsight's) in fp32.

Two implementations written by other hands catch what a shared misconception would hide: GQA head indexing, what
"resid_pre at layer L" means, position conventions. On a small random Qwen2 and a small random Llama, both GQA
(4 query / 2 kv heads), every segment score of :func:`thinklens.trace_head_scores` equals the same reduction of
TransformerLens' ``hook_pattern``; ``patch_pair`` sweeps of ``resid_pre``, ``resid_mid``, ``attn_out`` and
``mlp_out`` equal ``transformer_lens.patching``'s; single query-head patching equals TL's ``hook_z`` patching
(``get_act_patch_attn_head_out_by_pos``), which indexes query heads. All to <= 1e-4. The peers are installed by the
``peers`` extra (README test command); these tests skip only when a peer is not importable.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import load_script

TOL = 1e-4
TEXT = ("<｜begin▁of▁sentence｜><｜User｜>What is 12+7?<｜Assistant｜><think>\n12+7=19. Wait, check: 19-7=12."
        "\nFinal answer is 19.\n</think>\n\nThe answer is \\boxed{19}.<｜end▁of▁sentence｜>")


def _config(family: str, vocab: int):
    from transformers import LlamaConfig, Qwen2Config

    cls = Qwen2Config if family == "qwen2" else LlamaConfig
    return cls(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=128, max_position_embeddings=256)


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def models(request, char_tokenizer):
    """(thinklens' model in SDPA, TL's bridge on an eager copy of the same weights, tokenizer)."""
    from transformers import AutoModelForCausalLM

    tl_bridge = pytest.importorskip("transformer_lens.model_bridge", reason="transformer-lens not installed")
    torch.manual_seed(0)
    cfg = _config(request.param, len(char_tokenizer))
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.set_attn_implementation("sdpa")
    # TL re-creates a tokenizer with a BOS token from its name_or_path, which the in-memory char tokenizer lacks; every
    # input here is ids, so hand it the toy tokenizer, loaded from its directory
    bridge = tl_bridge.TransformerBridge.boot_transformers(f"random/{request.param}", hf_model=copy.deepcopy(model),
                                                           tokenizer=_tokenizer(), device="cpu")
    return model, bridge, char_tokenizer


@pytest.fixture(scope="session")
def pair(models):
    """A clean/corrupted pair of random ids (no padding), answers = the tokens whose logit difference moves most."""
    from thinklens.patching.pairs import Pair

    model = models[0]
    g = torch.Generator().manual_seed(3)
    T, V = 24, model.config.vocab_size
    clean = torch.randint(0, V, (T,), generator=g)
    corrupted = clean.clone()
    corrupted[4:8] = torch.randint(0, V, (4,), generator=g)
    corrupted[15] = (clean[15] + 1) % V
    with torch.no_grad():
        d = model(clean[None]).logits[0, -1] - model(corrupted[None]).logits[0, -1]
    return Pair(id="p", clean_id="a", corrupted_id="b", clean_ids=clean.tolist(), corrupted_ids=corrupted.tolist(),
                clean_mask=[1] * T, corrupted_mask=[1] * T, clean_answer=int(d.argmax()),
                corrupted_answer=int(d.argmin()), clean_answer_text="", corrupted_answer_text="",
                positions={"answer_flip": 15, "think_close": 18, "final": T - 1},
                spans={"prompt": [0, 10], "reasoning": [10, 18], "answer": [18, T]})


def _metric(pair):
    def metric(logits):
        return logits[0, -1, pair.clean_answer] - logits[0, -1, pair.corrupted_answer]

    return metric


def _tl_nld(bridge, pair, fn, hook_suffix: str, rows: list[tuple]) -> np.ndarray:
    """TL's patching function ``fn`` over ``rows`` of (layer, pos[, head]) as NLD."""
    import pandas as pd

    clean, corrupted = torch.tensor([pair.clean_ids]), torch.tensor([pair.corrupted_ids])
    metric = _metric(pair)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean, names_filter=lambda n: n.endswith(hook_suffix))
        lc, lb = float(metric(bridge(clean))), float(metric(bridge(corrupted)))
        cols = ["layer", "pos", "head"][: len(rows[0])]
        vals = fn(bridge, corrupted, cache, metric, index_df=pd.DataFrame(rows, columns=cols), index_axis_names=None)
    return (vals.numpy() - lb) / (lc - lb)


def test_head_scores_equal_transformer_lens(models):
    """Every segment score (a2bos ... a2a, r2r, r2p) of trace_head_scores vs the same sums of TL's hook_pattern."""
    from thinklens.attention.segments import _KEY_SEGMENT, SCORE_NAMES, trace_head_scores
    from thinklens.traces import Span, Trace

    model, bridge, tok = models
    trace = Trace.from_text(TEXT, tok)
    ours = trace_head_scores(model, trace).scores
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([trace.ids]), names_filter=lambda n: n.endswith("hook_pattern"))
    pattern = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"][0] for i in range(bridge.cfg.n_layers)])
    assert pattern.shape[1] == model.config.num_attention_heads  # query heads, not kv heads
    for name in SCORE_NAMES:
        q = trace.answer if name.startswith("a2") else trace.reasoning
        k = getattr(trace, _KEY_SEGMENT[name]) or Span(0, 0)  # (no BOS segment: the char tokenizer adds none)
        theirs = pattern[:, :, q.start : q.end, k.start : k.end].sum(-1).mean(-1).numpy()
        np.testing.assert_allclose(ours[name], theirs, atol=TOL, rtol=0, err_msg=name)
    assert float(ours["a2r"].max()) > 0.05  # not a vacuous comparison


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resid_pre", "resid_mid", "attn_out", "mlp_out"])
def test_patching_sweep_equals_transformer_lens(models, pair, kind):
    """patch_pair (fast engine) over every position x layer vs transformer_lens.patching.get_act_patch_<kind>."""
    from transformer_lens import patching

    from thinklens.patching.sweeps import patch_pair
    from thinklens.profiles import get_profile

    model, bridge, _ = models
    positions = [5, 12, 15, 18, 23]  # corrupted block, reasoning, flip, think_close, final
    ours = np.asarray(patch_pair(model, get_profile("default"), pair, positions, kind).nld)  # [pos, layer]
    n = model.config.num_hidden_layers
    fn = getattr(patching, f"get_act_patch_{kind}")
    theirs = _tl_nld(bridge, pair, fn, f"hook_{kind}", [(layer, p) for p in positions for layer in range(n)])
    np.testing.assert_allclose(ours, theirs.reshape(len(positions), n), atol=TOL, rtol=0)
    assert np.nanmax(np.abs(ours)) > 0.01  # some cell carries signal


@pytest.mark.slow
def test_query_head_patching_equals_transformer_lens(models, pair):
    """Single query-head patching under GQA (4 query heads share 2 kv heads) vs TL's per-head z patching."""
    from transformer_lens import patching

    from thinklens.patching.sweeps import patch_pair
    from thinklens.profiles import get_profile

    model, bridge, _ = models
    hpos = [15, 23]
    res = patch_pair(model, get_profile("default"), pair, "final", heads=True, head_positions=hpos)
    ours = np.asarray(res.head_nld)  # [pos, layer, head]
    n, h = model.config.num_hidden_layers, model.config.num_attention_heads
    rows = [(layer, p, head) for p in hpos for layer in range(n) for head in range(h)]
    theirs = _tl_nld(bridge, pair, patching.get_act_patch_attn_head_out_by_pos, "hook_z", rows)
    np.testing.assert_allclose(ours, theirs.reshape(len(hpos), n, h), atol=TOL, rtol=0)
    assert np.abs(ours).max() > 0.01
    # heads sharing a kv head are still distinct heads: their effects differ
    assert not np.allclose(ours[..., 0], ours[..., 1], atol=TOL)


REPO = Path(__file__).parents[1]
SCRIPT = REPO / "benchmarks" / "peers.py"


def test_package_never_imports_the_peers():
    """The peers are test and benchmark dependencies only: no module of the package imports them."""
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(transformer_lens|nnsight)\b", re.M)
    hits = [str(p) for p in (REPO / "thinklens").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert not hits


@pytest.mark.slow
def test_benchmark_tools_agree():
    """The benchmark's three implementations (its --quick width, 12/2 heads, 1 layer, T=128) agree, in-process."""
    pytest.importorskip("nnsight", reason="nnsight not installed")
    pytest.importorskip("transformer_lens", reason="transformer-lens not installed")
    import argparse

    bench = load_script(SCRIPT, "bench_peers")
    args = argparse.Namespace(vocab=4096, hidden=384, layers=1, seq_now=128, quick=True, device="cpu")
    ans = bench.answer_tokens(args)
    out = {}
    for tool in bench.TOOLS:
        model, clean, corrupted, lay = bench.build(args)
        wrapped = bench.prepare(tool, model, None if tool == "thinklens" else _tokenizer())
        with torch.no_grad():
            out[tool] = (bench.a2r(tool, wrapped, clean, lay),
                         bench.patch(tool, wrapped, clean, corrupted, lay, ans[:2]))
    for tool in ("tl", "nnsight"):
        for ours, theirs in zip(out["thinklens"], out[tool]):
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0, err_msg=tool)


def _tokenizer():
    from thinklens.patching.pairs import toy_tokenizer

    return toy_tokenizer()
