"""Head overlaps with a bar: the uniform-attention baseline of the induction test is what a uniform head scores,
a top-k list of noise heads counts before the bar and not after it, and the paper's own overlaps are reproduced
from its published lists."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import reference_file
from thinklens.attention.induction import INDUCTION_MIN_RATIO, InductionScores, induction_scores
from thinklens.attention.overlaps import compare_with_reference, head_overlaps
from thinklens.attention.retrieval import RETRIEVAL_THRESHOLD, RetrievalScores


@pytest.mark.parametrize("bos", [True, False])
def test_uniform_baseline_is_the_score_of_a_uniform_head(qwen2_model, toy_tokenizer, bos):
    """With q = k = 0 every softmax row is uniform over the causal keys: each head scores exactly the baseline."""
    attn = [layer.self_attn for layer in qwen2_model.model.layers]
    saved = [(a.q_proj.weight.clone(), a.q_proj.bias.clone()) for a in attn]
    try:
        with torch.no_grad():
            for a in attn:
                a.q_proj.weight.zero_()
                a.q_proj.bias.zero_()
            res = induction_scores(qwen2_model, toy_tokenizer if bos else None, seq_len=16, n_seqs=2)
    finally:
        with torch.no_grad():
            for a, (w, b) in zip(attn, saved):
                a.q_proj.weight.copy_(w)
                a.q_proj.bias.copy_(b)
    assert res.settings["bos"] is bos
    assert np.allclose(res.scores, res.uniform_baseline(), atol=1e-6)
    assert res.threshold() == pytest.approx(INDUCTION_MIN_RATIO * res.uniform_baseline())
    assert res.heads_above() == []


def _noise_induction() -> InductionScores:
    s = np.full((4, 8), 0.011, dtype=np.float32)
    s[1, 2], s[2, 6], s[2, 5] = 0.02, 0.025, 0.3  # two "top" heads at noise level, one real induction head
    return InductionScores(s, "m", {"seq_len": 64, "bos": True})


def test_overlap_before_and_after_the_bar():
    rfh = [(1, 2), (2, 6), (1, 7)]
    ret = np.zeros((4, 8))
    ret[1, 2], ret[3, 3] = 0.9, 0.05  # one retrieval head (an RFH), one below Wu et al.'s 0.1
    rs = RetrievalScores(ret, np.zeros((4, 8)), [{"passed": True}])
    ind = _noise_induction()
    assert 0.10 < ind.threshold() < 0.12  # 10 x ~0.0106 for seq_len 64 with BOS
    out = head_overlaps(rfh, ind, rs, 32)
    assert out["induction"]["before"]["overlap"] == 2  # (1,2) and (2,6) are in the top-3 of the noise list
    assert out["induction"]["after"]["overlap"] == 0 and out["induction"]["n_above"] == 1
    assert out["induction"]["after"]["p_value"] == 1.0
    assert out["retrieval"]["threshold"] == RETRIEVAL_THRESHOLD and out["retrieval"]["n_above"] == 1
    assert out["retrieval"]["after"]["overlap"] == 1 and out["retrieval"]["after"]["shared"] == [[1, 2]]
    # thresholds can be overridden (the defaults stay in their modules)
    assert head_overlaps(rfh, ind, rs, 32, {"induction": 0.015})["induction"]["after"]["overlap"] == 2
    assert "retrieval" not in head_overlaps(rfh, ind, None, 32)
    json.dumps(out, allow_nan=False)


def test_the_papers_own_overlaps_from_its_lists():
    path = reference_file("paper_reference.json")
    ref = json.loads(path.read_text())
    model = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"

    def heads(key):
        return {tuple(h[0]) if isinstance(h[0], list) else tuple(h) for h in ref[key][model]}

    rfh = heads("reasoning_focus_heads_top10")
    n_total = 28 * 12  # R1-Distill-Qwen-1.5B: 28 layers x 12 query heads
    out = compare_with_reference(str(path), "DeepSeek-R1-Distill-Qwen-1.5B",
                                 {"rfh": sorted(rfh), "retrieval": sorted(heads("retrieval_heads_top10"))[:5]},
                                 n_total)
    assert out["model"] == model
    assert out["paper"]["rfh_vs_retrieval"]["overlap"] == len(rfh & heads("retrieval_heads_top10"))
    assert out["paper"]["rfh_vs_induction"]["overlap"] == len(rfh & heads("induction_heads_top10"))
    assert out["paper"]["rfh_vs_retrieval"]["p_value"] < 0.01  # 4 of 10 among 336 heads is no chance
    assert out["ours_vs_paper"]["rfh"]["overlap"] == 10
    assert out["ours_vs_paper"]["retrieval"]["overlap"] == 5
