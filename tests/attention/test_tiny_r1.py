"""On the embedded organism tiny-r1: capture == eager, and the Reasoning-Focus Heads include the head that copies the
reasoning's result into the answer.

Ground truth: the answer's digits in ``\\boxed{N}`` are copied from the reasoning, where N occurs in the last
computation line (``...=N``) and in ``Final answer is N.`` (``Problem.answer_char_span``). The copy head is the head
with the largest attention from the answer tokens that predict N's digits (the ``{`` and all but the last digit) to
the occurrences of N in the reasoning. On the shipped tiny-r1 (24 traces, seed 11) those are L1H2 (0.998 of its
digit-query attention on N), L1H3 (0.991) and L1H1 (0.907); by the paper's mean a2r L1H2 is the top RFH and L1H1 the
fourth. (On an earlier checkpoint the copy head ranked only 6th: the paper's score averages over *all* answer tokens,
most of them template text, so a head that reads the result at one position can be diluted.) The test asserts what
must hold for any faithful organism: the copy head is among the top 8 of 32 RFHs and the strongest RFH sits in the
copy layer.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from thinklens.attention.capture import RowsReducer, capture_attention
from thinklens.attention.heads import rank_heads
from thinklens.attention.reducers import SegmentReducer
from thinklens.attention.segments import HeadScores, trace_head_scores
from thinklens.traces import Span, Trace

TOP_K = 8  # the ground-truth copy head must be among the top-8 (of 32) RFHs by mean a2r


def copy_spans(trace: Trace, problem, prompt_chars: int) -> tuple[Span, Span, list[Span]]:
    """(queries predicting N's digits, N in ``Final answer is N.``, every occurrence of N in the reasoning)."""
    a, b = problem.answer_char_span
    final = trace.tokens_in_chars(prompt_chars + a, prompt_chars + b)
    ans_text = trace.span_text(trace.answer)
    start = trace.char_span(trace.answer)[0] + ans_text.index("\\boxed{") + len("\\boxed")
    digits = trace.tokens_in_chars(start, start + 1 + len(problem.answer))  # `{` + N's digits
    ra, rb = trace.char_span(trace.reasoning)
    occ = [trace.tokens_in_chars(ra + m.start(), ra + m.end())
           for m in re.finditer(rf"(?<!\d){re.escape(problem.answer)}(?!\d)", trace.text[ra:rb])]
    return Span(digits.start, digits.end - 1), final, occ


def copy_attention(model, trace: Trace, problem, prompt_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """[n_layers, n_heads] attention from the digit-predicting answer queries to (final-line N, any N)."""
    from thinklens.modules import attention_shape

    n_layers, n_heads, _, _ = attention_shape(model)
    q, final, occ = copy_spans(trace, problem, prompt_chars)
    labels = np.zeros(len(trace), dtype=np.int8)
    for s in occ:
        labels[s.start : s.end] = 2  # another occurrence of N
    labels[final.start : final.end] = 1
    group = np.full(len(trace), -1)
    group[q.start : q.end] = 0
    red = SegmentReducer(n_layers, n_heads, group, labels, 1)
    with torch.no_grad(), capture_attention(model, list(q), red):
        model(torch.tensor([trace.ids]), use_cache=False, logits_to_keep=1)
    m = red.means()[:, 0]  # [L, H, n_seg]
    return m[:, :, 1], m[:, :, 1] + m[:, :, 2]


@pytest.fixture(scope="module")
def tiny_results(tiny_r1):
    from thinklens.toy import full_text, generate_problems, prompt_text

    model, tok, prof = tiny_r1
    torch.set_num_threads(2)
    rows, finals, anys = [], [], []
    for p in generate_problems(24, seed=11):
        tr = Trace.from_text(full_text(p), tok, prof)
        assert tr.span_text(copy_spans(tr, p, len(prompt_text(p)))[1]) == p.answer
        rows.append(trace_head_scores(model, tr, reasoning_queries=False))
        f, a = copy_attention(model, tr, p, len(prompt_text(p)))
        finals.append(f)
        anys.append(a)
    hs = HeadScores.from_traces([str(i) for i in range(len(rows))], rows, model="tiny-r1")
    return hs, np.mean(finals, axis=0), np.mean(anys, axis=0)


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
    hs, final, any_n = tiny_results
    top = rank_heads(hs, "a2r", TOP_K, n_bootstrap=0).pairs()
    best = tuple(int(x) for x in np.unravel_index(np.argmax(any_n), any_n.shape))
    assert any_n[best] > 0.5, f"no head copies the result (max copy attention {any_n.max():.2f})"
    assert best in top, f"copy head {best} (copy attention {any_n[best]:.2f}) not in top-{TOP_K} RFHs {top}"
    assert top[0][0] == best[0], f"the strongest RFH {top[0]} is not in the copy layer {best[0]}"
