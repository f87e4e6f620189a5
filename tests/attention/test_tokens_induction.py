"""Cue-token detection through offsets, cue statistics, the HTML view, and induction scores vs eager attention."""
from __future__ import annotations

import numpy as np
import torch

from thinklens.attention.induction import InductionScores, induction_scores
from thinklens.attention.tokens import TokenAttention, cue_statistics, cue_token_mask
from thinklens.profiles import get_profile
from thinklens.report.token_view import render_token_view
from thinklens.traces import Trace

TEXT = ("<｜begin▁of▁sentence｜><｜User｜>Compute 1+2.<｜Assistant｜><think>\n1+2=4\nWait, 1+2=3\nLet me double-check"
        " it.\nWaiting is no cue.\nFinal answer is 3.\n</think>\n\nThe answer is \\boxed{3}.<｜end▁of▁sentence｜>")


def test_cue_mask_word_boundaries(toy_tokenizer):
    tr = Trace.from_text(TEXT, toy_tokenizer, get_profile("tiny-r1"))
    mask = cue_token_mask(tr, ("Wait", "double-check"))
    toks = tr.token_strings()[tr.reasoning.start : tr.reasoning.end]
    marked = "".join(t for t, m in zip(toks, mask) if m)
    assert marked == "Waitdouble-check"  # "Waiting" is not a cue (word boundary)
    assert not cue_token_mask(tr, ()).any()


def test_cue_statistics_detects_planted_signal():
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        n = 200
        cue = np.zeros(n, dtype=bool)
        cue[rng.choice(n, 10, replace=False)] = True
        vals = rng.uniform(0.5, 1.5, (2, n)) / n
        vals[:, cue] *= 3
        items.append(TokenAttention(f"t{i}", [(0, 0), (1, 1)], ["x"] * n, vals, cue))
    st = cue_statistics(items, ("Wait",), n_permutations=2000)
    assert st.n_cue_tokens == 40 and st.mean_cue > 2 * st.mean_other and st.p_value < 0.01
    null = [TokenAttention(it.id, it.heads, it.tokens, rng.uniform(0.5, 1.5, (2, 200)), it.cue_mask) for it in items]
    assert cue_statistics(null, n_permutations=2000).p_value > 0.01


def test_token_view_html_escapes(tmp_path):
    ta = TokenAttention("x<1>", [(0, 1)], ["<b>", "&", "a\"b"], np.array([[0.1, 0.5, 0.0]]), np.array([1, 0, 0], bool))
    ta.save(tmp_path)
    doc = render_token_view(tmp_path, tmp_path / "v.html")
    assert "&lt;b&gt;" in doc and "<b>" not in doc and "a&quot;b" in doc
    assert "x&lt;1&gt;" in doc and "http" not in doc and 'title="0.5"' in doc and "class=\"t cue\"" in doc


def test_induction_matches_eager(qwen2_model):
    res = induction_scores(qwen2_model, None, seq_len=12, n_seqs=2, seed=5, bos_id=0)
    # recompute with eager attention from the same seeded sequences
    from thinklens.attention.induction import _token_pool

    rng = np.random.default_rng(5)
    pool = _token_pool(qwen2_model, None)
    qwen2_model.set_attn_implementation("eager")
    try:
        acc = np.zeros((2, 4))
        for _ in range(2):
            r = rng.choice(pool, size=12, replace=False).tolist()
            with torch.no_grad():
                att = qwen2_model(torch.tensor([[0] + r + r]), use_cache=False, output_attentions=True).attentions
            q = np.arange(13, 25)
            for layer in range(2):
                acc[layer] += att[layer][0][:, q, q - 12 + 1].numpy().mean(-1)
    finally:
        qwen2_model.set_attn_implementation("sdpa")
    assert np.abs(res.scores - acc / 2).max() <= 1e-5
    assert len(res.top(3)) == 3


def test_induction_roundtrip(tmp_path):
    s = InductionScores(np.arange(6, dtype=np.float32).reshape(2, 3), "m", {"seed": 1})
    back = InductionScores.load(s.save(tmp_path / "ind.json"))
    assert back.top(1) == [(1, 2, 5.0)] and np.array_equal(back.scores, s.scores)
