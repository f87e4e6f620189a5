"""Cue tokens vs matched controls: a planted sentence-start effect makes the old trace-mean contrast positive while
the sentence-position control sees no cue effect; a planted cue effect shows in every control."""
from __future__ import annotations

import numpy as np
import pytest

from thinklens.attention.tokens import (
    CueControl,
    TokenAttention,
    cue_occurrences,
    cue_window_control,
    sentence_offsets,
)
from thinklens.errors import ThinklensError


def _item(i: int, cue_boost: float) -> TokenAttention:
    """A char-level trace: sentence starts (first 4 characters of a line) get 3x attention, cue tokens 'Wait'
    additionally ``cue_boost`` x; two heads, the second a copy of the first x 2."""
    text = f"{i}+5=1{i}\nWait, {i}+5=2{i}\n2{i}*3=6{i}\nBut then 6{i}-1=5{i}\nFinal answer is 5{i}.\n"
    toks = list(text)
    sent, off = sentence_offsets(toks)
    v = np.where(off < 4, 3.0, 1.0)
    for _, s, e in cue_occurrences(toks, ("Wait", "But")):
        v[s:e] *= cue_boost
    values = np.stack([v, 2 * v])
    mask = np.zeros(len(toks), dtype=bool)
    return TokenAttention(f"t{i}", [(1, 2), (2, 6)], toks, values, mask)


def _row(cc: CueControl, control: str, head: str = "mean", cue: str = "all"):
    return next(r for r in cc.rows if r.control == control and r.head == head and r.cue == cue)


def test_sentence_start_confound_is_removed_by_the_sentence_control():
    cc = cue_window_control([_item(i, 1.0) for i in range(1, 8)], ("Wait", "But"), window=3, n_bootstrap=200)
    old = _row(cc, "sentence_start")
    assert old.diff_vs_trace_mean > 0.5  # the old contrast calls the cues special
    assert old.diff == pytest.approx(0.0, abs=1e-9)  # same place in a sentence: no cue effect at all
    assert old.ci95[0] <= 0 <= old.ci95[1] or old.ci95 == pytest.approx((0.0, 0.0), abs=1e-9)
    assert _row(cc, "window").diff > 0  # a ±3 window still mixes sentence starts and middles: partly confounded
    assert {r.cue for r in cc.rows} == {"Wait", "But", "all"} and {r.head for r in cc.rows} == {"L1H2", "L2H6",
                                                                                                  "mean"}
    assert _row(cc, "window", "L1H2", "Wait").n_occurrences == 7


def test_a_real_cue_effect_shows_in_every_control(tmp_path):
    cc = cue_window_control([_item(i, 4.0) for i in range(1, 8)], ("Wait", "But"), n_bootstrap=200, seed=1)
    for kind in ("window", "sentence_start"):
        r = _row(cc, kind, "L2H6", "Wait")
        assert r.diff > 0 and r.ci95[0] > 0
    cc.save(tmp_path)
    back = CueControl.load(tmp_path)
    assert back.rows == cc.rows or all(a.diff == pytest.approx(b.diff) for a, b in zip(back.rows, cc.rows))
    assert set(back.per_trace) == set(cc.per_trace)


def test_bad_control_and_empty_input():
    with pytest.raises(ThinklensError, match="unknown cue control"):
        cue_window_control([_item(1, 1.0)], controls=("nearby",))
    with pytest.raises(ThinklensError, match="no traces"):
        cue_window_control([])


@pytest.mark.slow
def test_tiny_r1_reference_traces(tiny_scored):
    """On tiny-r1's reference traces the RFHs read the numbers, not the 'Wait' of a self-correction: its cue tokens
    get less answer attention than their neighbours."""
    from thinklens.attention.tokens import analyze_tokens

    scores, _, probs = tiny_scored
    items, stats = analyze_tokens(scores, [(1, 2), (2, 6), (1, 7)], n_permutations=500)
    n_slips = sum(p.has_slip for p in probs)
    assert n_slips > 0
    cc = cue_window_control(items, n_bootstrap=300)
    r = _row(cc, "window", "mean", "Wait")
    assert r.n_occurrences == n_slips and r.n_traces == n_slips
    assert r.diff < 0
