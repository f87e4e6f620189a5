"""On the embedded organism tiny-r1: capture == eager, and the Reasoning-Focus Heads include the head that copies the
reasoning's result into the answer (ground truth: the answer digits are copied from ``Final answer is N.``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from thinklens.attention.capture import RowsReducer, capture_attention
from thinklens.attention.heads import rank_heads
from thinklens.attention.segments import HeadScores, span_scores, trace_head_scores
from thinklens.traces import Span, Trace

TOP_K = 5  # the ground-truth copy head must be among the top-5 RFHs by mean a2r


def copy_spans(trace: Trace, problem, prompt_chars: int):
    """(query span, key span): the answer tokens that predict the digits of \\boxed{N} (the `{` and all but the last
    digit) and the digits of N in the reasoning's ``Final answer is N.`` line."""
    a, b = problem.answer_char_span
    key = trace.tokens_in_chars(prompt_chars + a, prompt_chars + b)
    ans_text = trace.span_text(trace.answer)
    start = trace.char_span(trace.answer)[0] + ans_text.index("\\boxed{") + len("\\boxed")
    digits = trace.tokens_in_chars(start, start + 1 + len(problem.answer))  # `{` + N's digits
    return Span(digits.start, digits.end - 1), key


@pytest.fixture(scope="module")
def tiny_results(tiny_r1):
    from thinklens.toy import full_text, generate_problems, prompt_text

    model, tok, prof = tiny_r1
    torch.set_num_threads(2)
    rows, gts = [], []
    for p in generate_problems(24, seed=11):
        tr = Trace.from_text(full_text(p), tok, prof)
        rows.append(trace_head_scores(model, tr, reasoning_queries=False))
        q, k = copy_spans(tr, p, len(prompt_text(p)))
        gts.append(span_scores(model, tr.ids, q, k))
    hs = HeadScores.from_traces([str(i) for i in range(len(rows))], rows, model="tiny-r1")
    return hs, np.mean(gts, axis=0)  # gt [L, H]


@pytest.mark.slow
def test_tiny_r1_capture_equals_eager(tiny_r1):
    from thinklens.toy import full_text, generate_problems

    model, tok, prof = tiny_r1
    tr = Trace.from_text(full_text(generate_problems(1, seed=2)[0]), tok, prof)
    ids = torch.tensor([tr.ids])
    pos = list(tr.answer)
    red = RowsReducer()
    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
        with capture_attention(model, pos, red):
            cap = model(ids, use_cache=False).logits
        model.set_attn_implementation("eager")
        try:
            eager = model(ids, use_cache=False, output_attentions=True).attentions
        finally:
            model.set_attn_implementation("sdpa")
    assert torch.equal(plain, cap)
    for layer, att in enumerate(eager):
        assert (red.layer(layer)[0] - att[0][:, pos]).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_ground_truth_copy_head_is_a_top_rfh(tiny_results):
    hs, gt = tiny_results
    top = rank_heads(hs, "a2r", TOP_K, n_bootstrap=0).pairs()
    best = tuple(int(x) for x in np.unravel_index(np.argmax(gt), gt.shape))
    assert gt[best] > 0.5, f"no head copies the result (max copy attention {gt.max():.2f})"
    assert best in top, f"copy head {best} (copy attention {gt[best]:.2f}) not in top-{TOP_K} RFHs {top}"
