"""Step-level attention: equal to reductions of eager attention, consistent with a2r, and O(chunk x T) memory."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from thinklens.errors import ThinklensError
from thinklens.steps.attention import StepReducer, head_mean, step_attention
from thinklens.steps.segment import segment_reasoning, step_spans
from thinklens.traces import Trace

TEXT = ("<｜begin▁of▁sentence｜><｜User｜>Compute (7+5)*3-4.<｜Assistant｜><think>\n7+5=12\n12*3=35\n"
        "Wait, 12*3=36\n36-4=32\nFinal answer is 32.\n</think>\n\nThe answer is \\boxed{32}.<｜end▁of▁sentence｜>")


def eager_reference(model, trace: Trace, spans):
    """Brute force from the full eager attention: (answer_step [L, H, n], step_step [L, H, n, n])."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([trace.ids]), output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation("sdpa")
    n = len(spans)
    ans = range(trace.answer.start, trace.answer.end)
    a_s, s_s = [], []
    for att in out.attentions:  # [1, H, T, T]
        A = att[0].double().numpy()
        mass = np.stack([A[:, :, a:b].sum(-1) for a, b in spans], axis=-1)  # [H, T(q), n]
        a_s.append(mass[:, list(ans)].mean(1))
        s_s.append(np.stack([mass[:, a:b].mean(1) for a, b in spans], axis=1))  # [H, n(q), n(k)]
    assert len(a_s[0][0]) == n
    return np.stack(a_s), np.stack(s_s)


def test_equals_eager_attention_reductions(random_qwen2, toy_tokenizer):
    trace = Trace.from_text(TEXT, toy_tokenizer)
    spans = step_spans(segment_reasoning(trace))
    assert len(spans) == 5
    ref_a, ref_s = eager_reference(random_qwen2, trace, spans)
    for chunk in (None, 64):  # default chunks and tiny ones (many reducer calls per layer)
        sa = step_attention(random_qwen2, trace, spans, chunk_elements=chunk)
        np.testing.assert_allclose(sa.answer_step, ref_a, atol=1e-5)
        np.testing.assert_allclose(sa.step_step, ref_s, atol=1e-5)
    assert np.allclose(np.triu(sa.step_step, k=1), 0)  # causal: a step never reads a later one
    only = step_attention(random_qwen2, trace, spans, step_matrix=False)
    assert only.step_step is None
    np.testing.assert_allclose(only.answer_step, ref_a, atol=1e-5)


def test_answer_step_sums_to_a2r_and_reducer_ignores_gaps(random_qwen2, toy_tokenizer):
    from thinklens.attention.segments import trace_head_scores

    trace = Trace.from_text(TEXT, toy_tokenizer)
    spans = step_spans(segment_reasoning(trace))
    sa = step_attention(random_qwen2, trace, spans)
    a2r = trace_head_scores(random_qwen2, trace, reasoning_queries=False).scores["a2r"]
    np.testing.assert_allclose(sa.answer_step.sum(-1), a2r, atol=1e-5)
    # spans with a gap: keys in the gap count for no step, queries in the gap are not captured
    gappy = [spans[0], (spans[1][0] + 2, spans[1][1]), *spans[2:]]
    ref_a, ref_s = eager_reference(random_qwen2, trace, gappy)
    got = step_attention(random_qwen2, trace, gappy)
    np.testing.assert_allclose(got.answer_step, ref_a, atol=1e-5)
    np.testing.assert_allclose(got.step_step, ref_s, atol=1e-5)


def test_head_mean_and_errors(random_qwen2, toy_tokenizer):
    trace = Trace.from_text(TEXT, toy_tokenizer)
    spans = step_spans(segment_reasoning(trace))
    sa = step_attention(random_qwen2, trace, spans)
    np.testing.assert_allclose(sa.answer_scores([(0, 1), (1, 3)]), (sa.answer_step[0, 1] + sa.answer_step[1, 3]) / 2)
    with pytest.raises(ThinklensError, match="out of range"):
        head_mean(sa.answer_step, [(5, 0)])
    unfinished = Trace.from_text(TEXT.split("</think>")[0], toy_tokenizer)
    with pytest.raises(ThinklensError, match="no answer"):
        step_attention(random_qwen2, unfinished, step_spans(segment_reasoning(unfinished)))


def test_reducer_state_is_steps_squared_not_tokens_squared():
    red = StepReducer(3, 4, [(10, 20), (20, 35)], (40, 45), seq_len=50)
    assert tuple(red.sums.shape) == (3, 4, 3, 2)
    assert red.positions.tolist() == [*range(10, 35), *range(40, 45)]


@pytest.mark.slow
def test_peak_memory_of_a_4k_trace_is_far_below_t_squared():
    """A ~4k-token trace on a random Qwen2 (2 layers, 4 heads): the extra peak resident memory of step attention
    over a plain forward stays far below one T x T float32 matrix (measured: +3.4 MB vs 65.5 MB for T^2)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak-RSS counter")
    child = Path(__file__).with_name("memory_child.py")

    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, str(child), mode, "4096", str(2**18)], capture_output=True, text=True,
                             check=True, timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    fwd, steps = run("forward"), run("steps")
    T = steps["T"]
    assert T > 4000 and steps["n_steps"] > 80
    t2 = T * T * 4  # one head's T x T attention in float32
    extra = steps["peak_extra_bytes"] - fwd["peak_extra_bytes"]
    print(f"T={T}: forward +{fwd['peak_extra_bytes'] / 2**20:.1f} MiB, step attention "
          f"+{steps['peak_extra_bytes'] / 2**20:.1f} MiB; T^2 fp32 = {t2 / 2**20:.1f} MiB")
    assert extra < t2 / 4
