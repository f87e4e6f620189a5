"""Segment scores equal eager-attention reductions; the batch run is resumable and records bad traces."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from thinklens.attention.segments import HeadScores, score_trace_file, span_scores, trace_head_scores
from thinklens.errors import ThinklensError
from thinklens.profiles import get_profile
from thinklens.traces import Span, Trace


@pytest.fixture(scope="module")
def trace(toy_tokenizer, toy_traces):
    from thinklens.toy import full_text

    _, probs = toy_traces
    return Trace.from_text(full_text(probs[0]), toy_tokenizer, get_profile("tiny-r1"))


def _eager_attn(model, ids):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), use_cache=False, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    return [a[0].numpy() for a in out.attentions]  # [L] x [H, T, T]


def test_scores_match_eager(qwen2_model, trace):
    ts = trace_head_scores(qwen2_model, trace, answer_profile=True, chunk_elements=4 * 8 * len(trace))
    att = _eager_attn(qwen2_model, trace.ids)
    a, r, p = trace.answer, trace.reasoning, trace.prompt
    for layer, A in enumerate(att):
        want_a2r = A[:, a.start : a.end, r.start : r.end].sum(-1).mean(-1)  # [H]
        want_a2p = A[:, a.start : a.end, p.start : p.end].sum(-1).mean(-1)
        want_r2r = A[:, r.start : r.end, r.start : r.end].sum(-1).mean(-1)
        assert np.abs(ts.scores["a2r"][layer] - want_a2r).max() <= 1e-5
        assert np.abs(ts.scores["a2p"][layer] - want_a2p).max() <= 1e-5
        assert np.abs(ts.scores["r2r"][layer] - want_r2r).max() <= 1e-5
        prof = A[:, a.start : a.end].mean(1)  # [H, T]
        assert np.abs(ts.answer_profile[layer] - prof).max() <= 1e-5
    total = sum(ts.scores[n] for n in ("a2bos", "a2p", "a2bot", "a2r", "a2eot", "a2a"))
    assert np.allclose(total, 1.0, atol=1e-5)  # answer queries cannot see EOS: the six masses sum to 1
    span = span_scores(qwen2_model, trace.ids, Span(a.start, a.start + 2), r)
    assert np.allclose(span[0], att[0][:, a.start : a.start + 2, r.start : r.end].sum(-1).mean(-1), atol=1e-5)


def test_unfinished_trace_rejected(qwen2_model, toy_tokenizer, trace):
    t = Trace.from_text(trace.text.split("</think>")[0], toy_tokenizer, get_profile("tiny-r1"))
    with pytest.raises(ThinklensError, match="unfinished"):
        trace_head_scores(qwen2_model, t)


def test_batch_run_resume_and_skips(qwen2_model, toy_tokenizer, toy_traces, tmp_path):
    path, probs = toy_traces
    prof = get_profile("tiny-r1")
    out = tmp_path / "att"
    hs = score_trace_file(qwen2_model, toy_tokenizer, path, out, profile=prof, limit=3, token_view=2, progress=False)
    assert hs.n_traces == 3 and hs.scores["a2r"].shape == (3, 2, 4)
    # rerun on the whole file: the 3 done traces are not recomputed (their rows stay byte-identical)
    before = (out / "scores_partial.jsonl").read_text()
    hs2 = score_trace_file(qwen2_model, toy_tokenizer, path, out, profile=prof, token_view=2, progress=False)
    assert (out / "scores_partial.jsonl").read_text().startswith(before)
    assert hs2.ids == [p.id for p in probs]
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    reasons = {s["id"]: s["reason"] for s in skipped}
    assert set(reasons) == {"line:7", "unfinished", "notext"}
    assert "unfinished" in reasons["unfinished"] and ":8" in reasons["unfinished"]
    loaded = HeadScores.load(out / "head_scores.npz")
    assert loaded.ids == hs2.ids and np.array_equal(loaded.scores["a2r"], hs2.scores["a2r"])
    assert len(loaded.skipped) == 3 and (out / "head_scores.json").exists()
    assert len(list((out / "tokens").glob("*.npz"))) == 2
    with pytest.raises(ThinklensError, match="no such trace file"):
        score_trace_file(qwen2_model, toy_tokenizer, tmp_path / "missing.jsonl", out, progress=False)


def test_duplicate_ids_recorded(qwen2_model, toy_tokenizer, toy_traces, tmp_path):
    path, _ = toy_traces
    first = path.read_text().splitlines()[0]
    dup = tmp_path / "dup.jsonl"
    dup.write_text(first + "\n" + first + "\n")
    out = tmp_path / "o"
    hs = score_trace_file(qwen2_model, toy_tokenizer, dup, out, profile=get_profile("tiny-r1"), progress=False)
    assert hs.n_traces == 1
    assert [s["reason"] for s in hs.skipped] == [f"{dup}:2 ({hs.ids[0]}): duplicate id (first at line 1)"]
    hs2 = score_trace_file(qwen2_model, toy_tokenizer, dup, out, profile=get_profile("tiny-r1"), progress=False)
    assert len(hs2.skipped) == 1 and len((out / "skipped.jsonl").read_text().splitlines()) == 1
