"""Ground truth on tiny-r1: its answer is copied from the line that states the final value ("Final answer is N."),
computed by the line before it; a slipped line corrected by "Wait" does not carry the answer.

On the organism's reference traces (teacher-forced ``full_text``, ~20% with a slip), the answer→step attention of
the top Reasoning-Focus Heads must rank an answer-carrying line (``Final answer is N.`` or the line computing N)
first. Measured on 200 test problems (seed 0), RFHs ranked on the same traces: the ``Final answer is N.`` line is on
top in 200/200 traces; the slipped line is never on top and gets less attention than its ``Wait`` correction in 94%
of the 47 slip traces. Thresholds below leave room for a retrained organism, not for a broken measurement.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.steps.conftest import write_tiny_traces
from thinklens.steps.results import StepsConfig
from thinklens.steps.run import run_steps


def answer_carrying(text: str, answer: str) -> bool:
    t = text.strip()
    return t == f"Final answer is {answer}." or (t.endswith(f"={answer}") and not t.startswith("Final"))


def check_ground_truth(res, probs) -> tuple[float, int, float]:
    top_ok, slip_top, slip_below = [], 0, []
    for p in probs:
        st = res.trace_steps(p.id)
        a = np.array([s["attention"] for s in st])
        texts = [s["text"].strip() for s in st]
        top_ok.append(answer_carrying(texts[int(a.argmax())], p.answer))
        if p.has_slip:
            w = next(i for i, t in enumerate(texts) if t.startswith("Wait"))
            slip_top += int(a.argmax()) == w - 1
            slip_below.append(a[w - 1] < a[w])
    return float(np.mean(top_ok)), slip_top, float(np.mean(slip_below))


@pytest.mark.slow
def test_rfh_attention_puts_an_answer_carrying_line_on_top(tiny_r1, tmp_path):
    model, tok, prof = tiny_r1
    probs = write_tiny_traces(tmp_path / "t.jsonl", 80, seed=0)
    assert sum(p.has_slip for p in probs) >= 10
    res = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out",
                    StepsConfig(methods="attention", top_k=3, proximity=1, n_bootstrap=0), progress=False)
    assert res.meta["rfh_source"].startswith("ranked")
    top, slip_top, slip_below = check_ground_truth(res, probs)
    assert top >= 0.95 and slip_top == 0 and slip_below >= 0.8, (top, slip_top, slip_below)
    assert res.meta["attention_top_step_categories"] == {"final_answer": 80}
    rec = json.loads((tmp_path / "out" / "receivers.json").read_text())
    assert rec["available"] and len(rec["heads"]) == 10 and rec["rfh_overlap"]["k_reference"] == 3


@pytest.mark.slow
def test_same_with_the_attention_stage_rfhs(tiny_r1, tmp_path):
    """RFHs passed in from the attention stage's ranking (``thinklens attention`` + ``heads rank``)."""
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import score_trace_file

    model, tok, prof = tiny_r1
    probs = write_tiny_traces(tmp_path / "t.jsonl", 40, seed=7)
    hs = score_trace_file(model, tok, tmp_path / "t.jsonl", tmp_path / "attn", profile=prof, token_view=0,
                          reasoning_queries=False, progress=False)
    rfh = rank_heads(hs, "a2r", 10, n_bootstrap=0).pairs()
    res = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out",
                    StepsConfig(methods="attention", n_bootstrap=0), rfh=rfh, progress=False)
    assert res.meta["rfh"] == [list(h) for h in rfh]
    top, slip_top, _ = check_ground_truth(res, probs)
    assert top >= 0.95 and slip_top == 0
