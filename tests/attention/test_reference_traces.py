"""Real R1-Distill-Qwen traces (shared reference data) through the attention stage: the real BPE tokenizer, real
trace lengths, unfinished responses skipped with a reason, cue words found through offsets. The model is a random
2-layer Qwen2 with the real vocabulary size: this checks the plumbing and invariants, not head identities."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REF = Path(__file__).parents[2] / ".." / "shared" / "reference"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tok_dir, traces = REF / "deepseek-r1-distill-qwen-tokenizer", REF / "r1_math500_traces.jsonl"
    if not tok_dir.exists() or not traces.exists():
        pytest.skip("shared reference data absent")
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32768)
    model = Qwen2ForCausalLM(cfg).eval()
    model.set_attn_implementation("sdpa")
    recs = [json.loads(x) for x in traces.read_text().splitlines()]
    qwen = [r for r in recs if "Qwen-1.5B" in r["model"] and r["reasoning"] == "with"]
    finished = [r for r in qwen if "</think>" in r["response"]]
    unfinished = [r for r in qwen if "</think>" not in r["response"]]
    short = sorted(finished, key=lambda r: len(r["response"]))[:3] + unfinished[:1]
    path = tmp_path_factory.mktemp("ref") / "traces.jsonl"
    path.write_text("".join(json.dumps({"id": f"{r['unique_id']}", "text": r["response"]}) + "\n" for r in short))
    return model, tok, path, len(unfinished[:1])


def test_real_traces_score_and_skip(real, tmp_path):
    from thinklens.attention.segments import ANSWER_SCORES, score_trace_file
    from thinklens.attention.tokens import analyze_tokens
    from thinklens.profiles import get_profile

    model, tok, path, n_unfinished = real
    hs = score_trace_file(model, tok, path, tmp_path, profile=get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
                          max_tokens=6000, token_view=3, progress=False)
    assert hs.n_traces + len(hs.skipped) == 3 + n_unfinished
    assert all("unfinished" in s["reason"] or "too long" in s["reason"] for s in hs.skipped)
    total = sum(hs.scores[n] for n in ANSWER_SCORES)
    assert np.allclose(total, 1.0, atol=1e-4)
    assert (hs.think_end > hs.think_start).all()
    items, stats = analyze_tokens(tmp_path, [(1, 0)], n_permutations=200)
    for it in items:  # every cue token's text overlaps a cue word
        cue_text = "".join(t for t, m in zip(it.tokens, it.cue_mask) if m)
        assert not it.cue_mask.any() or any(c in cue_text for c in ("Wait", "But", "check", "verify", "Hmm"))
    assert stats.n_cue_tokens + stats.n_other_tokens == sum(len(it.tokens) for it in items)
