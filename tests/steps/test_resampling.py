"""Counterfactual resampling: the statistics (similarity filter, pooled groups, smoothed KL) on canned rollouts from
a fake backend, seeded reproducibility and batch independence of the transformers sampler, resume from the rollout
cache, and what the method finds on tiny-r1 (slips and their corrections; answer lines are overdetermined)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.steps.test_suppression import (
    carrier_steps,
    line_spans,
    reference_traces,
    step_texts,
    tiny,
)
from thinklens.empirical.backends import Generation
from thinklens.errors import ThinklensError
from thinklens.steps.resampling import (
    first_step,
    resampling_importance,
    resampling_importance_many,
    sample_tokens,
    smoothed_kl,
)


class FakeBackend:
    """Answers by where the prompt was cut: before the last step (``Final answer is N.``) the rollouts write
    another line and a wrong answer in 2 of 4 rollouts; from any other cut they repeat the trace's next line."""

    name = "fake"

    def __init__(self, trace, spans, tok, gold):
        self.trace, self.spans, self.tok, self.gold, self.calls, self.seeds = trace, spans, tok, gold, 0, []

    def generate(self, prompts, settings, seed):
        self.calls += 1
        self.seeds.append(seed)
        out = []
        for p in prompts:
            cut = len(p)
            k = [a for a, _ in self.spans].index(cut) if cut in [a for a, _ in self.spans] else len(self.spans)
            rest = self.trace.text[self.trace.offsets[cut][0]:]
            if k == len(self.spans) - 1:
                wrong = self.calls % 2 == 1  # rollouts 0 and 2 of every cut point
                answer = "7" if wrong else self.gold
                rest = ("Final answer is 7." if wrong else "So it is done.") + \
                    f"\n</think>\n\nThe answer is \\boxed{{{answer}}}."
            rest = rest.replace(self.tok.eos_token, "")
            out.append(Generation([1] * len(rest), rest, True))
        return out


def test_statistics_on_canned_rollouts(tmp_path):
    _, tok, profile = tiny()
    trace, gold, _ = reference_traces(1, seed=0)[0]
    spans = line_spans(trace)
    fake = FakeBackend(trace, spans, tok, gold)
    res = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake)
    n = len(spans)
    assert fake.calls == 4 and len(set(fake.seeds)) == 4  # one call per rollout index, distinct seeds
    assert res.scored_by == "gold" and res.reference == gold and res.n_rollouts == 4
    # the last step: every resample differs from it; half of them answer 7 -> importance 0.5
    assert res.n_dissimilar[n - 1] == 4
    assert res.importance[n - 1] == pytest.approx(0.5)
    assert res.kl[n - 1] == pytest.approx(smoothed_kl(["7", "7", gold, gold], [gold] * 4))
    assert res.plain_importance[n - 1] == pytest.approx(0.5)
    # every other step is resampled identically: no counterfactual evidence, importance 0
    assert res.n_dissimilar[: n - 1].tolist() == [0] * (n - 1)
    assert np.all(res.importance[: n - 1] == 0) and np.all(res.kl[: n - 1] == 0)
    assert res.first_steps[0][0] == step_texts(trace, spans)[0]
    # without gold: agreement with the trace's own answer
    res2 = resampling_importance(None, tok, profile, trace, spans, n_rollouts=4, backend=fake)
    assert res2.scored_by == "original" and res2.reference == gold
    np.testing.assert_allclose(res2.importance, res.importance)


def test_cache_resume(tmp_path):
    _, tok, profile = tiny()
    trace, gold, _ = reference_traces(1, seed=0)[0]
    spans = line_spans(trace)
    fake = FakeBackend(trace, spans, tok, gold)
    cache = tmp_path / "rollouts.jsonl"
    first = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                                  cache_path=cache)
    lines = cache.read_text().splitlines()
    assert len(lines) == len(spans) + 1 and {json.loads(x)["step"] for x in lines} == set(range(len(spans) + 1))
    calls = fake.calls
    again = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                                  cache_path=cache)
    assert fake.calls == calls  # everything came from the cache
    np.testing.assert_array_equal(first.importance, again.importance)
    cache.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:20])  # killed mid-write: two cut points missing
    third = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                                  cache_path=cache)
    assert fake.calls == calls + 4
    np.testing.assert_array_equal(first.importance, third.importance)
    # other settings do not reuse the cached rollouts
    resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                          cache_path=cache, temperature=0.9)
    assert fake.calls == calls + 8


