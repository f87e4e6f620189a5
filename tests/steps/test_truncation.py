"""Early answering: the batched fast engine reads the same answers as one fresh generation per truncation point;
0 steps is the paper's no-reasoning sequence exactly; on tiny-r1 the answer appears with its answer-carrying line."""
from __future__ import annotations

import numpy as np
import pytest

from tests.steps.test_suppression import (
    carrier_steps,
    greedy_traces,
    line_spans,
    random_model,
    reference_traces,
    tiny,
)
from thinklens.errors import ThinklensError
from thinklens.steps._common import read_braced, same_answer
from thinklens.steps.truncation import early_answering, early_answering_many, forced_rows


def test_read_braced_and_compare():
    assert read_braced("45}.") == ("45", True)
    assert read_braced("\\frac{3}{4}} and more") == ("\\frac{3}{4}", True)
    assert read_braced("12") == ("12", False)
    assert same_answer(" 45.", "45") and same_answer("\\dfrac{1}{2}", "\\frac{1}{2}")
    assert not same_answer(None, "45") and not same_answer("", "")


def test_forced_sequences_are_the_papers():
    """0 steps = collect's without-reasoning prompt (+ answer prefix); n steps = the trace's own tokens."""
    from thinklens.empirical.collect import forced_thinking
    from thinklens.toy import prompt_text

    _, tok, profile = tiny()
    trace, _, p = reference_traces(1)[0]
    spans = line_spans(trace)
    cuts, forced = forced_rows(tok, profile, trace, spans)
    prefix = tok(profile.answer_prefix, add_special_tokens=False)["input_ids"]
    no_reasoning = tok(prompt_text(p) + forced_thinking(profile) + profile.answer_prefix,
                       add_special_tokens=False)["input_ids"]
    assert list(trace.ids[:cuts[0]]) + forced[0] == no_reasoning
    full = list(trace.ids[:cuts[-1]]) + forced[-1]
    assert full == list(trace.ids[:trace.think_close.end + len(prefix)])
    assert cuts[1:-1] == [a for a, _ in spans[1:]]


def test_fast_matches_naive_tiny_r1():
    model, tok, profile = tiny()
    for trace, gold, _p in reference_traces(5, seed=3):
        spans = line_spans(trace)
        fast = early_answering(model, tok, profile, trace, spans, gold=gold)
        naive = early_answering(model, tok, profile, trace, spans, gold=gold, engine="naive")
        assert fast.answers == naive.answers
        assert fast.agrees.tolist() == naive.agrees.tolist()
        assert len(fast.answers) == len(spans) + 1 and len(fast.effect) == len(spans)
        np.testing.assert_array_equal(fast.effect, np.diff(fast.agrees.astype(float)))
        assert fast.fractions[0] == 0.0 and fast.fractions[-1] == 1.0 and np.all(np.diff(fast.fractions) > 0)
        assert fast.agrees[-1] and fast.full_answer == fast.answers[-1] and fast.trace_answer == gold


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_fast_matches_naive_random(kind):
    """A random model never closes the box: every row runs the whole budget; tokens must agree one for one."""
    _, tok, profile = tiny()
    model = random_model(kind, len(tok))
    traces = reference_traces(3, seed=4)
    spans = [line_spans(t) for t, _, _ in traces]
    fast = early_answering_many(model, tok, profile, [t for t, _, _ in traces], spans, max_answer_tokens=6,
                                max_cache_tokens=600)  # small budget: several row groups
    for (t, _, _), s, f in zip(traces, spans, fast):
        naive = early_answering(model, tok, profile, t, s, max_answer_tokens=6, engine="naive")
        assert f.answers == naive.answers and f.correct is None
        assert len({a for a in f.answers}) > 1  # not a constant answer: the comparison means something


def test_many_equals_one_by_one():
    model, tok, profile = tiny()
    traces = reference_traces(4, seed=6)
    spans = [line_spans(t) for t, _, _ in traces]
    many = early_answering_many(model, tok, profile, [t for t, _, _ in traces], spans, golds=[g for _, g, _ in traces])
    for (t, g, _), s, m in zip(traces, spans, many):
        one = early_answering(model, tok, profile, t, s, gold=g)
        assert one.answers == m.answers and one.correct.tolist() == m.correct.tolist()


@pytest.mark.slow
def test_ground_truth_tiny_r1():
    """No better than chance without reasoning, right with it, and the answer appears with the answer-carrying
    line (the line computing the final value or ``Final answer is N.``)."""
    model, tok, profile = tiny()
    traces = reference_traces(20, seed=0) + greedy_traces(10)
    spans = [line_spans(t) for t, _, _ in traces]
    res = early_answering_many(model, tok, profile, [t for t, _, _ in traces], spans,
                               golds=[g for _, g, _ in traces])
    acc = np.array([r.correct for r in res], dtype=object)
    first = np.mean([r.correct[0] for r in res])
    last = np.mean([r.correct[-1] for r in res])
    assert first <= 0.2 and last >= 0.95, (first, last)
    jumps = [r.decisive_step() in carrier_steps(t, s) for (t, _, _), s, r in zip(traces, spans, res)]
    assert np.mean(jumps) >= 0.8, (jumps, acc)


def test_bad_input():
    model, tok, profile = tiny()
    trace, _, _ = reference_traces(1)[0]
    with pytest.raises(ThinklensError, match="max_answer_tokens"):
        early_answering(model, tok, profile, trace, line_spans(trace), max_answer_tokens=0)
    with pytest.raises(ThinklensError, match="traces but"):
        early_answering_many(model, tok, profile, [trace], [])
