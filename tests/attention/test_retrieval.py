"""Retrieval heads: needle tests built with the model's tokenizer, the reducer's argmax criterion against raw rows,
and on tiny-r1 the copy heads (L1H2, L1H3, L1H1) come out as its retrieval heads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import reference_file
from thinklens.attention.capture import RowsReducer, capture_attention
from thinklens.attention.retrieval import (
    RETRIEVAL_THRESHOLD,
    RetrievalScores,
    build_tests,
    retrieval_scores,
    score_test,
)
from thinklens.errors import ThinklensError


def test_needle_tests_are_seeded_and_the_answer_copies_the_needle(toy_tokenizer):
    tests = build_tests(toy_tokenizer, "arithmetic", lengths=(150,), n_needles=2, seed=1, bos=toy_tokenizer.bos_token)
    assert len(tests) == 10  # 5 depths x 2 needles
    again = build_tests(toy_tokenizer, "arithmetic", lengths=(150,), n_needles=2, seed=1, bos=toy_tokenizer.bos_token)
    assert [t.ids for t in tests] == [t.ids for t in again]
    assert [t.ids for t in tests] != [t.ids for t in build_tests(toy_tokenizer, "arithmetic", lengths=(150,),
                                                                 n_needles=2, seed=2)]
    for t in tests:
        assert t.ids[t.needle.start:t.needle.end] == t.ids[t.answer.start:t.answer.end]
        assert toy_tokenizer.decode(t.ids[t.needle.start:t.needle.end]) == t.value
        assert t.answer.end == len(t.ids) and t.n_context >= 150
        assert toy_tokenizer.decode(t.ids[: t.answer.start]).endswith("\\boxed{")
    shallow, deep = tests[0], tests[-1]  # depth 0 and depth 1
    assert shallow.needle.start < deep.needle.start
    assert toy_tokenizer.decode(deep.ids[deep.needle.end:deep.answer.start]).startswith(".\n</think>")


def test_passkey_tests_with_the_real_r1_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(reference_file("deepseek-r1-distill-qwen-tokenizer")))
    tests = build_tests(tok, "passkey", lengths=(300,), depths=(0.0, 0.5, 1.0), n_needles=1, seed=0,
                        bos=tok.bos_token)
    for t in tests:
        needle = tok.decode(t.ids[t.needle.start:t.needle.end])
        assert needle.strip() == t.value and len(t.value) == 5
        assert t.ids[t.needle.start:t.needle.end] == t.ids[t.answer.start:]
        assert t.ids[0] == tok.bos_token_id and t.ids[1] != tok.bos_token_id
        assert 300 <= t.n_context < 330
    from thinklens.profiles import get_profile

    assert get_profile("tiny-r1").needle_haystack == "arithmetic"
    assert get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").needle_haystack == "passkey"


def test_score_matches_the_criterion_on_raw_rows(qwen2_model, toy_tokenizer):
    """The argmax reducer and the copy-step filter agree with the definition computed from full attention rows."""
    model = qwen2_model
    t = build_tests(toy_tokenizer, "arithmetic", lengths=(100,), depths=(0.5,), n_needles=1, seed=4)[0]
    hits, mass, share = score_test(model, t)
    rows = list(range(t.answer.start - 1, t.answer.end - 1))
    red = RowsReducer()
    with torch.no_grad(), capture_attention(model, rows, red):
        logits = model(torch.tensor([t.ids])).logits[0]
    ids = np.array(t.ids)
    target = ids[t.answer.start:t.answer.end]
    copied = logits[rows].argmax(-1).numpy() == target
    assert share == pytest.approx(copied.mean())
    for layer in range(2):
        probs = red.layer(layer)[0]  # [H, rows, k]
        am = probs.argmax(-1).numpy()  # [H, rows]
        for h in range(probs.shape[0]):
            want = sum(1 for j in range(len(rows)) if copied[j] and t.needle.start <= am[h, j] < t.needle.end
                       and ids[am[h, j]] == target[j]) / len(t.needle)
            assert hits[layer, h] == pytest.approx(want)
            if copied.any():
                nm = probs[h, :, t.needle.start:t.needle.end].sum(-1).numpy()[copied].mean()
                assert mass[layer, h] == pytest.approx(nm, abs=1e-6)


def test_tiny_r1_retrieval_heads_are_its_copy_heads(tiny_r1, tmp_path):
    model, tok, profile = tiny_r1
    rs = retrieval_scores(model, tok, profile=profile, model_name="tiny-r1", depths=(1.0,), n_needles=3)
    assert rs.n_passed >= 5 and rs.settings["format"] == "arithmetic"
    top3 = {(layer, head) for layer, head, _ in rs.top(3)}
    assert top3 == {(1, 2), (1, 3), (1, 1)}, rs.top(5)
    above = rs.heads_above()
    assert all(s > RETRIEVAL_THRESHOLD for _, _, s in above) and (1, 2) in {(a, b) for a, b, _ in above}
    rs.save(tmp_path / "r.json")
    back = RetrievalScores.load(tmp_path / "r.json")
    assert np.allclose(back.scores, rs.scores, atol=1e-6) and back.n_passed == rs.n_passed
    assert [t[:2] for t in back.top(3)] == [t[:2] for t in rs.top(3)]


def test_no_passed_test_gives_nan_scores_and_an_empty_top(qwen2_model, toy_tokenizer, tmp_path):
    rs = retrieval_scores(qwen2_model, toy_tokenizer, fmt="arithmetic", lengths=(80,), depths=(0.0,), n_needles=1)
    assert rs.n_passed == 0 and np.isnan(rs.scores).all()
    assert rs.top(5) == [] and rs.heads_above() == []
    rs.save(tmp_path / "r.json")  # strict JSON (NaN written as null)
    assert np.isnan(RetrievalScores.load(tmp_path / "r.json").scores).all()
    with pytest.raises(ThinklensError, match="unknown haystack format"):
        retrieval_scores(qwen2_model, toy_tokenizer, fmt="nope")