def test_helpers():
    assert first_step("\n12*3=36\n36-4=32\n", 1, "</think>") == "12*3=36"
    assert first_step("Final answer is 32.\n</think>\n\nx", 1, "</think>") == "Final answer is 32."
    assert first_step("So x=3. Then y=4. Done", 2, "</think>") == "So x=3. Then y=4."
    assert smoothed_kl(["1", "2"], ["1", "2"]) == pytest.approx(0.0, abs=1e-12)
    assert smoothed_kl(["1"] * 4, ["2"] * 4) > smoothed_kl(["1"] * 4, ["1", "1", "2", "2"]) > 0
    assert smoothed_kl([], ["1"]) == 0.0
    g = [torch.Generator().manual_seed(s) for s in (0, 1)]
    logits = torch.tensor([[0.0, 10.0, 0.0], [5.0, 5.0, -50.0]])
    assert sample_tokens(logits, g, 0.0, 1.0).tolist() == [1, 0]
    draws = [sample_tokens(logits, g, 1.0, 0.95).tolist() for _ in range(50)]
    assert all(d[1] in (0, 1) for d in draws) and {d[1] for d in draws} == {0, 1}


@pytest.mark.slow
def test_transformers_sampler_is_seeded_and_batch_independent():
    model, tok, profile = tiny()
    traces = reference_traces(2, seed=0)
    spans = [line_spans(t) for t, _, _ in traces]
    kw = dict(n_rollouts=2, temperature=1.0, top_p=1.0, max_new_tokens=120)
    both = resampling_importance_many(model, tok, profile, [t for t, _, _ in traces], spans, **kw)
    one = resampling_importance(model, tok, profile, traces[0][0], spans[0], **kw)
    assert one.answers == both[0].answers and one.first_steps == both[0].first_steps
    other = resampling_importance(model, tok, profile, traces[0][0], spans[0], seed=1, **kw)
    assert other.first_steps != one.first_steps or other.answers != one.answers
    assert all(len(a) == 2 for a in one.answers) and len(one.answers) == len(spans[0]) + 1


@pytest.mark.slow
def test_tiny_r1_slips_matter_answer_lines_are_overdetermined():
    """What counterfactual resampling finds on tiny-r1 (T = 0.6, N = 4): a slipped line drags the answer down
    (importance -1: rollouts from after it never correct it) and its ``Wait`` correction carries it (+1); the
    ``Final answer is N.`` line is resampled identically every time (no dissimilar resample: importance 0), since
    the line before it fixes it; that computing line matters only in the rare rollout that miscomputes it."""
    model, tok, profile = tiny()
    traces = reference_traces(20, seed=0)
    spans = [line_spans(t) for t, _, _ in traces]
    res = resampling_importance_many(model, tok, profile, [t for t, _, _ in traces], spans,
                                     golds=[g for _, g, _ in traces], n_rollouts=4, max_new_tokens=160)
    n_slips = 0
    for (t, _, p), s, r in zip(traces, spans, res):
        texts = step_texts(t, s)
        assert r.n_dissimilar[-1] == 0 and r.importance[-1] == 0  # "Final answer is N." is overdetermined
        if p.has_slip:
            n_slips += 1
            w = next(i for i, x in enumerate(texts) if x.startswith("Wait"))
            assert int(np.argmax(r.importance)) == w and r.importance[w] >= 0.75, (texts, r.importance)
            assert int(np.argmin(r.importance)) == w - 1 and r.importance[w - 1] <= -0.75
        else:  # a resample that miscomputes the final value is the only way to change the answer
            big = {i for i in range(len(s)) if abs(r.importance[i]) > 0.5}
            assert big <= carrier_steps(t, s), (texts, r.importance)
    assert n_slips >= 3


@pytest.mark.slow
def test_at_the_organisms_run_settings_the_answer_carrying_line_is_on_top():
    """The ground truth of issue 13 at the settings a run uses on the organism (its profile's resampling
    temperature, 4 rollouts): resampling importance is highest, and alone, at an answer-carrying line in >= 70% of
    traces (measured: 16 of 20). At R1's 0.6 tiny-r1's lines repeat themselves and most importances are 0."""
    from thinklens.steps.results import StepsConfig

    model, tok, profile = tiny()
    traces = reference_traces(20, seed=5)
    spans = [line_spans(t) for t, _, _ in traces]
    res = resampling_importance_many(model, tok, profile, [t for t, _, _ in traces], spans,
                                     golds=[g for _, g, _ in traces], n_rollouts=StepsConfig().n_rollouts,
                                     temperature=profile.resampling_temperature, max_new_tokens=64)
    on_top = 0
    for (t, _, _), s, r in zip(traces, spans, res):
        top = np.flatnonzero(r.importance == r.importance.max())
        on_top += bool(r.importance.max() > 0 and len(top) == 1 and top[0] in carrier_steps(t, s))
    assert on_top >= 14, on_top


def test_bad_input():
    model, tok, profile = tiny()
    trace, _, _ = reference_traces(1)[0]
    with pytest.raises(ThinklensError, match="n_rollouts"):
        resampling_importance(model, tok, profile, trace, line_spans(trace), n_rollouts=0)
    with pytest.raises(ThinklensError, match="share"):
        resampling_importance_many(model, tok, profile, [trace, trace], [line_spans(trace)] * 2)
